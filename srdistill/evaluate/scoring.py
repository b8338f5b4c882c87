"""Scoring one method on one benchmark set: SR outputs kept and reused under OUT/sr/, metric rows computed only
where missing, finished rows committed every half second. The in-process loop (harness.py) and the Ray units
(distributed.py) both run these functions, so both write the same rows.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from srdistill.datasets.benchmarks import Benchmark, MissingBenchmark
from srdistill.datasets.images import BadImage, encode_png, read_rgb
from srdistill.evaluate.methods.registry import Method, Unavailable
from srdistill.core.iqa.metrics import (
    DATASET_IMAGE,
    MetricPool,
    MetricUnavailable,
    metric_info,
    metric_version,
)
from srdistill.evaluate.patches import cut_patch_folders
from srdistill.evaluate.protocol import UNSPECIFIED, Protocol
from srdistill.evaluate.results import KEY, OK, ResultStore
from tqdm import tqdm

from srdistill.core import atomic
from srdistill.core.errors import UserError

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
    protocol: Protocol | None = None
    failures: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (method, dataset, status) -> rows
    sr_sets: dict[str, dict[str, Path | None]] = field(default_factory=dict)  # SR folder name -> stem -> HR path
    lr_sets: dict[str, dict[str, Path]] = field(default_factory=dict)  # SR folder name -> stem -> LR path
    counterparts: dict[str, list[str]] = field(default_factory=dict)  # method -> reported method ids it reproduces

    def fail(self, method: str, dataset: str, status: str, rows: int = 1) -> None:
        self.rows_failed += rows
        if not status.startswith("skipped: "):  # a skipped metric's reason is its own line
            key = (method, dataset, status)
            self.failures[key] = self.failures.get(key, 0) + rows

    def lines(self) -> list[str]:
        reasons = " (reasons below and in the status column)" if self.rows_failed else ""
        head = f"under protocol {self.protocol.name} ({self.protocol.hash}) " if self.protocol is not None else ""
        out = [f"evaluated {len(self.methods)} methods x {len(self.datasets)} datasets x {len(self.metrics)} metrics "
               f"{head}in {self.seconds:.1f} s: {self.rows_computed} rows computed, {self.rows_reused} reused, "
               f"{self.rows_failed} not scored{reasons}, {self.sr_generated} SR images generated"]
        out += [f"method {u.name} unavailable: {u.reason}" for u in self.unavailable_methods]
        out += [m.sentence() for m in self.missing_datasets]
        out += [f"metric {name} skipped: {reason}" for name, reason in sorted(self.skipped_metrics.items())]
        out += [f"not scored: {m} on {d}, {n} rows: {status}" for (m, d, status), n in sorted(self.failures.items())]
        out += [f"not applicable (no HR): {', '.join(self.not_applicable)}"] if self.not_applicable else []
        if self.protocol is not None and self.protocol.unspecified():
            out.append(f"protocol {self.protocol.name} leaves unspecified (run at defaults, shown in leaderboard.md): "
                       + ", ".join(self.protocol.unspecified()))
        return out


def sr_folder(out: Path, method: str, dataset: str) -> Path:
    return Path(out) / "sr" / method / dataset


def sr_set_name(bench: Benchmark) -> str:
    """The SR folder name of a (prepared) set: its name, plus @<preparation hash> when the protocol changed its pixels."""
    tag = bench.meta.get("prep_tag")
    return f"{bench.name}@{tag}" if tag else bench.name


def open_sr_folder(method: Method, bench: Benchmark, out: Path) -> Path:
    """The SR folder of (method, set), emptied first if it holds outputs of another method version or other inputs."""
    folder = sr_folder(out, method.name, sr_set_name(bench))
    stamp = folder / FINGERPRINT_FILE
    identity = f"{method.fingerprint}\n{bench.fingerprint}"
    if folder.is_dir() and (not stamp.is_file() or stamp.read_text() != identity):
        shutil.rmtree(folder)  # outputs of another version of the method, or of other input images
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(identity)
    return folder


def generate_sr(method: Method, bench: Benchmark, folder: Path, *, progress: bool = True) -> tuple[dict[str, Path | str], int]:
    """SR output path per stem of `bench.items` (or an error sentence), generating the missing ones into `folder`.
    Returns (outputs, generated)."""
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
        atomic.write_bytes(target, encode_png(sr))
        outputs[item.stem] = target
        generated += 1
    return outputs, generated


def ensure_sr(method: Method, bench: Benchmark, out: Path, *, progress: bool = True) -> tuple[dict[str, Path | str], int]:
    """SR output path per stem (or an error sentence); generates what is missing. Returns (outputs, generated)."""
    return generate_sr(method, bench, open_sr_folder(method, bench, out), progress=progress)


def match_sizes(sr: np.ndarray, hr: np.ndarray, crop_to_match: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape == hr.shape:
        return sr, hr
    if not crop_to_match:
        raise UserError(f"{where}: SR is {sr.shape[1]}x{sr.shape[0]} but HR is {hr.shape[1]}x{hr.shape[0]}; "
                        f"fix the outputs or pass --crop-to-match to compare the common top-left area.")
    h, w = min(sr.shape[0], hr.shape[0]), min(sr.shape[1], hr.shape[1])
    return sr[:h, :w], hr[:h, :w]


@dataclass(frozen=True)
class MetricPlan:
    """Per metric: the options as the protocol states them (with `unspecified`) and the version they give rows."""

    protocol: Protocol
    stated: dict[str, dict]

    def version(self, metric: str) -> str:
        return metric_version(metric, options=self.stated[metric])


def _row(method: Method, bench: Benchmark, image: str, metric: str, value: float, status: str, seconds: float,
         plan: MetricPlan) -> dict:
    return {"method": method.name, "dataset": bench.name, "protocol": plan.protocol.name, "image": image,
            "metric": metric, "value": float(value), "status": status, "metric_version": plan.version(metric),
            "method_fingerprint": method.fingerprint, "dataset_fingerprint": bench.fingerprint,
            "dataset_meta": json.dumps(bench.meta, sort_keys=True), "seconds": float(seconds),
            "protocol_hash": plan.protocol.hash}


def pair_metrics(bench: Benchmark, metrics: list[str], summary: EvalSummary) -> tuple[list[str], list[str]]:
    """(per-image metrics, folder-level metrics) that apply to `bench`; FR and folder metrics on an LR-only set are
    noted as not applicable."""
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
    return image_metrics, dataset_metrics


def row_needed(store: ResultStore, plan: MetricPlan, method: Method, bench: Benchmark, image: str, metric: str) -> bool:
    """No usable row of (method, set, image, metric) under this plan's versions and fingerprints exists yet."""
    values = {"method": method.name, "dataset": bench.name, "protocol": plan.protocol.name, "image": image, "metric": metric}
    return not store.has(tuple(values[k] for k in KEY), plan.version(metric), method.fingerprint, bench.fingerprint,
                         plan.protocol.hash)


def evaluate_pair(method: Method, bench: Benchmark, metrics: list[str], store: ResultStore, pool: MetricPool,
                  summary: EvalSummary, out: Path, plan: MetricPlan, *, crop_to_match: bool, progress: bool) -> None:
    """All missing rows of one (method, dataset)."""
    image_metrics, dataset_metrics = pair_metrics(bench, metrics, summary)

    def needed(image: str, metric: str) -> bool:
        return row_needed(store, plan, method, bench, image, metric)

    outputs, generated = ensure_sr(method, bench, out, progress=progress)
    summary.sr_generated += generated
    pending: list[dict] = []
    last_flush = time.monotonic()
    try:
        for item in tqdm(bench.items, desc=f"{method.name}/{bench.name}", leave=False, disable=not progress):
            todo = [m for m in image_metrics if needed(item.stem, m)]
            summary.rows_reused += len(image_metrics) - len(todo)
            if todo:
                pending += score_image(method, bench, item, outputs[item.stem], todo, pool, summary, crop_to_match, plan)
            if pending and time.monotonic() - last_flush >= FLUSH_SECONDS:
                store.add(pending)
                pending, last_flush = [], time.monotonic()
    finally:  # an exception or Ctrl-C still commits every finished image
        store.add(pending)
    for metric in dataset_metrics:
        if not needed(DATASET_IMAGE, metric):
            summary.rows_reused += 1
            continue
        store.add([score_dataset(method, bench, metric, pool, summary, out, plan)])


def score_image(method, bench, item, output, metrics, pool, summary, crop_to_match, plan) -> list[dict]:
    """One image's rows for `metrics` (`output`: its SR file, or why there is none); counts go to `summary`."""
    if isinstance(output, str):
        summary.fail(method.name, bench.name, f"error: {output}", len(metrics))
        return [_row(method, bench, item.stem, m, math.nan, f"error: {output}", 0.0, plan) for m in metrics]
    try:
        sr = read_rgb(output)
        needs_hr = item.hr is not None and any(metric_info(m).mode == "FR" for m in metrics)
        hr = read_rgb(item.hr) if needs_hr else None
    except BadImage as exc:
        summary.fail(method.name, bench.name, f"error: unreadable image: {exc}", len(metrics))
        return [_row(method, bench, item.stem, m, math.nan, f"error: unreadable image: {exc}", 0.0, plan) for m in metrics]
    if hr is not None:
        sr, hr = match_sizes(sr, hr, crop_to_match, f"method {method.name}, {bench.name}/{item.stem}")
    rows = []
    for metric in metrics:
        try:
            scorer = pool.get(metric)
        except MetricUnavailable as exc:
            summary.skipped_metrics[metric] = str(exc)
            summary.fail(method.name, bench.name, f"skipped: {exc}")
            rows.append(_row(method, bench, item.stem, metric, math.nan, f"skipped: {exc}", 0.0, plan))
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
            summary.fail(method.name, bench.name, f"{metric} {status}")
        rows.append(_row(method, bench, item.stem, metric, value, status, time.perf_counter() - start, plan))
    return rows


def score_dataset(method, bench, metric, pool, summary, out, plan) -> dict:
    """The folder-level row of `metric` (e.g. FID) over the (method, set) SR folder against the set's HR folder."""
    try:
        scorer = pool.get(metric)
    except MetricUnavailable as exc:
        summary.skipped_metrics[metric] = str(exc)
        summary.fail(method.name, bench.name, f"skipped: {exc}")
        return _row(method, bench, DATASET_IMAGE, metric, math.nan, f"skipped: {exc}", 0.0, plan)
    start = time.perf_counter()
    try:
        sr_dir, hr_dir = sr_folder(out, method.name, sr_set_name(bench)), Path(bench.hr_dir)
        size = plan.stated[metric].get("patch_size", UNSPECIFIED)
        if size != UNSPECIFIED:
            stride = plan.stated[metric].get("patch_stride", UNSPECIFIED)
            stride = size if stride == UNSPECIFIED else stride
            dest = out / "cache" / "patches" / f"{method.name}@{sr_set_name(bench)}@{size}-{stride}"
            sr_dir, hr_dir = cut_patch_folders(sr_dir, hr_dir, dest, size, stride)
        value, status = scorer.score_folders(str(sr_dir), str(hr_dir)), OK
    except Exception as exc:  # recorded as the row's status
        value, status = math.nan, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    summary.rows_computed += status == OK
    if status != OK:
        summary.fail(method.name, bench.name, f"{metric} {status}")
    return _row(method, bench, DATASET_IMAGE, metric, value, status, time.perf_counter() - start, plan)
