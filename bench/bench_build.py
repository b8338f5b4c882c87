"""Throughput of `degrade build`: where an image's time goes, the whole build against the reference, scaling.

Default: 512x512 crops of the sample photos, `realesrgan` preset, one worker, one thread.
- Per-stage profile: the shard writer's work for every sample, in this process, stage by stage: source read +
  decode (once per photo, spread over its crops), crop, parameter draw, each op of the op record (named by stage
  and op), float <-> uint8, HR and LR PNG encoding, json + tar writing (with the shard's sha256). Printed in CPU
  ms per image and as shares of a build's CPU per image in its shard task; the remainder ("in the shard task,
  outside the stages") is what the task spends beyond them (noise can make it negative). The profile runs with
  the malloc thresholds a shard task sets (srdistill.core.allocator).
- Whole build (the cheapest of `--repeat`), each in a fresh process as `degrade build --workers 1` runs it:
  images per CPU-second of the shard task; the CPU-seconds the driver adds per build (imports excluded); the
  wall-clock rate from the difference of a big and a small build (start-up cancels; contention skews it); and
  the same builds with glibc's own malloc thresholds, as builds ran before the shard task set them.
- With `--reference N`: the reference's degradation (bench_degrade.py's reference run on N crops, its own
  process, one thread) and the ratios, whole build per core over the reference per core.
`--png`: encode time, size and decode time of the samples' HR + LR under several PNG encodings.
`--vs PRESET`: `--preset` against another (realesrgan's DiffJPEG against realesrgan-libjpeg's libjpeg): each one's
JPEG ops per image from the profile, whole builds alternating, and the ratios.
`--scaling`: the older check: 1 then 2 workers on a warm cluster, images/s, scaling efficiency, peak memory.

    .venv/bin/python bench/bench_build.py [--crops-per-image 12] [--small 4] [--repeat 3] [--reference 8]
    .venv/bin/python bench/bench_build.py --png [--crops-per-image 2]
    .venv/bin/python bench/bench_build.py --vs realesrgan-libjpeg [--repeat 5]
    .venv/bin/python bench/bench_build.py --scaling [--workers 1 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # per-core figures: set before numpy loads its thread pool

import numpy as np
import psutil

from srdistill.degrade.build.builder import build


class _ProcessTreePoller:
    """Calls `sample(proc)` on each descendant of this process every `interval` s, in a thread, while in `with`."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, proc: psutil.Process) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    self.sample(proc)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class WorkerMemory(_ProcessTreePoller):
    """Samples the RSS of this build's Ray worker processes (descendants of this process titled "ray::...")."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.peak, self.pids = 0, set()

    def sample(self, proc: psutil.Process) -> None:
        if proc.name().startswith("ray::") or " ".join(proc.cmdline()).startswith("ray::"):
            self.pids.add(proc.pid)
            self.peak = max(self.peak, proc.memory_info().rss)


def _warm(workers: int) -> None:
    """Start the Ray session and one imported worker process per slot, so timing excludes process start-up."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import os

        import srdistill.degrade.build.builder  # noqa: F401
        import srdistill.degrade.pipeline  # noqa: F401

        time.sleep(1.0)  # hold the slot so each warm-up lands in its own worker process
        return os.getpid()

    ray.get([warm.remote() for _ in range(workers)])


def run(workers: int, crops_per_image: int, shard_samples: int, crop: int) -> dict:
    import ray

    _warm(workers)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-build-") as out, WorkerMemory() as mem:
            summary = build("sample", out, "realesrgan", crop=crop, crops_per_image=crops_per_image,
                            shard_samples=shard_samples, seed=0, workers=workers, progress=False)
    finally:
        ray.shutdown()
    task_seconds = sum(summary.manifest["timings"]["shard_seconds"].values())
    return {
        "workers": workers,
        "samples": summary.samples,
        "seconds": summary.seconds,
        "img_s": summary.samples / summary.seconds,
        "img_s_per_core_tasks": summary.samples / task_seconds,
        "img_per_cpu_s": summary.samples / summary.manifest["timings"]["task_cpu_seconds"],
        "peak_rss_psutil": mem.peak,
        "peak_rss_task": summary.worker_peak_rss,
        "worker_processes": len(mem.pids),
    }


def profile(crop: int, crops_per_image: int, preset: str, seed: int = 0) -> tuple[dict[str, float], int]:
    """Seconds per stage of writing every sample of the sample source, in this process on one thread, the
    same calls in the same order as the shard writer (degrade/build/writer.py) and apply_record."""
    import cv2

    from srdistill.datasets.images import SHARD_PNG, encode_png
    from srdistill.datasets.shards.format import Sample, ShardWriter
    from srdistill.degrade.build.plan import make_plan
    from srdistill.degrade.build.writer import HashingFile
    from srdistill.degrade.ops import primitives
    from srdistill.degrade.ops.opdef import REGISTRY, OpContext
    from srdistill.degrade.pipeline import op_values, sample_params, sample_rng
    from srdistill.degrade.spec.schema import load_spec, spec_hash

    cv2.setNumThreads(1)
    spec = load_spec(preset)
    plan = make_plan("sample", spec, crop=crop, crops_per_image=crops_per_image, shard_samples=10**6, seed=seed,
                     limit=None, data_root=None, split="train", max_pixels=2**26)
    jobs = sorted((j for _, js in plan.shards for j in js), key=lambda j: j.key)
    stages: dict[str, float] = defaultdict(float)
    clock = time.process_time

    def timed(name, fn, *args):
        t = clock()
        out = fn(*args)
        stages[name] += clock() - t
        return out

    digest = spec_hash(spec)
    loaded_ident, loaded = None, None
    out = HashingFile(io.BytesIO())
    with ShardWriter(out) as writer:
        for job in jobs:
            p = job.provider
            if p.ident != loaded_ident:
                loaded_ident, loaded = p.ident, timed("source read + decode", p.load)
            hr, fields = timed("crop", p.hr, loaded, job.key, seed)
            params = timed("draw params", sample_params, spec, sample_rng(seed, job.key), hr.shape[:2])
            ctx = OpContext(scale=spec.scale, hr_shape=hr.shape[:2])
            img = timed("uint8 -> float", primitives.to_float, hr)
            for entry in params["ops"]:
                img = timed(f"op {entry.get('at') or '-'}/{entry['op']}", REGISTRY[entry["op"]].apply, img,
                            op_values(entry), ctx)
            lr = timed("float -> uint8", primitives.quantize, img)
            hr_png = timed("HR PNG encode", encode_png, hr, SHARD_PNG)
            lr_png = timed("LR PNG encode", encode_png, lr, SHARD_PNG)
            meta = {"key": job.key, **fields, "scale": spec.scale, "seed": seed, "spec_hash": digest, "params": params}
            timed("json + tar + sha256", writer.write, Sample(job.key, hr_png, lr_png, meta))
    return dict(stages), len(jobs)


# One 1-worker `degrade build` of the sample in a fresh process, as the CLI runs it (a one-worker local build
# needs no cluster, so it runs in that process, without Ray). "plain" keeps glibc's own malloc thresholds, as
# builds ran before the shard task set them (srdistill.core.allocator).
_BUILD = """
import json, sys, tempfile, time
args = json.loads(sys.argv[1])
if args["plain"]:
    import srdistill.core.allocator as allocator
    allocator.keep_freed_memory = lambda: False
from srdistill.degrade.build.builder import build
with tempfile.TemporaryDirectory(prefix="bench-build-") as out:
    t, c = time.perf_counter(), time.process_time()
    summary = build("sample", out, args["preset"], crop=args["crop"], crops_per_image=args["crops"],
                    shard_samples=16, seed=0, workers=1, progress=False)
    print(json.dumps({"cpu": time.process_time() - c, "wall": time.perf_counter() - t, "samples": summary.samples,
                      "task_cpu": summary.manifest["timings"]["task_cpu_seconds"]}))
"""


def _timed_build(crop: int, crops_per_image: int, preset: str, plain: bool) -> dict:
    """One whole build in its own process: CPU seconds of the build (imports excluded) and of its shard tasks
    alone, wall seconds, samples."""
    arg = json.dumps({"crop": crop, "crops": crops_per_image, "preset": preset, "plain": plain})
    out = subprocess.run([sys.executable, "-c", _BUILD, arg], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_build: a build failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_rate(crop: int, small: int, big: int, preset: str, repeat: int, plain: bool = False) -> dict:
    """A 1-worker build, the cheapest of `repeat`: images per CPU-second of the shard tasks (the steady state),
    the rest of its CPU (start-up, driver), and the wall-clock rate from the difference of a big and
    a small build (start-up cancels; contention skews it)."""
    small_runs = [_timed_build(crop, small, preset, plain) for _ in range(repeat)]
    big_runs = [_timed_build(crop, big, preset, plain) for _ in range(repeat)]
    best = min(big_runs, key=lambda r: r["task_cpu"])
    w_small, w_big = min(r["wall"] for r in small_runs), min(r["wall"] for r in big_runs)
    return {"samples": best["samples"], "task_cpu": best["task_cpu"], "img_s": best["samples"] / best["task_cpu"],
            "other_cpu": min(r["cpu"] - r["task_cpu"] for r in big_runs), "wall_big": w_big, "wall_small": w_small,
            "img_s_wall": (best["samples"] - small_runs[0]["samples"]) / (w_big - w_small)}


def reference_rate(images: int, crop: int) -> float:
    """The reference's degradation in images per CPU-second (bench_degrade.py's reference run, one thread)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_degrade.py")
    out = subprocess.run([sys.executable, script, "--_worker", "reference", "--ref-images", str(images),
                          "--crop", str(crop), "--warmup", "1"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_build: the reference run failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    ref = json.loads(out.stdout.strip().splitlines()[-1])
    return ref["images"] / ref["cpu_seconds"], ref["images"] / (ref["cpu_seconds"] - ref["usm_cpu_seconds"])


def png_table(crop: int, crops_per_image: int, repeat: int) -> None:
    """Encode time, size and decode time of the HR + LR of every sample under each PNG encoding considered."""
    import cv2

    from srdistill.datasets.images import FILE_PNG, SHARD_PNG, PngEncoding, decode_png, describe_encoding, encode_png
    from srdistill.degrade.build.plan import make_plan
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    cv2.setNumThreads(1)
    spec = load_spec("realesrgan")
    plan = make_plan("sample", spec, crop=crop, crops_per_image=crops_per_image, shard_samples=10**6, seed=0,
                     limit=None, data_root=None, split="train", max_pixels=2**26)
    pairs, loaded = [], {}
    for job in sorted((j for _, js in plan.shards for j in js), key=lambda j: j.key):
        p = job.provider
        if p.ident not in loaded:
            loaded[p.ident] = p.load()
        hr, _ = p.hr(loaded[p.ident], job.key, 0)
        pairs.append((hr, degrade_image(hr, spec, 0, job.key)[0]))
    encodings = [FILE_PNG, *(PngEncoding(level, "default", "adaptive") for level in (1, 6, 9)),
                 PngEncoding(1, "rle", "adaptive"), PngEncoding(1, "rle", "avg"), PngEncoding(1, "rle", "up"),
                 PngEncoding(1, "huffman", "avg"), PngEncoding(0, "default", "none"),
                 *(PngEncoding(level, "default", f, deflate="isal") for level in (0, 1, 2, 3) for f in ("up", "sub")),
                 PngEncoding(2, "default", "none", deflate="isal")]
    encodings.sort(key=lambda e: e != SHARD_PNG)
    print(f"PNG encodings of {len(pairs)} {crop}x{crop} HR + {crop // 4}x{crop // 4} LR pairs (realesrgan), one "
          f"thread, CPU ms per pair (the fastest of {repeat}); the first row is the shards' setting:")
    print(f"  {'encoding':<46} {'encode ms':>10} {'KiB':>8} {'decode ms':>10}")
    for enc in encodings:
        best = best_dec = float("inf")
        for _ in range(repeat):
            t = time.process_time()
            blobs = [(encode_png(hr, enc), encode_png(lr, enc)) for hr, lr in pairs]
            best = min(best, time.process_time() - t)
            t = time.process_time()
            for (hr, lr), (a, b) in zip(pairs, blobs):
                if not (np.array_equal(decode_png(a), hr) and np.array_equal(decode_png(b), lr)):
                    raise SystemExit(f"bench_build: {enc} does not give the same pixels back")
            best_dec = min(best_dec, time.process_time() - t)
        size = sum(len(a) + len(b) for a, b in blobs) / len(pairs) / 1024
        print(f"  {describe_encoding(enc.record()):<46} {best / len(pairs) * 1e3:10.2f} {size:8.1f} "
              f"{best_dec / len(pairs) * 1e3:10.2f}")


def main_profile(args) -> None:
    from srdistill.core.allocator import keep_freed_memory

    keep_freed_memory()
    stages, n = profile(args.crop, args.crops_per_image, args.preset)
    rate = build_rate(args.crop, args.small, args.crops_per_image, args.preset, args.repeat)
    plain = build_rate(args.crop, args.small, args.crops_per_image, args.preset, args.repeat, plain=True)
    per_image = 1.0 / rate["img_s"]
    in_process = sum(stages.values()) / n
    rows = sorted(stages.items(), key=lambda kv: -kv[1])
    rows.append(("in the shard task, outside the stages", (per_image - in_process) * n))
    print(f"per-stage profile, {n} samples of {args.crop}x{args.crop} ({args.preset}), CPU ms per image measured in "
          f"this process, as shares of a build's {per_image * 1e3:.1f} CPU-ms per image in its shard task:")
    for name, sec in rows:
        print(f"  {name:<44} {sec / n * 1e3:8.2f} ms  {sec / n / per_image * 100:6.1f} %")
    ops = sum(v for k, v in stages.items() if k.startswith("op ")) / n
    print(f"  {'(all ops)':<44} {ops * 1e3:8.2f} ms  {ops / per_image * 100:6.1f} %")
    for label, r in (("whole build", rate), ("with glibc's own malloc thresholds", plain)):
        print(f"{label}, 1 worker, fresh process, the cheapest of {args.repeat}: {r['samples']} samples in "
              f"{r['task_cpu']:.2f} CPU-s of the shard task -> {r['img_s']:.2f} images/s per core; the driver "
              f"{r['other_cpu']:.2f} CPU-s more per build; wall {r['wall_big']:.2f} s, {r['wall_small']:.2f} s for "
              f"{args.small} crops per photo -> {r['img_s_wall']:.2f} images/s from the difference (contention skews "
              f"the wall clock)")
    print(f"malloc thresholds: {rate['img_s'] / plain['img_s']:.3f}x the images per CPU-second of glibc's own")
    if args.reference:
        ref, ref_no_usm2 = reference_rate(args.reference, args.crop)
        print(f"reference degradation: {ref:.3f} images/s per core ({ref_no_usm2:.3f} without feed_data's second USM "
              f"pass), {args.reference} crops -> whole build {rate['img_s'] / ref:.1f}x the reference "
              f"({rate['img_s'] / ref_no_usm2:.1f}x without its second USM pass)")


def main_versus(args) -> None:
    """--preset against --vs: each one's JPEG ops per image (the profile) and whole builds, alternating."""
    from srdistill.core.allocator import keep_freed_memory

    keep_freed_memory()
    presets = (args.preset, args.vs)
    jpeg = {}
    for preset in presets:
        stages, n = profile(args.crop, args.crops_per_image, preset)
        jpeg[preset] = sum(v for k, v in stages.items() if k.startswith("op ") and k.endswith("/jpeg")) / n
    best = dict.fromkeys(presets, float("inf"))
    for _ in range(args.repeat):
        for preset in presets:  # alternating, so drift in the machine's speed falls on both
            r = _timed_build(args.crop, args.crops_per_image, preset, plain=False)
            best[preset] = min(best[preset], r["task_cpu"] / r["samples"])
    print(f"{args.crop}x{args.crop}, {8 * args.crops_per_image} samples, one worker; CPU ms per image: the JPEG ops "
          f"alone (profile, in this process) and whole builds (shard task, fresh process, the cheapest of "
          f"{args.repeat}, presets alternating)")
    print(f"  {'preset':<24} {'JPEG ops':>9} {'whole build':>12}")
    for preset in presets:
        print(f"  {preset:<24} {jpeg[preset] * 1e3:9.2f} {best[preset] * 1e3:12.2f}")
    a, b = presets
    print(f"{a} / {b}: JPEG ops {jpeg[a] / jpeg[b]:.2f}x, whole build {best[a] / best[b]:.3f}x "
          f"({(jpeg[a] - jpeg[b]) * 1e3:+.2f} ms of JPEG per image, {(jpeg[a] - jpeg[b]) / best[b] * 100:+.1f}% of "
          f"{b}'s image)")


def main_scaling(args) -> None:
    print(f"degrade build, sample source (8 photos x {args.crops_per_image} crops of {args.crop}px), realesrgan preset, "
          f"{psutil.cpu_count()} CPUs on this machine")
    rows = []
    for w in args.workers:
        t = time.perf_counter()
        r = run(w, args.crops_per_image, args.shard_samples, args.crop)
        rows.append(r)
        print(f"workers={w}: {r['samples']} samples in {r['seconds']:.1f} s -> {r['img_s']:.2f} img/s "
              f"({r['img_s'] / w:.2f} img/s per worker; tasks' own wall time {r['img_s_per_core_tasks']:.2f} img/s per core, "
              f"CPU time {r['img_per_cpu_s']:.2f} img per CPU-second); "
              f"peak worker RSS {r['peak_rss_psutil'] / 2**20:.0f} MiB (psutil), {r['peak_rss_task'] / 2**20:.0f} MiB (ru_maxrss) "
              f"over {r['worker_processes']} worker processes; total with Ray start {time.perf_counter() - t:.1f} s")
    base = rows[0]
    for r in rows[1:]:
        scale = r["workers"] / base["workers"]
        print(f"scaling {base['workers']} -> {r['workers']} workers: speed-up {r['img_s'] / base['img_s']:.2f}x, "
              f"efficiency {r['img_s'] / base['img_s'] / scale:.2f} (target >= 0.8)")
    print("(wall-clock scaling needs an otherwise idle machine: compare 'img per CPU-second' across rows to see "
          "whether per-sample work grows with workers, and the load average above for contention)")
    worst = max(max(r["peak_rss_psutil"], r["peak_rss_task"]) for r in rows)
    print(f"peak memory per worker: {worst / 2**20:.0f} MiB (target < 1024 MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scaling", action="store_true", help="instead: 1 then 2 workers on a warm cluster")
    parser.add_argument("--png", action="store_true", help="instead: time and size of PNG encodings of the samples")
    parser.add_argument("--vs", metavar="PRESET",
                        help="instead: --preset against PRESET (e.g. realesrgan-libjpeg): their JPEG ops per image "
                             "and whole builds, alternating")
    parser.add_argument("--crops-per-image", type=int, default=12,
                        help="crops per sample photo (8 photos); the profile's and the big build's (default 12)")
    parser.add_argument("--small", type=int, default=4, help="crops per photo of the small build (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="builds of each size, the fastest counts (default 3)")
    parser.add_argument("--preset", default="realesrgan", help="degradation preset (default realesrgan)")
    parser.add_argument("--reference", type=int, default=0, metavar="N",
                        help="also run the reference's degradation on N crops and print the ratios (default: off)")
    parser.add_argument("--shard-samples", type=int, default=3, help="with --scaling (default 3)")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="with --scaling (default 1 2)")
    args = parser.parse_args()
    print(f"load average before the run: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    if args.png:
        png_table(args.crop, args.crops_per_image, args.repeat)
    elif args.vs:
        main_versus(args)
    else:
        (main_scaling if args.scaling else main_profile)(args)


if __name__ == "__main__":
    main()
