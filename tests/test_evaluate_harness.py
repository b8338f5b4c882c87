"""The evaluation loop end to end on tiny real-photo folders: rows, caching, resumption, bad inputs, CLI."""

import math
import re
import shutil

import cv2
import pandas as pd
import pytest
import torch
import torchvision
from helpers.images import real_photo, write_png
from srdistill.datasets.images import read_rgb
from srdistill.core.iqa import metrics as metrics_mod
from srdistill.core.iqa import weights
from srdistill.evaluate.cli import main
from srdistill.evaluate.harness import run_evaluation
from srdistill.evaluate.results import PARTS_DIR, RESULTS_NAME

from srdistill.core.errors import UserError

METRICS = "psnry,ssim,niqe,lpips"
RANDOM_LPIPS = {"lpips": {"net": "squeeze", "pretrained": False, "pnet_rand": True}}


def run(out, pair, methods="bicubic", metrics=METRICS, **kw):
    hr, lr = pair
    return run_evaluation(methods, "", metrics, out, hr=str(hr), lr=str(lr), progress=False, **kw)


def results(out):
    return pd.read_parquet(out / RESULTS_NAME)


def test_rows_per_image_and_metric_with_missing_weights_reported(tmp_path, pair_dirs, offline_weights):
    summary = run(tmp_path / "out", pair_dirs)
    frame = results(tmp_path / "out")
    assert len(frame) == 3 * 4 and set(frame["image"]) == {"astro", "cat", "cup"}
    ok = frame[frame["status"] == "ok"]
    assert set(ok["metric"]) == {"psnry", "ssim", "niqe"} and ok["value"].notna().all()
    lpips = frame[frame["metric"] == "lpips"]
    assert lpips["status"].str.startswith("skipped: missing weights").all() and lpips["value"].isna().all()
    assert "lpips" in summary.skipped_metrics and summary.rows_computed == 9
    assert (tmp_path / "out" / "sr" / "bicubic" / "LR" / "astro.png").is_file()
    assert not list((tmp_path / "out" / PARTS_DIR).glob("*.parquet"))
    row = frame.iloc[0]
    assert row["metric_version"].startswith("pyiqa-") and row["method_fingerprint"].startswith("opencv-")
    assert (frame["protocol"] == "srdistill").all() and frame["protocol_hash"].str.len().eq(16).all()
    assert frame.set_index("metric").loc["psnry", "metric_version"].iloc[0].endswith(";color_space=ycbcr;crop_border=0")
    assert len(row["dataset_fingerprint"]) == 16 and row["seconds"] >= 0


def test_second_run_does_no_metric_work_and_new_method_costs_only_its_rows(tmp_path, pair_dirs, offline_weights, monkeypatch):
    out = tmp_path / "out"
    run(out, pair_dirs, metrics="psnry,niqe")
    before = results(out)
    built = []
    real_init = metrics_mod.Scorer.__init__

    def counting_init(self, name, *args, **kwargs):
        built.append(name)
        real_init(self, name, *args, **kwargs)

    monkeypatch.setattr(metrics_mod.Scorer, "__init__", counting_init)
    again = run(out, pair_dirs, metrics="psnry,niqe")
    assert again.rows_computed == 0 and again.rows_reused == 6 and again.sr_generated == 0 and built == []
    pd.testing.assert_frame_equal(results(out), before)
    more = run(out, pair_dirs, methods="bicubic,lanczos", metrics="psnry,niqe")
    assert more.rows_computed == 6 and more.rows_reused == 6
    assert len(results(out)) == 12


def test_interrupted_run_keeps_completed_rows_and_resumes(tmp_path, pair_dirs, offline_weights, monkeypatch):
    out = tmp_path / "out"
    calls = []
    real_score = metrics_mod.Scorer.score

    def interrupting(self, sr, hr=None):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_score(self, sr, hr)

    monkeypatch.setattr(metrics_mod.Scorer, "score", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(out, pair_dirs, metrics="psnry,ssim")
    monkeypatch.setattr(metrics_mod.Scorer, "score", real_score)
    kept = results(out)
    assert len(kept) == 4 and (kept["status"] == "ok").all()  # two images done before the fifth call
    resumed = run(out, pair_dirs, metrics="psnry,ssim")
    assert resumed.rows_computed == 2 and resumed.rows_reused == 4
    fresh_out = tmp_path / "fresh"
    run(fresh_out, pair_dirs, metrics="psnry,ssim")
    cols = ["method", "dataset", "image", "metric", "value", "status"]
    pd.testing.assert_frame_equal(results(out)[cols], results(fresh_out)[cols])


def test_leftover_parts_from_a_killed_run_are_merged(tmp_path, pair_dirs, offline_weights):
    out = tmp_path / "out"
    run(out, pair_dirs, metrics="psnry")
    parts = out / PARTS_DIR
    parts.mkdir(exist_ok=True)
    shutil.move(out / RESULTS_NAME, parts / "part-killed.parquet")  # as if merge never ran
    summary = run(out, pair_dirs, metrics="psnry")
    assert summary.rows_computed == 0 and len(results(out)) == 3


def test_random_weight_lpips_runs_through_the_harness(tmp_path, pair_dirs, offline_weights):
    torch.manual_seed(0)
    run(tmp_path / "out", pair_dirs, metrics="lpips", metric_opts=RANDOM_LPIPS)
    frame = results(tmp_path / "out")
    # random linear heads may weigh differences negatively: the score is nonzero and finite, its sign arbitrary
    assert (frame["status"] == "ok").all() and (frame["value"].abs() > 0).all() and frame["value"].map(math.isfinite).all()
    assert frame["metric_version"].str.contains("pretrained=False").all()


def write_random_fid_inception() -> None:
    """Random weights for pyiqa's FID Inception at the path pyiqa loads them from (same keys as torchvision's)."""
    expected = weights.probe_metric("fid").missing[0].expected
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):  # scale-preserving, so 40 random layers neither vanish nor overflow
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), expected)


def test_random_weight_fid_is_one_folder_row_zero_against_itself(tmp_path, pair_dirs, offline_weights):
    write_random_fid_inception()
    other = tmp_path / "other"
    for stem, name in {"astro": "rocket", "cat": "coffee", "cup": "chelsea"}.items():
        write_png(other / f"{stem}.png", real_photo(name, 96, 96))
    # 1008 logits instead of the default 2048-d pool: same path, and sqrtm of the covariance is ~8x cheaper
    summary = run(tmp_path / "out", pair_dirs, methods="", metrics="fid",
                  extra_methods={"same": str(pair_dirs[0]), "other": str(other)},
                  metric_opts={"fid": {"dims": "logits_unbiased"}})
    frame = results(tmp_path / "out").set_index("method")
    assert summary.rows_computed == 2 and len(frame) == 2 and (frame["image"] == "*").all()
    assert (frame["status"] == "ok").all() and frame["value"].map(math.isfinite).all()
    assert frame["metric_version"].str.contains("dims=logits_unbiased").all()
    assert abs(frame.loc["same", "value"]) < 1e-3 * frame.loc["other", "value"] and frame.loc["other", "value"] > 1.0


def test_patch_fid_is_the_folder_fid_of_the_grid_patches_of_sr_and_hr(tmp_path, pair_dirs, offline_weights):
    import pyiqa
    import yaml

    write_random_fid_inception()
    hr_dir, _ = pair_dirs
    other = tmp_path / "other"
    for stem, name in {"astro": "rocket", "cat": "coffee", "cup": "chelsea"}.items():
        write_png(other / f"{stem}.png", real_photo(name, 96, 96))
    proto = tmp_path / "patchfid.yaml"
    proto.write_text(yaml.safe_dump({"name": "patchfid", "open": True, "datasets": {},
                                     "metrics": {"fid": {"dims": "logits_unbiased", "patch_size": 48, "patch_stride": 24}}}))
    run(tmp_path / "out", pair_dirs, methods="", metrics="fid", extra_methods={"other": str(other)}, protocol=str(proto))
    frame = results(tmp_path / "out")
    assert frame["status"].tolist() == ["ok"] and "patch_size=48" in frame["metric_version"].iloc[0]
    # Independently: the 3x3 grid of 48-px patches at stride 24 of each 96-px image, scored by pyiqa's own FID.
    for name, folder in (("sr", other), ("hr", hr_dir)):
        for path in sorted(folder.glob("*.png")):
            img = read_rgb(path)
            for top in (0, 24, 48):
                for left in (0, 24, 48):
                    write_png(tmp_path / "by-hand" / name / f"{path.stem}_{top}_{left}.png", img[top:top + 48, left:left + 48])
    fid = pyiqa.create_metric("fid", device="cpu", dims="logits_unbiased")
    expected = float(fid(str(tmp_path / "by-hand" / "sr"), str(tmp_path / "by-hand" / "hr"), verbose=False, num_workers=0))
    assert frame["value"].iloc[0] == pytest.approx(expected, rel=1e-5)
    assert len(list((tmp_path / "by-hand" / "sr").iterdir())) == 27


@pytest.mark.parametrize("options, words", [
    ({"psnry": {"patch_size": 48}}, "patch_size applies only to folder-level metrics (fid), not psnry"),
    ({"fid": {"patch_size": -3}}, "patch_size must be a positive whole number"),
    ({"fid": {"patch_stride": 8}}, "patch_stride needs patch_size"),
])
def test_bad_patch_options_are_one_sentence(options, words):
    from srdistill.core.errors import UserError
    from srdistill.evaluate.protocol import protocol_from_dict

    with pytest.raises(UserError, match=re.escape(words)):
        protocol_from_dict({"name": "p", "open": True, "datasets": {}, "metrics": options}, "p.yaml")


def test_external_outputs_and_their_problems(tmp_path, pair_dirs, offline_weights):
    hr_dir, lr_dir = pair_dirs
    ext = tmp_path / "published"
    for stem in ("astro", "cat"):
        lr = cv2.imread(str(lr_dir / f"{stem}.png"))
        cv2.imwrite(str(ext / f"{stem}.png") if ext.mkdir(exist_ok=True) is None else "", cv2.resize(lr, (96, 96), interpolation=cv2.INTER_CUBIC))
    summary = run(tmp_path / "out", pair_dirs, methods="bicubic", metrics="psnry", extra_methods={"paper": str(ext)})
    lines = summary.lines()
    assert "1 not scored (reasons below and in the status column)" in lines[0]
    assert any(line.startswith("not scored: paper on LR, 1 rows: error: no SR output named cup.*") for line in lines)
    frame = results(tmp_path / "out").set_index(["method", "image"])
    assert frame.loc[("paper", "astro"), "value"] == pytest.approx(frame.loc[("bicubic", "astro"), "value"], abs=1e-6)
    assert frame.loc[("paper", "cup"), "status"].startswith("error: no SR output named cup")
    assert math.isnan(frame.loc[("paper", "cup"), "value"])


def test_corrupt_image_is_recorded_and_the_run_goes_on(tmp_path, pair_dirs, offline_weights):
    hr_dir, lr_dir = pair_dirs
    (lr_dir / "cat.png").write_bytes((lr_dir / "cat.png").read_bytes()[:40])
    run(tmp_path / "out", pair_dirs, metrics="psnry")
    frame = results(tmp_path / "out").set_index("image")
    assert frame.loc["cat", "status"].startswith("error: unreadable image")
    assert frame.loc["astro", "status"] == "ok" and frame.loc["cup", "status"] == "ok"


def test_size_mismatch_is_an_error_unless_crop_to_match(tmp_path, pair_dirs, offline_weights):
    hr_dir, lr_dir = pair_dirs
    write_png(hr_dir / "cup.png", real_photo("coffee", 100, 96, 100, 200))
    with pytest.raises(UserError, match="SR is 96x96 but HR is 96x100.*--crop-to-match"):
        run(tmp_path / "out", pair_dirs, metrics="psnry")
    run(tmp_path / "out", pair_dirs, metrics="psnry", crop_to_match=True)
    assert (results(tmp_path / "out")["status"] == "ok").all()


def test_user_mistakes_are_one_sentence_and_exit_2(tmp_path, pair_dirs, offline_weights, capsys):
    hr_dir, lr_dir = pair_dirs
    base = ["leaderboard", "--out", str(tmp_path / "o"), "--quiet"]
    cases = [
        (["--methods", "bicubic", "--lr", str(lr_dir), "--metrics", "psnrr"], "unknown metric 'psnrr'"),
        (["--methods", "nearest", "--lr", str(lr_dir)], "unknown method 'nearest'"),
        (["--methods", "bicubic", "--datasets", "RealSR", "--data-root", str(tmp_path)], "benchmark RealSR not found"),
        (["--methods", "bicubic", "--hr", str(hr_dir)], "--hr needs --lr"),
        (["--methods", "bicubic", "--method", "broken", "--lr", str(lr_dir)], "must look like NAME=DIR"),
        (["--methods", "bicubic", "--method", "x=" + str(tmp_path / "none"), "--lr", str(lr_dir)], "is not a folder"),
        (["--methods", "bicubic@t=0.2", "--lr", str(lr_dir)], "take no knobs"),
    ]
    for args, message in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("evaluate: ") and message in err and "\n" not in err and "Traceback" not in err


def test_cli_writes_results_leaderboard_report_plots_and_grid(tmp_path, pair_dirs, offline_weights, capsys):
    hr_dir, lr_dir = pair_dirs
    out = tmp_path / "o"
    assert main(["leaderboard", "--methods", "bicubic,lanczos", "--hr", str(hr_dir), "--lr", str(lr_dir),
                 "--metrics", "psnry,niqe,lpips", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "evaluated 2 methods x 1 datasets x 3 metrics" in printed and "metric lpips skipped" in printed
    md = (out / "leaderboard.md").read_text()
    assert "## LR — protocol srdistill" in md and "PSNR↑" in md and "NIQE↓" in md
    assert "LPIPS (bicubic, lanczos): 3 rows skipped: missing weights" in md and "psnry (color_space=ycbcr, crop_border=0)" in md
    board = pd.read_parquet(out / "leaderboard.parquet")
    assert set(board["method"]) == {"bicubic", "lanczos"} and (board.loc[board["n"] > 0, "n"] == 3).all()
    assert list((out / "plots").glob("bars_LR_psnry.png"))
    grid = read_rgb(out / "grids" / "grid_LR.png")  # 3 images x (HR + 2 methods) of 96-px crops zoomed x2, labelled
    assert grid.shape == (3 * (18 + 192 + 4), 3 * 192, 3)


def test_weights_command_lists_ready_and_missing_metrics(tmp_path, offline_weights, capsys):
    assert main(["weights", "--metrics", "psnry,niqe,lpips"]) == 0
    printed = capsys.readouterr().out
    assert "ready    psnry" in printed and "ready    niqe" in printed
    assert f"missing  lpips: missing weights alexnet-owt-7be5be79.pth (expected at {offline_weights}" in printed
    assert "2 of 3 metrics ready" in printed
    assert main(["weights", "--import", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("evaluate: weights folder")


def test_rows_written_before_protocols_are_kept_apart_and_recomputed(tmp_path, pair_dirs, offline_weights):
    out = tmp_path / "out"
    run(out, pair_dirs, metrics="psnry")
    legacy = results(out).drop(columns=["protocol", "protocol_hash"])
    legacy.to_parquet(out / RESULTS_NAME)  # a results.parquet from before protocols existed
    summary = run(out, pair_dirs, metrics="psnry")
    assert summary.rows_computed == 3 and summary.rows_reused == 0
    frame = results(out)
    assert sorted(frame["protocol"].unique()) == ["srdistill", "unrecorded"] and len(frame) == 6
