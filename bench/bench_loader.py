"""Shard loader throughput: (LR, HR) pairs per second per loader worker for 512x512 HR crops, offline and online.

offline: decode the stored HR/LR PNGs, paired crop, flips (what training reads from `degrade build` shards).
online:  decode the HR only and re-degrade each crop in the worker with the full Real-ESRGAN pipeline.
peer:    webdataset's own tar reading + PNG decode of both members with no augmentation, the floor of any loader.

    .venv/bin/python bench/bench_loader.py                      # builds 512-crop shards from the sample first
    .venv/bin/python bench/bench_loader.py --shards shards/ --workers 1 2 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds
from srdistill.training.loader import make_loader, shard_urls


def build_shards(out: Path, crop: int, per_image: int) -> Path:
    from srdistill.degrade.build.builder import build

    build("sample", str(out), "bicubic", crop=crop, crops_per_image=per_image, shard_samples=8, seed=0, workers=2,
          address="local", progress=False, command="bench_loader")
    return out


def time_loader(shards, *, crop, batch_size, workers, online, epochs) -> float:
    """Steady-state pairs/s: each epoch's clock starts at its first batch (worker start-up is not counted)."""
    pairs, seconds = 0, 0.0
    for epoch in range(epochs):
        it = make_loader(shards, batch_size=batch_size, crop=crop, seed=0, epoch=epoch, num_workers=workers,
                         online_spec="realesrgan" if online else None, shuffle_buffer=16)
        next(it)
        t0 = time.perf_counter()
        for batch in it:
            pairs += batch["lr"].shape[0]
        seconds += time.perf_counter() - t0
    return pairs / seconds


def time_peer(shards, epochs) -> float:
    pairs, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for sample in wds.DataPipeline(wds.SimpleShardList(shard_urls(shards)), wds.tarfile_to_samples()):
            for k in ("hr.png", "lr.png"):
                cv2.imdecode(np.frombuffer(sample[k], np.uint8), cv2.IMREAD_COLOR)
            pairs += 1
    return pairs / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", default=None, help="existing shards with HR samples of at least --crop (default: build from the sample)")
    p.add_argument("--crop", type=int, default=512, help="HR crop side (default 512)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="loader worker counts to time (default 1 2)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the shards per measurement (offline)")
    p.add_argument("--per-image", type=int, default=8, help="crops per sample image when building shards")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or build_shards(Path(tmp) / "shards", args.crop, args.per_image)
        n = sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(shard_urls(shards)), wds.tarfile_to_samples()))
        print(f"shards: {shards} ({n} samples), HR crop {args.crop}, batch {args.batch_size}")
        peer = time_peer(shards, args.epochs)
        print(f"peer (webdataset read + PNG decode, 1 process): {peer:8.2f} pairs/s")
        print(f"{'mode':<8} {'workers':>7} {'pairs/s':>9} {'pairs/s/core':>13} {'vs peer':>8}")
        for online in (False, True):
            for w in args.workers:
                rate = time_loader(shards, crop=args.crop, batch_size=args.batch_size, workers=w, online=online,
                                      epochs=1 if online else args.epochs)
                per_core = rate / max(w, 1)
                print(f"{'online' if online else 'offline':<8} {w:>7} {rate:9.2f} {per_core:13.2f} {per_core / peer:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
