"""Trainable and frozen parameter counts of each recipe at a preset's shape, built on the `meta` device.

On `meta` no weight is allocated or initialised, so the SD 2.1-shaped recipes are counted in seconds on any
machine. `train --recipe R --components sd21 --dry-run` prints them; docs/figures.md's table beside the papers'
own counts is this module's output (`python -m srdistill.training.paramcount --readme docs/figures.md` rewrites it,
and a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from srdistill.core.errors import UserError

README_BEGIN = "<!-- paramcounts:begin (python -m srdistill.training.paramcount --readme docs/figures.md) -->"
README_END = "<!-- paramcounts:end -->"

@dataclass(frozen=True)
class ParamCounts:
    recipe: str
    components: str
    generator_trainable: int
    discriminator_trainable: int
    frozen: int
    student_total: int       # every parameter the exported one-step student holds (inference size)

    @property
    def total(self) -> int:
        return self.generator_trainable + self.discriminator_trainable + self.frozen

    def lines(self) -> list[str]:
        m = lambda n: f"{n / 1e6:,.2f} M"  # noqa: E731
        return [f"recipe {self.recipe}, components {self.components} (counted on the meta device, nothing built or trained):",
                f"  trainable generator parameters      {m(self.generator_trainable):>14}",
                f"  trainable discriminator parameters  {m(self.discriminator_trainable):>14}",
                f"  frozen parameters                   {m(self.frozen):>14}",
                f"  all parameters of the recipe        {m(self.total):>14}",
                f"  student at inference                {m(self.student_total):>14}"]


def recipe_order() -> list[str]:
    """Every registered recipe, in its declared POSITION (the tables' row order)."""
    from srdistill.training.recipes.registry import RECIPES

    return list(RECIPES)


def _unique(params) -> dict[int, torch.nn.Parameter]:
    return {id(p): p for p in params}


def count(recipe: str, components: str = "sd21", recipe_cfg: dict | None = None) -> ParamCounts:
    """Parameter counts of `recipe` built on the meta device at the `components` preset's shape."""
    from srdistill.training.components.presets import PRESETS
    from srdistill.training.config import load_run_config
    from srdistill.training.recipes.registry import build_recipe

    if components not in PRESETS:
        raise UserError(f"--dry-run counts parameters at a preset's shape ({', '.join(PRESETS)}), "
                        f"not of a weights folder ({components}); give --components sd21.")
    cfg = load_run_config(recipe).recipe_cfg if recipe_cfg is None else recipe_cfg
    with torch.device("meta"):
        built = build_recipe(recipe, dict(cfg), components, "meta")
    gen = _unique(built.generator_parameters())
    disc = {k: p for k, p in _unique(built.discriminator_parameters()).items() if k not in gen}
    everything = _unique(built.parameters())
    frozen = {k: p for k, p in everything.items() if k not in gen and k not in disc}
    size = lambda d: sum(p.numel() for p in d.values())  # noqa: E731
    return ParamCounts(recipe, components, size(gen), size(disc), size(frozen), size(_unique(built.student().parameters())))


def markdown_table(counts: list[ParamCounts]) -> str:
    from srdistill.training.recipes.registry import RECIPES

    m = lambda n: f"{n / 1e6:,.2f}"  # noqa: E731
    rows = ["| recipe | trainable G (M) | trainable D (M) | frozen (M) | student at inference (M) | the paper states |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    for c in counts:
        paper = "; ".join(f"{what} ({where})" for what, where in RECIPES[c.recipe].PAPER_COUNTS) or "no count"
        rows.append(f"| {c.recipe} | {m(c.generator_trainable)} | {m(c.discriminator_trainable)} | {m(c.frozen)} | "
                    f"{m(c.student_total)} | {paper} |")
    return "\n".join(rows)


def readme_block(counts: list[ParamCounts]) -> str:
    return f"{README_BEGIN}\n{markdown_table(counts)}\n{README_END}"


def replace_readme_block(text: str, block: str) -> str:
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"the file has no {README_BEGIN!r} ... {README_END!r} block to rewrite.")
    return text[:start] + block + text[end + len(README_END):]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Parameter counts of every recipe at the sd21 shape (meta device).")
    p.add_argument("--components", default="sd21", help="preset shape: sd21 (default) or tiny")
    p.add_argument("--readme", default=None, help="rewrite the counts table between the markers of this Markdown file (docs/figures.md)")
    args = p.parse_args(argv)
    counts = [count(r, args.components) for r in recipe_order()]
    block = readme_block(counts)
    if args.readme:
        path = Path(args.readme)
        path.write_text(replace_readme_block(path.read_text(), block))
    print(markdown_table(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
