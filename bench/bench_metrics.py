"""Metric throughput (images/s per metric) and the harness's overhead over calling pyiqa directly.

Run: .venv/bin/python bench/bench_metrics.py [--images 16] [--size 256] [--device cpu]
Images are crops of scikit-image's bundled photos; SR = bicubic x4 of an area-downscaled LR. Metrics are those
that build offline here (psnry, ssim, niqe from shipped parameters; musiq with random weights, the same cost as the
real one; lpips on its SqueezeNet backbone with random weights, as pyiqa's AlexNet variant needs torchvision's file). Both sides read the same PNGs from disk and build their metrics inside the timed region.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from srdistill.datasets.benchmarks import folder_benchmark
from srdistill.datasets.images import encode_png, read_rgb
from srdistill.core.iqa import weights
from srdistill.evaluate.harness import run_evaluation
from srdistill.evaluate.methods.registry import ExternalOutputs
from srdistill.evaluate.scoring import ensure_sr
from srdistill.core.iqa.metrics import metric_info, metric_options, to_tensor

RANDOM = {"lpips": {"net": "squeeze", "pretrained": False, "pnet_rand": True}, "musiq": {"pretrained": False}}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def make_images(root: Path, n: int, size: int) -> tuple[Path, Path, Path]:
    hr_dir, lr_dir, sr_dir = root / "HR", root / "LR", root / "SR"
    for d in (hr_dir, lr_dir, sr_dir):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        top, left = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        hr = np.ascontiguousarray(img[top:top + size, left:left + size])
        lr = cv2.resize(hr, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
        sr = cv2.resize(lr, (size, size), interpolation=cv2.INTER_CUBIC)
        for d, im in ((hr_dir, hr), (lr_dir, lr), (sr_dir, sr)):
            (d / f"{i:03d}.png").write_bytes(encode_png(im))
    return hr_dir, lr_dir, sr_dir


def direct(metric: str, hr_dir: Path, sr_dir: Path, device: str, fr: bool) -> float:
    import pyiqa

    start = time.perf_counter()
    model = pyiqa.create_metric(metric, device=device, **metric_options(metric, RANDOM))
    for path in sorted(sr_dir.glob("*.png")):
        sr = to_tensor(read_rgb(path)).to(device)
        with torch.no_grad():
            model(sr, to_tensor(read_rgb(hr_dir / path.name)).to(device)) if fr else model(sr)
    return time.perf_counter() - start


def harness(metric: str, hr_dir: Path, lr_dir: Path, sr_dir: Path, out: Path, device: str) -> float:
    """A fresh results folder whose SR copies are already in place; times the whole run_evaluation call."""
    ensure_sr(ExternalOutputs("sr", sr_dir), folder_benchmark(hr_dir, lr_dir), out, progress=False)
    start = time.perf_counter()
    run_evaluation("", "", metric, out, extra_methods={"sr": str(sr_dir)}, hr=str(hr_dir), lr=str(lr_dir),
                   device=device, progress=False, metric_opts=RANDOM)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="HR side in pixels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--metrics", default="psnry,ssim,niqe,lpips,musiq")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("SRDISTILL_WEIGHTS", str(root / "weights"))
        weights.configure_weights_dir()
        weights.install_shipped_weights()
        hr_dir, lr_dir, sr_dir = make_images(root, args.images, args.size)
        # warm-up: one-time imports and the shipped NIQE file, so both sides time only metric work
        run_evaluation("", "", "psnry,niqe", root / "warm", extra_methods={"sr": str(sr_dir)}, hr=str(hr_dir),
                       lr=str(lr_dir), progress=False)
        print(f"device={args.device} images={args.images} size={args.size}x{args.size} torch_threads={torch.get_num_threads()}"
              f" best of {args.repeat} alternating runs")
        print(f"{'metric':<8} {'direct img/s':>13} {'harness img/s':>14} {'overhead':>9}")
        for metric in args.metrics.split(","):
            fr = metric_info(metric).mode == "FR"
            d, h = [], []
            for rep in range(args.repeat):
                d.append(direct(metric, hr_dir, sr_dir, args.device, fr))
                h.append(harness(metric, hr_dir, lr_dir, sr_dir, root / f"out-{metric}-{rep}", args.device))
            d, h = min(d), min(h)
            print(f"{metric:<8} {args.images / d:>13.2f} {args.images / h:>14.2f} {100 * (h - d) / d:>8.1f}%")


if __name__ == "__main__":
    main()
