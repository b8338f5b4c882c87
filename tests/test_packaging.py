"""The wheel's namespace must not shadow Hugging Face's `datasets`/`evaluate`, and every console script must run."""

import importlib
import shutil
import subprocess
import sys
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
