"""The trainer on real shards with tiny components: configs, CLI, exact resume, every recipe end to end, learning."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from srdistill.training.run.checkpoint import CKPT_DIR, list_checkpoints
from srdistill.training.cli import main as train_main
from srdistill.training.config import TrainerConfig, load_run_config
from srdistill.training.recipes.registry import RECIPES
from srdistill.training.run.log import read_log
from srdistill.training.trainer import run_training

from srdistill.core.errors import UserError

FAST = ["crop=32", "batch_size=1", "num_workers=0", "shuffle_buffer=4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(recipe, shards, out, sets, **kw):
    return run_training(load_run_config(recipe, None, sets), shards=shards, out=out, progress=False, **kw)


# ---- configuration -----------------------------------------------------------------------------------------

def test_config_layers_apply_in_order_with_types(tmp_path):
    doc = tmp_path / "run.yaml"
    doc.write_text("trainer:\n  steps: 7\n  lr_g: 1.0e-4\n  bf16: true\nrecipe:\n  lambda_adv: 0.5\n  nested: {a: 1}\n")
    run = load_run_config("d3sr", doc, ["trainer.lr_g=2e-5", "batch_size=3", "recipe.lambda_adv=1e-3",
                                        "recipe.nested.a=4", "online=realesrgan", "bf16=none"])
    t = run.trainer
    assert (t.steps, t.lr_g, t.batch_size, t.online, t.bf16) == (7, 2e-5, 3, "realesrgan", None)
    assert run.recipe_cfg["lambda_adv"] == 1e-3 and run.recipe_cfg["nested"] == {"a": 4}
    assert TrainerConfig().steps == 1000   # the defaults object is not shared


@pytest.mark.parametrize("sets, message", [
    (["trainer.stepz=3"], "unknown trainer key 'stepz'"),
    (["steps=many"], "trainer.steps .* must be int"),
    (["steps=0"], "steps must be at least 1"),
    (["nonsense=1"], "names no trainer key"),
    (["steps"], "must look like key=value"),
])
def test_config_mistakes_are_one_sentence_errors(sets, message):
    with pytest.raises(UserError, match=message):
        load_run_config("d3sr", None, sets)


def test_global_batch_is_split_over_processes_and_a_per_process_batch_replaces_it(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = load_run_config("d3sr")   # the paper's 8 over 4 GPUs
    assert (run.trainer.global_batch, run.trainer.batch_size) == (8, 8)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert load_run_config("d3sr").trainer.batch_size == 2
    assert load_run_config("d3sr", None, ["grad_accum=2"]).trainer.batch_size == 1
    t = load_run_config("d3sr", None, ["batch_size=3"]).trainer
    assert (t.global_batch, t.batch_size) == (None, 3)
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match="global_batch 8 does not split over 3 processes"):
        load_run_config("d3sr")
    monkeypatch.setenv("WORLD_SIZE", "4")
    t = load_run_config("strsr").trainer   # "4 GPUs with batchsize = 4", centre-cropped as the release crops
    assert (t.batch_size, t.crop, t.crop_policy, t.flips) == (1, 1024, "resize_center", False)


def test_cli_help_and_user_mistakes(shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        train_main(["--help"])
    assert ex.value.code == 0 and "--recipe" in capsys.readouterr().out
    assert train_main(["--recipe", "nope", "--shards", str(shards), "--out", str(tmp_path / "r")]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert train_main(["--recipe", "d3sr", "--shards", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train: no shards") and err.count("\n") == 1


# ---- resume, end to end, learning --------------------------------------------------------------------------

def test_resume_from_checkpoint_reproduces_the_uninterrupted_losses(shards, tmp_path):
    # Two loader workers, gradient accumulation and a discriminator: every source of state must be restored.
    sets = ["crop=32", "batch_size=3", "grad_accum=2", "num_workers=2", "shuffle_buffer=8", "ckpt_every=1",
            "keep_ckpts=5", "seed=3", "steps=3"]
    whole = tmp_path / "whole"
    _train("d3sr", shards, whole, sets)
    reference = read_log(whole)
    assert [r["step"] for r in reference] == [1, 2, 3] and reference[2]["epoch"] == 1   # crosses an epoch
    resumed = tmp_path / "resumed"
    (resumed / CKPT_DIR).mkdir(parents=True)
    first = list_checkpoints(whole)[0]
    shutil.copytree(first, resumed / CKPT_DIR / first.name)   # a run interrupted right after step 1
    summary = _train("d3sr", shards, resumed, sets)
    assert (summary.start_step, summary.final_step) == (1, 3)
    assert read_log(resumed) == reference[1:]
    assert all(k in reference[-1] for k in ("g/loss", "g/mse", "d/loss", "lr_g", "lr_d"))
    record = json.loads((whole / "config.json").read_text())   # the run record DESIGN.md names
    assert record["batch"] == {"global": 6, "per_process": 3, "grad_accum": 2, "global_from_config": None}
    assert any("T_L = 500" in a for a in record["assumptions"]) and record["substitutions"] == []
    assert record["trainable_parameters"]["discriminator"] > 0 and record["recipe_cfg"]["discriminator"] == "sdxl"
    assert record["inference"]["tile"] == 512 and record["inference"]["source"].startswith("unspecified")
    assert record["precision"] == {"bf16_autocast": False, "networks": {"every network": "autocast"}}   # CPU run


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_trains_from_real_shards(recipe, shards, tmp_path):
    summary = _train(recipe, shards, tmp_path / recipe, FAST + ["steps=2", "val_images=1"], val_shards=shards)
    log = read_log(tmp_path / recipe)
    steps = [r for r in log if "g/loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(v) for r in steps for k, v in r.items() if k.startswith(("g/", "d/")))
    assert summary.val and math.isfinite(summary.val["psnry"])
    record = json.loads((tmp_path / recipe / "export" / "student.json").read_text())
    assert record["recipe"] == recipe and record["step"] == 2 and record["scale"] == 4


@pytest.mark.slow
def test_reconstruction_path_raises_psnr_on_its_training_crops(shards, tmp_path):
    one_shard = str(min(shards.glob("train-*.tar")))
    # D3SR's reconstruction path alone (MSE through the frozen VAE, Eq. 8 with lambda_1 = lambda_2 = 0).
    sets = ["crop=64", "batch_size=4", "num_workers=0", "flips=false", "lr_g=3e-3", "clip_grad=0", "val_images=4",
            "ckpt_every=0", "recipe.lambda_adv=0", "recipe.lambda_ea_dists=0"]
    out = tmp_path / "learn"
    before = _train("d3sr", [one_shard], out, sets + ["steps=1"], val_shards=[one_shard]).val["psnry"]
    after = _train("d3sr", [one_shard], out, sets + ["steps=8"], val_shards=[one_shard]).val["psnry"]
    assert after > before + 0.15, (before, after)


@pytest.mark.slow
def test_torchrun_two_processes_share_the_data_and_stay_in_sync(shards, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "srdistill.training.cli", "--recipe", "vpdsr", "--shards", str(shards), "--out", str(out),
           "--steps", "2", "--quiet", "--set", "crop=32", "--set", "batch_size=2", "--set", "num_workers=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The weights were checked bit-identical across ranks before the checkpoint (check_in_sync).
    state = torch.load(list_checkpoints(out)[-1] / "state.pt", weights_only=False)
    assert [(p["epoch"], p["batches"], p["world_size"]) for p in state["positions"]] == [(0, 2, 2), (0, 2, 2)]
    assert [r["samples"] for r in read_log(out) if "g/loss" in r] == [4, 8]
