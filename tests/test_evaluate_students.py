"""Trained students as methods: a CTSR run exported by training, evaluated with its knob as variants."""

import numpy as np
import pandas as pd
import pytest
import torch
from srdistill.datasets.images import read_rgb
from srdistill.evaluate.harness import run_evaluation
from srdistill.core.iqa.metrics import to_uint8
from srdistill.evaluate.methods.registry import resolve_methods, to_input
from srdistill.training.config import load_run_config
from srdistill.training.export import export_student, load_student
from srdistill.training.recipes.registry import build_recipe


@pytest.fixture(scope="module")
def ctsr_run(tmp_path_factory):
    """An exported tiny-component CTSR student (untrained weights: the hand-off, not the quality, is under test)."""
    run = load_run_config("ctsr", None, [])
    recipe = build_recipe("ctsr", run.recipe_cfg, "tiny", torch.device("cpu"))
    run_dir = tmp_path_factory.mktemp("runs") / "ctsr-tiny"
    export_student(run_dir, recipe, recipe_name="ctsr", components="tiny", scale=4, seed=0, step=0)
    return run_dir


def test_knob_variants_are_separate_methods_with_the_students_output(tmp_path, pair_dirs, offline_weights, ctsr_run):
    hr, lr = pair_dirs
    out = tmp_path / "out"
    extra = {"ctsr@t=0.2": str(ctsr_run), "ctsr@t=0.8": str(ctsr_run)}
    run_evaluation("", "", "psnry", out, extra_methods=extra, hr=str(hr), lr=str(lr), progress=False)
    frame = pd.read_parquet(out / "results.parquet")
    assert set(frame["method"]) == set(extra) and (frame["status"] == "ok").all()
    fps = frame.groupby("method")["method_fingerprint"].first()
    assert fps["ctsr@t=0.2"].endswith(";t=0.2") and fps["ctsr@t=0.2"] != fps["ctsr@t=0.8"]
    student = load_student(ctsr_run)
    with torch.no_grad():
        expected = to_uint8(student(to_input(read_rgb(lr / "cat.png"), "cpu"), t=0.2))
    assert np.array_equal(read_rgb(out / "sr" / "ctsr@t=0.2" / "LR" / "cat.png"), expected)


def test_runs_folder_is_discovered_under_all(ctsr_run):
    methods, unavailable = resolve_methods("all", runs_root=str(ctsr_run.parent))
    names = [m.name for m in methods]
    assert "ctsr-tiny" in names and "bicubic" in names and "realesrgan-x4plus" in names
    assert [u.name for u in unavailable] == ["realesrgan-x4plus-torch"]
