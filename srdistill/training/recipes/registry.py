"""The recipe registry: every concrete ``Recipe`` subclass defined in a module of this package, found by walking the
package (as srdistill/degrade/ops/library finds ops), in the order of their ``POSITION``; and ``build_recipe``.

A new recipe is its module and its YAML: nothing names the recipes in a list. Modules that define no recipe
(the contract in base.py, the ResShift teacher in resshift.py, this one) add nothing.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import torch

import srdistill.training.recipes as _package
from srdistill.core.errors import UserError
from srdistill.training.recipes.base import Recipe


def _defined_recipes(module) -> list[type[Recipe]]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Recipe) and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)]


def _discover() -> dict[str, type[Recipe]]:
    found: dict[str, type[Recipe]] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        for cls in _defined_recipes(importlib.import_module(f"{_package.__name__}.{info.name}")):
            if cls.name in found:
                raise RuntimeError(f"two recipes are named {cls.name!r}: {found[cls.name].__module__} and {cls.__module__}")
            found[cls.name] = cls
    positions = sorted(cls.POSITION for cls in found.values())
    if positions != sorted(set(positions)):
        raise RuntimeError(f"two recipes share a POSITION ({positions}); give each its own place in the tables")
    return dict(sorted(found.items(), key=lambda item: item[1].POSITION))


RECIPES: dict[str, type[Recipe]] = _discover()


def build_recipe(name: str, cfg: dict, components: str, device, *, student_only: bool = False) -> Recipe:
    """Build recipe ``name`` with settings ``cfg`` (its ``recipe:`` section) on ``components``.

    Random-weight roles are drawn from a fixed seed (``init_seed``) so rebuilding gives the same bases; the
    student's roles are built first, so ``student_only`` draws the same student weights as the full recipe.
    A recipe whose constructor takes no ``student_only`` is built whole.
    """
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    cfg = dict(cfg or {})
    cls = RECIPES[name]
    kwargs = {"student_only": True} if student_only and "student_only" in inspect.signature(cls.__init__).parameters else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("init_seed", cls.DEFAULTS.get("init_seed", 0))))
        recipe = cls(cfg, components, **kwargs)
    return recipe.to(device)
