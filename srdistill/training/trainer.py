"""The training loop: plain torch around a Recipe (training/recipes/base.py).

Each optimizer step takes `grad_accum` micro-batches from the shard stream, runs the generator phase
(Recipe.generator_loss, AdamW over generator_parameters) and then, when the recipe has a discriminator, the
discriminator phase on the same micro-batches (Recipe.discriminator_loss, its own AdamW). During a phase the
other side's parameters have requires_grad off, so a phase only ever produces gradients for its own side.
bf16 autocast, gradient clipping, data parallelism under torchrun (training/distributed.py), checkpoints with
exact resume (training/run/checkpoint.py), a jsonl log of every loss term and learning rate, periodic validation
on held-out shards and the student export (training/export.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from srdistill.training.loader import (
    BatchStream,
    LoaderPosition,
    iter_samples,
    read_scale,
    shard_urls,
    to_float,
)
from srdistill.training import distributed as dd
from srdistill.training import perf
from srdistill.training.run import resume as rs
from srdistill.training.run.checkpoint import (
    CKPT_DIR,
    capture_rng,
    latest_checkpoint,
    load_newest_readable,
    restore_rng,
    save_checkpoint,
)
from srdistill.training.config import RunConfig, TrainerConfig
from srdistill.training.export import export_student
from srdistill.training.run.log import JsonlLog
from srdistill.training.recipes.base import frozen_params

from srdistill.core.devices import user_device
from srdistill.core.errors import UserError

RUN_RECORD = "config.json"   # the run record: resolved config, assumptions, stand-ins, batch sizes


class TrainingDiverged(UserError):
    """A loss turned NaN or infinite."""


@dataclass
class TrainSummary:
    recipe: str
    run_dir: str
    start_step: int
    final_step: int
    samples: int
    seconds: float
    last: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    export_dir: str | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        steps = self.final_step - self.start_step
        out = [(f"recipe {self.recipe}: {steps} steps ({self.start_step} -> {self.final_step}), {self.samples} samples "
                f"in {self.seconds:.1f} s ({self.samples_per_s:.2f} samples/s)")]
        if self.last:
            out.append("last step: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.last.items()) if isinstance(v, float)))
        if self.val:
            out.append("validation: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(self.val.items())))
        if self.export_dir:
            out.append(f"student exported to {self.export_dir}")
        return out


def resolve_device(name: str, info: dd.DistInfo) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = user_device(name, "use --set trainer.device=cpu or another device")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{info.local_rank}")
    return device


def _warmup(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """Eval mode for validation, then every submodule's own flag back (frozen parts stay in eval)."""
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, f in flags.items():
            m.train(f)


class Trainer:
    """Trains one recipe on one process of a (possibly) data-parallel job; resumes from RUN_DIR's newest checkpoint."""

    def __init__(self, recipe, run: RunConfig, *, shards, run_dir, components: str, device: torch.device,
                 scale: int, val_shards=None, dist: dd.DistInfo | None = None, resume: bool = True):
        self.recipe = recipe
        self.run = run
        self.cfg: TrainerConfig = run.trainer
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.components = components
        self.device = device
        self.scale = scale
        self.val_shards = val_shards
        self.dist = dist = dist or dd.DistInfo()
        self.switches, self.perf_touched = perf.apply(recipe, self.cfg, device)
        self.bf16 = self.switches.bf16
        self.g_params = list(recipe.generator_parameters())
        self.d_params = list(recipe.discriminator_parameters())
        if not self.g_params:
            raise UserError(f"recipe {run.recipe} exposes no trainable generator parameters.")
        cfg = self.cfg
        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.opt_g = perf.adamw(self.g_params, fused=self.switches.fused_adamw, lr=cfg.lr_g, betas=betas, weight_decay=cfg.weight_decay)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, _warmup(cfg.warmup_steps))
        self.opt_d = self.sched_d = None
        if self.d_params:
            self.opt_d = perf.adamw(self.d_params, fused=self.switches.fused_adamw, lr=cfg.lr_d, betas=betas, weight_decay=cfg.weight_decay)
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, _warmup(cfg.warmup_steps))
        self.step = 0
        self.inputs = {"shards": rs.shards_identity(shards), "components": rs.components_identity(components),
                       "val_shards": rs.shards_identity(val_shards),
                       # per-role overrides compose the same OUT/components folder whatever they name: compare them too
                       **{f"components.{role}": spec for role, spec in sorted(run.components.items())}}
        self.changes: list[dict] = []     # settings changed on a resume, with their step (config.json `changes`)
        applied: list[rs.Change] = []
        position = None
        loaded = load_newest_readable(self.run_dir, set_aside=dist.is_main, say=self._say) if resume else None
        if loaded is not None:
            position, applied = self._restore(*loaded)
        else:
            dd.broadcast_parameters(self.g_params + self.d_params, dist)
        self.resumed_from = self.step if loaded is not None else None
        self.stream = BatchStream(shards, batch_size=cfg.batch_size, crop=cfg.crop or None, seed=cfg.seed,
                                  num_workers=cfg.num_workers, online_spec=cfg.online, shuffle_buffer=cfg.shuffle_buffer,
                                  flips=cfg.flips, rank=dist.rank, world_size=dist.world_size, position=position,
                                  uint8=True, crop_policy=cfg.crop_policy)
        self.log = JsonlLog(self.run_dir, resume_step=self.resumed_from, enabled=dist.is_main)
        self.samples_per_step = cfg.batch_size * cfg.grad_accum * dist.world_size
        if applied:
            self.log.write({"step": self.step, "event": "config_change",
                            "changes": {c.key: {"from": c.old, "to": c.new} for c in applied}})
            self._say(f"resuming at step {self.step} with {', '.join(c.text() for c in applied)}, in effect from this step on.")

    def _say(self, line: str) -> None:
        if self.dist.is_main:
            print(f"train: {line}", file=sys.stderr)

    def settings(self) -> dict:
        """Everything a later resume compares against (see training/run/resume.py)."""
        return rs.settings(self.cfg, getattr(self.recipe, "cfg", self.run.recipe_cfg), self.inputs)

    # ---- checkpoints -------------------------------------------------------------------------------------

    def _state(self) -> dict:
        positions = dd.gather_objects(self.stream.position.to_dict(), self.dist)
        return {
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "rng": dd.gather_objects(capture_rng(), self.dist),
            "positions": positions,
            "run": self.run.to_dict(),
            "settings": self.settings(),
            "changes": self.changes,
        }

    def save(self) -> Path | None:
        dd.check_in_sync(self.g_params + self.d_params, self.dist)
        state = self._state()   # collective: every rank takes part
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.run_dir, self.step, self.recipe.trainable_state_dict(), state, keep=self.cfg.keep_ckpts)
            self.export()
        dd.barrier(self.dist)
        return path

    def _restore(self, ckpt: Path, weights: dict, state: dict) -> tuple[LoaderPosition, list[rs.Change]]:
        if state["run"]["recipe"] != self.run.recipe:
            raise UserError(f"{self.run_dir} holds a {state['run']['recipe']} run; give another --out for {self.run.recipe}.")
        if len(state["positions"]) != self.dist.world_size:
            raise UserError(f"{ckpt} was written by {len(state['positions'])} processes; resume it with the same number (now {self.dist.world_size}).")
        applied, refused = rs.compare(state, self.settings())
        if refused:
            raise UserError(rs.refusal(self.run_dir, int(state["step"]), refused))
        self.recipe.load_trainable_state_dict({k: v.to(self.device) for k, v in weights.items()})
        self._load_optimizer(self.opt_g, self.sched_g, state["opt_g"], state["sched_g"], self.cfg.lr_g)
        if self.opt_d is not None:
            self._load_optimizer(self.opt_d, self.sched_d, state["opt_d"], state["sched_d"], self.cfg.lr_d)
        restore_rng(state["rng"][self.dist.rank])
        self.step = int(state["step"])
        self.changes = list(state.get("changes", [])) + [c.record(self.step) for c in applied]
        return LoaderPosition.from_dict(state["positions"][self.dist.rank]), applied

    def _load_optimizer(self, opt, sched, opt_state: dict, sched_state: dict, lr: float) -> None:
        """Moments and step counts from the checkpoint; hyper-parameters (rates, betas, weight decay, fused) as
        configured now, which are either unchanged or an applied change, so what config.json records is what trains."""
        configured = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(opt_state)   # this also brings back the old groups' hyper-parameters...
        sched.load_state_dict(sched_state)
        now = lr * _warmup(self.cfg.warmup_steps)(sched.last_epoch)
        for group, conf in zip(opt.param_groups, configured, strict=True):   # ...which the configured ones replace
            group.update(conf, lr=now, initial_lr=lr)
        n = len(opt.param_groups)
        sched.load_state_dict({**sched.state_dict(), "base_lrs": [lr] * n, "_last_lr": [now] * n})

    def export(self) -> Path:
        return export_student(self.run_dir, self.recipe, recipe_name=self.run.recipe, components=self.components,
                              scale=self.scale, seed=self.cfg.seed, step=self.step)

    # ---- one step ----------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _phase(self, loss_fn, batches, step: int, opt, sched, params, others, prefix: str) -> dict:
        with frozen_params(others):
            opt.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for lr, hr in batches:
                with self._autocast():
                    terms = loss_fn(lr, hr, step)
                if not terms:
                    return {}
                loss = terms["loss"].float()
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"the {prefix} loss became {loss.item()} at step {step}; lower the learning rate or check the data.")
                (loss / len(batches)).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach().float()) / len(batches)
            dd.average_gradients(params, self.dist)
            if self.cfg.clip_grad > 0:
                sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad))
            opt.step()
            lr_now = sched.get_last_lr()[0]
            sched.step()
        out = {f"{prefix}/{k}": v for k, v in sums.items()}
        out[f"lr_{prefix}"] = lr_now
        return out

    def train_step(self) -> dict:
        """One generator step and one discriminator step on grad_accum fresh micro-batches; returns the logged terms."""
        batches = []
        for _ in range(self.cfg.grad_accum):
            b = next(self.stream)
            # uint8 to the device, float there: a quarter of the host-to-device traffic.
            batches.append(tuple(to_float(perf.to_device(b[k], self.device, self.switches.pin_memory)) for k in ("lr", "hr")))
        try:
            logs = self._phase(self.recipe.generator_loss, batches, self.step, self.opt_g, self.sched_g,
                               self.g_params, self.d_params, "g")
            if self.opt_d is not None:
                logs.update(self._phase(self.recipe.discriminator_loss, batches, self.step, self.opt_d, self.sched_d,
                                        self.d_params, self.g_params, "d"))
        except torch.cuda.OutOfMemoryError:
            raise perf.GpuOutOfMemory(perf.oom_message(self.run.recipe, self.cfg.batch_size, self.cfg.crop,
                                                       self.cfg.grad_accum, self.switches)) from None
        self.step += 1
        return logs

    # ---- validation --------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean `val_metrics` of the student on the first `val_images` held-out samples."""
        if self.val_shards is None or not self.dist.is_main:
            return {}
        from srdistill.training.validation import score_student

        with _eval_mode(self.recipe), self._autocast():
            metrics = [m.strip() for m in self.cfg.val_metrics.split(",") if m.strip()]
            return score_student(self.recipe.student(), iter_samples(self.val_shards), self.cfg.val_images, self.device, metrics)

    # ---- the loop ----------------------------------------------------------------------------------------

    def fit(self, progress: bool = True) -> TrainSummary:
        from tqdm import tqdm

        cfg = self.cfg
        start, t0 = self.step, time.perf_counter()
        last, val = {}, {}
        bar = tqdm(total=cfg.steps, initial=start, unit="step", desc=f"train {self.run.recipe}",
                   disable=not (progress and self.dist.is_main), dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                logs = dd.average_scalars(self.train_step(), self.dist, self.device)
                last = logs
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log.write({"step": self.step, "epoch": self.stream.position.epoch,
                                    "samples": self.step * self.samples_per_step, **logs})
                bar.update(1)
                bar.set_postfix_str(f"loss {logs.get('g/loss', float('nan')):.4g}")
                if cfg.val_every and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                    self._validate_and_log()
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                    self.save()
        finally:
            bar.close()
            self.stream.close()
        seconds = time.perf_counter() - t0
        if self.step > start or latest_checkpoint(self.run_dir) is None:
            self.save()
        val = self._validate_and_log()
        return TrainSummary(self.run.recipe, str(self.run_dir), start, self.step, (self.step - start) * self.samples_per_step,
                            seconds, last, val, str(self.run_dir / "export") if self.dist.is_main else None)

    def _validate_and_log(self) -> dict:
        val = self.validate()
        if val:
            self.log.write({"step": self.step, **{f"val/{k}": v for k, v in val.items()}})
        dd.barrier(self.dist)
        return val


def write_run_record(out: Path, run: RunConfig, recipe, *, shards, val_shards, components: str, scale: int,
                     world_size: int, changes: list | None = None, bf16: bool = False) -> Path:
    """OUT/config.json: the resolved configuration, the recipe's assumptions and every stand-in (from the YAML
    and from what this run had to substitute), the global and per-process batch, the trainable sizes, the
    inference and precision policies, and the settings a resume changed (each with the step it took effect)."""
    t = run.trainer
    record = {**run.to_dict(), "shards": str(shards), "val_shards": str(val_shards) if val_shards else None,
              "components": components, "scale": scale, "world_size": world_size, "config_sources": run.sources,
              "batch": {"global": t.batch_size * t.grad_accum * world_size, "per_process": t.batch_size,
                        "grad_accum": t.grad_accum, "global_from_config": t.global_batch},
              "substitutions": list(recipe.substitutions), "trainable_parameters": recipe.parameter_counts(),
              "inference": recipe.INFERENCE.to_dict(),
              "precision": {"bf16_autocast": bool(bf16), "networks": dict(recipe.PRECISION)},
              "changes": list(changes or [])}
    path = Path(out) / RUN_RECORD
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def detect_scale(shards) -> int:
    """The shards' scale: the manifest's, else the first sample's json."""
    scale = read_scale(shards) if isinstance(shards, (str, Path)) and Path(shards).is_dir() else None
    if scale is None:
        scale = int(next(iter_samples(shard_urls(shards)[:1]))["meta"]["scale"])
    return scale


def run_training(run: RunConfig, *, shards, out, components: str = "tiny", val_shards=None,
                 progress: bool = True, resume: bool = True) -> TrainSummary:
    """Everything `train` does: join torchrun's group, seed, build the recipe, train, checkpoint, export."""
    from srdistill.training.recipes.registry import build_recipe

    info = dd.init_from_env("cuda" if torch.cuda.is_available() and run.trainer.device != "cpu" else "cpu")
    try:
        device = resolve_device(run.trainer.device, info)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        shard_urls(shards)
        if val_shards is not None:
            shard_urls(val_shards)
            from srdistill.core.iqa.metrics import metric_info

            for name in run.trainer.val_metrics.split(","):   # an unknown name fails now, not after training
                if name.strip():
                    metric_info(name.strip())
        scale = detect_scale(shards)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if not resume and info.is_main:
            shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
        dd.barrier(info)
        recipe = build_recipe(run.recipe, dict(run.recipe_cfg), components, device)
        if getattr(recipe, "scale", scale) != scale:
            raise UserError(f"recipe {run.recipe} upsamples x{recipe.scale} but the shards in {shards} are x{scale}; build x{recipe.scale} shards.")
        # Noise draws differ per process (as data does); the model was built the same everywhere.
        torch.manual_seed(run.trainer.seed + 1 + info.rank)
        trainer = Trainer(recipe, run, shards=shards, run_dir=out, components=components, device=device, scale=scale,
                          val_shards=val_shards, dist=info, resume=resume)
        if info.is_main:
            write_run_record(out, run, recipe, shards=shards, val_shards=val_shards, components=components, scale=scale,
                             world_size=info.world_size, changes=trainer.changes, bf16=trainer.bf16)
        return trainer.fit(progress=progress)
    finally:
        dd.shutdown(info)

