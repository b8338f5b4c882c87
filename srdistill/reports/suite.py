"""The nightly suite: what `reports nightly` runs, read from a YAML file.

Top-level keys (all but ``name`` optional)::

    name: default
    datasets: [sample]                 # benchmark sets, as `evaluate` names them
    methods: [bicubic, lanczos, mine=runs/d3sr]  # built-in names, or NAME=DIR: a training run or SR-output folder
    metrics: [psnr, ssim]              # pyiqa metric names
    specs: [realesrgan, bicubic]       # degradation specs (presets or files) whose hashes are recorded
    training:                          # short training jobs; each student is evaluated as a method
      - {name: d3sr-smoke, recipe: d3sr, shards: shards/, steps: 20, overrides: {trainer.batch_size: 2}}
    throughput:                        # speed figures recorded every night
      - {name: degrade-realesrgan, kind: degrade, spec: realesrgan, images: 8, size: 256}
      - {name: sr-bicubic, kind: method, method: bicubic, dataset: sample, images: 4}
    evaluation: {device: cuda}         # harness options: data_root, hr, lr, runs_root, device, tile, ...
    compare: {confidence: 0.95, ci: t, min_effect: {psnr: 0.05}, min_rel_effect: 0.005,
              throughput_rel: 0.25, fail_on_throughput: false}

Relative paths (shards, spec and config files) are taken relative to the suite file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from srdistill.core.documents import find_document, read_document
from srdistill.core.errors import UserError
from srdistill.core.hashing import canonical_hash
from srdistill.reports.regression import DEFAULT_MIN_EFFECT, Thresholds

SUITE_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "default"
THROUGHPUT_KINDS = ("degrade", "method")
# Keyword options of `srdistill.evaluate.harness.run_evaluation` a suite may set.
EVALUATION_OPTIONS = ("data_root", "hr", "lr", "runs_root", "device", "tile", "crop_to_match", "weights_dir", "protocol",
                      "partial_sets")


@dataclass(frozen=True)
class TrainingJob:
    """A short training run; its exported student joins the methods under ``name``."""

    name: str
    recipe: str
    shards: str
    steps: int = 20
    components: str = "tiny"
    config: str = ""  # a `train --config` YAML file
    overrides: dict = field(default_factory=dict)  # `train --set KEY=VALUE` pairs, e.g. {"trainer.batch_size": 2}

    def sets(self) -> list[str]:
        return [f"{k}={v}" for k, v in sorted(self.overrides.items())] + [f"trainer.steps={self.steps}"]


@dataclass(frozen=True)
class ThroughputBenchmark:
    """One speed figure: ``degrade`` = HR crops degraded per second; ``method`` = LR images super-resolved per second."""

    name: str
    kind: str
    spec: str = "realesrgan"
    method: str = ""
    dataset: str = "sample"
    images: int = 8
    size: int = 256


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...] = ("sample",)
    methods: tuple[str, ...] = ("bicubic",)  # built-in evaluation methods
    method_dirs: dict = field(default_factory=dict)  # NAME -> training run folder or folder of SR outputs
    metrics: tuple[str, ...] = ("psnr", "ssim")
    specs: tuple[str, ...] = ()
    training: tuple[TrainingJob, ...] = ()
    throughput: tuple[ThroughputBenchmark, ...] = ()
    evaluation: dict = field(default_factory=dict)
    compare: Thresholds = field(default_factory=Thresholds)
    source: str = ""  # the file it was read from

    def all_methods(self) -> list[str]:
        return list(self.methods) + list(self.method_dirs) + [job.name for job in self.training]

    def fingerprint(self) -> str:
        """16 hex of the canonical JSON of the suite's content (its source path excluded)."""
        d = asdict(self)
        d.pop("source")
        return canonical_hash(d, default=str)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


def _strings(doc: dict, key: str, default: tuple[str, ...], where: str) -> tuple[str, ...]:
    value = doc.get(key, list(default))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: '{key}' must be a list of names")
    return tuple(value)


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _records(doc: dict, key: str, cls: type, where: str) -> list[dict]:
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UserError(f"{where}: '{key}' must be a list of mappings")
    known = set(cls.__dataclass_fields__)
    for item in items:
        unknown = set(item) - known
        if unknown:
            raise UserError(f"{where}: unknown {key} option(s) {sorted(unknown)}; known: {sorted(known)}")
        if "name" not in item:
            raise UserError(f"{where}: every {key} entry needs a 'name'")
    return items


def _spec_path(spec: str, base: Path) -> str:
    # Preset names stay names; anything that looks like a file is resolved against the suite's folder.
    if spec.endswith((".yaml", ".yml", ".json")) or "/" in spec:
        return _resolve(spec, base)
    return spec


def parse_suite(doc: dict, base: Path, where: str) -> Suite:
    """Build a Suite from a parsed YAML mapping; UserError on any mistake."""
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a suite file must be a YAML mapping")
    known = set(Suite.__dataclass_fields__) - {"source"}
    unknown = set(doc) - known
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"{where}: the suite needs a 'name'")
    training = []
    for item in _records(doc, "training", TrainingJob, where):
        missing = {"recipe", "shards"} - set(item)
        if missing:
            raise UserError(f"training job {item['name']!r} in {where} lacks {sorted(missing)}")
        item = dict(item, shards=_resolve(str(item["shards"]), base))
        if item.get("config"):
            item["config"] = _resolve(str(item["config"]), base)
        if not isinstance(item.get("overrides", {}), dict):
            raise UserError(f"training job {item['name']!r} in {where}: 'overrides' must be a mapping KEY: VALUE")
        training.append(TrainingJob(**item))
    throughput = []
    for item in _records(doc, "throughput", ThroughputBenchmark, where):
        if item.get("kind") not in THROUGHPUT_KINDS:
            raise UserError(f"throughput {item['name']!r} in {where}: kind must be one of {THROUGHPUT_KINDS}")
        if item["kind"] == "method" and not item.get("method"):
            raise UserError(f"throughput {item['name']!r} in {where}: a 'method' benchmark needs 'method'")
        if "spec" in item:
            item = dict(item, spec=_spec_path(str(item["spec"]), base))
        throughput.append(ThroughputBenchmark(**item))
    compare = doc.get("compare") or {}
    if not isinstance(compare, dict) or set(compare) - set(Thresholds.__dataclass_fields__):
        raise UserError(f"{where}: 'compare' accepts only {sorted(Thresholds.__dataclass_fields__)}")
    compare = dict(compare)
    compare["min_effect"] = {**DEFAULT_MIN_EFFECT, **{k.lower(): float(v) for k, v in (compare.get("min_effect") or {}).items()}}
    try:
        thresholds = Thresholds(**compare)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: bad 'compare' settings: {exc}") from None
    evaluation = doc.get("evaluation") or {}
    if not isinstance(evaluation, dict) or set(evaluation) - set(EVALUATION_OPTIONS):
        raise UserError(f"{where}: 'evaluation' accepts only {', '.join(EVALUATION_OPTIONS)}")
    builtin, dirs = [], {}
    for entry in _strings(doc, "methods", Suite.methods, where):
        method, eq, target = entry.partition("=")
        if eq:
            if not method.strip() or not target.strip():
                raise UserError(f"{where}: method {entry!r} must be a name or NAME=DIR")
            dirs[method.strip()] = _resolve(target.strip(), base)
        else:
            builtin.append(entry)
    names = [j.name for j in training] + builtin + list(dirs)
    if len(set(names)) != len(names):
        raise UserError(f"{where}: method and training job names must be distinct")
    return Suite(
        name=name,
        datasets=_strings(doc, "datasets", Suite.datasets, where),
        methods=tuple(builtin),
        method_dirs=dirs,
        metrics=_strings(doc, "metrics", Suite.metrics, where),
        specs=tuple(_spec_path(s, base) for s in _strings(doc, "specs", (), where)),
        training=tuple(training),
        throughput=tuple(throughput),
        evaluation=dict(evaluation),
        compare=thresholds,
        source=where,
    )


def load_suite(path: str | Path | None = None) -> Suite:
    """A suite file, or a shipped suite by name (the default one when ``path`` is None); a built-in suite's relative
    paths are taken from the current folder, a file's from its own."""
    p, preset = find_document(path or DEFAULT_SUITE, what="suite", folder=SUITE_DIR)
    doc = read_document(p, what="suite")
    if preset is not None:
        return parse_suite(doc, Path.cwd(), f"built-in suite '{preset}'")
    return parse_suite(doc, p.parent.resolve(), str(p))
