"""Run configuration: one YAML per recipe (training/recipes/<recipe>.yaml) plus `--config FILE` and `--set key=value`.

A config document has these sections (`components:` and `assumptions:` are optional)::

    trainer:            # keys of TrainerConfig below (the trainer's schema; unknown keys are an error)
      steps: 1000
      global_batch: 8   # the paper's batch over all processes; the per-process batch_size is derived
      lr_g: 5.0e-5
    recipe:             # free-form, handed to build_recipe(name, cfg, ...) (the recipe validates them)
      lora_rank: 16
    assumptions:        # every value the paper does not give and every stand-in network, one line each
      - "t_l = 500: the paper's value is in its supplement"
    components:         # optional per-role sources (a folder or a Hugging Face model id), see srdistill.core.fetch.hub
      vae: stabilityai/sd-vae-ft-mse

Documents' assumption lists add up; the run's config.json records them.

Precedence: TrainerConfig defaults < packaged training/recipes/<recipe>.yaml < --config FILE < --set.
`--set` takes `trainer.KEY=V`, `recipe.KEY[.SUB]=V`, `components.ROLE=ID_OR_DIR`, or a bare trainer `KEY=V`;
values are converted to the type of the field (trainer) or of the existing default (recipe), else read as YAML.
The resolved values are checked before any work: each recipe value against the type of the recipe's default
(and, for the recipe's CHOICES, its allowed values), the trainer's device, online spec and ranges.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from srdistill.core import documents
from srdistill.core.errors import UserError


@dataclass
class TrainerConfig:
    """Every knob of the training loop (the `trainer:` section); recipes' paper values override these defaults."""

    steps: int = 1000                 # optimizer steps (one generator step, then one discriminator step if any)
    global_batch: int | None = None   # samples per optimizer step over all processes (the papers' "batch size")
    batch_size: int = 4               # samples per process per micro-batch (derived when global_batch is set)
    crop: int = 512                   # HR training crop (multiple of the scale); 0 = whole shard samples
    crop_policy: str = "random"       # "random", "center" or "resize_center" (short side to crop first; needs online)
    lr_g: float = 5e-5                # AdamW learning rate of the generator's trainable parameters
    lr_d: float = 5e-5                # AdamW learning rate of the discriminator's trainable parameters
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    warmup_steps: int = 0             # linear learning-rate warm-up, then constant
    grad_accum: int = 1               # micro-batches per optimizer step
    clip_grad: float = 1.0            # max global grad norm per optimizer; 0 disables clipping
    bf16: bool | None = None          # bf16 autocast; None = on for CUDA, off on CPU
    log_every: int = 1                # jsonl log interval in steps
    ckpt_every: int = 500             # checkpoint (and export) interval in steps; 0 = only at the end
    keep_ckpts: int = 2               # checkpoints kept on disk (oldest deleted first)
    val_every: int = 0                # validation interval in steps on the held-out shards; 0 = only at the end
    val_images: int = 8               # held-out samples scored per validation
    val_metrics: str = "psnry,ssim"   # pyiqa metrics through srdistill.evaluate (leaderboard convention), comma-separated
    seed: int = 0                     # seeds model init (tiny components), noise draws and the data order
    num_workers: int = 2              # loader worker processes per training process
    shuffle_buffer: int = 256         # samples held by each worker's shuffle buffer
    flips: bool = True                # random horizontal/vertical flips and 90-degree rotations
    online: str | None = None         # degradation preset/file: re-degrade HR crops on the fly each epoch
    device: str = "auto"              # "auto" (cuda:LOCAL_RANK if available, else cpu), "cpu", "cuda", ...
    # memory/speed switches, see training/perf.py; None = auto (on for CUDA, off on the CPU)
    grad_checkpointing: bool | None = None   # activation checkpointing in the recipe's diffusers models
    tf32: bool = True                 # TF32 matmuls/convolutions (CUDA only)
    channels_last: bool | None = None  # NHWC weights where convolutions dominate
    fused_adamw: bool | None = None   # fused AdamW kernel where torch has one for the device
    pin_memory: bool = True           # page-locked batches, non-blocking copies (CUDA only)
    compile_student: bool = False     # torch.compile the student's trainable backbone


TRAINER_KEYS = tuple(f.name for f in dataclasses.fields(TrainerConfig))


@dataclass
class RunConfig:
    """The resolved configuration of one run."""

    recipe: str
    trainer: TrainerConfig
    recipe_cfg: dict = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)   # documents applied, for the run record
    components: dict[str, str] = field(default_factory=dict)  # per-role sources: role -> folder or model id
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "trainer": dataclasses.asdict(self.trainer), "recipe_cfg": self.recipe_cfg,
                "component_overrides": dict(self.components), "assumptions": list(self.assumptions)}


def packaged_config(recipe: str) -> Path | None:
    """The shipped defaults of a recipe, or None when the package holds none."""
    path = resources.files("srdistill.training.recipes") / f"{recipe}.yaml"
    return Path(str(path)) if path.is_file() else None


def packaged_recipes() -> list[str]:
    """The recipes with a packaged YAML (one beside each recipe module), read without importing any recipe."""
    folder = resources.files("srdistill.training.recipes")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_document(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist.")
    doc = documents.read_document(path, what="config file") or {}
    if not isinstance(doc, dict) or set(doc) - {"trainer", "recipe", "assumptions", "components"}:
        raise UserError(f"config file {path} must be a mapping with only `trainer:`, `recipe:`, `assumptions:` and "
                        f"`components:` sections.")
    for section in ("trainer", "recipe", "components"):
        if not isinstance(doc.get(section) or {}, dict):
            raise UserError(f"config file {path}: `{section}:` must be a mapping.")
    if not isinstance(doc.get("assumptions") or [], list):
        raise UserError(f"config file {path}: `assumptions:` must be a list of sentences.")
    return doc


def _field_type(name: str) -> Any:
    hints = typing.get_type_hints(TrainerConfig)
    return hints[name]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to a TrainerConfig field type (int, float, bool, str, or Optional of them)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e400 is an infinite float, no int
        finite = " (a finite number)" if tp in (int, float) else ""
        raise UserError(f"{where} must be {tp.__name__}{finite}, got {value!r}.") from None
    raise UserError(f"{where} has an unsupported type {tp}.")


def _apply_trainer(cfg: TrainerConfig, values: dict, origin: str) -> None:
    for key, value in values.items():
        if key not in TRAINER_KEYS:
            raise UserError(f"unknown trainer key {key!r} in {origin}; known keys: {', '.join(TRAINER_KEYS)}.")
        setattr(cfg, key, _coerce(value, _field_type(key), f"trainer.{key} ({origin})"))
        if key == "batch_size" and "global_batch" not in values:
            cfg.global_batch = None   # a later per-process batch replaces an earlier global one


def per_process_batch(cfg: TrainerConfig, world_size: int) -> int:
    """The per-process micro-batch: global_batch / (world_size x grad_accum), or batch_size when no global one."""
    if cfg.global_batch is None:
        return cfg.batch_size
    share = world_size * cfg.grad_accum
    if cfg.global_batch % share:
        raise UserError(f"trainer.global_batch {cfg.global_batch} does not split over {world_size} processes x "
                        f"{cfg.grad_accum} accumulation steps; choose a multiple of {share} or set batch_size.")
    return cfg.global_batch // share


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _parse_recipe_value(text: str, default: Any, where: str = "value") -> Any:
    if isinstance(default, bool):
        return _coerce(text, bool, where)
    if isinstance(default, (int, float)):
        try:
            return type(default)(float(text)) if isinstance(default, float) else int(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)   # YAML 1.1 reads "1e-5" as a string
        except ValueError:
            return value
    return value


def _set_recipe(cfg: dict, path: list[str], text: str) -> None:
    node = cfg
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set recipe.{'.'.join(path)}: {part!r} is not a section.")
    node[path[-1]] = _parse_recipe_value(text, node.get(path[-1]), f"recipe.{'.'.join(path)}")


def apply_set(run: RunConfig, item: str) -> None:
    """Apply one `--set key=value` to a RunConfig."""
    if "=" not in item:
        raise UserError(f"--set {item!r} must look like key=value (e.g. trainer.steps=100 or recipe.lora_rank=8).")
    key, text = (s.strip() for s in item.split("=", 1))
    parts = key.split(".")
    if parts[0] == "trainer" and len(parts) == 2:
        _apply_trainer(run.trainer, {parts[1]: text}, "--set")
    elif parts[0] == "recipe" and len(parts) >= 2:
        _set_recipe(run.recipe_cfg, parts[1:], text)
    elif parts[0] == "components" and len(parts) == 2:
        run.components[parts[1]] = text
    elif len(parts) == 1 and key in TRAINER_KEYS:
        _apply_trainer(run.trainer, {key: text}, "--set")
    elif len(parts) == 1 and key in run.recipe_cfg:
        _set_recipe(run.recipe_cfg, parts, text)
    else:
        raise UserError(f"--set {key!r} names no trainer key and no recipe key; write trainer.KEY=V, recipe.KEY=V "
                        f"or components.ROLE=FOLDER_OR_MODEL_ID.")


def load_run_config(recipe: str, config_file: str | Path | None = None, sets: list[str] = ()) -> RunConfig:
    """Resolve a run's configuration: defaults < packaged recipe YAML < `config_file` < `sets`."""
    run = RunConfig(recipe=recipe, trainer=TrainerConfig())
    docs = []
    packaged = packaged_config(recipe)
    if packaged is not None:
        docs.append(packaged)
    if config_file is not None:
        docs.append(Path(config_file))
    for path in docs:
        doc = read_document(path)
        _apply_trainer(run.trainer, doc.get("trainer") or {}, str(path))
        run.recipe_cfg = _merge(run.recipe_cfg, doc.get("recipe") or {})
        run.assumptions += [str(a) for a in doc.get("assumptions") or []]
        run.components.update({str(k): str(v) for k, v in (doc.get("components") or {}).items()})
        run.sources.append(str(path))
    for item in sets:
        apply_set(run, item)
        run.sources.append(f"--set {item}")
    validate(run.trainer)
    # torchrun sets WORLD_SIZE before the process starts, so the derived batch is right from here on
    run.trainer.batch_size = per_process_batch(run.trainer, int(os.environ.get("WORLD_SIZE", "1")))
    validate_recipe_values(recipe, run.recipe_cfg)
    return run


def _kind(default: Any) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "text"
    return None


def _checked(key: str, value: Any, default: Any, choices: dict) -> Any:
    """`value` as the type of `default` (an int accepts whole floats, a float accepts ints) and, for a setting in
    `choices` (the recipe's CHOICES), one of its allowed values; or UserError."""
    kind = _kind(default)
    ok = (kind is None or (isinstance(default, bool) and isinstance(value, bool))
          or (type(default) is int and not isinstance(value, bool)
              and (isinstance(value, int) or (isinstance(value, float) and value.is_integer())))
          or (isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (isinstance(default, str) and isinstance(value, str)))
    if not ok:
        raise UserError(f"recipe.{key} must be {kind} like its default {default!r}, got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"recipe.{key} must be a finite number, got {value!r}.")
    if type(default) is int:
        value = int(value)
    elif isinstance(default, float):
        value = float(value)
    if key in choices and isinstance(value, str) and value not in choices[key].allowed():
        raise UserError(f"recipe.{key} must be {choices[key].described}, got {value!r}.")
    return value


def validate_recipe_values(recipe: str, values: dict) -> None:
    """Check (and convert in place) each value the recipe has a default for, and each of its ``CHOICES`` against
    the allowed values; unknown keys are the recipe's to refuse."""
    from srdistill.training.recipes.registry import RECIPES

    cls = RECIPES.get(recipe)
    defaults, choices = (cls.DEFAULTS, cls.CHOICES) if cls is not None else ({}, {})
    for key, value in list(values.items()):
        if key in defaults:
            values[key] = _checked(key, value, defaults[key], choices)


def validate(cfg: TrainerConfig) -> None:
    positive = ("steps", "batch_size", "grad_accum", "log_every", "keep_ckpts", "val_images")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise UserError(f"trainer.{key} must be at least 1, got {getattr(cfg, key)}.")
    for key in ("crop", "warmup_steps", "ckpt_every", "val_every", "num_workers", "shuffle_buffer"):
        if getattr(cfg, key) < 0:
            raise UserError(f"trainer.{key} must not be negative, got {getattr(cfg, key)}.")
    if cfg.global_batch is not None and cfg.global_batch < 1:
        raise UserError(f"trainer.global_batch must be at least 1, got {cfg.global_batch}.")
    from srdistill.training.loader import check_crop_policy

    try:
        check_crop_policy(cfg.crop_policy, cfg.crop, cfg.online)
    except UserError as exc:
        raise UserError(f"trainer.{exc}") from None
    for key in ("lr_g", "lr_d", "clip_grad", "weight_decay"):
        if getattr(cfg, key) < 0:
            raise UserError(f"trainer.{key} must not be negative, got {getattr(cfg, key)}.")
    device = cfg.device.split(":")
    if not (cfg.device in ("auto", "cpu", "cuda") or (len(device) == 2 and device[0] == "cuda" and device[1].isdigit())):
        raise UserError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}.")
    if cfg.online is not None:
        from srdistill.degrade.spec.schema import load_spec

        load_spec(cfg.online)
