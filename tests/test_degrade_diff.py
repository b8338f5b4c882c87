"""`degrade diff`: two builds under different specs; the report names the changed spec field and parameters."""


import numpy as np
import pandas as pd
import pytest

from srdistill.degrade.build.builder import build
from srdistill.degrade.cli import main
from srdistill.degrade.inspect.diff import compare_params, flatten, lr_statistics
from srdistill.degrade.build.regen import regen

pytestmark = pytest.mark.slow


def test_flatten_and_paired_param_comparison():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "k": list(range(9)), "n": None}) == {
        "a.b": 1, "a.c[0]": 1, "a.c[1]": 2, "k#len": 9, "n": None}
    a = pd.DataFrame({"q": [30, 40, 50], "mode": ["x", "y", "x"]}, index=["k1", "k2", "k3"])
    b = pd.DataFrame({"q": [30, 45, 50], "mode": ["x", "y", "x"]}, index=["k1", "k2", "k3"])
    num, cat = compare_params(a, b)
    assert num.set_index("param").loc["q", "paired"] == pytest.approx(1 / 3)
    assert cat.set_index("param").loc["mode", "paired"] == 0.0


@pytest.fixture(scope="module")
def builds(tmp_path_factory, ray_cluster):
    """A `realesrgan` build of 8 samples, and two regens of it: a low final JPEG quality, and a light one."""
    root = tmp_path_factory.mktemp("builds")
    a, b, c = root / "a", root / "b", root / "c"
    lowq, light = root / "lowq.yaml", root / "light.yaml"
    # Only the final JPEG quality range changes (it is applied last, after every other draw).
    lowq.write_text("base: realesrgan\nname: realesrgan-lowq\nstage2: {jpeg_quality: [10, 20]}\n")
    # No blur, no resize detour, no noise, light JPEG: close to a plain downscale.
    stage = "{blur_prob: 0.0, resize: {probs: [0, 0, 1]}, noise: {gaussian_prob: 1.0, sigma_range: [0, 0]}, " \
            "jpeg_quality: [94, 95]}"
    light.write_text(f"base: realesrgan\nname: light\nstage1: {stage}\nstage2: {stage}\nfinal: {{sinc_prob: 0.0}}\n")
    build("sample", str(a), "realesrgan", crop=64, crops_per_image=2, limit=4, shard_samples=4,
          progress=False, command="test")
    regen(str(a), str(b), str(lowq), progress=False, command="test")
    regen(str(a), str(c), str(light), progress=False, command="test")
    return a, b, c


def _diff_cli(argv: list[str]) -> int:
    return main(["diff", *argv])


def test_diff_of_two_specs_shows_the_changed_parameter(builds, tmp_path, capsys):
    a, b, _ = builds
    assert _diff_cli([str(a), str(b), "--out", str(tmp_path / "d")]) == 0
    assert "final.jpeg2_" in capsys.readouterr().out
    md = (tmp_path / "d" / "diff.md").read_text()
    # the v1 override file became a change of one draw, shown op by op
    steps = md.split("## Spec steps that differ")[1].split("##")[0]
    assert "| `stage2/q2` | changed | `q2` | uniform [30.0, 95.0] | uniform [10.0, 20.0] |" in steps
    assert len([line for line in steps.splitlines() if line.startswith("| `")]) == 1
    changed = md.split("## Parameters whose distribution changed")[1].split("##")[0]
    assert {"`final.jpeg2_first.quality`", "`final.jpeg2_last.quality`"} >= set(changed.strip().split(", "))
    assert "stage1" not in changed
    assert "LR vs bicubic-downscaled HR, PSNR (dB)" in md
    for png in ("lr_stats.png", "params.png"):
        assert (tmp_path / "d" / png).read_bytes()[:4] == b"\x89PNG"


def test_diff_against_the_reference_sees_a_lighter_build(builds, tmp_path, capsys):
    a, _, light = builds
    assert _diff_cli([str(light), "--reference", "realesrgan", "--out", str(tmp_path / "n")]) == 0
    assert "sharpness_ratio" in capsys.readouterr().out  # no blur anywhere: far more high frequencies
    md = (tmp_path / "n" / "diff.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| high frequencies"))
    assert row.endswith("| **differs** |")
    assert "| `final/final_order[0]/sinc_a` | changed | `p` | 0.8 | 0.0 |" in md  # the spec steps behind it
    assert "| `stage2/blur2` | changed | `p` | 0.8 | 0.0 |" in md
    assert (tmp_path / "n" / "lr_stats.png").read_bytes()[:4] == b"\x89PNG"
    # the realesrgan build itself: no statistic stands out from the reference's
    assert _diff_cli([str(a), "--reference", "realesrgan", "--out", str(tmp_path / "r")]) == 0
    assert "no LR statistic differs" in capsys.readouterr().out
    assert "**differs**" not in (tmp_path / "r" / "diff.md").read_text()


def test_diff_takes_a_second_build_or_the_reference(builds, tmp_path, capsys):
    a, b, _ = builds
    for argv in ([str(a), str(b), "--reference", "realesrgan", "--out", str(tmp_path)], [str(a), "--out", str(tmp_path)]):
        assert _diff_cli(argv) == 2
        assert capsys.readouterr().err == ("degrade: give either a second build B or --reference SPEC, not both and "
                                           "not neither.\n")


def test_lr_statistics_measure_strength_and_colour():
    rng = np.random.default_rng(2)
    hr = np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8)
    area = hr.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))  # box x4 downscale, computed here independently
    exact = lr_statistics(hr, np.rint(area).astype(np.uint8))
    assert exact["mad_vs_area"] < 0.5 and exact["colour_ratio"] == pytest.approx(1.0, abs=0.01)
    gray = np.repeat(area.mean(axis=2, keepdims=True), 3, axis=2)  # all chroma removed
    assert lr_statistics(hr, np.rint(gray).astype(np.uint8))["colour_ratio"] < 0.05
    half = area.mean(axis=2, keepdims=True) + 0.5 * (area - area.mean(axis=2, keepdims=True))
    assert lr_statistics(hr, np.rint(half).astype(np.uint8))["colour_ratio"] == pytest.approx(0.5, abs=0.02)
    shifted = np.clip(area + 10, 0, 255)
    assert lr_statistics(hr, np.rint(shifted).astype(np.uint8))["mad_vs_area"] == pytest.approx(10, abs=1.0)
