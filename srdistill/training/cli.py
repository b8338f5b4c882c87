"""`train`: train a one-step SR student with one of the distillation recipes from `degrade build` shards."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import sys
from pathlib import Path

from srdistill.core.errors import UserError, run_command

EPILOG = """\
examples:
  train --recipe d3sr --shards shards/ --out runs/d3sr --components tiny --steps 20
  train --recipe strsr --shards shards/ --out runs/strsr --components /models/sd3 --set trainer.batch_size=8
  train --recipe d3sr --shards shards/ --out runs/d3sr --components stabilityai/stable-diffusion-2-1-base \
        --set components.vae=stabilityai/sd-vae-ft-mse@main
  torchrun --nproc-per-node 4 -m srdistill.training.cli --recipe ctsr --shards shards/ --out runs/ctsr

configuration: defaults < training/recipes/RECIPE.yaml < --config FILE < --set (trainer.KEY=V, recipe.KEY=V, or a
bare trainer KEY=V, or components.ROLE=FOLDER_OR_MODEL_ID for one role: vae, unet, transformer, transformer_vae,
scheduler, text_encoder, tokenizer, ...). Model ids are fetched into the Hugging Face cache (HF_ENDPOINT honoured);
--offline or SRDISTILL_OFFLINE=1 uses the cache only. Re-running with the same --out resumes from its newest
checkpoint; changed learning rates, step count, cadences, clipping, precision or device apply from that step on
(logged as a config_change), while a changed batch size, crop, seed, data, components or recipe value is refused.
The trained student lands in OUT/export and is scored with `evaluate leaderboard --method NAME=OUT`.

trainer keys (default):
{trainer_keys}
"""


def trainer_keys_help() -> str:
    """One line per TrainerConfig field: name, default and the comment beside it in the dataclass."""
    from srdistill.training.config import TrainerConfig

    try:
        source = inspect.getsource(TrainerConfig)
    except (OSError, TypeError):   # no source shipped: names and defaults only
        source = ""
    notes = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#([^\n]*)$", source, re.MULTILINE)}
    fields = dataclasses.fields(TrainerConfig)
    width = max(len(f"{f.name}={f.default}") for f in fields)
    return "\n".join(f"  {f'{f.name}={f.default}':<{width}}  {notes.get(f.name, '')}".rstrip() for f in fields)


def _recipe_names() -> list[str]:
    """Registered recipes: the registry imports every recipe module."""
    from srdistill.training.recipes.registry import RECIPES

    return sorted(RECIPES)


def build_parser() -> argparse.ArgumentParser:
    from srdistill.training.config import packaged_recipes

    p = argparse.ArgumentParser(
        prog="train", description="Train a one-step diffusion SR student with a distillation recipe on degradation shards.",
        epilog=EPILOG.format(trainer_keys=trainer_keys_help()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help=f"recipe name: {', '.join(packaged_recipes())}")
    p.add_argument("--shards", default=None, help="training shards: a folder written by `degrade build`, a brace pattern or a .tar")
    p.add_argument("--out", default=None, help="run folder for the log, checkpoints and the exported student")
    p.add_argument("--components", default="tiny",
                   help="'tiny' (random tiny models, CPU in seconds), 'sd21' (SD 2.1-shaped random weights), a folder of "
                        "pretrained weights, or a Hugging Face model id org/name[@revision] (default: tiny)")
    p.add_argument("--offline", action="store_true", help="resolve model ids from the Hugging Face cache only (default: $SRDISTILL_OFFLINE)")
    p.add_argument("--val-shards", default=None, help="held-out shards scored (trainer.val_metrics, default PSNR-Y and SSIM) every trainer.val_every steps and at the end")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides trainer.steps)")
    p.add_argument("--config", default=None, help="YAML file with trainer:/recipe: sections laid over the recipe's defaults")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. trainer.lr_g=1e-5 or recipe.lora_rank=8 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints in --out and start from step 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="print the recipe's trainable and frozen parameter counts at the --components preset's shape "
                        "(meta device: builds and trains nothing) and exit; --shards and --out are not needed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("train", lambda: _train(args),
                       "interrupted; re-run the same command to resume from the newest checkpoint.")


def _train(args: argparse.Namespace) -> int:
    from srdistill.training.config import load_run_config
    from srdistill.training.trainer import run_training

    from srdistill.core.fetch import download
    from srdistill.core.fetch.hub import resolve_components
    from srdistill.core.lock import output_lock
    from srdistill.core.outputs import check_output_dir

    if args.out is not None:
        check_output_dir(args.out, "--out")
    names = _recipe_names()
    if args.recipe not in names:
        raise UserError(f"unknown recipe {args.recipe!r}; choose one of {', '.join(names)}.")
    sets = list(args.sets) + ([f"trainer.steps={args.steps}"] if args.steps is not None else [])
    run = load_run_config(args.recipe, args.config, sets)
    if args.dry_run:
        from srdistill.training.paramcount import count

        print("\n".join(count(args.recipe, args.components, run.recipe_cfg).lines()))
        return 0
    if args.shards is None or args.out is None:
        raise UserError("train needs --shards and --out (only --dry-run runs without them).")
    download.configure(offline=args.offline)
    # One run per folder; under torchrun every rank runs this, and rank 0 (the one that writes) takes the lock.
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with output_lock(args.out) if main_rank else contextlib.nullcontext():
        components = resolve_components(args.components, run.components, Path(args.out) / "components")
        summary = run_training(run, shards=args.shards, out=args.out, components=components,
                               val_shards=args.val_shards, progress=not args.quiet, resume=not args.fresh)
    if summary.export_dir is not None:
        for line in summary.lines():
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
