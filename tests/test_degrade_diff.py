"""`degrade diff`: two builds under different specs; the report names the changed spec field and parameters."""

import argparse

import numpy as np
import pandas as pd
import pytest

from srdistill.degrade.build import build
from srdistill.degrade.diff import add_diff_parser, blockiness, compare_params, flatten, noise_sigma
from srdistill.degrade.regen import regen

pytestmark = pytest.mark.slow


def test_noise_estimate_tracks_added_gaussian_noise():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 128.0)
    for sigma in (2.0, 5.0, 10.0):
        assert noise_sigma(flat + rng.normal(0, sigma, flat.shape)) == pytest.approx(sigma, rel=0.1)
    assert noise_sigma(flat) == 0.0


def test_blockiness_sees_8x8_steps():
    rng = np.random.default_rng(1)
    smooth = rng.normal(0, 1, (64, 64)).cumsum(axis=1)
    blocky = smooth + np.kron(rng.normal(0, 20, (8, 8)), np.ones((8, 8)))
    assert blockiness(blocky) > 2.0
    assert blockiness(smooth) == pytest.approx(1.0, abs=0.3)


def test_flatten_and_paired_param_comparison():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "k": list(range(9)), "n": None}) == {
        "a.b": 1, "a.c[0]": 1, "a.c[1]": 2, "k#len": 9, "n": None}
    a = pd.DataFrame({"q": [30, 40, 50], "mode": ["x", "y", "x"]}, index=["k1", "k2", "k3"])
    b = pd.DataFrame({"q": [30, 45, 50], "mode": ["x", "y", "x"]}, index=["k1", "k2", "k3"])
    num, cat = compare_params(a, b)
    assert num.set_index("param").loc["q", "paired"] == pytest.approx(1 / 3)
    assert cat.set_index("param").loc["mode", "paired"] == 0.0


def test_diff_of_two_specs_shows_the_changed_parameter(tmp_path, capsys, ray_cluster):
    a, b = tmp_path / "a", tmp_path / "b"
    spec = tmp_path / "lowq.yaml"
    # Only the final JPEG quality range changes (it is applied last, after every other draw).
    spec.write_text("base: realesrgan\nname: realesrgan-lowq\nstage2: {jpeg_quality: [10, 20]}\n")
    build("sample", str(a), "realesrgan", crop=64, crops_per_image=2, limit=4, shard_samples=4,
          progress=False, command="test")
    regen(str(a), str(b), str(spec), progress=False, command="test")
    parser = argparse.ArgumentParser(prog="degrade")
    add_diff_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diff", str(a), str(b), "--out", str(tmp_path / "d")])
    assert args.func(args) == 0
    assert "stage2.jpeg_quality" in capsys.readouterr().out
    md = (tmp_path / "d" / "diff.md").read_text()
    assert "| `stage2.jpeg_quality[0]` | 30 | 10 |" in md and "| `stage2.jpeg_quality[1]` | 95 | 20 |" in md
    changed = md.split("## Parameters whose distribution changed")[1].split("##")[0]
    assert "`stage2.jpeg_quality`" in changed and "stage1" not in changed
    assert "LR vs bicubic-downscaled HR, PSNR (dB)" in md
    for png in ("lr_stats.png", "params.png"):
        assert (tmp_path / "d" / png).read_bytes()[:4] == b"\x89PNG"
