"""Throughput of `degrade curate`'s weight-free scores at 1024x1024, in one process and on Ray with 1 then 2 workers.

Prints:
- images/s on one core for `weight_free_scores` alone (decoded images in memory, the median of --repeat passes);
- for each worker count, images/s of a whole `curate` run over a folder of PNGs (decode + sha256 + scores +
  part files; Ray and its worker processes started and warmed up before the clock starts), and per worker;
then the scaling efficiency: throughput at N workers / (N x throughput at 1 worker).
The images are scikit-image's sample photos resized to 1024x1024 and repeated to --images files.

    .venv/bin/python bench/bench_curate.py [--images 48] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from srdistill.datasets.sources import SAMPLE_PHOTOS, sample_dir
from srdistill.degrade.curate.run import curate
from srdistill.degrade.curate.scores import weight_free_scores

SIDE = 1024


def photos(n: int) -> list[np.ndarray]:
    base = [cv2.resize(np.asarray(Image.open(sample_dir() / name).convert("RGB")), (SIDE, SIDE),
                       interpolation=cv2.INTER_CUBIC) for name in SAMPLE_PHOTOS]
    return [base[i % len(base)] for i in range(n)]


def single_core(images: list[np.ndarray], repeat: int) -> float:
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for img in images:
            weight_free_scores(img)
        rates.append(len(images) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _warm(workers: int) -> None:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

    @ray.remote(num_cpus=1)
    def warm() -> None:
        import srdistill.degrade.curate.run  # noqa: F401

        time.sleep(1.0)  # hold the slot so each warm-up lands in its own worker process

    ray.get([warm.remote() for _ in range(workers)])


def on_ray(folder: Path, n: int, workers: int) -> float:
    import ray

    _warm(workers)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-curate-") as out:
            t0 = time.perf_counter()
            curate(str(folder), f"{out}/scores.parquet", workers=workers, progress=False)
            return n / (time.perf_counter() - t0)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    images = photos(args.images)
    rate = single_core(images[: len(SAMPLE_PHOTOS)], args.repeat)
    print(f"weight-free scores at {SIDE}x{SIDE}, one core: {rate:.2f} images/s")
    with tempfile.TemporaryDirectory(prefix="bench-curate-src-") as src:
        for i, img in enumerate(images):
            Image.fromarray(img).save(Path(src) / f"{i:05d}.png", compress_level=1)
        rates = {}
        for w in args.workers:
            rates[w] = on_ray(Path(src), len(images), w)
            print(f"curate on Ray, {w} worker(s): {rates[w]:.2f} images/s ({rates[w] / w:.2f} per worker)")
    if 1 in rates:
        for w in (w for w in rates if w > 1):
            print(f"scaling efficiency at {w} workers: {rates[w] / (w * rates[1]):.2f}")


if __name__ == "__main__":
    main()
