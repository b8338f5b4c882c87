"""Checkpoints of the trainable state only: weights in safetensors, everything else (optimizers, schedulers,
RNG states, data-stream positions) with torch.save, written to a temporary folder and renamed when complete.

Layout: RUN_DIR/checkpoints/step-00000100/{trainable.safetensors, state.pt}; the newest complete one wins.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CKPT_DIR = "checkpoints"
WEIGHTS = "trainable.safetensors"
STATE = "state.pt"


def capture_rng() -> dict:
    """Every global RNG a recipe or the trainer may draw from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_tensors(sd: dict) -> dict:
    """A state dict safetensors can write: detached, contiguous CPU tensors with no shared storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / WEIGHTS).exists() and (p / STATE).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, weights: dict, state: dict, keep: int = 2) -> Path:
    """Write one checkpoint atomically and delete all but the `keep` newest."""
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(cpu_tensors(weights), str(tmp / WEIGHTS))
    torch.save({**state, "step": step}, tmp / STATE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(trainable weights, state) of one checkpoint folder, on the CPU."""
    path = Path(path)
    return load_file(str(path / WEIGHTS)), torch.load(path / STATE, map_location="cpu", weights_only=False)
