"""The evaluation loop: methods x benchmark sets x metrics -> results.parquet, computing only missing rows.

Everything runs under one evaluation protocol (evaluate/protocol.py), which fixes how each set is prepared and
which options each metric is built with; every row records the protocol's name and hash, and a cached row is
reused only under the same hash. SR outputs are kept under OUT/sr/<method>/<dataset>/<stem>.png (a prepared set,
e.g. centre crops, under <dataset>@<preparation hash>) and reused while the method's and the set's fingerprints
are unchanged. Finished rows are committed every half second and on any exception or Ctrl-C, so an interrupted run
keeps every finished image.
"""

from __future__ import annotations

import time
from pathlib import Path

from srdistill.datasets.benchmarks import BENCHMARK_NAMES, Benchmark, MissingBenchmark
from srdistill.core.iqa import weights
from srdistill.evaluate.benchmarks import load_benchmark, resolve_benchmarks
from srdistill.evaluate.distributed import check_options, run_on_ray
from srdistill.evaluate.methods.registry import resolve_methods
from srdistill.core.iqa.metrics import MetricPool
from srdistill.evaluate.patches import PATCH_OPTIONS
from srdistill.evaluate.prepare import prepare
from srdistill.evaluate.protocol import UNSPECIFIED, Protocol, load_protocol
from srdistill.evaluate.reported import counterparts
from srdistill.evaluate.results import ResultStore
from srdistill.evaluate.scoring import EvalSummary, MetricPlan, evaluate_pair, sr_set_name
from tqdm import tqdm

from srdistill.core.errors import UserError

def protocol_metrics(protocol: Protocol, spec: str | list[str] | None) -> list[str]:
    """`all`/None -> the protocol's metrics; `a,b` -> those names, each one the protocol fixes (or, if open, any pyiqa name)."""
    if spec is None or spec == "all" or spec == ["all"]:
        return list(protocol.metrics)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise UserError("no metric given; pass --metrics all or a comma-separated list of pyiqa names.")
    for name in names:
        protocol.metric(name)
    return names


def _protocol_benchmarks(protocol: Protocol, dataset_spec: str, *, data_root, cache: Path, hr, lr, partial: bool):
    """Sets to evaluate: with `all` under a protocol that is not open, the protocol's own sets (missing ones reported)."""
    if dataset_spec != "all" or protocol.open:
        return resolve_benchmarks(dataset_spec, data_root=data_root, cache=cache, hr=hr, lr=lr, partial=partial)
    found, missing = [], []
    for name in protocol.datasets:
        if name not in BENCHMARK_NAMES:
            missing.append(MissingBenchmark(name, "the layouts this version knows (datasets/benchmarks.py)",
                                            f"a layout named {name} in datasets/benchmarks.py"))
            continue
        result = load_benchmark(name, data_root=data_root, cache=cache, partial=partial)
        (missing if isinstance(result, MissingBenchmark) else found).append(result)
    if not found:
        raise UserError(f"no benchmark of protocol {protocol.name} to evaluate: " + "; ".join(m.sentence() for m in missing))
    return found, missing


def prepared_benchmark(out: Path, dataset: str, *, protocol: str | Path | Protocol | None = None, data_root=None,
                       hr: str | None = None, lr: str | None = None, partial: bool = False) -> Benchmark:
    """One set as `run_evaluation` prepared it under `protocol` into OUT (its SR outputs are in
    sr_folder(out, method, sr_set_name(set))); cached HR/LR are reused, nothing is scored."""
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    loaded, _ = resolve_benchmarks(dataset, data_root=data_root, cache=Path(out) / "cache", hr=hr, lr=lr, partial=partial)
    if len(loaded) != 1:
        raise UserError(f"name one data set (got {len(loaded)} from {dataset!r}).")
    return prepare(loaded[0], proto.prep_for(loaded[0].name), proto, Path(out) / "cache")


def run_evaluation(methods: list[str] | str, datasets: list[str] | str, metrics: list[str] | str | None, out: Path, *,
                   extra_methods: dict[str, str] | None = None, data_root: str | None = None, hr: str | None = None,
                   lr: str | None = None, runs_root: str | None = None, device: str = "cpu", tile: int = 0,
                   crop_to_match: bool = False, weights_dir: str | None = None, progress: bool = True,
                   metric_opts: dict[str, dict] | None = None, protocol: str | Path | Protocol | None = None,
                   partial_sets: bool = False, workers: int | None = None, address: str | None = None,
                   gpus_per_worker: float = 0) -> EvalSummary:
    """Score every (method, dataset, image, metric) not yet in OUT/results.parquet under `protocol` (a preset name,
    a YAML file or a Protocol; the default protocol when None); returns what was done.

    `metric_opts` maps a metric to extra pyiqa.create_metric options on top of the protocol's (recorded in metric_version).
    `partial_sets` evaluates a named set whose image count differs from its release instead of refusing it.
    With `workers` or `address` the work runs on Ray (evaluate/distributed.py) with the same rows as a result,
    `gpus_per_worker` GPUs per worker; without them, in this process.
    """
    check_options(workers, address, gpus_per_worker)
    start = time.perf_counter()
    out = Path(out)
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    weights.configure_weights_dir(weights_dir)
    weights.install_shipped_weights()
    metric_names = protocol_metrics(proto, metrics)
    stated = {m: {**proto.metric(m).options, **(metric_opts or {}).get(m, {})} for m in metric_names}
    plan = MetricPlan(proto, stated)
    method_spec = methods if isinstance(methods, str) else ",".join(methods)
    dataset_spec = datasets if isinstance(datasets, str) else ",".join(datasets)
    method_objs, unavailable = resolve_methods(method_spec, extra_methods, runs_root=runs_root, device=device, tile=tile)
    preps = {}
    loaded, missing = _protocol_benchmarks(proto, dataset_spec, data_root=data_root, cache=out / "cache", hr=hr, lr=lr,
                                           partial=partial_sets)
    for bench in loaded:
        preps[bench.name] = proto.prep_for(bench.name)  # a set the protocol does not fix fails before any work
    benches = [prepare(b, preps[b.name], proto, out / "cache") for b in loaded]
    summary = EvalSummary(out, [m.name for m in method_objs], [b.name for b in benches], metric_names, unavailable, missing,
                          protocol=proto)
    summary.sr_sets = {sr_set_name(b): {i.stem: i.hr for i in b.items} for b in benches}
    summary.lr_sets = {sr_set_name(b): {i.stem: i.lr for i in b.items} for b in benches}
    summary.counterparts = {m.name: counterparts(m) for m in method_objs}
    store = ResultStore(out)
    pool_options = {m: {k: v for k, v in o.items() if v != UNSPECIFIED and k not in PATCH_OPTIONS} for m, o in stated.items()}
    pairs = [(m, b) for m in method_objs for b in benches]
    try:
        if workers is not None or address is not None:
            run_on_ray(method_objs, benches, metric_names, store, summary, out, plan, pool_options, device=device,
                       crop_to_match=crop_to_match, workers=workers, address=address, gpus_per_worker=gpus_per_worker,
                       progress=progress)
        else:
            pool = MetricPool(device, pool_options)
            for method, bench in tqdm(pairs, desc="method x dataset", disable=not progress):
                evaluate_pair(method, bench, metric_names, store, pool, summary, out, plan, crop_to_match=crop_to_match,
                              progress=progress)
    finally:
        store.merge()
        summary.seconds = time.perf_counter() - start
    return summary
