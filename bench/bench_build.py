"""Throughput and scaling of `degrade build` on Ray: 512x512 crops, realesrgan preset, 1 then 2 workers.

Prints, for each worker count:
- images/s over the build (wall clock from the first task to the last; Ray and its worker processes are
  started and warmed up before the clock starts), and per worker;
- images per second of the tasks' own wall time and per CPU-second of the tasks (load-insensitive);
- the peak resident memory of this build's Ray worker processes (psutil sampling, and their ru_maxrss);
then the scaling efficiency: throughput at N workers / (N x throughput at 1 worker).
Targets (issue 2): efficiency >= 0.8 at 2 workers, peak memory < 1 GiB per worker.

    .venv/bin/python bench/bench_build.py [--crops-per-image 6] [--shard-samples 3] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import psutil

from srdistill.degrade.build.builder import build


class WorkerMemory:
    """Samples the RSS of this build's Ray worker processes (descendants of this process titled "ray::...")."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self.pids = interval, 0, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    if proc.name().startswith("ray::") or " ".join(proc.cmdline()).startswith("ray::"):
                        self.pids.add(proc.pid)
                        self.peak = max(self.peak, proc.memory_info().rss)
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops-per-image", type=int, default=6, help="crops per sample photo (8 photos)")
    parser.add_argument("--shard-samples", type=int, default=3)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"load average before the run: {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
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


if __name__ == "__main__":
    main()
