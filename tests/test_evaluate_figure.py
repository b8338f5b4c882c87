"""`evaluate figure`: the same box from HR, LR (nearest) and each method's kept SR output, the overview with the
box, the LaTeX figure of subfigures; `--box auto` finds the window where the methods differ most."""

import subprocess

import numpy as np
import pytest
from helpers.binaries import require_binary
from srdistill.core.errors import UserError
from srdistill.datasets.images import read_rgb
from srdistill.evaluate.cli import main
from srdistill.evaluate.render.crop_figure import Box, auto_box, parse_box


def test_auto_box_is_the_window_where_outputs_disagree_most():
    hr = np.full((40, 60, 3), 128, np.uint8)
    a, b = hr.copy(), hr.copy()
    b[22:30, 35:43] = 0  # the methods disagree only in this 8x8 patch
    assert auto_box(hr, [a, b], 8) == Box(35, 22, 8, 8)
    # one method: its error against HR
    c = hr.copy()
    c[5:9, 50:54] = 255
    assert auto_box(hr, [c], 4) == Box(50, 5, 4, 4)
    # a window larger than the image is clipped to it
    assert auto_box(hr, [a, b], 100) == Box(0, 0, 60, 40)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,0,4", "-1,2,3,4"])
def test_a_bad_box_is_one_sentence(text):
    with pytest.raises(UserError) as info:
        parse_box(text)
    assert "--box" in str(info.value) and "\n" not in str(info.value)


def _crop(img, x, y, w, h, zoom):
    patch = img[y:y + h, x:x + w]
    return patch.repeat(zoom, 0).repeat(zoom, 1)


def test_figure_from_pair_folders_cuts_the_same_box_everywhere(tmp_path, pair_dirs, offline_weights, capsys):
    hr_dir, lr_dir = pair_dirs
    out = tmp_path / "o"
    assert main(["leaderboard", "--methods", "bicubic,lanczos", "--hr", str(hr_dir), "--lr", str(lr_dir),
                 "--metrics", "psnry", "--out", str(out), "--quiet"]) == 0
    assert main(["figure", "--out", str(out), "--hr", str(hr_dir), "--lr", str(lr_dir), "--image", "cat",
                 "--box", "8,16,32,24", "--methods", "lanczos,bicubic", "--dest", str(tmp_path / "fig")]) == 0
    fig = tmp_path / "fig"
    zoom = 256 // 32  # crops are zoomed by an integer factor to about 256 px
    hr, lr = read_rgb(hr_dir / "cat.png"), read_rgb(lr_dir / "cat.png")
    sr = {m: read_rgb(out / "sr" / m / "LR" / "cat.png") for m in ("bicubic", "lanczos")}
    up = lr.repeat(4, 0).repeat(4, 1)  # nearest x4 (the LR is exactly a quarter of the HR)
    expected = {"crop-0-HR.png": hr, "crop-1-LR-nearest.png": up, "crop-2-lanczos.png": sr["lanczos"],
                "crop-3-bicubic.png": sr["bicubic"]}
    for name, img in expected.items():
        assert np.array_equal(read_rgb(fig / name), _crop(img, 8, 16, 32, 24, zoom)), name
    over = read_rgb(fig / "overview.png")
    assert over.shape == (256, 256, 3)
    assert tuple(over[16 * 256 // 96, 8 * 256 // 96 + 12]) == (255, 0, 0)  # the box's top edge is drawn red
    assert read_rgb(fig / "figure.png").shape == (20 + 256, 5 * 256 + 4 * 4, 3)  # labelled overview + 4 crops
    tex = (fig / "figure.tex").read_text()
    assert tex.count(r"\begin{subfigure}") == 5 and r"\caption*{LR (nearest)}" in tex
    assert "crop x,y,w,h = 8,16,32,24" in tex
    assert main(["figure", "--out", str(out), "--hr", str(hr_dir), "--lr", str(lr_dir), "--image", "cat",
                 "--box", "80,16,32,24", "--methods", "bicubic"]) == 2
    assert "reaches outside cat, which is 96x96" in capsys.readouterr().err
    assert main(["figure", "--out", str(out), "--hr", str(hr_dir), "--lr", str(lr_dir), "--image", "cat",
                 "--box", "auto", "--methods", "realesrgan-x4plus"]) == 2
    assert "no SR output of realesrgan-x4plus for cat" in capsys.readouterr().err


@pytest.mark.slow
def test_figure_on_the_embedded_sample_with_an_auto_box_compiles(tmp_path, offline_weights, capsys):
    out = tmp_path / "o"
    assert main(["leaderboard", "--methods", "bicubic,lanczos", "--datasets", "sample", "--metrics", "psnry",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["figure", "--out", str(out), "--dataset", "sample", "--image", "astronaut", "--box", "auto",
                 "--size", "48", "--methods", "bicubic,lanczos"]) == 0
    printed = capsys.readouterr().out
    x, y, w, h = (int(v) for v in printed.split("box auto: ")[1].split()[0].split(","))
    assert (w, h) == (48, 48)
    # the chosen window has the largest summed variance between the two outputs' luma, by brute force here
    sr = [read_rgb(out / "sr" / m / "sample" / "astronaut.png").astype(np.float64) for m in ("bicubic", "lanczos")]
    luma = [0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2] for s in sr]
    var = ((luma[0] - luma[1]) / 2) ** 2
    sums = np.lib.stride_tricks.sliding_window_view(var, (48, 48)).sum(axis=(2, 3))
    assert sums[y, x] >= sums.max() * (1 - 1e-3)
    fig = out / "figures" / "sample-astronaut"
    assert read_rgb(fig / "crop-0-HR.png").shape == (240, 240, 3)  # 48 px zoomed x5
    binary = require_binary("pdflatex")
    proc = subprocess.run([binary, "-interaction=nonstopmode", "-halt-on-error", "figure.tex"], cwd=fig,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (fig / "figure.pdf").read_bytes().startswith(b"%PDF")
