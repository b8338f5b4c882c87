"""bench/ scripts: each imports (a moved or renamed srdistill module fails here, not on the benchmark machine),
has a main() it does not run on import, and uses only srdistill's public names (none with a leading underscore)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "bench").glob("*.py"))


def private_srdistill_names(source: str) -> list[str]:
    """`_name`s imported from srdistill, and `_name` attributes read off an imported srdistill module."""
    tree = ast.parse(source)
    bound: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "srdistill":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "srdistill":
                    bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(ast.unparse(node))
    return found


def test_every_bench_script_is_covered():
    assert {p.name for p in SCRIPTS} >= {"gpu_check.py", "bench_degrade.py", "bench_train.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_without_running(script):
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a script that ran its benchmark here would take minutes, not a second
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_uses_only_public_srdistill_names(script):
    assert private_srdistill_names(script.read_text()) == []


def test_private_name_check_sees_both_forms():
    source = ("from srdistill.evaluate.harness import _row, run_evaluation\n"
              "import srdistill.core.iqa.metrics as m\n"
              "def f():\n    return m._cache, m.Scorer, m.__name__\n")
    assert private_srdistill_names(source) == ["srdistill.evaluate.harness._row", "m._cache"]
