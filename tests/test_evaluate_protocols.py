"""Evaluation protocols: presets, hashes, bad files, dataset preparation, per-protocol metric options and caching,
and the leaderboard sections they produce beside the papers' reported rows."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.images import downscale, real_photo, write_png
from srdistill.datasets.images import read_rgb
from srdistill.evaluate.cli import main
from srdistill.evaluate.harness import run_evaluation
from srdistill.core.iqa.metrics import DEFAULT_METRICS, METRIC_OPTS
from srdistill.evaluate.prepare import center_box, random_boxes
from srdistill.evaluate.protocol import PRESETS, load_protocol, protocol_from_dict

from srdistill.core.errors import UserError


def write_yaml(path, doc):
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def y_channel(img):
    """BT.601 luma (16..235) of a uint8 RGB image, as BasicSR computes it."""
    x = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def psnr(a, b, peak):
    return 10 * math.log10(peak ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.fixture
def data_root(tmp_path):
    """RealSR(V3) and DIV2K-val in their published layouts, as small real-photo stand-ins."""
    root = tmp_path / "data"
    for camera, (name, top, left) in {"Canon": ("astronaut", 40, 150), "Nikon": ("chelsea", 60, 120)}.items():
        hr = real_photo(name, 96, 128, top, left)
        write_png(root / "RealSR(V3)" / camera / "Test" / "4" / f"{camera}_001_HR.png", hr)
        write_png(root / "RealSR(V3)" / camera / "Test" / "4" / f"{camera}_001_LR4.png", downscale(hr))
    for stem, (name, top, left) in {"0801": ("coffee", 100, 200), "0802": ("rocket", 100, 100)}.items():
        write_png(root / "DIV2K" / "DIV2K_valid_HR" / f"{stem}.png", real_photo(name, 64, 64, top, left))
    return root


def test_presets_load_and_state_what_the_papers_leave_unspecified():
    assert {"d3sr", "ctsr", "strsr", "vpdsr", "osediff", "srdistill"} <= set(PRESETS)
    protos = {name: load_protocol(name) for name in PRESETS}
    assert len({p.hash for p in protos.values()}) == len(protos)
    ctsr = protos["ctsr"]
    assert ctsr.metrics["lpips-vgg"].options == {} and "maniqa-pipal" in ctsr.metrics and "psnry" not in ctsr.metrics
    assert {"psnr.test_y_channel", "DIV2K-val.images", "DIV2K-val.seed"} <= set(ctsr.unspecified())
    assert protos["d3sr"].metrics["psnry"].options["color_space"] == "ycbcr" and "psnry.crop_border" in protos["d3sr"].unspecified()
    osediff = protos["osediff"]
    assert osediff.datasets["StableSR-RealSR"].images == "full" and osediff.datasets["RealSR"].lr_size == 128
    assert {"StableSR-DIV2K", "StableSR-RealSR", "StableSR-DRealSR"} <= set(osediff.datasets)
    assert set(protos["vpdsr"].datasets) >= {"ImageNet-Test", "RealSR", "RealSet65", "StableSR-RealSR", "StableSR-DRealSR"}
    default = protos["srdistill"]
    assert default.open and list(default.metrics) == list(DEFAULT_METRICS)
    assert {m: default.metrics[m].options for m in METRIC_OPTS} == METRIC_OPTS


def test_hash_follows_content_not_labels_or_key_order(tmp_path):
    doc = yaml.safe_load((load_protocol.__globals__["PRESET_DIR"] / "d3sr.yaml").read_text())
    relabelled = {**doc, "name": "mine", "title": "other", "notes": ["x"], "datasets": dict(reversed(list(doc["datasets"].items())))}
    assert protocol_from_dict(relabelled, "x").hash == load_protocol("d3sr").hash
    changed = {**doc, "metrics": {**doc["metrics"], "psnry": {"color_space": "ycbcr", "crop_border": 4}}}
    assert protocol_from_dict(changed, "x").hash != load_protocol("d3sr").hash


@pytest.mark.parametrize("edit, message", [
    ({"metrics": {"psnrr": {}}}, "unknown metric 'psnrr'"),
    ({"datasets": {"Set5": {"images": "full"}}}, "unknown dataset 'Set5'"),
    ({"datasets": {"RealSR": {"images": "middle"}}}, "images must be one of"),
    ({"datasets": {"RealSR": {"images": "center-crop"}}}, "lr_size must be a positive whole number"),
    ({"datasets": {"DIV2K-val": {"images": "full", "lr": "official"}}}, "ships no LR images"),
    ({"datasets": {"DIV2K-val": {"images": "random-crops", "count": 3, "hr_size": 30, "spec": "realesrgan"}}}, "not a multiple of the scale"),
    ({"colour": "y"}, "unknown field 'colour'"),
])
def test_bad_protocol_file_is_one_sentence(tmp_path, capsys, edit, message):
    doc = {"name": "mine", "datasets": {"RealSR": {"images": "full"}}, "metrics": {"psnry": {}}, **edit}
    path = write_yaml(tmp_path / "p.yaml", doc)
    with pytest.raises(UserError, match=message):
        load_protocol(str(path))
    assert main(["protocols", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: protocol") and message.split("'")[0] in err and "\n" not in err


def test_unparsable_and_missing_protocol_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML at line"):
        load_protocol(str(tmp_path / "bad.yaml"))
    with pytest.raises(UserError, match="neither a preset .* nor an existing YAML file"):
        load_protocol("d3rs")


def test_protocols_command_lists_every_preset_with_hash_and_unspecified(capsys):
    assert main(["protocols"]) == 0
    printed = capsys.readouterr().out
    for name in PRESETS:
        assert f"{name}  (hash {load_protocol(name).hash})" in printed
    assert "lpips-vgg (pyiqa defaults)" in printed and "test_y_channel=unspecified (pyiqa default)" in printed
    assert "seed unspecified (ran 0)" in printed


def test_center_box_and_random_boxes():
    assert center_box(100, 80, 64) == (18, 8) and center_box(64, 64, 64) == (0, 0)
    boxes = random_boxes([(100, 120), (64, 70)], 5, 64, seed=3)
    assert [b[0] for b in boxes] == [0, 1, 0, 1, 0]
    assert all(0 <= t <= (100 if i == 0 else 64) - 64 and 0 <= l <= (120 if i == 0 else 70) - 64 for i, t, l in boxes)
    assert boxes == random_boxes([(100, 120), (64, 70)], 5, 64, seed=3) != random_boxes([(100, 120), (64, 70)], 5, 64, seed=4)


def test_center_crops_take_matching_lr_and_hr_windows(tmp_path, data_root, offline_weights):
    proto = write_yaml(tmp_path / "crop.yaml", {"name": "crop16", "datasets": {"RealSR": {"images": "center-crop", "lr_size": 16}},
                                                  "metrics": {"psnry": {"color_space": "ycbcr"}}})
    out = tmp_path / "out"
    run_evaluation("bicubic", "RealSR", "all", out, data_root=str(data_root), progress=False, partial_sets=True, protocol=str(proto))
    frame = pd.read_parquet(out / "results.parquet")
    assert (frame["protocol"] == "crop16").all() and (frame["protocol_hash"] == load_protocol(str(proto)).hash).all()
    src = data_root / "RealSR(V3)" / "Canon" / "Test" / "4"
    lr_full, hr_full = read_rgb(src / "Canon_001_LR4.png"), read_rgb(src / "Canon_001_HR.png")  # LR 24x32, HR 96x128
    top, left = (24 - 16) // 2, (32 - 16) // 2
    cached = next((out / "cache").glob("RealSR-prep-*"))
    assert np.array_equal(read_rgb(cached / "lr" / "Canon_001.png"), lr_full[top:top + 16, left:left + 16])
    assert np.array_equal(read_rgb(cached / "hr" / "Canon_001.png"), hr_full[4 * top:4 * top + 64, 4 * left:4 * left + 64])
    sr = read_rgb(next((out / "sr" / "bicubic").glob("RealSR@*")) / "Canon_001.png")
    assert sr.shape == (64, 64, 3)


def test_crop_larger_than_the_image_is_one_sentence(tmp_path, data_root, offline_weights, capsys):
    proto = write_yaml(tmp_path / "big.yaml", {"name": "big", "datasets": {"RealSR": {"images": "center-crop", "lr_size": 128}},
                                                 "metrics": {"psnry": {}}})
    args = ["leaderboard", "--methods", "bicubic", "--datasets", "RealSR", "--data-root", str(data_root),
            "--protocol", str(proto), "--partial-sets", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "the 128-px LR crop is larger than image Canon_001 (LR is 32x24)" in err and "\n" not in err


def test_random_crops_are_seeded_and_their_lr_is_synthesized_from_each_crop(tmp_path, data_root, offline_weights):
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    doc = {"name": "crops", "datasets": {"DIV2K-val": {"images": "random-crops", "count": 3, "hr_size": 32, "crop_seed": 7,
                                                       "lr": "synthesized", "spec": "realesrgan", "seed": 5}},
           "metrics": {"psnry": {}}}
    out = tmp_path / "out"
    run_evaluation("bicubic", "DIV2K-val", "all", out, data_root=str(data_root), progress=False, partial_sets=True,
                   protocol=str(write_yaml(tmp_path / "c.yaml", doc)))
    frame = pd.read_parquet(out / "results.parquet")
    assert sorted(frame["image"]) == ["0801_c00000", "0801_c00002", "0802_c00001"]
    cached = next((out / "cache").glob("DIV2K-val-prep-*"))
    rng = np.random.default_rng(7)  # image i % 2, then top and left per crop, as the preparation documents
    for i in range(3):
        stem = ["0801", "0802"][i % 2]
        top, left = int(rng.integers(0, 64 - 32 + 1)), int(rng.integers(0, 64 - 32 + 1))
        hr = read_rgb(cached / "hr" / f"{stem}_c{i:05d}.png")
        source = read_rgb(next((out / "cache").glob("DIV2K-val-realesrgan-*")) / "hr" / f"{stem}.png")
        assert np.array_equal(hr, source[top:top + 32, left:left + 32])
        lr, _ = degrade_image(hr, load_spec("realesrgan"), 5, f"{stem}_c{i:05d}")
        assert np.array_equal(read_rgb(cached / "lr" / f"{stem}_c{i:05d}.png"), lr)


def test_d3sr_and_ctsr_protocols_sit_beside_their_papers_rows_and_never_mix(tmp_path, data_root, offline_weights, capsys):
    out = tmp_path / "o"
    base = ["leaderboard", "--methods", "bicubic", "--datasets", "RealSR,DIV2K-val", "--data-root", str(data_root), "--partial-sets",
            "--out", str(out), "--quiet"]
    assert main(base + ["--protocol", "d3sr", "--metrics", "psnry,ssim"]) == 0
    assert main(base + ["--protocol", "ctsr", "--metrics", "psnr,ssim"]) == 0
    printed = capsys.readouterr().out
    assert "under protocol ctsr" in printed and "protocol ctsr leaves unspecified" in printed

    results = pd.read_parquet(out / "results.parquet")
    assert set(results["protocol"]) == {"d3sr", "ctsr"} and len(results) == 2 * 2 * 4  # no row overwritten by the other
    assert dict(zip(results["protocol"], results["protocol_hash"])) == {"d3sr": load_protocol("d3sr").hash,
                                                                        "ctsr": load_protocol("ctsr").hash}
    ssim = results[results["metric"] == "ssim"].set_index(["protocol", "dataset", "image"])["metric_version"]
    assert ssim[("d3sr", "RealSR", "Canon_001")].endswith(";color_space=ycbcr;crop_border=unspecified;test_y_channel=True")
    assert ssim[("ctsr", "RealSR", "Canon_001")].endswith(";color_space=unspecified;crop_border=unspecified;test_y_channel=unspecified")

    # the options reach pyiqa: d3sr's PSNR is on BT.601 Y, ctsr's (colour space unspecified) at pyiqa's default, RGB
    sr = read_rgb(out / "sr" / "bicubic" / "RealSR" / "Canon_001.png")
    hr = read_rgb(data_root / "RealSR(V3)" / "Canon" / "Test" / "4" / "Canon_001_HR.png")
    value = results.set_index(["protocol", "dataset", "image", "metric"])["value"]
    assert value[("d3sr", "RealSR", "Canon_001", "psnry")] == pytest.approx(psnr(y_channel(sr), y_channel(hr), 255.0), abs=1e-3)
    assert value[("ctsr", "RealSR", "Canon_001", "psnr")] == pytest.approx(psnr(sr, hr, 255.0), abs=1e-3)

    board = pd.read_parquet(out / "leaderboard.parquet")
    assert set(board["protocol"]) == {"d3sr", "ctsr"} and board["protocol_hash"].str.len().eq(16).all()
    options = board.set_index(["protocol", "dataset", "metric", "method"])["metric_options"]
    assert options[("ctsr", "RealSR", "psnr", "bicubic")] == "crop_border=unspecified;test_y_channel=unspecified"
    assert options[("d3sr", "RealSR", "psnry", "bicubic")] == "color_space=ycbcr;crop_border=unspecified"

    md = (out / "leaderboard.md").read_text()
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}
    assert set(sections) == {f"{d} — protocol {p} ({load_protocol(p).hash})" for d in ("RealSR", "DIV2K-val") for p in ("d3sr", "ctsr")}
    d3sr_realsr = sections[f"RealSR — protocol d3sr ({load_protocol('d3sr').hash})"]
    assert "| OSEDiff *(reported, D3SR Table 1)* | 24.57 | 0.7202 |" in d3sr_realsr and "CTSR" not in d3sr_realsr
    assert "psnry (color_space=ycbcr, crop_border=unspecified)" in d3sr_realsr and "Images: full images" in d3sr_realsr
    ctsr_div2k = sections[f"DIV2K-val — protocol ctsr ({load_protocol('ctsr').hash})"]
    assert "| OSEDiff *(reported, CTSR Table 3)* | 23.72 | 0.6109 |" in ctsr_div2k and "D3SR Table" not in ctsr_div2k
    assert "image preparation unspecified (ran full images)" in ctsr_div2k and "seed unspecified (ran 0)" in ctsr_div2k
    assert "DIV2K-val.images" in ctsr_div2k and "psnr.test_y_channel" in ctsr_div2k

    rerun = run_evaluation("bicubic", "RealSR,DIV2K-val", "psnry,ssim", out, data_root=str(data_root), progress=False, partial_sets=True, protocol="d3sr")
    assert rerun.rows_computed == 0 and rerun.rows_reused == 8


def test_cached_rows_are_reused_only_under_the_same_hash(tmp_path, data_root, offline_weights):
    out = tmp_path / "out"
    doc = {"name": "mine", "datasets": {"RealSR": {"images": "full"}}, "metrics": {"psnr": {}}}
    path = write_yaml(tmp_path / "p.yaml", doc)
    first = run_evaluation("bicubic", "RealSR", "all", out, data_root=str(data_root), progress=False, partial_sets=True, protocol=str(path))
    assert first.rows_computed == 2
    write_yaml(path, {**doc, "metrics": {"psnr": {"test_y_channel": True}}})  # same name, other content
    second = run_evaluation("bicubic", "RealSR", "all", out, data_root=str(data_root), progress=False, partial_sets=True, protocol=str(path))
    assert second.rows_computed == 2 and second.rows_reused == 0
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 2 and (frame["protocol_hash"] == load_protocol(str(path)).hash).all()


def test_a_closed_protocol_refuses_sets_and_metrics_it_does_not_fix(tmp_path, data_root, offline_weights):
    with pytest.raises(UserError, match="protocol d3sr does not fix dataset 'DRealSR'"):
        load_protocol("d3sr").prep_for("DRealSR")
    with pytest.raises(UserError, match="metric 'lpips-vgg' is not part of protocol d3sr"):
        run_evaluation("bicubic", "RealSR", "lpips-vgg", tmp_path / "o", data_root=str(data_root), progress=False, partial_sets=True, protocol="d3sr")


def test_measured_row_of_a_reported_method_shows_the_difference(tmp_path, data_root, offline_weights):
    published = tmp_path / "osediff_outputs"  # outputs named like the model the papers report
    for camera in ("Canon", "Nikon"):
        lr = read_rgb(data_root / "RealSR(V3)" / camera / "Test" / "4" / f"{camera}_001_LR4.png")
        write_png(published / f"{camera}_001.png", np.repeat(np.repeat(lr, 4, 0), 4, 1))
    out = tmp_path / "o"
    summary = run_evaluation("", "RealSR", "psnry", out, extra_methods={"OSEDiff": str(published)}, data_root=str(data_root),
                             progress=False, partial_sets=True, protocol="d3sr")
    from srdistill.evaluate.report import write_reports

    write_reports(out, summary)
    results = pd.read_parquet(out / "results.parquet")
    gap = results["value"].mean() - 24.57  # D3SR Table 1, RealSR, OSEDiff, PSNR
    md = (out / "leaderboard.md").read_text()
    assert f"| Δ OSEDiff − OSEDiff (D3SR Table 1) | {gap:+.2f} |" in md
    repro = pd.read_parquet(out / "reproduction.parquet")
    row = repro[(repro["paper"] == "D3SR") & (repro["table"] == "Table 1")].iloc[0]
    assert row["gap"] == pytest.approx(gap) and row["reported"] == 24.57 and row["protocol"] == "d3sr"
    assert "| RealSR | d3sr | OSEDiff | OSEDiff | D3SR Table 1 | PSNR↑ |" in (out / "reproduction.md").read_text()


def test_osediff_preset_takes_128_px_lr_centre_crops_of_full_realsr(tmp_path, offline_weights):
    import cv2

    root = tmp_path / "data"
    hr = cv2.resize(real_photo("astronaut", 512, 512), (560, 544), interpolation=cv2.INTER_CUBIC)  # LR will be 140 x 136
    write_png(root / "RealSR(V3)" / "Canon" / "Test" / "4" / "Canon_001_HR.png", hr)
    write_png(root / "RealSR(V3)" / "Canon" / "Test" / "4" / "Canon_001_LR4.png", downscale(hr))
    out = tmp_path / "out"
    run_evaluation("bicubic", "RealSR", "psnry", out, data_root=str(root), progress=False, partial_sets=True, protocol="osediff")
    cached = next((out / "cache").glob("RealSR-prep-*"))
    assert read_rgb(cached / "lr" / "Canon_001.png").shape == (128, 128, 3)
    assert np.array_equal(read_rgb(cached / "hr" / "Canon_001.png"), hr[4 * 4:4 * 4 + 512, 4 * 6:4 * 6 + 512])  # (136-128)//2, (140-128)//2
    from srdistill.evaluate.report import write_reports

    write_reports(out)
    md = (out / "leaderboard.md").read_text()
    assert f"## RealSR — protocol osediff ({load_protocol('osediff').hash})" in md
    assert "LR centre crops of 128 px" in md and "psnry (color_space=ycbcr, crop_border=0)" in md


def test_a_partial_named_set_is_refused_unless_asked_for(tmp_path, data_root, capsys):
    args = ["leaderboard", "--methods", "bicubic", "--datasets", "RealSR", "--metrics", "psnry", "--data-root", str(data_root),
            "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "RealSR: 100 pairs expected, found 2" in err and "--partial-sets" in err and "\n" not in err
    assert not (tmp_path / "o" / "results.parquet").exists()
    assert main(args + ["--partial-sets"]) == 0
    assert len(pd.read_parquet(tmp_path / "o" / "results.parquet")) == 2
