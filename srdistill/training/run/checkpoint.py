"""Checkpoints of the trainable state only: weights in safetensors, everything else (optimizers, schedulers,
RNG states, data-stream positions) with torch.save, written to a temporary folder and renamed when complete.

Layout: RUN_DIR/checkpoints/step-00000100/{trainable.safetensors, state.pt}; the newest readable one wins.
`state.pt` holds only tensors and plain values and is loaded with `weights_only=True`, so a run folder from
someone else cannot run code on resume; a file that needs more than that is refused, never unpickled.
A damaged checkpoint (truncated, unreadable) is renamed `unreadable-step-...` and the next older one is used.
"""

from __future__ import annotations

import pickle
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from srdistill.core.errors import UserError

CKPT_DIR = "checkpoints"
WEIGHTS = "trainable.safetensors"
STATE = "state.pt"


def capture_rng() -> dict:
    """Every global RNG a recipe or the trainer may draw from."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array as a tensor: a weights_only load accepts tensors, not numpy arrays.
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
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
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()
             and (p / WEIGHTS).exists() and (p / STATE).exists()]
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


class UnsafeCheckpoint(UserError):
    """A state file that holds more than tensors and plain values: it could run code if unpickled."""


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(trainable weights, state) of one checkpoint folder, on the CPU; UnsafeCheckpoint for a state file that
    holds anything but tensors and plain values; other exceptions for damaged files."""
    path = Path(path)
    weights = load_file(str(path / WEIGHTS))
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(f"refusing to load {path / STATE}: it holds Python objects other than tensors and plain "
                               f"values{_globals_note(path / STATE)}, which could run code when loaded; resume only from "
                               "checkpoints srdistill wrote, or start over with --fresh.") from exc
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError("state.pt is not a checkpoint state (no integer step)")
    return weights, state


def _globals_note(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError):   # a bare pickle, not a torch.save zip: nothing more to name
        return ""
    return f" ({', '.join(names[:3])})" if names else ""


# What a damaged (not a tampered) checkpoint raises while loading.
DAMAGE = (SafetensorError, RuntimeError, OSError, EOFError, ValueError, KeyError)


def load_newest_readable(run_dir: str | Path, *, set_aside: bool = True, say=None) -> tuple[Path, dict, dict] | None:
    """The newest checkpoint that loads, as (folder, weights, state); damaged newer ones are renamed
    `unreadable-step-...` (when `set_aside`) and reported through `say` (default: stderr)."""
    say = say or (lambda line: print(line, file=sys.stderr))
    found = list_checkpoints(run_dir)
    for i, ckpt in enumerate(reversed(found)):
        try:
            weights, state = load_checkpoint(ckpt)
        except DAMAGE as exc:
            older = found[-2 - i].name if i + 1 < len(found) else None
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            kept = ckpt
            if set_aside:
                kept = ckpt.with_name(f"unreadable-{ckpt.name}")
                shutil.rmtree(kept, ignore_errors=True)
                ckpt.rename(kept)
            say(f"checkpoint {ckpt.name} is unreadable ({reason}); kept as {kept.name}, "
                + (f"resuming from {older} instead." if older else "and no older checkpoint is left: starting from step 0."))
            continue
        return ckpt, weights, state
    return None
