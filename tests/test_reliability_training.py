"""Faults a user can cause around `train`: changed settings on resume, damaged checkpoints and logs, untrusted
pickles, bad config values and unusable run folders. Each ends in the documented behaviour or one sentence."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from srdistill.training.run.checkpoint import (
    CKPT_DIR,
    STATE,
    WEIGHTS,
    list_checkpoints,
    load_checkpoint,
)
from srdistill.training.cli import main as train_main
from srdistill.training.config import TrainerConfig, load_run_config
from srdistill.training.run.log import LOG_NAME, read_log
from srdistill.training.trainer import RUN_RECORD, run_training

from srdistill.core.errors import UserError

FAST = ["crop=32", "batch_size=1", "num_workers=0", "shuffle_buffer=4", "ckpt_every=1", "keep_ckpts=5", "seed=1"]

@pytest.fixture(scope="module")
def two_steps(shards, tmp_path_factory):
    """A finished 2-step d3sr run with checkpoints at steps 1 and 2 (copied by each test that damages or resumes it)."""
    out = tmp_path_factory.mktemp("two-steps") / "run"
    _train(shards, out, ["steps=2"])
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001", "step-00000002"]
    return out


def _train(shards, out, sets, recipe="d3sr", **kw):
    return run_training(load_run_config(recipe, None, FAST + sets), shards=shards, out=out, progress=False, **kw)


def _interrupted_after_step_1(two_steps: Path, dest: Path) -> Path:
    """A run folder as a kill right after the step-1 checkpoint leaves it."""
    (dest / CKPT_DIR).mkdir(parents=True)
    shutil.copytree(two_steps / CKPT_DIR / "step-00000001", dest / CKPT_DIR / "step-00000001")
    log = [r for r in read_log(two_steps) if r["step"] <= 1]
    (dest / LOG_NAME).write_text("".join(json.dumps(r) + "\n" for r in log))
    return dest


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt / STATE, map_location="cpu", weights_only=True)


# ---- 4. resuming with changed settings ------------------------------------------------------------------------

def test_a_changed_learning_rate_on_resume_is_what_trains_and_is_logged_as_a_change(shards, two_steps, tmp_path):
    same = _interrupted_after_step_1(two_steps, tmp_path / "same")
    faster = _interrupted_after_step_1(two_steps, tmp_path / "faster")
    _train(shards, same, ["steps=2"])
    _train(shards, faster, ["steps=2", "trainer.lr_g=1e-3"])

    # AdamW's step is linear in the learning rate (theta2 = theta1 - lr * (wd * theta1 + m_hat / (sqrt(v_hat) + eps)))
    # and step 2's gradients are the same in both runs, so the step-2 update must scale by exactly 1e-3 / 5e-5 = 20.
    before = load_file(str(two_steps / CKPT_DIR / "step-00000001" / WEIGHTS))
    after_same = load_file(str(same / CKPT_DIR / "step-00000002" / WEIGHTS))
    after_fast = load_file(str(faster / CKPT_DIR / "step-00000002" / WEIGHTS))
    generator = [k for k in before if not k.startswith("disc")]
    d_same = torch.cat([(after_same[k].double() - before[k].double()).flatten() for k in generator])
    d_fast = torch.cat([(after_fast[k].double() - before[k].double()).flatten() for k in generator])
    assert d_same.abs().max() > 0
    # float32 weights: the differences carry rounding of the order of 1e-7 relative to the weights themselves.
    assert (d_fast - 20 * d_same).norm() / (20 * d_same).norm() < 1e-3

    assert _state(faster / CKPT_DIR / "step-00000002")["opt_g"]["param_groups"][0]["lr"] == 1e-3
    log = read_log(faster)
    change = [r for r in log if r.get("event") == "config_change"]
    assert change == [{"step": 1, "event": "config_change", "changes": {"trainer.lr_g": {"from": 5e-5, "to": 1e-3}}}]
    assert [r["lr_g"] for r in log if "g/loss" in r] == [5e-5, 1e-3]
    record = json.loads((faster / RUN_RECORD).read_text())
    assert record["trainer"]["lr_g"] == 1e-3
    assert record["changes"] == [{"step": 1, "key": "trainer.lr_g", "from": 5e-5, "to": 1e-3}]
    # The discriminator kept its own, unchanged rate.
    assert [r["lr_d"] for r in log if "d/loss" in r] == [5e-5, 5e-5]


@pytest.mark.parametrize("change, named", [
    (["batch_size=2"], "trainer.batch_size 1 -> 2"),
    (["recipe.lambda_adv=0.5"], "recipe.lambda_adv 0.1 -> 0.5"),
    (["crop=64", "seed=2"], "trainer.crop 32 -> 64, trainer.seed 1 -> 2"),
    ("other shards", "shards 'build "),
])
def test_a_change_that_would_alter_the_data_or_losses_is_refused_naming_the_keys(change, named, shards, two_steps,
                                                                                  tmp_path, capsys):
    run = _interrupted_after_step_1(two_steps, tmp_path / "run")
    log_before = (run / LOG_NAME).read_bytes()
    use = shards
    sets = ["--set", "steps=2"] + [a for s in FAST for a in ("--set", s)]
    if change == "other shards":
        use = tmp_path / "copied"   # the same tar files without the build's manifest: other data as far as we know
        use.mkdir()
        for tar in shards.glob("*.tar"):
            shutil.copy(tar, use / tar.name)
    else:
        sets += [a for s in change for a in ("--set", s)]
    code = train_main(["--recipe", "d3sr", "--shards", str(use), "--out", str(run), "--quiet", *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"train: cannot resume {run} at step 1 with changed {named}"), err
    assert "--fresh" in err[-1]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000001"]   # nothing trained or written
    assert (run / LOG_NAME).read_bytes() == log_before and not (run / RUN_RECORD).exists()


# ---- 8. a damaged newest checkpoint, a torn log line ----------------------------------------------------------

@pytest.mark.parametrize("damaged", [STATE, WEIGHTS])
def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one_and_says_so(damaged, shards, two_steps, tmp_path,
                                                                             capsys):
    run = tmp_path / "run"
    shutil.copytree(two_steps, run)
    newest = run / CKPT_DIR / "step-00000002" / damaged
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()
    summary = _train(shards, run, ["steps=2"])
    err = capsys.readouterr().err
    assert "checkpoint step-00000002 is unreadable" in err and "resuming from step-00000001 instead" in err
    assert (summary.start_step, summary.final_step) == (1, 2)
    assert (run / CKPT_DIR / "unreadable-step-00000002" / damaged).exists()   # kept for inspection, renamed
    # Step 2 was recomputed from step 1 exactly as the first time.
    again = load_file(str(run / CKPT_DIR / "step-00000002" / WEIGHTS))
    first = load_file(str(two_steps / CKPT_DIR / "step-00000002" / WEIGHTS))
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert read_log(run) == read_log(two_steps)


def test_a_log_line_torn_by_a_kill_does_not_break_the_rerun(shards, two_steps, tmp_path):
    run = _interrupted_after_step_1(two_steps, tmp_path / "run")
    with (run / LOG_NAME).open("a") as f:
        f.write('{"step": 2, "epoch": 0, "samples": 2, "g/lo')   # killed mid-write of step 2's record
    assert [r["step"] for r in read_log(run)] == [1]
    _train(shards, run, ["steps=2"])
    assert read_log(run) == read_log(two_steps)
    # Damage anywhere but the last line is not a torn write: one sentence with the line number.
    lines = (run / LOG_NAME).read_text().splitlines()
    (run / LOG_NAME).write_text("\n".join([lines[0][:10], *lines[1:]]) + "\n")
    with pytest.raises(UserError, match=r"log.jsonl line 1 is not JSON"):
        read_log(run)


# ---- 12. untrusted checkpoints --------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs os.makedirs(marker): code execution, made harmless."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_checkpoint_with_a_pickled_payload_is_refused_in_one_sentence_and_never_run(shards, two_steps, tmp_path,
                                                                                    capsys):
    run = _interrupted_after_step_1(two_steps, tmp_path / "run")
    marker = tmp_path / "payload-ran"
    ckpt = run / CKPT_DIR / "step-00000001"
    torch.save({"step": 1, "opt_g": _Payload(marker)}, ckpt / STATE)
    with pytest.raises(UserError, match=r"refusing to load .*state.pt: it holds Python objects other than tensors"):
        load_checkpoint(ckpt)
    code = train_main(["--recipe", "d3sr", "--shards", str(shards), "--out", str(run), "--quiet", "--steps", "2",
                       *[a for s in FAST for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("train: refusing to load") and "(os.makedirs)" in err[-1]
    assert not marker.exists()
    assert ckpt.exists()   # refused, not set aside as damage: the user decides what to do with it


def test_checkpoint_state_loads_as_plain_data(two_steps):
    weights, state = load_checkpoint(two_steps / CKPT_DIR / "step-00000002")
    assert state["step"] == 2 and weights
    assert state["settings"]["trainer.lr_g"] == 5e-5 and state["settings"]["shards"].startswith("build ")


# ---- 11. config values validated up front ---------------------------------------------------------------------

@pytest.mark.parametrize("recipe, sets, message", [
    ("vpdsr", ["recipe.lambda_hfp=abc"], r"recipe.lambda_hfp must be a number like its default 0.1, got 'abc'"),
    ("vpdsr", ["recipe.wavelet=nope"], r"recipe.wavelet must be a discrete wavelet of pywt .*, got 'nope'"),
    ("d3sr", ["recipe.lora_rank=2.5"], r"recipe.lora_rank must be a whole number like its default 16, got 2.5"),
    ("strsr", ["recipe.condition=maybe"], r"recipe.condition must be vlm, text \(StrSR's w/o VLM\) or none \(w/o emb\), got 'maybe'"),
    ("strsr", ["recipe.base=flux"], r"recipe.base must be zimage .* or sd3 \(a stand-in\), got 'flux'"),
    ("d3sr", ["recipe.discriminator=sd15"], r"recipe.discriminator must be sdxl .*, got 'sd15'"),
    ("strsr", ["recipe.fdl_patch=wide"], r"recipe.fdl_patch must be a whole number like its default 5, got 'wide'"),
    ("ctsr", ["recipe.lpips_net=squeeze"], r"recipe.lpips_net must be vgg or alex, got 'squeeze'"),
    ("d3sr", ["trainer.device=tpu"], r"trainer.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("d3sr", ["trainer.online=nope"], r"degradation spec 'nope' is neither a preset"),
])
def test_bad_config_values_are_refused_before_any_work(recipe, sets, message):
    with pytest.raises(UserError, match=message):
        load_run_config(recipe, None, sets)


def test_valid_recipe_values_are_converted_to_their_defaults_types():
    run = load_run_config("vpdsr", None, ["recipe.lambda_hfp=1", "recipe.wavelet=db2", "recipe.disc_layers=4.0"])
    assert run.recipe_cfg["lambda_hfp"] == 1.0 and isinstance(run.recipe_cfg["lambda_hfp"], float)
    assert run.recipe_cfg["disc_layers"] == 4 and isinstance(run.recipe_cfg["disc_layers"], int)
    assert run.recipe_cfg["wavelet"] == "db2"


def test_bad_values_fail_in_one_sentence_before_the_run_folder_is_touched(shards, tmp_path, capsys):
    out = tmp_path / "run"
    for sets in (["recipe.lambda_hfp=abc"], ["trainer.device=tpu"]):
        assert train_main(["--recipe", "vpdsr", "--shards", str(shards), "--out", str(out), "--quiet",
                           *[a for s in sets for a in ("--set", s)]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("train: ") and "Traceback" not in "".join(err)
    assert not out.exists()
    # An unknown validation metric fails before training, not after it.
    with pytest.raises(UserError, match="unknown metric 'nope'"):
        _train(shards, out, ["steps=1", "val_metrics=psnry,nope"], val_shards=shards)
    assert not (out / CKPT_DIR).exists() and not (out / LOG_NAME).exists()


# ---- 10. unusable --out ---------------------------------------------------------------------------------------

def test_train_out_that_is_a_file_is_one_sentence(shards, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a folder")
    assert train_main(["--recipe", "d3sr", "--shards", str(shards), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"train: --out {out} is a file, not a folder; give a folder path.\n"


def test_train_out_in_a_read_only_folder_is_one_sentence(shards, read_only_dir, capsys):
    out = read_only_dir / "run"
    assert train_main(["--recipe", "d3sr", "--shards", str(shards), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train: --out {out} is not writable") and err.count("\n") == 1


# ---- messages -------------------------------------------------------------------------------------------------

def test_train_help_lists_every_trainer_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainerConfig):
        assert f"  {f.name}={f.default}" in out, f.name
    assert "micro-batches per optimizer step" in out   # the field's own comment travels with it


def test_a_crop_larger_than_the_samples_names_the_setting_to_change(shards, tmp_path, capsys):
    code = train_main(["--recipe", "d3sr", "--shards", str(shards), "--out", str(tmp_path / "r"), "--quiet",
                       "--steps", "1", "--set", "crop=256", "--set", "batch_size=1", "--set", "num_workers=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--set trainer.crop=N (N at most 128)" in err[-1]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_training_shard_is_one_sentence_naming_it(workers, shards, tmp_path, capsys):
    damaged = tmp_path / "shards"
    shutil.copytree(shards, damaged)
    tar = damaged / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    code = train_main(["--recipe", "d3sr", "--shards", str(damaged), "--out", str(tmp_path / "r"), "--quiet",
                       "--steps", "40", *[a for s in FAST for a in ("--set", s)], "--set", f"num_workers={workers}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"train: training shard {tar} cannot be read (unexpected end of data); "
                                            "`degrade verify` on its build lists every damaged shard.")
