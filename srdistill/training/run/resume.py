"""Resuming with settings that differ from the checkpoint's: apply the safe ones explicitly, refuse the rest.

A checkpoint records the settings it was trained with (`state["settings"]`: every trainer key, every recipe
value in effect, the training shards' identity, the components, the held-out shards). On resume each
difference is either

- applied: a knob that steers the loop from this step on without changing what the steps so far meant
  (learning rates, Adam's betas, weight decay, the step count, clipping, the memory/speed switches, device,
  logging, checkpoint and validation cadence, the held-out shards). The trainer sets it on the restored optimizer and
  scheduler, logs a `config_change` record at the resume step and keeps it in `config.json`'s `changes`;
- refused: anything that changes the data stream, the `samples` counter, the schedule under way or the losses
  (batch size, accumulation, crop, seed, warm-up, loader layout, flips, online degradation, every recipe
  value, the training shards, the components). One sentence names the keys; nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from srdistill.datasets.shards.manifest import MANIFEST_NAME

APPLIED_TRAINER_KEYS = frozenset({
    "steps", "lr_g", "lr_d", "adam_beta1", "adam_beta2", "weight_decay", "clip_grad", "log_every", "ckpt_every",
    "keep_ckpts", "val_every", "val_images", "val_metrics", "device",
    # memory/speed switches (training/perf.py): how a step runs, not what it computes
    "bf16", "grad_checkpointing", "tf32", "channels_last", "fused_adamw", "pin_memory", "compile_student",
})
APPLIED_INPUTS = frozenset({"val_shards"})
SHOWN = 6   # differing keys named in a refusal before "and N more"


@dataclasses.dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def text(self) -> str:
        return f"{self.key} {self.old!r} -> {self.new!r}"

    def record(self, step: int) -> dict:
        return {"step": step, "key": self.key, "from": self.old, "to": self.new}


def shards_identity(shards) -> str | None:
    """What the shards are: a build's id when the folder has a manifest (the same build moved elsewhere is the same
    data), else the resolved path or pattern."""
    if shards is None:
        return None
    if isinstance(shards, (list, tuple)):
        return ",".join(str(Path(s).resolve()) for s in shards)
    text = str(shards)
    if "://" in text:
        return text
    manifest = Path(text) / MANIFEST_NAME
    if manifest.is_file():
        try:
            build_id = json.loads(manifest.read_text()).get("build_id")
        except (OSError, ValueError):
            build_id = None
        if build_id:
            return f"build {build_id}"
    return str(Path(text).resolve())


def components_identity(components: str) -> str:
    """A preset name or hub id as given; a folder as its absolute path (the same folder from another cwd is the same)."""
    return str(Path(components).resolve()) if Path(components).is_dir() else components


def _flatten(values: dict, prefix: str) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings(trainer: Any, recipe_cfg: dict, inputs: dict) -> dict[str, Any]:
    """One flat {key: value} of everything a resume compares (plain values only: it is saved in state.pt)."""
    flat = {f"trainer.{k}": v for k, v in dataclasses.asdict(trainer).items()}
    flat.update(_flatten(recipe_cfg, "recipe."))
    flat.update(inputs)
    return flat


def compare(state: dict, now: dict[str, Any]) -> tuple[list[Change], list[Change]]:
    """(applied, refused) differences between a checkpoint's settings and `now`."""
    saved = state.get("settings")
    if saved is None:   # a checkpoint from before settings were saved: only its trainer section is known
        saved = {f"trainer.{k}": v for k, v in state["run"]["trainer"].items()}
        now = {k: v for k, v in now.items() if k.startswith("trainer.")}
    applied, refused = [], []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if old == new:
            continue
        safe = (key.startswith("trainer.") and key.split(".", 1)[1] in APPLIED_TRAINER_KEYS) or key in APPLIED_INPUTS
        (applied if safe else refused).append(Change(key, old, new))
    return applied, refused


def refusal(run_dir: Path, step: int, refused: list[Change]) -> str:
    named = ", ".join(c.text() for c in refused[:SHOWN])
    more = f" and {len(refused) - SHOWN} more" if len(refused) > SHOWN else ""
    return (f"cannot resume {run_dir} at step {step} with changed {named}{more}: these would change the data stream, "
            "the samples counter or the losses mid-run; resume with the original values, or start over with --fresh "
            "or another --out.")
