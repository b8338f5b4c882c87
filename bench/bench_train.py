"""Training throughput per recipe: samples/s and peak memory of full optimizer steps (generator + discriminator).

Each recipe runs in its own process (clean peak-memory figures) through the real Trainer and shard loader.
The loader alone is timed with the same settings, so `loader/train` > 1 says the loader is not the bottleneck.

    .venv/bin/python bench/bench_train.py                                   # CPU: tiny components, 64² crops
    .venv/bin/python bench/bench_train.py --components sd21 --crop 512      # GPU: SD 2.1-shaped, bf16, paper batch sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch



def build_shards(out: Path, crop: int) -> Path:
    from srdistill.degrade.build.builder import build

    build("sample", str(out), "bicubic", crop=crop, crops_per_image=4, shard_samples=8, seed=0, workers=2,
          address="local", progress=False, command="bench_train")
    return out


def worker(args) -> dict:
    from srdistill.training.loader import BatchStream
    from srdistill.training import distributed as dd
    from srdistill.training.config import load_run_config
    from srdistill.training.recipes.registry import build_recipe
    from srdistill.training.trainer import Trainer, resolve_device

    sets = [f"crop={args.crop}", f"num_workers={args.loader_workers}", "ckpt_every=0", "shuffle_buffer=32",
            f"device={args.device}"]
    if args.batch_size:
        sets.append(f"batch_size={args.batch_size}")
    run = load_run_config(args.worker, None, sets)
    device = resolve_device(run.trainer.device, dd.DistInfo())
    cuda = device.type == "cuda"
    recipe = build_recipe(args.worker, run.recipe_cfg, args.components, device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, run, shards=args.shards, run_dir=tmp, components=args.components, device=device, scale=4)
        for _ in range(args.warmup):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        trainer.stream.close()
    bs = run.trainer.batch_size * run.trainer.grad_accum
    stream = BatchStream(args.shards, batch_size=run.trainer.batch_size, crop=args.crop, seed=1,
                         num_workers=args.loader_workers, shuffle_buffer=32, uint8=True, online_spec=run.trainer.online,
                         crop_policy=run.trainer.crop_policy, flips=run.trainer.flips)   # the stream the trainer reads
    next(stream)
    t1, n = time.perf_counter(), 0
    while n < max(2 * args.steps * bs, 4 * run.trainer.batch_size):
        n += next(stream)["lr"].shape[0]
    loader_rate = n / (time.perf_counter() - t1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"recipe": args.worker, "device": str(device), "bf16": trainer.bf16, "batch": bs,
            "samples_per_s": args.steps * bs / seconds, "peak_mib": peak, "peak_kind": "cuda allocated" if cuda else "process RSS",
            "loader_pairs_per_s": loader_rate,
            "g_params": sum(p.numel() for p in recipe.generator_parameters()),
            "d_params": sum(p.numel() for p in recipe.discriminator_parameters())}


def main(argv=None) -> int:
    from srdistill.training.recipes.registry import RECIPES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--components", default=None, help="tiny (default on CPU) or sd21 (default on GPU), or a weights folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--crop", type=int, default=None, help="HR crop (default 64 on CPU, 512 on GPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 2 on CPU, the recipe config's (paper) batch on GPU")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 4 CPU / 10 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU / 3 GPU)")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process (default: 1 on CPU, torch's on GPU)")
    p.add_argument("--shards", default=None, help="shards with HR samples of at least --crop (default: build from the sample)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    gpu = args.device != "cpu" and torch.cuda.is_available()
    args.device = "cuda" if gpu and args.device == "auto" else ("cpu" if args.device == "auto" else args.device)
    args.components = args.components or ("sd21" if gpu else "tiny")
    args.crop = args.crop or (512 if gpu else 64)
    args.steps = args.steps or (10 if gpu else 4)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    if not gpu and args.batch_size is None:
        args.batch_size = 2
    args.threads = args.threads or (torch.get_num_threads() if gpu else 1)
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        if args.shards is None:
            args.shards = str(build_shards(Path(tmp) / "shards", max(args.crop, 64)))
        print(f"components {args.components}, device {args.device}, HR crop {args.crop}, {args.steps} timed steps "
              f"after {args.warmup}, loader workers {args.loader_workers}, torch threads {args.threads}")
        print(f"{'recipe':<7} {'batch':>5} {'samples/s':>10} {'peak MiB':>9} {'loader/train':>12} {'G params':>10} {'D params':>10}")
        base = [sys.executable, __file__, "--components", args.components, "--device", args.device, "--crop", str(args.crop),
                "--steps", str(args.steps), "--warmup", str(args.warmup), "--loader-workers", str(args.loader_workers),
                "--shards", args.shards, "--threads", str(args.threads)] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
        for name in args.recipes:
            proc = subprocess.run(base + ["--worker", name], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"{name:<7} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name:<7} {r['batch']:>5} {r['samples_per_s']:10.2f} {r['peak_mib']:9.0f} "
                  f"{r['loader_pairs_per_s'] / r['samples_per_s']:12.1f} {r['g_params']:>10,} {r['d_params']:>10,}")
        print("peak memory: " + ("CUDA max allocated" if gpu else "process peak RSS (includes Python and libraries)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
