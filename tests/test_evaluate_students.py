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
    assert ";t=0.2;" in fps["ctsr@t=0.2"] and fps["ctsr@t=0.2"] != fps["ctsr@t=0.8"]
    student = load_student(ctsr_run)
    vae_tiling(student, True)
    with torch.no_grad():
        expected = to_uint8(student(to_input(read_rgb(lr / "cat.png"), "cpu"), t=0.2))
    assert np.array_equal(read_rgb(out / "sr" / "ctsr@t=0.2" / "LR" / "cat.png"), expected)


def vae_tiling(student, on: bool) -> None:
    from diffusers import AutoencoderKL

    vaes = [m for m in student.module.modules() if isinstance(m, AutoencoderKL)]
    assert vaes
    for vae in vaes:
        vae.enable_tiling() if on else vae.disable_tiling()


def hand_tiled(student, lr: torch.Tensor, tile: int, context: int) -> torch.Tensor:
    """CTSR Sec. 5.1 done by hand: tile x tile LR patches, each read with `context` px of its neighbours, edge-padded
    to the student's multiple of 8, its own area kept."""
    _, _, h, w = lr.shape
    out = torch.zeros(1, 3, 4 * h, 4 * w)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            y0, x0 = max(top - context, 0), max(left - context, 0)
            y1, x1 = min(top + tile + context, h), min(left + tile + context, w)
            window = lr[..., y0:y1, x0:x1]
            wh, ww = window.shape[-2:]
            window = torch.nn.functional.pad(window, (0, -ww % 8, 0, -wh % 8), mode="replicate")
            with torch.no_grad():
                sr = student(window)[..., : 4 * wh, : 4 * ww]
            bottom, right = min(top + tile, h), min(left + tile, w)
            out[..., 4 * top: 4 * bottom, 4 * left: 4 * right] = \
                sr[..., 4 * (top - y0): 4 * (bottom - y0), 4 * (left - x0): 4 * (right - x0)]
    return out


def test_ctsr_runs_large_images_in_512_patches_with_vae_tiling(ctsr_run):
    """CTSR Sec. 5.1: above 512x512 (the x4-upsampled model input: 128 LR px) patch splitting plus VAE tiling."""
    lr_img = np.random.default_rng(0).integers(0, 256, (150, 140, 3), dtype=np.uint8)   # 600 x 560 px output
    (method,), _ = resolve_methods("", {"ctsr": str(ctsr_run)})
    assert "tile=128" in method.fingerprint and "vae_tiling=1" in method.fingerprint
    got = method.upscale(lr_img)
    student = load_student(ctsr_run)
    x = to_input(lr_img, "cpu")
    vae_tiling(student, True)
    expected = to_uint8(hand_tiled(student, x, 128, 16))
    assert np.array_equal(got, expected)
    # both halves of the policy change the output here, so neither can be silently skipped
    vae_tiling(student, False)
    assert not np.array_equal(got, to_uint8(hand_tiled(student, x, 128, 16)))
    vae_tiling(student, True)
    with torch.no_grad():
        whole = to_uint8(student(torch.nn.functional.pad(x, (0, 4, 0, 2), mode="replicate"))[..., :600, :560])
    assert not np.array_equal(got, whole)


def test_runs_folder_is_discovered_under_all(ctsr_run):
    methods, unavailable = resolve_methods("all", runs_root=str(ctsr_run.parent))
    names = [m.name for m in methods]
    assert "ctsr-tiny" in names and "bicubic" in names and "realesrgan-x4plus" in names
    assert [u.name for u in unavailable] == ["realesrgan-x4plus-torch"]
