"""The wheel's namespace must not shadow Hugging Face's `datasets`/`evaluate`, every console script must run, and
the built wheel holds every module and data file and runs the tools from a scratch install."""

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["degrade", "datasets", "evaluate", "training", "reports"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_file_path_is_its_import_path(name):
    module = importlib.import_module(f"srdistill.{name}")
    assert Path(module.__file__).resolve().parent == ROOT / "srdistill" / name


def test_hugging_face_datasets_is_not_shadowed():
    # pyiqa imports HF `datasets`; ours lives only under srdistill.datasets.
    hf = importlib.import_module("datasets")
    assert Path(hf.__file__).resolve().parent != ROOT / "datasets"
    assert hasattr(hf, "load_dataset")


@pytest.mark.parametrize("tool", ["srdistill", "degrade", "evaluate", "train", "reports"])
def test_console_script_help(tool):
    exe = Path(sys.executable).parent / tool
    assert exe.exists(), f"console script {tool} is not installed next to {sys.executable}"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_umbrella_rejects_unknown_tool_in_one_sentence():
    exe = shutil.which("srdistill", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe, "nosuchtool"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown tool" in proc.stderr
    assert "Traceback" not in proc.stderr


def _tree_files() -> set[str]:
    """Every file the wheel must hold: all of srdistill/ but bytecode."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "srdistill").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of this checkout (pyproject.toml, README.md, srdistill/), without the network."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "srdistill", src / "srdistill", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = (tmp / "dist").glob("srdistill-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_every_module_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as zf:
        held = {n for n in zf.namelist() if n.startswith("srdistill/")}
    expected = _tree_files()
    # The kinds of package data the tools read at run time, so an emptied glob cannot pass unnoticed.
    for folder in ("srdistill/degrade/spec/presets/", "srdistill/degrade/spec/presets/v1/",
                   "srdistill/evaluate/protocols/", "srdistill/evaluate/data/", "srdistill/training/recipes/",
                   "srdistill/reports/suites/"):
        assert any(f.startswith(folder) and f.count("/") == folder.count("/") and not f.endswith(".py")
                   for f in expected), folder
    assert sorted(expected - held) == []
    assert sorted(held - expected) == []


@pytest.mark.slow
def test_wheel_installed_apart_runs_the_tools_from_its_own_copy(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The scratch install first on the path, run from a folder outside the checkout: the venv's editable
    # srdistill (and this checkout) come after it.
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import srdistill, srdistill.degrade.cli, srdistill.evaluate.cli, "
                            "srdistill.training.cli as t; print(srdistill.__file__); print(t.__file__); "
                            "print(srdistill.__version__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    init, train_cli, version = where.stdout.split()
    assert Path(init) == target / "srdistill" / "__init__.py"
    assert Path(train_cli) == target / "srdistill" / "training" / "cli.py"
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # Each listing names every preset / protocol file of the tree (read from the wheel's package data).
    presets = sorted(p.stem for p in (ROOT / "srdistill" / "degrade" / "spec" / "presets").glob("*.yaml"))
    protocols = sorted(p.stem for p in (ROOT / "srdistill" / "evaluate" / "protocols").glob("*.yaml"))
    runs = {("degrade", "presets"): presets, ("evaluate", "protocols"): protocols, ("train", "--help"): []}
    for (tool, arg), names in runs.items():
        exe = target / "bin" / tool
        assert exe.exists(), f"the wheel installs no {tool} command"
        proc = subprocess.run([sys.executable, str(exe), arg], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{tool} {arg}: {proc.stderr[-3000:]}"
        listed = {line.split()[0] for line in proc.stdout.splitlines() if line and not line[0].isspace()}
        assert set(names) <= listed, f"{tool} {arg} does not list {sorted(set(names) - listed)}: {proc.stdout[-2000:]}"
    assert presets and protocols and "--recipe" in proc.stdout
