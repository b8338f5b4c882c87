"""The hand-off to evaluation: RUN_DIR/export/{student.safetensors, student.json} and `load_student`.

student.safetensors holds the student's trainable weights only (LoRA, new heads, and state its inference reads
such as CTSR's stage-1 snapshot; no discriminator); student.json holds what rebuilds the rest: the recipe name,
its `export_config()` (settings, including the seed of any random-weight bases), the components it was built from
(a preset such as "tiny" or a folder of pretrained weights), the scale, and the student's inference knobs with
their defaults. `load_student` builds the recipe's student roles alone (`build_recipe(..., student_only=True)`:
no teacher, discriminator or loss network), loads the weights and wraps `recipe.student()`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from srdistill.training.inference_policy import InferencePolicy
from srdistill.training.run.checkpoint import cpu_tensors

from srdistill.core.atomic import replace_folder
from srdistill.core.errors import UserError

EXPORT_DIR = "export"
WEIGHTS_NAME = "student.safetensors"
CONFIG_NAME = "student.json"
FORMAT_VERSION = 1


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file, first 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def export_student(run_dir: str | Path, recipe, *, recipe_name: str, components: str, scale: int, seed: int,
                   step: int, knobs: dict | None = None) -> Path:
    """Write RUN_DIR/export atomically (a temporary folder renamed over the old export)."""
    run_dir = Path(run_dir)
    final = run_dir / EXPORT_DIR
    tmp = run_dir / f".{EXPORT_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(cpu_tensors(recipe.trainable_state_dict(student=True)), str(tmp / WEIGHTS_NAME))
    export_config = recipe.export_config()
    record = {
        "format_version": FORMAT_VERSION,
        "recipe": recipe_name,
        "export_config": export_config,
        "components": str(components),
        "seed": seed,
        "scale": int(scale),
        "knobs": dict(knobs if knobs is not None else student_knobs(recipe.student())),
        "step": step,
        "fingerprint": file_fingerprint(tmp / WEIGHTS_NAME),
    }
    (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return replace_folder(tmp, final)


def student_knobs(module: torch.nn.Module) -> dict:
    """The student's inference knobs and their defaults: forward's keyword parameters after the LR input."""
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Student:
    """A trained one-step SR model: lr [B,3,h,w] in [0,1] -> sr [B,3,h*scale,w*scale] in [0,1]."""

    def __init__(self, recipe: str, scale: int, fingerprint: str, knobs: dict, module: torch.nn.Module, device):
        self.recipe = recipe
        self.scale = scale
        self.fingerprint = fingerprint
        self.knobs = dict(knobs)
        self.module = module.eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor, **knobs) -> torch.Tensor:
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise UserError(f"{self.recipe} student takes no knob {min(unknown)!r}; its knobs are {sorted(self.knobs) or 'none'}.")
        out = self.module(lr.to(self.device), **{**self.knobs, **knobs})
        return out.clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"Student(recipe={self.recipe!r}, scale={self.scale}, fingerprint={self.fingerprint!r}, knobs={self.knobs})"


def read_export(run_dir: str | Path) -> dict:
    path = Path(run_dir) / EXPORT_DIR / CONFIG_NAME
    if not path.exists():
        raise UserError(f"{run_dir} holds no trained student (looked for {path}); train one with `train --out {run_dir}`.")
    return json.loads(path.read_text())


def inference_policy(run_dir: str | Path) -> InferencePolicy:
    """The inference policy a run's student was exported with (exports made before policies existed: its recipe's)."""
    from srdistill.training.recipes.registry import RECIPES

    record = read_export(run_dir)
    stored = record["export_config"].get("inference")
    if stored is not None:
        return InferencePolicy.from_dict(stored)
    if record["recipe"] not in RECIPES:
        raise UserError(f"{run_dir} was trained with recipe {record['recipe']!r}, which this version does not know.")
    return RECIPES[record["recipe"]].INFERENCE


def load_student(run_dir: str | Path, device="cpu", components: str | None = None) -> Student:
    """Rebuild a run's exported student; `components` overrides the recorded preset/folder (e.g. a moved folder)."""
    from srdistill.training.recipes.registry import build_recipe

    record = read_export(run_dir)
    weights_path = Path(run_dir) / EXPORT_DIR / WEIGHTS_NAME
    if not weights_path.exists():
        raise UserError(f"{run_dir} has {CONFIG_NAME} but no {WEIGHTS_NAME}; re-export the run.")
    config = record["export_config"]
    recipe = build_recipe(record["recipe"], config.get("cfg", config), components or record["components"],
                          torch.device(device), student_only=True)
    recipe.load_trainable_state_dict(load_file(str(weights_path), device=str(device)), student=True)
    recipe.eval()
    return Student(record["recipe"], int(record["scale"]), file_fingerprint(weights_path), record["knobs"],
                   recipe.student(), device)


def find_runs(runs_root: str | Path) -> list[Path]:
    """Run folders under `runs_root` (itself included) that hold an export, sorted."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    return sorted({p.parent.parent for p in root.rglob(f"{EXPORT_DIR}/{CONFIG_NAME}") if (p.parent / WEIGHTS_NAME).exists()})
