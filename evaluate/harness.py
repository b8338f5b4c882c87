"""The evaluation loop: methods x benchmark sets x metrics -> results.parquet, computing only missing rows.

SR outputs are kept under OUT/sr/<method>/<dataset>/<stem>.png and reused while the method's fingerprint is
unchanged. Finished rows are committed every half second and on any exception or Ctrl-C, so an interrupted run
keeps every finished image.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from srdistill.datasets.benchmarks import (
    Benchmark,
    MissingBenchmark,
    resolve_benchmarks,
)
from srdistill.datasets.images import BadImage, encode_png, read_rgb
from srdistill.evaluate import weights
from srdistill.evaluate.methods import Method, Unavailable, resolve_methods
from srdistill.evaluate.metrics import (
    DATASET_IMAGE,
    MetricPool,
    MetricUnavailable,
    metric_info,
    metric_version,
    parse_metrics,
)
from srdistill.evaluate.results import OK, ResultStore
from tqdm import tqdm

from srdistill.errors import UserError

FLUSH_SECONDS = 0.5  # finished rows are committed at least this often; a hard kill loses at most this much work
FINGERPRINT_FILE = ".fingerprint"


@dataclass
class EvalSummary:
    out: Path
    methods: list[str]
    datasets: list[str]
    metrics: list[str]
    unavailable_methods: list[Unavailable] = field(default_factory=list)
    missing_datasets: list[MissingBenchmark] = field(default_factory=list)
    skipped_metrics: dict[str, str] = field(default_factory=dict)
    not_applicable: list[str] = field(default_factory=list)  # "metric on dataset" (FR metric, LR-only set)
    rows_computed: int = 0
    rows_reused: int = 0
    rows_failed: int = 0
    sr_generated: int = 0
    seconds: float = 0.0
    hr_images: dict[str, dict[str, Path | None]] = field(default_factory=dict)  # dataset -> stem -> HR path

    def lines(self) -> list[str]:
        out = [f"evaluated {len(self.methods)} methods x {len(self.datasets)} datasets x {len(self.metrics)} metrics "
               f"in {self.seconds:.1f} s: {self.rows_computed} rows computed, {self.rows_reused} reused, "
               f"{self.rows_failed} not scored (reasons below and in the status column), {self.sr_generated} SR images generated"]
        out += [f"method {u.name} unavailable: {u.reason}" for u in self.unavailable_methods]
        out += [m.sentence() for m in self.missing_datasets]
        out += [f"metric {name} skipped: {reason}" for name, reason in sorted(self.skipped_metrics.items())]
        out += [f"not applicable (no HR): {', '.join(self.not_applicable)}"] if self.not_applicable else []
        return out


def sr_folder(out: Path, method: str, dataset: str) -> Path:
    return Path(out) / "sr" / method / dataset


def ensure_sr(method: Method, bench: Benchmark, out: Path, *, progress: bool = True) -> tuple[dict[str, Path | str], int]:
    """SR output path per stem (or an error sentence); generates what is missing. Returns (outputs, generated)."""
    folder = sr_folder(out, method.name, bench.name)
    stamp = folder / FINGERPRINT_FILE
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != method.fingerprint):
        shutil.rmtree(folder)  # outputs of another version of the method
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(method.fingerprint)
    outputs: dict[str, Path | str] = {}
    generated = 0
    todo = [item for item in bench.items if not (folder / f"{item.stem}.png").is_file()]
    done = {item.stem for item in bench.items} - {item.stem for item in todo}
    for stem in done:
        outputs[stem] = folder / f"{stem}.png"
    bar = tqdm(todo, desc=f"SR {method.name}/{bench.name}", leave=False, disable=not progress or not todo)
    for item in bar:
        target = folder / f"{item.stem}.png"
        try:
            if method.external:
                source = method.output_for(bench.name, item.stem)
                if source is None:
                    outputs[item.stem] = f"no SR output named {item.stem}.* in {method.folder}"
                    continue
                sr = read_rgb(source)
            else:
                sr = method.upscale(read_rgb(item.lr))
        except BadImage as exc:
            outputs[item.stem] = f"unreadable image: {exc}"
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(encode_png(sr))
        os.replace(tmp, target)
        outputs[item.stem] = target
        generated += 1
    return outputs, generated


def match_sizes(sr: np.ndarray, hr: np.ndarray, crop_to_match: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape == hr.shape:
        return sr, hr
    if not crop_to_match:
        raise UserError(f"{where}: SR is {sr.shape[1]}x{sr.shape[0]} but HR is {hr.shape[1]}x{hr.shape[0]}; "
                        f"fix the outputs or pass --crop-to-match to compare the common top-left area.")
    h, w = min(sr.shape[0], hr.shape[0]), min(sr.shape[1], hr.shape[1])
    return sr[:h, :w], hr[:h, :w]


def _row(method: Method, bench: Benchmark, image: str, metric: str, value: float, status: str, seconds: float,
         overrides: dict | None = None) -> dict:
    return {"method": method.name, "dataset": bench.name, "image": image, "metric": metric,
            "value": float(value), "status": status, "metric_version": metric_version(metric, overrides),
            "method_fingerprint": method.fingerprint, "dataset_fingerprint": bench.fingerprint,
            "dataset_meta": json.dumps(bench.meta, sort_keys=True), "seconds": float(seconds)}


def evaluate_pair(method: Method, bench: Benchmark, metrics: list[str], store: ResultStore, pool: MetricPool,
                  summary: EvalSummary, out: Path, *, crop_to_match: bool, progress: bool) -> None:
    """All missing rows of one (method, dataset)."""
    image_metrics = [m for m in metrics if metric_info(m).mode != "dataset"]
    dataset_metrics = [m for m in metrics if metric_info(m).mode == "dataset"]
    if not bench.has_hr:
        for m in metrics:
            if metric_info(m).mode in ("FR", "dataset"):
                note = f"{m} on {bench.name}"
                if note not in summary.not_applicable:
                    summary.not_applicable.append(note)
        image_metrics = [m for m in image_metrics if metric_info(m).mode == "NR"]
        dataset_metrics = []

    def needed(image: str, metric: str) -> bool:
        return not store.has((method.name, bench.name, image, metric), metric_version(metric, pool.overrides), method.fingerprint, bench.fingerprint)

    outputs, generated = ensure_sr(method, bench, out, progress=progress)
    summary.sr_generated += generated
    pending: list[dict] = []
    last_flush = time.monotonic()
    try:
        for item in tqdm(bench.items, desc=f"{method.name}/{bench.name}", leave=False, disable=not progress):
            todo = [m for m in image_metrics if needed(item.stem, m)]
            summary.rows_reused += len(image_metrics) - len(todo)
            if todo:
                pending += _score_image(method, bench, item, outputs[item.stem], todo, pool, summary, crop_to_match)
            if pending and time.monotonic() - last_flush >= FLUSH_SECONDS:
                store.add(pending)
                pending, last_flush = [], time.monotonic()
    finally:  # an exception or Ctrl-C still commits every finished image
        store.add(pending)
    for metric in dataset_metrics:
        if not needed(DATASET_IMAGE, metric):
            summary.rows_reused += 1
            continue
        store.add([_score_dataset(method, bench, metric, pool, summary, out)])


def _score_image(method, bench, item, output, metrics, pool, summary, crop_to_match) -> list[dict]:
    if isinstance(output, str):
        summary.rows_failed += len(metrics)
        return [_row(method, bench, item.stem, m, math.nan, f"error: {output}", 0.0, pool.overrides) for m in metrics]
    try:
        sr = read_rgb(output)
        needs_hr = item.hr is not None and any(metric_info(m).mode == "FR" for m in metrics)
        hr = read_rgb(item.hr) if needs_hr else None
    except BadImage as exc:
        summary.rows_failed += len(metrics)
        return [_row(method, bench, item.stem, m, math.nan, f"error: unreadable image: {exc}", 0.0, pool.overrides) for m in metrics]
    if hr is not None:
        sr, hr = match_sizes(sr, hr, crop_to_match, f"method {method.name}, {bench.name}/{item.stem}")
    rows = []
    for metric in metrics:
        try:
            scorer = pool.get(metric)
        except MetricUnavailable as exc:
            summary.skipped_metrics[metric] = str(exc)
            summary.rows_failed += 1
            rows.append(_row(method, bench, item.stem, metric, math.nan, f"skipped: {exc}", 0.0, pool.overrides))
            continue
        start = time.perf_counter()
        try:
            value = scorer.score(sr, hr)
            status = OK if math.isfinite(value) else "error: metric returned a non-finite value"
        except Exception as exc:  # one image failing a metric (e.g. too small) is recorded, the run goes on
            value, status = math.nan, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if status == OK:
            summary.rows_computed += 1
        else:
            summary.rows_failed += 1
        rows.append(_row(method, bench, item.stem, metric, value, status, time.perf_counter() - start, pool.overrides))
    return rows


def _score_dataset(method, bench, metric, pool, summary, out) -> dict:
    try:
        scorer = pool.get(metric)
    except MetricUnavailable as exc:
        summary.skipped_metrics[metric] = str(exc)
        summary.rows_failed += 1
        return _row(method, bench, DATASET_IMAGE, metric, math.nan, f"skipped: {exc}", 0.0, pool.overrides)
    start = time.perf_counter()
    try:
        value, status = scorer.score_folders(str(sr_folder(out, method.name, bench.name)), str(bench.hr_dir)), OK
    except Exception as exc:  # recorded as the row's status
        value, status = math.nan, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    summary.rows_computed += status == OK
    summary.rows_failed += status != OK
    return _row(method, bench, DATASET_IMAGE, metric, value, status, time.perf_counter() - start, pool.overrides)


def run_evaluation(methods: list[str] | str, datasets: list[str] | str, metrics: list[str] | str | None, out: Path, *,
                   extra_methods: dict[str, str] | None = None, data_root: str | None = None, hr: str | None = None,
                   lr: str | None = None, runs_root: str | None = None, device: str = "cpu", tile: int = 0,
                   crop_to_match: bool = False, weights_dir: str | None = None, progress: bool = True,
                   metric_opts: dict[str, dict] | None = None) -> EvalSummary:
    """Score every (method, dataset, image, metric) not yet in OUT/results.parquet; returns what was done.

    `metric_opts` maps a metric to extra pyiqa.create_metric options (recorded in metric_version).
    """
    start = time.perf_counter()
    out = Path(out)
    weights.configure_weights_dir(weights_dir)
    weights.install_shipped_weights()
    metric_names = parse_metrics(metrics)
    method_spec = methods if isinstance(methods, str) else ",".join(methods)
    dataset_spec = datasets if isinstance(datasets, str) else ",".join(datasets)
    method_objs, unavailable = resolve_methods(method_spec, extra_methods, runs_root=runs_root, device=device, tile=tile)
    benches, missing = resolve_benchmarks(dataset_spec, data_root=data_root, cache=out / "cache", hr=hr, lr=lr)
    summary = EvalSummary(out, [m.name for m in method_objs], [b.name for b in benches], metric_names, unavailable, missing)
    summary.hr_images = {b.name: {i.stem: i.hr for i in b.items} for b in benches}
    store = ResultStore(out)
    pool = MetricPool(device, metric_opts)
    pairs = [(m, b) for m in method_objs for b in benches]
    try:
        for method, bench in tqdm(pairs, desc="method x dataset", disable=not progress):
            evaluate_pair(method, bench, metric_names, store, pool, summary, out, crop_to_match=crop_to_match, progress=progress)
    finally:
        store.merge()
        summary.seconds = time.perf_counter() - start
    return summary
