"""Evaluation protocols: how each benchmark set is prepared and how each metric is computed, as data.

A protocol is a small YAML document (presets in evaluate/protocols/, or a user file) naming, per dataset, how
the HR/LR pairs are prepared and, per metric, the pyiqa name and its create_metric options. A setting the paper
does not state is written `unspecified`; such a setting runs at the tool's default (pyiqa's default for a metric
option, full images, the `realesrgan` spec, seed 0), and every report says so. The canonical hash covers the
content that changes numbers (scale, datasets, metrics, openness), not the name, title or notes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srdistill.core.documents import find_document, preset_names, read_document
from srdistill.core.errors import UserError
from srdistill.core.hashing import canonical_hash

PRESET_DIR = Path(__file__).parent / "protocols"
PRESETS: tuple[str, ...] = preset_names(PRESET_DIR)
DEFAULT_PROTOCOL = "srdistill"
UNSPECIFIED = "unspecified"

IMAGE_MODES = ("full", "center-crop", "random-crops", UNSPECIFIED)
LR_MODES = ("official", "synthesized", UNSPECIFIED)
# What an unspecified setting runs as (the tool's default), shown beside it in every report.
RUN_DEFAULTS = {"images": "full", "spec": "realesrgan", "seed": 0}
# Published test sets a protocol may name besides the sets datasets/benchmarks.py lays out.
PUBLISHED_SETS = ("StableSR-DIV2K", "StableSR-RealSR", "StableSR-DRealSR")
# Named sets that ship HR only, so their LR has to be synthesized.
HR_ONLY_SETS = ("DIV2K-val", "sample")

_TOP = ("name", "title", "source", "scale", "open", "datasets", "metrics", "notes")
_DATASET_FIELDS = ("images", "lr", "spec", "seed", "lr_size", "hr_size", "count", "crop_seed", "note")


@dataclass(frozen=True)
class DatasetPrep:
    """How one benchmark set's pairs are prepared; `unspecified` where the protocol's source is silent."""

    dataset: str
    images: str = "full"  # full | center-crop (lr_size) | random-crops (count x hr_size, crop_seed) | unspecified
    lr: str = "official"  # official (the set's own LR files) | synthesized (HR degraded by `spec` with `seed`)
    spec: str | None = None
    seed: int | str | None = None
    lr_size: int | None = None
    hr_size: int | None = None
    count: int | None = None
    crop_seed: int | None = None
    note: str = ""

    def canonical(self) -> dict:
        return {k: getattr(self, k) for k in _DATASET_FIELDS if k != "note" and getattr(self, k) is not None}

    @property
    def run_images(self) -> str:
        return RUN_DEFAULTS["images"] if self.images == UNSPECIFIED else self.images

    @property
    def run_spec(self) -> str:
        return RUN_DEFAULTS["spec"] if self.spec in (None, UNSPECIFIED) else str(self.spec)

    @property
    def run_seed(self) -> int:
        return RUN_DEFAULTS["seed"] if self.seed in (None, UNSPECIFIED) else int(self.seed)

    @property
    def is_identity(self) -> bool:
        """Images exactly as the benchmark loader yields them (for HR-only sets: LR by realesrgan with seed 0)."""
        if self.run_images != "full":
            return False
        if self.dataset in HR_ONLY_SETS:
            return self.run_spec == RUN_DEFAULTS["spec"] and self.run_seed == RUN_DEFAULTS["seed"]
        return self.lr != "synthesized"

    def tag(self) -> str:
        """A short content hash naming this preparation's cached images and SR outputs."""
        return canonical_hash(self.canonical())[:8]

    def describe(self) -> str:
        """One line: what is prepared and how, with `unspecified` settings and what they ran as."""
        if self.images == "center-crop":
            what = f"LR centre crops of {self.lr_size} px (HR {self.lr_size} x scale)"
        elif self.images == "random-crops":
            what = f"{self.count} random {self.hr_size}-px HR crops (positions seeded with {self.crop_seed})"
        elif self.images == UNSPECIFIED:
            what = "image preparation unspecified (ran full images)"
        else:
            what = "full images"
        if self.lr == "synthesized":
            spec = f"spec unspecified (ran {self.run_spec})" if self.spec in (None, UNSPECIFIED) else f"spec {self.spec}"
            seed = f"seed unspecified (ran {self.run_seed})" if self.seed in (None, UNSPECIFIED) else f"seed {self.seed}"
            lr = f"LR synthesized by degrade, {spec}, {seed}"
        elif self.lr == UNSPECIFIED:
            lr = "LR source unspecified (ran the set's own LR)"
        else:
            lr = "the set's own LR images"
        return f"{what}; {lr}" + (f". {self.note}" if self.note else "")

    def unspecified(self) -> list[str]:
        return [k for k in ("images", "lr", "spec", "seed") if getattr(self, k) == UNSPECIFIED]


@dataclass(frozen=True)
class MetricSpec:
    """A pyiqa metric and its create_metric options as the protocol states them (`unspecified` values kept)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def create_options(self) -> dict[str, Any]:
        """What is passed to pyiqa.create_metric: stated options only, so unspecified ones run at pyiqa's default;
        patch options are the harness's own (evaluate/patches.py)."""
        from srdistill.evaluate.patches import PATCH_OPTIONS

        return {k: v for k, v in self.options.items() if v != UNSPECIFIED and k not in PATCH_OPTIONS}

    def describe(self) -> str:
        if not self.options:
            return f"{self.name} (pyiqa defaults)"
        parts = [f"{k}={v}" if v != UNSPECIFIED else f"{k}=unspecified (pyiqa default)" for k, v in sorted(self.options.items())]
        return f"{self.name} ({', '.join(parts)})"

    def options_text(self) -> str:
        """Canonical `k=v;k=v` text of the stated options, the form reported rows and results carry."""
        return ";".join(f"{k}={v}" for k, v in sorted(self.options.items()))


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    source: str
    scale: int
    datasets: dict[str, DatasetPrep]
    metrics: dict[str, MetricSpec]
    open: bool = False  # other datasets (full images) and metrics (pyiqa defaults) may be added
    notes: tuple[str, ...] = ()

    def canonical(self) -> dict:
        return {"scale": self.scale, "open": self.open,
                "datasets": {k: v.canonical() for k, v in sorted(self.datasets.items())},
                "metrics": {k: dict(sorted(v.options.items())) for k, v in self.metrics.items()}}

    @property
    def hash(self) -> str:
        return canonical_hash(self.canonical())

    def prep_for(self, dataset: str) -> DatasetPrep:
        """The preparation of a dataset; UserError when the protocol does not fix it and is not open."""
        if dataset in self.datasets:
            return self.datasets[dataset]
        if self.open:
            return DatasetPrep(dataset, lr="synthesized" if dataset in HR_ONLY_SETS else "official",
                               spec=RUN_DEFAULTS["spec"] if dataset in HR_ONLY_SETS else None,
                               seed=RUN_DEFAULTS["seed"] if dataset in HR_ONLY_SETS else None)
        raise UserError(f"protocol {self.name} does not fix dataset {dataset!r} (it fixes {', '.join(self.datasets)}); "
                        f"use --protocol {DEFAULT_PROTOCOL} or a protocol file that lists it.")

    def metric(self, name: str) -> MetricSpec:
        """A metric's spec; UserError when the protocol does not fix it and is not open."""
        if name in self.metrics:
            return self.metrics[name]
        if self.open:
            from srdistill.core.iqa.metrics import metric_info

            metric_info(name)
            return MetricSpec(name)
        raise UserError(f"metric {name!r} is not part of protocol {self.name} (it fixes {', '.join(self.metrics)}); "
                        f"use --protocol {DEFAULT_PROTOCOL} or a protocol file that lists it.")

    def unspecified(self) -> list[str]:
        """Every setting the protocol leaves unspecified, as `dataset.field` / `metric.option`."""
        out = [f"{d}.{k}" for d, p in self.datasets.items() for k in p.unspecified()]
        out += [f"{m}.{k}" for m, s in self.metrics.items() for k, v in s.options.items() if v == UNSPECIFIED]
        return out


def _known_datasets() -> tuple[str, ...]:
    from srdistill.datasets.benchmarks import BENCHMARK_NAMES

    return tuple(dict.fromkeys((*BENCHMARK_NAMES, *PUBLISHED_SETS)))


def _positive_int(origin: str, where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"protocol {origin}: {where} must be a positive whole number, got {value!r}.")
    return value


def _dataset(origin: str, name: str, doc: Any, scale: int) -> DatasetPrep:
    if name not in _known_datasets():
        raise UserError(f"protocol {origin}: unknown dataset {name!r} (known: {', '.join(_known_datasets())}).")
    if not isinstance(doc, dict):
        raise UserError(f"protocol {origin}: dataset {name} must be a mapping such as {{images: full}}.")
    unknown = sorted(set(doc) - set(_DATASET_FIELDS))
    if unknown:
        raise UserError(f"protocol {origin}: dataset {name} has unknown field {unknown[0]!r} (fields: {', '.join(_DATASET_FIELDS)}).")
    images, lr = doc.get("images", "full"), doc.get("lr", "synthesized" if name in HR_ONLY_SETS else "official")
    if images not in IMAGE_MODES:
        raise UserError(f"protocol {origin}: dataset {name}: images must be one of {', '.join(IMAGE_MODES)}, got {images!r}.")
    if lr not in LR_MODES:
        raise UserError(f"protocol {origin}: dataset {name}: lr must be one of {', '.join(LR_MODES)}, got {lr!r}.")
    if name in HR_ONLY_SETS and lr != "synthesized":
        raise UserError(f"protocol {origin}: dataset {name} ships no LR images, so its lr must be synthesized.")
    if images == "random-crops" and lr != "synthesized":
        raise UserError(f"protocol {origin}: dataset {name}: random crops need lr: synthesized (LR degraded from each crop).")
    seed = doc.get("seed")
    if seed is not None and seed != UNSPECIFIED:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"protocol {origin}: dataset {name}: seed must be a whole number >= 0 or unspecified, got {seed!r}.")
    spec = doc.get("spec")
    if lr == "synthesized" and spec is None:
        raise UserError(f"protocol {origin}: dataset {name}: synthesized LR needs spec (a degradation preset or file, or unspecified).")
    if spec not in (None, UNSPECIFIED):
        from srdistill.degrade.spec.schema import load_spec

        load_spec(str(spec))
    prep = DatasetPrep(name, images, lr, spec=spec, seed=seed, note=str(doc.get("note", "")))
    if images == "center-crop":
        prep = dataclasses.replace(prep, lr_size=_positive_int(origin, f"dataset {name}: lr_size", doc.get("lr_size")))
    elif images == "random-crops":
        hr_size = _positive_int(origin, f"dataset {name}: hr_size", doc.get("hr_size"))
        if hr_size % scale:
            raise UserError(f"protocol {origin}: dataset {name}: hr_size {hr_size} is not a multiple of the scale {scale}.")
        crop_seed = doc.get("crop_seed", 0)
        if isinstance(crop_seed, bool) or not isinstance(crop_seed, int) or crop_seed < 0:
            raise UserError(f"protocol {origin}: dataset {name}: crop_seed must be a whole number >= 0, got {crop_seed!r}.")
        prep = dataclasses.replace(prep, hr_size=hr_size, crop_seed=crop_seed,
                                   count=_positive_int(origin, f"dataset {name}: count", doc.get("count")))
    else:
        for key in ("lr_size", "hr_size", "count", "crop_seed"):
            if key in doc:
                raise UserError(f"protocol {origin}: dataset {name}: {key} applies only to center-crop/random-crops images.")
    return prep


def _metric(origin: str, name: str, doc: Any) -> MetricSpec:
    from srdistill.core.iqa.metrics import check_metric_options, metric_info

    try:
        metric_info(name)
    except UserError:
        raise UserError(f"protocol {origin}: unknown metric {name!r}; metrics are pyiqa names such as psnry, lpips-vgg, maniqa-pipal.") from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict) or any(isinstance(v, (dict, list)) for v in doc.values()):
        raise UserError(f"protocol {origin}: metric {name} takes a flat mapping of pyiqa options (or nothing), e.g. {{crop_border: 4}}.")
    from srdistill.evaluate.patches import check_patch_options

    check_patch_options(name, doc, f"protocol {origin}: metric {name}")
    spec = MetricSpec(name, {str(k): v for k, v in doc.items()})
    check_metric_options(name, spec.create_options, f"protocol {origin}: metric {name}")
    return spec


def protocol_from_dict(doc: Any, origin: str) -> Protocol:
    """Validate a parsed document; every problem is one UserError sentence naming the field."""
    if not isinstance(doc, dict):
        raise UserError(f"protocol {origin} must be a mapping with name, datasets and metrics at the top level.")
    unknown = sorted(set(doc) - set(_TOP))
    if unknown:
        raise UserError(f"protocol {origin}: unknown field {unknown[0]!r} (fields: {', '.join(_TOP)}).")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\@ "):
        raise UserError(f"protocol {origin}: name must be a short word (no spaces, / or @), got {name!r}.")
    scale = _positive_int(origin, "scale", doc.get("scale", 4))
    datasets, metrics = doc.get("datasets") or {}, doc.get("metrics") or {}
    if not isinstance(datasets, dict) or not isinstance(metrics, dict):
        raise UserError(f"protocol {origin}: datasets and metrics must be mappings keyed by name.")
    is_open = doc.get("open", False)
    if not isinstance(is_open, bool):
        raise UserError(f"protocol {origin}: open must be true or false, got {is_open!r}.")
    if not is_open and (not datasets or not metrics):
        raise UserError(f"protocol {origin}: a protocol that is not open must list its datasets and metrics.")
    notes = doc.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise UserError(f"protocol {origin}: notes must be a list of sentences.")
    return Protocol(name=name, title=str(doc.get("title", name)), source=str(doc.get("source", "")), scale=scale,
                    datasets={str(k): _dataset(origin, str(k), v, scale) for k, v in datasets.items()},
                    metrics={str(k): _metric(origin, str(k), v) for k, v in metrics.items()},
                    open=is_open, notes=tuple(notes))


def load_protocol(name_or_path: str | Path | None = None) -> Protocol:
    """A preset name (see PRESETS), a YAML file path, or None for the default protocol."""
    path, preset = find_document(name_or_path or DEFAULT_PROTOCOL, what="protocol", folder=PRESET_DIR)
    return protocol_from_dict(read_document(path, what="protocol"), preset or str(path))


def describe_protocol(protocol: Protocol) -> list[str]:
    """Lines for `evaluate protocols`: what the protocol fixes and what it leaves unspecified."""
    lines = [f"{protocol.name}  (hash {protocol.hash}): {protocol.title}"]
    if protocol.source:
        lines.append(f"  source: {protocol.source}")
    for name, prep in protocol.datasets.items():
        lines.append(f"  dataset {name}: {prep.describe()}")
    if protocol.open:
        lines.append("  other datasets: full images; other metrics: pyiqa defaults (open protocol)")
    lines.append("  metrics: " + "; ".join(m.describe() for m in protocol.metrics.values()))
    unspecified = protocol.unspecified()
    lines.append(f"  unspecified by the source: {', '.join(unspecified) if unspecified else 'nothing'}")
    lines += [f"  note: {n}" for n in protocol.notes]
    return lines
