"""Throughput and scaling of `evaluate leaderboard --workers N`: a fixed method x metric set, 1 then 2 workers.

The set: PAIRS HR/LR pairs of 128x128 crops of scikit-image photos (LR = area x4), methods bicubic and lanczos,
metrics psnry, ssim and niqe (all ready offline). Every run writes into a fresh folder, so every row is computed.
Prints images/s (method x image per wall second) for:
- the single-process path (no Ray; one torch/OpenCV thread, as each Ray worker has), timed after a warm-up run
  on other images has imported pyiqa and built the metrics;
- Ray with 1 and 2 workers on one embedded cluster, timed after a warm-up run has started the runner actors
  and built their metrics (the cluster's start-up and that warm-up are printed apart);
and images per CPU-second of this process and its Ray worker processes together (load-insensitive: on a busy
machine the wall clock also counts time the workers waited for a core); then the scaling efficiency (2-worker
images/s / 2 x 1-worker images/s), the same ratio of images per CPU-second, and the Ray overhead at 1 worker
over the single-process path. Target (issue 9): efficiency >= 0.8 at 2 workers on the CPU.

    .venv/bin/python bench/bench_eval_ray.py [--pairs 48] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

METHODS = "bicubic,lanczos"
METRICS = "psnry,ssim,niqe"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def make_pairs(root: Path, n: int, size: int = 128) -> tuple[Path, Path]:
    """n HR/LR pairs: size x size crops stepping over scikit-image's colour photos, LR by area downscale x4."""
    import skimage.data

    for folder in ("HR", "LR"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        step = i // len(PHOTOS)
        top = (step * 37) % (photo.shape[0] - size)
        left = (step * 53) % (photo.shape[1] - size)
        hr = np.ascontiguousarray(photo[top:top + size, left:left + size])
        lr = cv2.resize(hr, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "HR" / f"im{i:03d}.png"), cv2.cvtColor(hr, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "LR" / f"im{i:03d}.png"), cv2.cvtColor(lr, cv2.COLOR_RGB2BGR))
    return root / "HR", root / "LR"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its Ray worker processes (titled "ray::...") so far."""
    total = sum(psutil.Process().cpu_times()[:2])
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name().startswith("ray::") or " ".join(proc.cmdline()).startswith("ray::"):
                total += sum(proc.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


def timed(pairs: tuple[Path, Path], out: Path, **kw) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, rows computed) of one evaluation into a fresh folder."""
    from srdistill.evaluate.harness import run_evaluation

    start, cpu = time.perf_counter(), cpu_seconds()
    summary = run_evaluation(METHODS, "", METRICS, out, hr=str(pairs[0]), lr=str(pairs[1]), progress=False, **kw)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert summary.rows_failed == 0, summary.lines()
    return seconds, cpu, summary.rows_computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import ray
    import torch

    os.environ.setdefault("SRDISTILL_OFFLINE", "1")  # these metrics need no download; fetch nothing
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    images = 2 * args.pairs  # methods x images
    print(f"{args.pairs} pairs x 2 methods = {images} SR images, metrics {METRICS}; os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = make_pairs(root / "data", args.pairs)
        warm = make_pairs(root / "warm", 2 * max(args.workers))
        timed(warm, root / "warm-single")
        seconds, cpu, rows = timed(pairs, root / "single")
        single = images / seconds
        print(f"single process:  {seconds:6.1f} s  {single:6.2f} img/s  {images / cpu:6.2f} img/CPU-s  ({rows} rows)")
        t0 = time.perf_counter()
        ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        started = time.perf_counter() - t0
        warm_s, _, _ = timed(warm, root / "warmup", workers=max(args.workers))
        print(f"ray start-up {started:.1f} s, warm-up run (runner actors, imports, metric builds) {warm_s:.1f} s")
        rates, per_cpu = {}, {}
        try:
            for n in args.workers:
                seconds, cpu, rows = timed(pairs, root / f"ray{n}", workers=n)
                rates[n], per_cpu[n] = images / seconds, images / cpu
                print(f"ray {n} worker(s): {seconds:6.1f} s  {rates[n]:6.2f} img/s  {per_cpu[n]:6.2f} img/CPU-s  "
                      f"({rows} rows)")
        finally:
            ray.shutdown()
    if 1 in rates:
        print(f"ray overhead at 1 worker over the single process: {single / rates[1] - 1:+.1%} wall time")
        for n in (w for w in args.workers if w > 1):
            print(f"scaling efficiency at {n} workers: {rates[n] / (n * rates[1]):.2f} wall clock (target >= 0.8), "
                  f"{per_cpu[n] / per_cpu[1]:.2f} in images per CPU-second")
    print(f"load average {os.getloadavg()[0]:.2f} at end (a shared machine: other processes compete for the cores)")


if __name__ == "__main__":
    main()
