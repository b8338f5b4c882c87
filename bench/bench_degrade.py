"""Benchmark: Real-ESRGAN degradation of 512x512 crops, ours (numpy/OpenCV) vs the reference (basicsr +
realesrgan on the CPU), one image at a time on one core.

Each side runs in its own subprocess pinned to one thread (clean peak-RSS figures, no shared imports).
The reference side is RealESRGANDataset.__getitem__ (kernel sampling) + RealESRGANModel.feed_data
(the degradation), as in Real-ESRGAN training, with the model's GPU-only training-pair pool turned off
(srdistill.degrade.inspect.reference.ReferenceDegrader).

    .venv/bin/python bench/bench_degrade.py --images 60 --ref-images 8
    .venv/bin/python bench/bench_degrade.py --per-op --images 8     # ms per 512x512 image for every op
    .venv/bin/python bench/bench_degrade.py --jpeg                   # DiffJPEG against libjpeg, ms per call

`--per-op` times each op of the library (degrade/ops/library/) alone, in this process on one thread, with values
drawn from its defaults (a spec of the one step `{op: NAME}`), on float32 crops.

Every mode runs with the malloc thresholds a build's shard task sets (srdistill.core.allocator), the reference
too; `--plain-allocator` keeps glibc's own, under which image-sized temporaries page-fault on every allocation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # per-core figures: set before numpy/torch load their thread pools

import numpy as np


def _crops(n: int, size: int) -> list[np.ndarray]:
    """n RGB crops of size x size from scikit-image's bundled photos (upscaled where smaller), flipped/rotated."""
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.rocket(), data.chelsea(), data.immunohistochemistry()]
    bases = []
    for img in photos:
        f = size / min(img.shape[:2])
        if f > 1:
            img = cv2.resize(img, (round(img.shape[1] * f + 0.5), round(img.shape[0] * f + 0.5)),
                             interpolation=cv2.INTER_CUBIC)
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        bases.append(np.ascontiguousarray(img[top:top + size, left:left + size]))
    out = []
    for i in range(n):
        b = bases[i % len(bases)]
        v = i // len(bases)
        out.append(np.ascontiguousarray(np.rot90(b[:, ::-1] if v % 2 else b, v // 2 % 4)))
    return out


def _psnr_to_bicubic(hr: np.ndarray, lr: np.ndarray) -> float:
    """PSNR (dB) of an LR against the plain bicubic x4 downsample of its HR: a coarse degradation-strength
    figure, comparable between the two implementations over many random draws."""
    from srdistill.degrade.ops.primitives import bicubic_downsample, quantize, to_float

    ref = quantize(bicubic_downsample(to_float(hr), 4)).astype(np.float64)
    mse = float(np.mean((lr.astype(np.float64) - ref) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def _colour_ratio(hr: np.ndarray, lr: np.ndarray) -> float:
    """std(R - G) of the LR over that of the HR's area downscale: how much chroma the degradation keeps (as
    `degrade diff`'s colour_ratio; computed here so the timed process does not import the diff tool)."""
    import cv2

    area = cv2.resize(hr.astype(np.float64), (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_AREA)
    lr = lr.astype(np.float64)
    return float(np.std(lr[..., 0] - lr[..., 1]) / np.std(area[..., 0] - area[..., 1]))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def run_ours(n: int, size: int, warmup: int, seed: int, preset: str = "realesrgan") -> dict:
    import cv2
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    cv2.setNumThreads(1)
    spec = load_spec(preset)
    crops = _crops(n, size)
    for i in range(warmup):
        degrade_image(crops[i % n], spec, seed, f"warmup{i}")
    times, cpu, psnr, colour = [], [], [], []
    for i, hr in enumerate(crops):
        t0, c0 = time.perf_counter(), time.process_time()
        lr, _ = degrade_image(hr, spec, seed, f"img{i}")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        psnr.append(_psnr_to_bicubic(hr, lr))
        colour.append(_colour_ratio(hr, lr))
    return {"images": n, "seconds": sum(times), "cpu_seconds": sum(cpu), "median_s": float(np.median(times)),
            "psnr_mean": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)),
            "colour_median": float(np.median(colour)), "peak_rss_mib": _peak_rss_mib()}


def run_reference(n: int, size: int, warmup: int, seed: int) -> dict:
    import cv2
    import torch
    from srdistill.degrade.inspect.reference import ReferenceDegrader, import_reference
    from srdistill.degrade.spec.schema import load_spec

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # reuse_usm=False: the reference's full cost, its second USM pass (on the loss target) included
    degrade = ReferenceDegrader(load_spec("realesrgan"), seed=seed, reuse_usm=False)
    usm = import_reference().USMSharp()
    hrs = _crops(n, size)
    try:
        for i in range(warmup):
            degrade(hrs[i % n])
        times, cpu, usm_cpu, psnr, colour = [], [], [], [], []
        for hr in hrs:
            t0, c0 = time.perf_counter(), time.process_time()
            lr = degrade(hr)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert lr.shape[:2] == (size // 4, size // 4)
            psnr.append(_psnr_to_bicubic(hr, lr))
            colour.append(_colour_ratio(hr, lr))
            gt = torch.from_numpy(hr).permute(2, 0, 1).float().div(255.0)[None]
            c0 = time.process_time()
            with torch.no_grad():
                usm(gt)
            usm_cpu.append(time.process_time() - c0)
    finally:
        degrade.close()
    return {"images": n, "seconds": sum(times), "cpu_seconds": sum(cpu), "median_s": float(np.median(times)),
            "usm_cpu_seconds": sum(usm_cpu), "psnr_mean": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)),
            "colour_median": float(np.median(colour)), "peak_rss_mib": _peak_rss_mib()}


def run_per_op(n: int, size: int, warmup: int, seed: int, names: list[str] | None) -> list[tuple[str, float, float]]:
    """(op, median ms, max ms) per op over n crops, each op applied alone with values drawn from its defaults."""
    import cv2
    from srdistill.degrade.ops.opdef import REGISTRY, OpContext
    from srdistill.degrade.ops.primitives import to_float
    from srdistill.degrade.pipeline import op_values, sample_params, sample_rng
    from srdistill.degrade.spec.schema import spec_from_dict

    cv2.setNumThreads(1)
    crops = [to_float(c) for c in _crops(n, size)]
    ctx = OpContext(scale=4, hr_shape=(size, size))
    rows = []
    for name in sorted(names or REGISTRY):
        if name not in REGISTRY:
            raise SystemExit(f"bench_degrade: unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}")
        spec = spec_from_dict({"version": 2, "name": name, "scale": 4, "pipeline": [{"op": name}]})
        apply = REGISTRY[name].apply
        times = []
        for i in range(warmup + n):
            rec = sample_params(spec, sample_rng(seed, f"{name}{i}"), (size, size))
            values = op_values(rec["ops"][0])
            img = crops[i % n]
            t0 = time.process_time()
            apply(img, values, ctx)
            if i >= warmup:
                times.append(time.process_time() - t0)
        rows.append((name, float(np.median(times)) * 1e3, float(np.max(times)) * 1e3))
    return rows


def run_jpeg(sizes: list[int], repeat: int = 7, n: int = 20) -> list[tuple[int, float, float]]:
    """(side, DiffJPEG ms, libjpeg ms) per JPEG round trip of a photo crop at quality 55, CPU time, one thread,
    the fastest of `repeat` rounds of n calls, the two codecs alternating."""
    import cv2
    from skimage import data

    from srdistill.degrade.ops.primitives import jpeg, to_float

    cv2.setNumThreads(1)
    big = to_float(cv2.resize(data.astronaut(), (max(sizes), max(sizes)), interpolation=cv2.INTER_CUBIC))
    rows = []
    for side in sizes:
        img = np.ascontiguousarray(big[:side, :side])
        best = {"diffjpeg": float("inf"), "libjpeg": float("inf")}
        for _ in range(repeat):
            for codec in best:
                t = time.process_time()
                for _ in range(n):
                    jpeg(img, 55.0, codec)
                best[codec] = min(best[codec], (time.process_time() - t) / n)
        rows.append((side, best["diffjpeg"] * 1e3, best["libjpeg"] * 1e3))
    return rows


def _child(which: str, args) -> dict:
    cmd = [sys.executable, __file__, "--_worker", which, "--images", str(args.images),
           "--ref-images", str(args.ref_images), "--crop", str(args.crop), "--warmup", str(args.warmup),
           "--seed", str(args.seed), "--preset", args.preset] + (["--plain-allocator"] if args.plain_allocator else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no error output"])[-1]
        hint = " (the reference needs: pip install basicsr==1.4.2 realesrgan==0.3.0)" if which == "reference" else ""
        raise SystemExit(f"bench_degrade: the {which} run failed: {last}{hint}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Images/s per core of the Real-ESRGAN degradation (realesrgan preset) on square crops: "
                    "srdistill's CPU pipeline vs the basicsr/realesrgan reference, plus peak memory.")
    ap.add_argument("--images", type=int, default=60, help="crops degraded by ours (default 60)")
    ap.add_argument("--ref-images", type=int, default=8, help="crops degraded by the slow reference (default 8)")
    ap.add_argument("--crop", type=int, default=512, help="crop side in pixels, a multiple of 4 (default 512)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed images before timing (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--preset", default="realesrgan",
                    help="our degradation preset, e.g. realesrgan-libjpeg (default realesrgan; the reference always "
                         "runs the realesrgan numbers)")
    ap.add_argument("--skip-reference", action="store_true", help="time only ours")
    ap.add_argument("--per-op", action="store_true",
                    help="instead: CPU ms per crop of every op of the library alone (values drawn from its defaults)")
    ap.add_argument("--ops", nargs="+", metavar="OP", help="with --per-op: only these ops")
    ap.add_argument("--jpeg", action="store_true",
                    help="instead: CPU ms of one JPEG round trip, DiffJPEG against libjpeg, at 128/256/320/512 px")
    ap.add_argument("--plain-allocator", action="store_true",
                    help="keep glibc's own malloc thresholds instead of those a build's shard task sets "
                         "(srdistill.core.allocator; by default both sides run with them)")
    ap.add_argument("--_worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.plain_allocator:
        from srdistill.core.allocator import keep_freed_memory

        keep_freed_memory()
    if args.images < 1 or args.ref_images < 1 or args.crop < 16 or args.crop % 4:
        ap.error("--images and --ref-images must be >= 1 and --crop a multiple of 4 >= 16")

    if args.jpeg:
        print("JPEG round trip of a photo crop at quality 55, CPU ms, 1 thread, the fastest of 7 rounds of 20")
        print(f"  {'side':>5} {'DiffJPEG':>9} {'libjpeg':>9} {'ratio':>6}")
        for side, dj, lj in run_jpeg([128, 256, 320, 512]):
            print(f"  {side:5d} {dj:9.2f} {lj:9.2f} {dj / lj:6.2f}")
        return 0
    if args.per_op:
        print(f"ops alone on {args.crop}x{args.crop} float32 crops, 1 thread, CPU ms per image over {args.images} "
              f"images (values drawn from each op's defaults)")
        print(f"  {'op':<20} {'median ms':>10} {'max ms':>10}")
        for name, med, mx in run_per_op(args.images, args.crop, args.warmup, args.seed, args.ops):
            print(f"  {name:<20} {med:10.2f} {mx:10.2f}")
        return 0
    if args._worker == "ours":
        print(json.dumps(run_ours(args.images, args.crop, args.warmup, args.seed, args.preset)))
        return 0
    if args._worker == "reference":
        print(json.dumps(run_reference(args.ref_images, args.crop, args.warmup, args.seed)))
        return 0

    print(f"Degradation, {args.crop}x{args.crop} crops, {args.preset} preset, 1 thread per process; "
          f"images/s/core = images per CPU-second of the process (wall-clock rate in brackets)", flush=True)
    ours = _child("ours", args)
    ours_ips = ours["images"] / ours["cpu_seconds"]
    print(f"  srdistill : {ours_ips:8.2f} images/s/core  [{ours['images'] / ours['seconds']:.2f}/s wall, "
          f"median {ours['median_s'] * 1e3:.1f} ms, {ours['images']} images, peak RSS {ours['peak_rss_mib']:.0f} MiB]")
    if args.skip_reference:
        print(f"  sanity    : PSNR(LR, bicubic HR) {ours['psnr_mean']:.2f} +- {ours['psnr_std']:.2f} dB")
        return 0
    print(f"  (running the reference on {args.ref_images} images: a few seconds each)", file=sys.stderr, flush=True)
    ref = _child("reference", args)
    ref_ips = ref["images"] / ref["cpu_seconds"]
    ref_no_usm2 = ref["images"] / (ref["cpu_seconds"] - ref["usm_cpu_seconds"])
    print(f"  reference : {ref_ips:8.2f} images/s/core  [{ref['images'] / ref['seconds']:.2f}/s wall, "
          f"median {ref['median_s'] * 1e3:.1f} ms, {ref['images']} images, peak RSS {ref['peak_rss_mib']:.0f} MiB]")
    print(f"  ratio     : {ours_ips / ref_ips:8.1f}x  "
          f"({ours_ips / ref_no_usm2:.1f}x against the reference without feed_data's second USM pass, which "
          f"sharpens the loss target rather than the LR)")
    print(f"  sanity    : PSNR(LR, bicubic HR) ours {ours['psnr_mean']:.2f} +- {ours['psnr_std']:.2f} dB, "
          f"reference {ref['psnr_mean']:.2f} +- {ref['psnr_std']:.2f} dB (mean +- std over the random draws); "
          f"colour ratio median ours {ours['colour_median']:.3f}, reference {ref['colour_median']:.3f} "
          f"(tests/test_degrade_parity.py compares the distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
