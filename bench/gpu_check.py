#!/usr/bin/env python3
"""One prepared GPU check: everything srdistill needs a GPU to measure, in one command, JSON + markdown out.

    make gpu-wheels                       # on a connected machine: wheels into .whl/ (pure, + PyWavelets cp312; no Ray)
    make gpu-check                        # on the CUDA machine: python3 bench/gpu_check.py --out gpu-check/
    python3 bench/gpu_check.py --quick    # the same code with tiny shapes on the CPU (the test suite runs it)

Needs only the machine's own PyTorch (>= 2.4) and numpy; whatever else srdistill imports comes from the
wheels in .whl/, unpacked into a temporary folder (no pip, no network). Sections that cannot import what
they need are reported as skipped, with the import error, and the rest runs.

Sections:
- recipes: the four recipes at the recipe YAML's resolution and per-process batch with SD 2.1-shaped random
  weights (bf16 autocast, the trainer's GPU switches): whether the batch fits (else the largest that does, with
  accumulation to the same samples per step), peak memory, samples/s, step time split into data wait (blocked
  in the real shard loader) and compute, and MFU (FLOPs of one step counted by FlopCounterMode over the mean
  measured step time and the GPU's dense bf16 peak, looked up by device name);
- the same runs' losses over all steps (every one finite) and a resume from the middle checkpoint, which must
  reproduce the uninterrupted losses;
- metric throughput (img/s) of the default metric set on the sample photos, and CUDA against CPU scores
  (PSNR/SSIM exactly, the rest within 1e-3 relative);
- the Real-ESRGAN torch port (RRDBNet) at 128->512 and 512->2048.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every packaged recipe (one YAML each beside its module), read before the wheels are unpacked, so without torch.
RECIPES = tuple(sorted(p.stem for p in (ROOT / "srdistill" / "training" / "recipes").glob("*.yaml")))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched on the
# lower-cased device name, most specific first.
BF16_PEAK_TFLOPS = (
    ("gh200", 989.0), ("h200", 989.0), ("h100 pcie", 756.0), ("h100 nvl", 835.0), ("h100", 989.0), ("h800", 989.0),
    ("b200", 2250.0), ("b100", 1750.0), ("a100", 312.0), ("a800", 312.0), ("l40s", 362.0), ("l40", 181.0),
    ("a6000", 155.0), ("l4", 121.0), ("a10", 125.0), ("rtx 4090", 165.0), ("rtx 3090", 71.0),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    name = device_name.lower()
    for key, peak in BF16_PEAK_TFLOPS:
        if key in name:
            return peak
    return None


# ---- bootstrap: wheels and the srdistill source tree -----------------------------------------------------------

def unpack_wheels(wheels: Path, target: Path) -> list[str]:
    """Unpack every wheel in `wheels` into `target` (a wheel is a zip of an installed tree) and put
    it last on sys.path, so that the machine's own packages win and the wheels only fill the gaps; returns the
    wheel names."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    for whl in found:
        with zipfile.ZipFile(whl) as z:
            z.extractall(target)
    if found:
        sys.path.append(str(target))
        importlib.invalidate_caches()
    return [w.name for w in found]


def import_source_tree() -> str:
    """Make `srdistill.*` importable from this checkout when it is not installed (the GPU machine's case): the
    package's file path is its import path, so the checkout's root on sys.path is all it takes."""
    try:
        import srdistill.training  # noqa: F401
        return "installed"
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "srdistill" or m.startswith("srdistill.")]:
        del sys.modules[name]
    sys.path.insert(0, str(ROOT))
    importlib.invalidate_caches()
    return "source tree"


def section(report: dict, name: str, fn, *args) -> None:
    """Run one part; an import it lacks or any failure is recorded and the check goes on."""
    t0 = time.perf_counter()
    try:
        report[name] = {"status": "ok", **fn(*args)}
    except ImportError as exc:
        report[name] = {"status": "skipped", "reason": f"cannot import {exc.name or exc}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, the check continues
        report[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=6)}
    report[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[gpu-check] {name}: {report[name]['status']} ({report[name]['seconds']} s)"
          + (f" - {report[name]['reason']}" if report[name]["status"] != "ok" else ""), flush=True)


# ---- data ----------------------------------------------------------------------------------------------------

def photos(n: int, size: int):
    """`n` HR images size x size (uint8 HxWx3): the sample photos resized, else smooth random images."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    images = []
    try:
        from srdistill.datasets.images import read_rgb
        from srdistill.datasets.sources import sample_dir

        images = [read_rgb(p) for p in sorted(sample_dir().iterdir()) if p.suffix.lower() in (".png", ".jpg")]
    except Exception:  # noqa: BLE001 - no scikit-image: smooth random content instead
        g = torch.Generator().manual_seed(0)
        images = [(torch.rand(3, 32, 32, generator=g) * 255).byte().permute(1, 2, 0).numpy() for _ in range(4)]
    out = []
    for i in range(n):
        t = torch.from_numpy(np.array(images[i % len(images)], copy=True)).permute(2, 0, 1)[None].float()
        t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        out.append(t.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy())
    return out


def make_shards(folder: Path, size: int, n: int, scale: int = 4) -> Path:
    """x4 bicubic shards of `n` size x size samples in `folder` (written directly: no Ray, no degradation build)."""
    import torch
    import torch.nn.functional as F
    from srdistill.datasets.images import encode_png
    from srdistill.datasets.shards.format import Sample, ShardWriter, shard_name

    folder.mkdir(parents=True, exist_ok=True)
    per_shard, images = 4, photos(n, size)
    for s in range(math.ceil(n / per_shard)):
        with open(folder / shard_name("train", s), "wb") as f, ShardWriter(f) as w:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                hr = images[i]
                hr_t = torch.from_numpy(hr).permute(2, 0, 1)[None].float()
                lr = F.interpolate(hr_t, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
                lr = lr.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()
                w.write(Sample(f"s{i:06d}", encode_png(hr), encode_png(lr), {"scale": scale, "key": f"s{i:06d}"}))
    return folder


class TimedStream:
    """Wraps the trainer's batch stream: seconds spent blocked waiting for the next batch."""

    def __init__(self, stream):
        self.stream, self.wait = stream, 0.0

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.stream)
        finally:
            self.wait += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.stream, name)


# ---- recipes ---------------------------------------------------------------------------------------------------

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _build(name: str, cfg: dict, components: str, device):
    import torch
    from srdistill.training.recipes.registry import build_recipe

    if device.type == "cuda":
        with torch.device(device):   # random init on the GPU: seconds instead of minutes for ~3B parameters
            return build_recipe(name, cfg, components, device)
    return build_recipe(name, cfg, components, device)


def _graphs_compiled() -> int:
    """Graphs torch.compile has produced in this process so far (a count that grows on every recompilation)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def recipe_section(name: str, args, device, work: Path) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from srdistill.training import perf
    from srdistill.training.run.checkpoint import CKPT_DIR, checkpoint_name
    from srdistill.training.config import load_run_config
    from srdistill.training.trainer import Trainer

    base = load_run_config(name)
    crop = args.crop or base.trainer.crop
    paper_batch = args.batch or base.trainer.batch_size
    steps = args.steps
    half = steps // 2
    shards = make_shards(work / f"shards-{crop}", crop, max(16, 2 * paper_batch), 4)
    recipe = _build(name, base.recipe_cfg, args.components, device)
    init = recipe.trainable_state_dict()
    out = {"recipe": name, "resolution": crop, "paper_batch": paper_batch, "components": args.components}

    def make_run(batch: int, accum: int, run_dir: Path, n_steps: int):
        sets = [f"crop={crop}", f"batch_size={batch}", f"grad_accum={accum}", f"steps={n_steps}", f"ckpt_every={half}",
                f"num_workers={args.loader_workers}", "shuffle_buffer=16", f"device={device}", "keep_ckpts=4",
                f"compile_student={args.compile}"]
        run = load_run_config(name, None, sets)
        recipe.load_trainable_state_dict({k: v.to(device) for k, v in init.items()})
        torch.manual_seed(1)
        return Trainer(recipe, run, shards=str(shards), run_dir=run_dir, components=args.components, device=device, scale=4)

    # 1. the largest batch that fits (halving from the paper's), accumulating to the paper's samples per step
    batch, trainer, attempts = paper_batch, None, []
    while trainer is None:
        accum = math.ceil(paper_batch / batch)
        run_dir = work / f"{name}-b{batch}"
        t = make_run(batch, accum, run_dir, steps)
        try:
            t.train_step()
            trainer = t
        except perf.GpuOutOfMemory:
            attempts.append(batch)
            t.stream.close()
            del t
            _free(device)
            if batch == 1:
                return {**out, "fits": False, "tried_batches": attempts,
                        "reason": f"does not fit even at batch 1 at {crop}x{crop}"}
            batch = max(1, batch // 2)
    out.update({"fits": batch == paper_batch, "batch": batch, "grad_accum": accum, "tried_batches": attempts + [batch],
                "switches": trainer.switches.to_dict()})
    # The probe step above was step 1 of the real run: start the timed run afresh from the same weights.
    trainer.stream.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = make_run(batch, accum, run_dir, steps)
    trainer.stream = TimedStream(trainer.stream)

    # 2. `steps` steps: losses, time split, peak memory; checkpoint in the middle
    losses, times, waits, graphs = [], [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps):
        _sync(device)
        w0, t0 = trainer.stream.wait, time.perf_counter()
        logs = trainer.train_step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        waits.append(trainer.stream.wait - w0)
        losses.append({k: v for k, v in logs.items() if k.endswith("/loss")})
        graphs.append(_graphs_compiled())
        if trainer.step == half:
            trainer.save()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    trainer.stream.close()
    timed = slice(min(args.warmup, steps - 1), steps)
    step_s = sum(times[timed]) / len(times[timed])
    wait_s = sum(waits[timed]) / len(waits[timed])
    samples = batch * accum
    finite = all(math.isfinite(v) for row in losses for v in row.values())

    # 3. resume from the middle checkpoint in a fresh folder: the second half must repeat itself
    resume_dir = work / f"{name}-resume"
    (resume_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / CKPT_DIR / checkpoint_name(half), resume_dir / CKPT_DIR / checkpoint_name(half))
    resumed = make_run(batch, accum, resume_dir, steps)
    again = []
    while resumed.step < steps:
        again.append({k: v for k, v in resumed.train_step().items() if k.endswith("/loss")})
    worst = max((abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for a, b in zip(again, losses[half:]) for k in b), default=0.0)

    # 4. FLOPs of one step (generator + discriminator, executed FLOPs: checkpoint recomputation included)
    with FlopCounterMode(display=False) as counter:
        resumed.train_step()
    resumed.stream.close()
    flops = counter.get_total_flops()
    peak_tflops = bf16_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    del recipe, trainer, resumed
    _free(device)
    return {**out, "steps": steps, "timed_steps": len(times[timed]), "losses_finite": finite,
            "losses": losses, "resume_matches": worst <= args.resume_rtol, "resume_max_rel_diff": worst,
            "step_s": step_s, "data_wait_s": wait_s, "compute_s": step_s - wait_s,
            "data_wait_fraction": wait_s / step_s if step_s > 0 else None,
            "samples_per_s": samples / step_s if step_s > 0 else None,
            "peak_gib": peak, "step_flops": flops, "achieved_tflops": flops / step_s / 1e12 if step_s > 0 else None,
            "bf16_peak_tflops": peak_tflops, "compile_student": args.compile,
            "graphs_compiled_after_warmup": graphs[-1] - graphs[timed.start - 1] if timed.start > 0 else None,
            "mfu": flops / step_s / (peak_tflops * 1e12) if peak_tflops and step_s > 0 else None}


# ---- metrics and Real-ESRGAN -----------------------------------------------------------------------------------

def metrics_section(args, device) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from srdistill.core.iqa.metrics import DEFAULT_METRICS, MetricUnavailable, Scorer

    hrs = photos(args.metric_images, args.metric_size)
    srs = []
    for hr in hrs:   # a plausible SR: x4 bicubic down and up again
        t = torch.from_numpy(hr).permute(2, 0, 1)[None].float()
        lr = F.interpolate(t, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
        up = F.interpolate(lr, size=t.shape[-2:], mode="bicubic", align_corners=False)
        srs.append(np.ascontiguousarray(up.clamp(0, 255).round().byte()[0].permute(1, 2, 0).numpy()))
    rows = {}
    for name in args.metrics or DEFAULT_METRICS:
        if name == "fid":
            rows[name] = {"status": "skipped", "reason": "a folder-level metric (a whole set per score), not per image"}
            continue
        try:
            scorers = {d: Scorer(name, d) for d in dict.fromkeys([str(device), "cpu"])}
        except MetricUnavailable as exc:
            rows[name] = {"status": "unavailable", "reason": str(exc)}
            continue
        main = scorers[str(device)]
        main.score(srs[0], hrs[0])   # warm-up (kernels, lazy buffers)
        _sync(device)
        t0 = time.perf_counter()
        values = [main.score(s, h) for s, h in zip(srs, hrs)]
        _sync(device)
        rate = len(values) / (time.perf_counter() - t0)
        cpu = [scorers["cpu"].score(s, h) for s, h in zip(srs, hrs)]
        exact = name in ("psnr", "psnry", "ssim")
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(values, cpu))
        rows[name] = {"status": "ok", "img_per_s": rate, "images": len(values), "size": args.metric_size,
                      "max_rel_diff_vs_cpu": diff, "tolerance": 0.0 if exact else 1e-3,
                      "matches_cpu": diff == 0.0 if exact else diff <= 1e-3}
        del scorers, main
        _free(device)
    return {"metrics": rows}


def esrgan_section(args, device) -> dict:
    import torch
    from srdistill.evaluate.methods.realesrgan_torch import RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(num_block=args.esrgan_blocks).to(device).eval()   # random weights: the cost of the real ones
    rows = []
    for size in args.esrgan_sizes:
        x = torch.rand(1, 3, size, size, device=device)
        with torch.no_grad():
            net(x)
            _sync(device)
            n, t0 = 0, time.perf_counter()
            while n < args.esrgan_repeat:
                y = net(x)
                n += 1
            _sync(device)
        seconds = (time.perf_counter() - t0) / n
        rows.append({"in": size, "out": int(y.shape[-1]), "img_per_s": 1 / seconds, "ms_per_img": 1000 * seconds,
                     "dtype": "float32" + (" (TF32 matmuls)" if device.type == "cuda" else "")})
        del x, y
        _free(device)
    return {"blocks": args.esrgan_blocks, "sizes": rows}


# ---- report ----------------------------------------------------------------------------------------------------

def _f(v, spec=".2f", none="n/a"):
    return none if v is None else format(v, spec)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# srdistill GPU check ({'quick, CPU' if report['quick'] else 'full'})", "",
             f"device: {env['device_name']} ({env['device']}), torch {env['torch']}, "
             f"dense bf16 peak used for MFU: {_f(env['bf16_peak_tflops'], '.0f')} TFLOP/s, "
             f"components {report['components']}, {report['total_seconds']:.0f} s in all", "",
             "| recipe | res | paper batch | fits | batch x accum | peak GiB | samples/s | step s | data wait | MFU "
             "| losses finite | resume repeats | graphs compiled after warm-up |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for name in RECIPES:
        r = report.get(f"recipe:{name}")
        if r is None:
            continue
        if r["status"] != "ok":
            lines.append(f"| {name} | | | {r['status']}: {r['reason']} | | | | | | | | | |")
        elif not r.get("fits") and "batch" not in r:
            lines.append(f"| {name} | {r['resolution']} | {r['paper_batch']} | no: {r['reason']} | | | | | | | | | |")
        else:
            lines.append(
                f"| {name} | {r['resolution']} | {r['paper_batch']} | {'yes' if r['fits'] else 'no'} | "
                f"{r['batch']} x {r['grad_accum']} | {_f(r['peak_gib'], '.1f')} | {_f(r['samples_per_s'])} | "
                f"{_f(r['step_s'], '.3f')} | {_f(100 * r['data_wait_fraction'], '.1f')}% | "
                f"{_f(None if r['mfu'] is None else 100 * r['mfu'], '.1f')}{'%' if r['mfu'] is not None else ''} | "
                f"{'yes' if r['losses_finite'] else 'NO'} | {'yes' if r['resume_matches'] else 'NO'} "
                f"(max rel diff {r['resume_max_rel_diff']:.1e}) | "
                f"{r['graphs_compiled_after_warmup'] if r['compile_student'] else 'not compiled'} |")
    m = report.get("metrics", {})
    lines += ["", "| metric | img/s | matches CPU |", "| --- | ---: | --- |"]
    if m.get("status") != "ok":
        lines.append(f"| (all) | {m.get('status')}: {m.get('reason')} | |")
    for name, row in m.get("metrics", {}).items():
        if row["status"] == "ok":
            lines.append(f"| {name} | {row['img_per_s']:.2f} | {'yes' if row['matches_cpu'] else 'NO'} "
                         f"(max rel diff {row['max_rel_diff_vs_cpu']:.1e}) |")
        else:
            lines.append(f"| {name} | {row['status']} | {row['reason']} |")
    e = report.get("realesrgan", {})
    lines += ["", "| Real-ESRGAN torch port | img/s | ms/img |", "| --- | ---: | ---: |"]
    if e.get("status") != "ok":
        lines.append(f"| (all) | {e.get('status')}: {e.get('reason')} | |")
    for row in e.get("sizes", []):
        lines.append(f"| {row['in']}->{row['out']} | {row['img_per_s']:.2f} | {row['ms_per_img']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes on the CPU (what the test suite runs)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present; cpu with --quick), cuda, cuda:N or cpu")
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md (default gpu-check/)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of wheels from `make gpu-wheels`")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument("--skip", nargs="*", default=[], choices=("recipes", "metrics", "realesrgan"))
    p.add_argument("--compile", action="store_true", help="torch.compile the student (trainer.compile_student) and "
                   "count graphs compiled after the warm-up steps (0: no recompilation)")
    p.add_argument("--steps", type=int, default=None, help="steps per recipe (default 20; 4 with --quick)")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 2:
        p.error("--steps must be at least 2 (the resume check restarts from the middle checkpoint)")
    quick = args.quick
    args.components = "tiny" if quick else "sd21"
    args.crop = 32 if quick else None                 # None: the recipe YAML's (paper) resolution
    args.batch = 2 if quick else None                 # None: the recipe YAML's per-process batch
    args.steps = args.steps or (4 if quick else 20)
    args.warmup = 1 if quick else 3
    args.loader_workers = 0 if quick else 4
    args.resume_rtol = 1e-5 if quick else 1e-3       # bf16 kernels on a GPU need not be bitwise repeatable
    args.metrics = ["psnry", "ssim"] if quick else None
    args.metric_images = 2 if quick else 8
    args.metric_size = 64 if quick else 512
    args.esrgan_blocks = 2 if quick else 23
    args.esrgan_sizes = (16, 32) if quick else (128, 512)
    args.esrgan_repeat = 1 if quick else 5
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="srdistill-gpu-check-"))
    try:
        wheels = unpack_wheels(Path(args.wheels), tmp / "site")
        import torch

        want = args.device if args.device != "auto" else ("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
        if want.startswith("cuda") and not torch.cuda.is_available():
            print(f"gpu_check: --device {want} was asked for but this PyTorch ({torch.__version__}) sees no CUDA device; "
                  "run it on the GPU machine, or give --quick for the CPU run.", file=sys.stderr)
            return 2
        device = torch.device(want)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", 0)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        source = import_source_tree()
        report = {"quick": args.quick, "components": args.components,
                  "environment": {"device": str(device), "device_name": name, "torch": torch.__version__,
                                  "cuda": torch.version.cuda, "python": sys.version.split()[0], "srdistill": source,
                                  "wheels": wheels, "bf16_peak_tflops": bf16_peak_tflops(name) if device.type == "cuda" else None}}
        print(f"[gpu-check] {name}, torch {torch.__version__}; dense bf16 peak for MFU: "
              f"{_f(report['environment']['bf16_peak_tflops'], '.0f')} TFLOP/s; {len(wheels)} wheels", flush=True)
        if "recipes" not in args.skip:
            for r in args.recipes:
                section(report, f"recipe:{r}", recipe_section, r, args, device, tmp / "runs")
        if "metrics" not in args.skip:
            section(report, "metrics", metrics_section, args, device)
        if "realesrgan" not in args.skip:
            section(report, "realesrgan", esrgan_section, args, device)
        report["total_seconds"] = time.perf_counter() - t_start
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(markdown(report))
        print(markdown(report))
        print(f"[gpu-check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
        return 0
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
