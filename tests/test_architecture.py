"""The import graph: the contracts in pyproject.toml hold (layers one way, no cycles among siblings; run through
`lint-imports`, so CI fails on a back-edge), and no module of srdistill takes part in an import cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with root's pyproject.toml over root's srdistill/ (first on the path, not the installed copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "400"}  # one line per contract verdict
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def module_cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(component)
    return cycles


def test_import_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_no_module_is_in_an_import_cycle():
    import srdistill

    assert Path(srdistill.__file__).resolve().parent == ROOT / "srdistill"
    cycles = module_cycles(grimp.build_graph("srdistill", cache_dir=None))
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_module_cycles_finds_a_planted_cycle_and_only_it(tmp_path, monkeypatch):
    _package(tmp_path, {
        "cyc/__init__.py": "",
        "cyc/a.py": "from cyc import b\n",
        "cyc/b.py": "def f():\n    from cyc.inner import c\n",  # a function-level import counts
        "cyc/inner/__init__.py": "",
        "cyc/inner/c.py": "import cyc.a\n",
        "cyc/d.py": "import cyc.a\n",  # imports into the cycle, is not part of it
        "cyc/e.py": "import cyc.f\n",
        "cyc/f.py": "",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_cycles(grimp.build_graph("cyc", cache_dir=None)) == [{"cyc.a", "cyc.b", "cyc.inner.c"}]


LAYERS = "Layers run one way"
NO_CYCLES = "No import cycles"


@pytest.mark.slow
@pytest.mark.parametrize("planted, line, contract, named", [
    # a lower layer importing a higher one (inside a function: grimp sees it all the same)
    ("srdistill/datasets/images.py", "def _planted():\n    import srdistill.degrade.pipeline\n", LAYERS,
     "srdistill.datasets.images -> srdistill.degrade.pipeline"),
    # two modules of one package importing each other
    ("srdistill/evaluate/results.py", "from srdistill.evaluate import harness\n", NO_CYCLES, "srdistill.evaluate"),
])
def test_lint_imports_fails_on_a_planted_back_edge_or_cycle(tmp_path, planted, line, contract, named):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "srdistill", tmp_path / "srdistill", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / planted, "a") as fh:
        fh.write("\n" + line)
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    verdict = next(v for v in proc.stdout.splitlines() if v.startswith(contract))
    assert " BROKEN" in verdict, proc.stdout
    assert named in proc.stdout.split("Broken contracts", 1)[1]
