"""The student hand-off: RUN_DIR/export rebuilt by load_student gives the trained recipe's output; find_runs."""

from __future__ import annotations

import json

import pytest
import torch
from srdistill.training.loader import make_loader
from srdistill.training.config import load_run_config
from srdistill.training.export import file_fingerprint, find_runs, load_student
from srdistill.training.recipes.registry import build_recipe
from srdistill.training.trainer import Trainer

from srdistill.core.errors import UserError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards):
    """A CTSR run (the recipe with an inference knob) trained 2 steps; the live recipe is kept for comparison."""
    run = load_run_config("ctsr", None, ["crop=32", "batch_size=1", "num_workers=0", "steps=2", "lr_g=1e-2"])
    recipe = build_recipe("ctsr", run.recipe_cfg, "tiny", torch.device("cpu"))
    out = tmp_path_factory.mktemp("runs") / "ctsr-a"
    Trainer(recipe, run, shards=shards, run_dir=out, components="tiny", device=torch.device("cpu"), scale=4).fit(progress=False)
    lr = next(iter(make_loader(shards, batch_size=2, crop=64, seed=9, num_workers=0)))["lr"]
    return recipe, out, lr


def test_loaded_student_reproduces_the_trained_recipe(trained):
    recipe, out, lr = trained
    student = load_student(out)
    assert (student.recipe, student.scale, student.knobs) == ("ctsr", 4, {"t": 0.0})
    assert student.fingerprint == file_fingerprint(out / "export" / "student.safetensors")
    live = recipe.student().eval()
    with torch.no_grad():
        for t in (0.0, 0.5):
            expected = live(lr, t=t).clamp(0, 1)
            got = student(lr, t=t)
            assert got.shape == (2, 3, 64, 64) and torch.equal(got, expected)
    fresh = build_recipe("ctsr", json.loads((out / "export" / "student.json").read_text())["export_config"]["cfg"],
                         "tiny", torch.device("cpu")).student().eval()
    with torch.no_grad():
        assert not torch.equal(fresh(lr).clamp(0, 1), student(lr))   # the trained weights did travel


def test_student_rejects_unknown_knobs(trained):
    with pytest.raises(UserError, match="no knob 'strength'"):
        load_student(trained[1])(trained[2], strength=1.0)


def test_find_runs_lists_exported_runs_only(trained, tmp_path):
    out = trained[1]
    (out.parent / "not-a-run").mkdir(exist_ok=True)
    assert find_runs(out.parent) == [out]
    assert find_runs(tmp_path / "missing") == []


def test_missing_export_says_where_it_looked(tmp_path):
    with pytest.raises(UserError, match="holds no trained student .*student.json"):
        load_student(tmp_path)


def test_export_carries_the_student_weights_and_its_stage_one_snapshot_only(trained):
    from safetensors.torch import load_file

    recipe, out, _ = trained
    keys = set(load_file(str(out / "export" / "student.safetensors")))
    assert keys == set(recipe.trainable_state_dict(student=True))
    assert any(".stage1." in k for k in keys) and "extra.snapshot_taken" in keys
    assert not any(".realism." in k for k in keys)   # T_r is training-time state
