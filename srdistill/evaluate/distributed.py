"""`evaluate leaderboard --workers N`: the evaluation loop as `srdistill.core.cluster` work units on Ray.

The units are fixed before any work starts: one per (method, set, chunk of CHUNK_IMAGES images) that still lacks
an SR output or a row, then one per (method, set, folder-level metric) such as FID, run after every image of the
set exists. A unit generates its images' SR outputs and scores them with the same code as the single-process
path (scoring.py), on one of `srdistill.core.cluster`'s runner actors, whose process keeps each method's network and
each built metric for every later unit it runs. Its rows come back to the driver, which writes them through
ResultStore as one part file per unit, so N workers give the rows one gives, and a unit lost with its node is run
again without its rows being written twice.

Every node must see OUT, the sets and the methods' files at the same paths (a shared folder). The download and
weights settings of the command reach every worker through the tasks' runtime_env.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from srdistill.datasets.benchmarks import Benchmark
from srdistill.core.iqa import weights
from srdistill.evaluate.scoring import (
    EvalSummary,
    MetricPlan,
    generate_sr,
    open_sr_folder,
    pair_metrics,
    row_needed,
    score_dataset,
    score_image,
    sr_folder,
    sr_set_name,
)
from srdistill.evaluate.methods.registry import Method
from srdistill.core.iqa.metrics import DATASET_IMAGE, MetricPool
from srdistill.evaluate.results import ResultStore

from srdistill.core.fetch import download
from srdistill.core.cluster import Unit, connect, needs_cluster, run_units
from srdistill.core.errors import UserError

CHUNK_IMAGES = 8  # images per unit: small enough to balance and to lose little with a node, large enough to amortize a task
# What a worker must agree on with the command: download policy and where weights live.
FORWARDED_ENV = (download.OFFLINE_ENV, download.MIRROR_ENV, download.HF_ENDPOINT_ENV, "HF_HUB_OFFLINE",
                 weights.WEIGHTS_ENV, "TORCH_HOME", "HF_HOME")


@dataclass(frozen=True)
class UnitSettings:
    """What every unit of one run shares."""

    out: str
    plan: MetricPlan
    pool_options: dict
    device: str
    crop_to_match: bool


@dataclass
class UnitOutcome:
    rows: list[dict]
    summary: EvalSummary


# Per runner process: methods with their loaded networks, and built metrics, kept across units.
_WORKER: dict[str, dict] = {"methods": {}, "pools": {}, "configured": {}}


def _worker_method(method: Method) -> Method:
    key = (type(method).__name__, method.name, method.fingerprint, str(getattr(method, "device", "")),
           getattr(method, "tile", getattr(method, "_tile", 0)))
    return _WORKER["methods"].setdefault(key, method)


def _worker_pool(settings: UnitSettings) -> MetricPool:
    env = tuple(os.environ.get(name, "") for name in FORWARDED_ENV)
    if env not in _WORKER["configured"]:
        import cv2

        cv2.setNumThreads(1)  # one core per runner: each holds one CPU
        download.configure()
        weights.configure_weights_dir(None)  # from the forwarded SRDISTILL_WEIGHTS, if any
        weights.install_shipped_weights()
        _WORKER["configured"][env] = True
    key = (settings.device, json.dumps(settings.pool_options, sort_keys=True, default=str), env)
    if key not in _WORKER["pools"]:
        _WORKER["pools"][key] = MetricPool(settings.device, settings.pool_options)
    return _WORKER["pools"][key]


def image_unit(settings: UnitSettings, method: Method, chunk: Benchmark, todo: dict[str, list[str]], *,
               report) -> UnitOutcome:
    """SR outputs for the chunk's images (missing ones generated), then their rows for the metrics in `todo`."""
    method = _worker_method(method)
    pool = _worker_pool(settings)
    out = Path(settings.out)
    summary = EvalSummary(out, [], [], [])
    outputs, summary.sr_generated = generate_sr(method, chunk, sr_folder(out, method.name, sr_set_name(chunk)),
                                                progress=False)
    rows: list[dict] = []
    for n, item in enumerate(chunk.items, start=1):
        if todo[item.stem]:
            rows += score_image(method, chunk, item, outputs[item.stem], todo[item.stem], pool, summary,
                                 settings.crop_to_match, settings.plan)
        report(n)
    return UnitOutcome(rows, summary)


def dataset_unit(settings: UnitSettings, method: Method, bench: Benchmark, metric: str, *, report) -> UnitOutcome:
    """One folder-level row (e.g. FID) over the set's SR folder, which the image units have filled."""
    summary = EvalSummary(Path(settings.out), [], [], [])
    row = score_dataset(_worker_method(method), bench, metric, _worker_pool(settings), summary, Path(settings.out),
                         settings.plan)
    report(1)
    return UnitOutcome([row], summary)


def _absorb(summary: EvalSummary, part: EvalSummary) -> None:
    summary.rows_computed += part.rows_computed
    summary.rows_failed += part.rows_failed
    summary.sr_generated += part.sr_generated
    summary.skipped_metrics.update(part.skipped_metrics)
    for key, n in part.failures.items():
        summary.failures[key] = summary.failures.get(key, 0) + n


def worker_runtime_env() -> dict | None:
    """The Ray runtime_env that gives every worker, on any node, this process's download and weights settings."""
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    return {"env_vars": env} if env else None


def check_options(workers: int | None, address: str | None, gpus_per_worker: float) -> None:
    """Refuse Ray options that make no sense before anything starts."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    if gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker:g}.")
    if gpus_per_worker and workers is None and address is None:
        raise UserError("--gpus-per-worker places Ray workers; give --workers N (and --address to join a cluster).")


def _check_listening(address: str) -> None:
    """A HOST:PORT nothing listens on is said at once (Ray itself retries for over a minute)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]\s]+?)\]?:(\d+)", address)
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UserError(f"nothing answers at --address {address} ({exc.strerror or exc}); start the cluster there "
                        "(`ray start --head`), correct the address, or leave out --address to use a local one.") from exc


def _check_gpus(gpus_per_worker: float) -> None:
    import ray

    have = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_worker > have:
        raise UserError(f"--gpus-per-worker {gpus_per_worker:g} asks for GPUs, but the Ray cluster has "
                        f"{have:g}; leave --gpus-per-worker out to run on CPUs, or join a cluster with GPUs.")


def plan_units(method_objs: list[Method], benches: list[Benchmark], metrics: list[str], store: ResultStore,
               summary: EvalSummary, out: Path, plan: MetricPlan, chunk: int) -> tuple[list[Unit], list[Unit]]:
    """(image units, folder-metric units) for every missing SR output and row; counts reused rows in `summary`."""
    image_units: list[Unit] = []
    folder_units: list[Unit] = []
    for method in method_objs:
        for bench in benches:
            image_metrics, dataset_metrics = pair_metrics(bench, metrics, summary)
            folder = open_sr_folder(method, bench, out)
            for start in range(0, len(bench.items), chunk):
                items = bench.items[start:start + chunk]
                todo = {i.stem: [m for m in image_metrics if row_needed(store, plan, method, bench, i.stem, m)]
                        for i in items}
                summary.rows_reused += sum(len(image_metrics) - len(t) for t in todo.values())
                if any(todo.values()) or any(not (folder / f"{i.stem}.png").is_file() for i in items):
                    part = dataclasses.replace(bench, items=items, notes=[], left_out=[])
                    image_units.append(Unit(f"{method.name}|{bench.name}|{start}", (method, part, todo), len(items)))
            for metric in dataset_metrics:
                if row_needed(store, plan, method, bench, DATASET_IMAGE, metric):
                    part = dataclasses.replace(bench, items=[], notes=[], left_out=[])
                    folder_units.append(Unit(f"{method.name}|{bench.name}|{metric}", (method, part, metric)))
                else:
                    summary.rows_reused += 1
    return image_units, folder_units


def run_on_ray(method_objs: list[Method], benches: list[Benchmark], metrics: list[str], store: ResultStore,
               summary: EvalSummary, out: Path, plan: MetricPlan, pool_options: dict, *, device: str,
               crop_to_match: bool, workers: int | None, address: str | None, gpus_per_worker: float,
               progress: bool) -> int:
    """Every missing row on Ray, written through `store` as units finish; returns the worker slots used. With one
    worker and no cluster to join (`--workers 1`) the units run in this process, without starting Ray."""
    if address and address not in ("local", "auto"):
        _check_listening(address)
    image_units, folder_units = plan_units(method_objs, benches, metrics, store, summary, out, plan, CHUNK_IMAGES)
    units = [*image_units, *folder_units]
    if not units or (not gpus_per_worker and not needs_cluster(units, workers, address)):
        started, slots = False, 1
    else:
        started, slots = connect(workers, address)
    try:
        if gpus_per_worker:
            _check_gpus(gpus_per_worker)
        settings = UnitSettings(str(out), plan, pool_options, device, crop_to_match)

        def record(unit: Unit, outcome: UnitOutcome) -> None:
            store.add(outcome.rows)
            _absorb(summary, outcome.summary)

        common = {"shared": (settings,), "workers": slots, "progress": progress, "on_done": record,
                  "num_gpus": gpus_per_worker, "runtime_env": worker_runtime_env()}
        if image_units:
            run_units(image_unit, image_units, desc="evaluate", unit="img", **common)
        if folder_units:
            run_units(dataset_unit, folder_units, desc="evaluate (folder metrics)", unit="set", **common)
    finally:
        if started:
            import ray

            ray.shutdown()
    return slots
