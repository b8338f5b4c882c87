"""Parity with the Real-ESRGAN reference (basicsr 1.4.2 + realesrgan 0.3.0, installed for bench/ and these tests).

Three levels, each against the reference's own code on the CPU:
- per operation: every op on the same parameters agrees to float rounding (noise, whose generators differ,
  agrees in distribution);
- the whole chain with the noise switched off: our apply_params against the reference's ops called in
  the order of our op record (feed_data's order) on the same draws;
- as a distribution: 120 LRs of four real photos from each implementation, KS tests on statistics of
  strength, colour, high frequencies, noise and JPEG blockiness.

Only names that exist in every version of srdistill.degrade are imported at module level. The draws are
read from the op record (params version 3).
"""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from skimage import data
from srdistill.degrade.ops import kernels
from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.inspect.diff import lr_statistics
from srdistill.degrade.pipeline import apply_params, degrade_image, sample_params, sample_rng
from srdistill.degrade.spec.schema import load_spec

P_MIN = 0.01  # the bar for "the same distribution"


@pytest.fixture(scope="module")
def ref(one_torch_thread):
    from srdistill.degrade.inspect.reference import import_reference

    return import_reference()


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()


def _n(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _ref_kernel(ref, p: dict) -> np.ndarray:
    """The reference's kernel for our kernel parameters, from basicsr's own functions."""
    d = ref.degradations
    size = p["size"]
    if p["type"] == "sinc":
        return d.circular_lowpass_kernel(p["omega"], size, pad_to=0)
    iso = not p["type"].endswith("aniso")
    sx = p["sigma_x"]
    sy, theta = (sx, 0.0) if iso else (p["sigma_y"], p["theta"])
    if p["type"] in ("iso", "aniso"):
        return d.bivariate_Gaussian(size, sx, sy, theta, isotropic=iso)
    if p["type"].startswith("generalized"):
        return d.bivariate_generalized_Gaussian(size, sx, sy, theta, p["beta"], isotropic=iso)
    return d.bivariate_plateau(size, sx, sy, theta, p["beta"], isotropic=iso)


def _padded21(k: np.ndarray) -> torch.Tensor:
    """As RealESRGANDataset hands kernels to feed_data: zero-padded to 21x21, float32, batch of one."""
    pad = (21 - k.shape[0]) // 2
    return torch.FloatTensor(np.pad(k, ((pad, pad), (pad, pad))))[None]


KERNELS = [
    {"type": "iso", "size": 7, "sigma_x": 0.9},
    {"type": "aniso", "size": 21, "sigma_x": 2.7, "sigma_y": 0.4, "theta": 2.1},
    {"type": "generalized_iso", "size": 13, "sigma_x": 1.6, "beta": 0.6},
    {"type": "generalized_aniso", "size": 17, "sigma_x": 0.5, "sigma_y": 2.9, "theta": -1.2, "beta": 3.4},
    {"type": "plateau_iso", "size": 11, "sigma_x": 2.2, "beta": 1.0},
    {"type": "plateau_aniso", "size": 19, "sigma_x": 1.1, "sigma_y": 2.4, "theta": 0.7, "beta": 1.8},
    {"type": "sinc", "size": 9, "omega": 1.3},
    {"type": "sinc", "size": 21, "omega": 0.7},
]


# ------------------------------------------------------------------ per operation


@pytest.mark.parametrize("p", KERNELS, ids=lambda p: f"{p['type']}{p['size']}")
def test_kernels_match_basicsr(ref, p):
    assert np.abs(kernels.build_kernel(p) - _ref_kernel(ref, p)).max() < 1e-12


@pytest.mark.parametrize("p", KERNELS[:3] + KERNELS[-1:], ids=lambda p: f"{p['type']}{p['size']}")
def test_blur_matches_filter2D(ref, photo, p):
    img = ops.to_float(photo)
    want = _n(ref.filter2D(_t(img), _padded21(_ref_kernel(ref, p))))
    assert np.abs(ops.filter_2d(img, kernels.build_kernel(p)) - want).max() < 1e-5
    if p["type"] == "iso":  # the pipeline filters isotropic Gaussians as two 1-D passes
        sep = ops.filter_separable(img, kernels.gaussian_1d(p["size"], p["sigma_x"]))
        assert np.abs(sep - want).max() < 1e-5


def test_usm_matches_USMSharp(ref, photo):
    img = ops.to_float(photo)
    want = _n(ref.USMSharp(radius=50, sigma=0)(_t(img), weight=0.5, threshold=10))
    d = np.abs(ops.usm_sharpen(img, 50, 0.0, 0.5, 10.0) - want)
    # float rounding, except around a residual within rounding of the threshold: the hard mask flips there and
    # its blur spreads the (small) difference over the window
    assert np.median(d) < 1e-6 and np.mean(d < 1e-5) > 0.95 and d.max() < 1e-3


STAGE1_SCALES = [0.15, 0.3771, 0.5, 0.8123, 0.999, 1.0, 1.004, 1.2, 1.4999]


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_stage1_resize_matches_interpolate_scale_factor(mode):
    rng = np.random.default_rng(0)
    # 100x300 at 1.004: one side keeps its size (torch's bilinear leaves that axis alone, bicubic does not);
    # 100x90 near 1: both do (OpenCV would copy).
    cases = [(100, 90, s) for s in STAGE1_SCALES] + [(100, 300, 1.004), (300, 100, 0.999)]
    cases += [(int(rng.integers(16, 120)), int(rng.integers(16, 120)), float(rng.uniform(0.15, 1.5))) for _ in range(20)]
    for H, W, s in cases:
        img = rng.random((H, W, 3), dtype=np.float32)
        want = _n(F.interpolate(_t(img), scale_factor=s, mode=mode))
        size = (math.floor(H * s), math.floor(W * s))
        assert want.shape[:2] == size
        got = ops.resize(img, size, mode, scale=s)
        assert np.abs(got - want).max() < 5e-5, (H, W, s)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_sized_resize_matches_interpolate_size(mode):
    img = np.random.default_rng(1).random((61, 47, 3), dtype=np.float32)
    for size in [(15, 11), (61, 47), (61, 50), (73, 38)]:
        want = _n(F.interpolate(_t(img), size=size, mode=mode))
        assert np.abs(ops.resize(img, size, mode) - want).max() < 5e-5, size


@pytest.fixture(scope="module")
def diffjpeg_module():
    from srdistill.degrade.ops import diffjpeg

    return diffjpeg


@pytest.mark.parametrize("quality", [30.0, 49.7, 50.3, 77.123, 94.9])
def test_diffjpeg_matches_reference(ref, diffjpeg_module, quality):
    jpeger = ref.DiffJPEG(differentiable=False)
    for img in (data.astronaut(), data.coffee(), data.chelsea()):
        for h, w in ((128, 128), (77, 101), (40, 200)):  # multiples of 16 or not (zero padding to 16)
            x = img[:h, :w].astype(np.float32) / 255
            with torch.no_grad():
                want = _n(jpeger(_t(x), quality=torch.tensor([quality], dtype=torch.float32)))
            got = diffjpeg_module.diffjpeg(x, quality)
            d = np.abs(got - want)
            # float rounding only, except where a coefficient sat on a rounding boundary: one 8x8 block of
            # luma or one 16x16 pixel area of chroma at most
            assert np.mean(d > 1e-5) <= 16 * 16 * 3 / d.size, (h, w, d.max())
            assert np.median(d) < 1e-6


def test_jpeg_codecs_route_to_diffjpeg_and_libjpeg(ref):
    """ops.jpeg's `diffjpeg` is the reference's model; `libjpeg` is a different codec, far from it."""
    x = data.coffee()[:192, :256].astype(np.float32) / 255
    with torch.no_grad():
        want = _n(ref.DiffJPEG(differentiable=False)(_t(x), quality=torch.tensor([40.0])))
    ours, lj = ops.jpeg(x, 40.0, "diffjpeg"), ops.jpeg(x, 40, "libjpeg")
    assert np.abs(ours - want).mean() < 1e-5
    assert np.abs(lj - want).mean() > 1e-3


def _noise_values(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    return (out - img)[..., 0].ravel()[::7]


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_matches_in_distribution(ref, gray):
    img = np.full((160, 160, 3), 0.5, np.float32)  # mid-gray: no clipping
    torch.manual_seed(0)
    want = _n(ref.degradations.add_gaussian_noise_pt(_t(img), sigma=12.0, gray_noise=float(gray)))
    got = ops.add_gaussian_noise(img, 12.0, gray, seed=5)
    assert stats.ks_2samp(_noise_values(got, img), _noise_values(want, img)).pvalue > P_MIN
    for out in (got, want):  # gray noise is one field on all three channels, colour noise is not
        assert np.array_equal(out[..., 0], out[..., 2]) == gray


@pytest.mark.parametrize("gray", [False, True])
def test_poisson_noise_matches_in_distribution(ref, photo, gray):
    img = ops.to_float(photo)
    torch.manual_seed(0)
    want = _n(ref.degradations.add_poisson_noise_pt(_t(img), scale=2.0, gray_noise=float(gray)))
    got = ops.add_poisson_noise(img, 2.0, gray, seed=5)
    a, b = _noise_values(got, img), _noise_values(want, img)
    assert stats.ks_2samp(a, b).pvalue > P_MIN
    assert abs(a.std() / b.std() - 1) < 0.05
    for out in (got, want):  # one field on all channels for gray noise (where no channel was clipped)
        inside = ((out > 0) & (out < 1)).all(axis=-1)
        d = out - img
        assert (np.abs(d[inside][:, 0] - d[inside][:, 2]).max() < 1e-6) == gray


def test_reference_options_carry_the_spec_numbers_and_refuse_what_it_hard_codes(tmp_path):
    from srdistill.degrade.inspect.reference import reference_options
    from srdistill.core.errors import UserError

    data_opt, model_opt = reference_options(load_spec("realesrgan"))
    # options/train_realesrgan_x4plus.yml, typed in here from the reference's config
    assert model_opt == {
        "scale": 4, "second_blur_prob": 0.8,
        "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
        "noise_range": [1.0, 30.0], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4,
        "jpeg_range": [30.0, 95.0],
        "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2], "gaussian_noise_prob2": 0.5,
        "noise_range2": [1.0, 25.0], "poisson_scale_range2": [0.05, 2.5], "gray_noise_prob2": 0.4,
        "jpeg_range2": [30.0, 95.0]}
    assert data_opt["blur_sigma"] == [0.2, 3.0] and data_opt["blur_sigma2"] == [0.2, 1.5]
    assert data_opt["kernel_prob"] == data_opt["kernel_prob2"] == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
    assert data_opt["sinc_prob"] == data_opt["sinc_prob2"] == 0.1 and data_opt["final_sinc_prob"] == 0.8
    assert data_opt["betag_range"] == [0.5, 4.0] and data_opt["betap_range2"] == [1.0, 2.0]
    for override, field in (("final: {jpeg_first_prob: 0.3}", "spec.final.jpeg_first_prob"),
                            ("stage1: {jpeg_codec: libjpeg}", "spec.stage1.jpeg_codec"),
                            ("stage1: {kernel: {sizes: [7, 9]}}", "spec.stage1.kernel.sizes")):
        f = tmp_path / "s.yaml"
        f.write_text(f"base: realesrgan\n{override}\n")
        with pytest.raises(UserError, match=field.replace(".", r"\.")):
            reference_options(load_spec(f))


def test_diffjpeg_does_not_depend_on_the_blas_thread_count(tmp_path):
    """Its block products run through BLAS, which may thread them; the bytes must not change with the count."""
    script = ("import hashlib, numpy as np\n"
              "from skimage import data\n"
              "from srdistill.degrade.ops.diffjpeg import diffjpeg\n"
              "x = np.tile(data.astronaut(), (2, 2, 1)).astype(np.float32) / 255\n"
              "print(hashlib.sha256(diffjpeg(x, 37.3).tobytes()).hexdigest())\n")
    digests = set()
    for threads in ("1", "4"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=True)
        digests.add(res.stdout.strip())
    assert len(digests) == 1


def _kernel_shape_stats(k: np.ndarray) -> tuple[float, float]:
    """(second moment about the centre, peak weight) of a kernel: its spread and its sharpness."""
    r = k.shape[0] // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return float((k * (xx**2 + yy**2)).sum()), float(k.max())


def test_kernel_sampling_matches_the_reference_dataset(ref):
    """Kernels drawn by RealESRGANDataset and by sample_params have the same distribution of spread and peak,
    for stage 1, stage 2 (when it blurs) and the final sinc (a unit pulse when none is drawn)."""
    from srdistill.degrade.inspect.reference import ReferenceDegrader

    spec = load_spec("realesrgan")
    degrader = ReferenceDegrader(spec, seed=1)
    try:
        theirs = [degrader.draw_kernels() for _ in range(800)]
    finally:
        degrader.close()
    rng = sample_rng(1, "kernel-parity")
    ours = [sample_params(spec, rng, (64, 64)) for _ in range(800)]
    pulse = np.zeros((1, 1))
    pulse[0, 0] = 1.0
    def drawn(p: dict, op: str, at: str) -> dict | None:
        found = [o for o in p["ops"] if o["op"] == op and o["at"] == at]
        return found[0] if found else None

    sincs = [drawn(p, "sinc", "final") for p in ours]
    pairs = {
        "kernel1": ([kernels.build_kernel(drawn(p, "blur", "stage1")["kernel"]) for p in ours],
                    [t["kernel1"] for t in theirs]),
        "kernel2": ([kernels.build_kernel(drawn(p, "blur", "stage2")["kernel"]) for p in ours
                     if drawn(p, "blur", "stage2")],
                    [t["kernel2"] for t in theirs]),  # feed_data decides whether to blur, not the dataset
        "sinc": ([kernels.sinc_kernel(o["size"], o["omega"]) if o else pulse for o in sincs],
                 [t["sinc_kernel"] for t in theirs]),
    }
    for name, (a, b) in pairs.items():
        sa, sb = np.array([_kernel_shape_stats(k) for k in a]), np.array([_kernel_shape_stats(k) for k in b])
        for i, what in enumerate(("spread", "peak")):
            assert stats.ks_2samp(sa[:, i], sb[:, i]).pvalue > P_MIN, (name, what)


# ------------------------------------------------------------------ per op and branch, through the op table
# Each op of the realesrgan / realesrgan-libjpeg presets as the pipeline runs it (REGISTRY[...].apply on recorded
# values), against the reference's own function in each branch that switches its code path.


def _apply(name: str, img: np.ndarray, values: dict, hr_shape=(96, 128)) -> np.ndarray:
    from srdistill.degrade.ops.opdef import REGISTRY, OpContext

    return REGISTRY[name].apply(img, values, OpContext(scale=4, hr_shape=hr_shape))


@pytest.mark.parametrize("p", KERNELS, ids=lambda p: f"{p['type']}{p['size']}")
def test_blur_op_matches_filter2D_for_every_kernel_type(ref, photo, p):
    """The blur op (separable for iso, 2-D otherwise) on each kernel type and a sinc of each omega range."""
    img = ops.to_float(photo)
    want = _n(ref.filter2D(_t(img), _padded21(_ref_kernel(ref, p))))
    assert np.abs(_apply("blur", img, {"kernel": p}) - want).max() < 1e-5


@pytest.mark.parametrize("size,omega", [(7, 1.1), (13, 2.9), (21, 1.05)])
def test_final_sinc_op_matches_filter2D(ref, photo, size, omega):
    img = ops.to_float(photo)
    want = _n(ref.filter2D(_t(img), _padded21(ref.degradations.circular_lowpass_kernel(omega, size, pad_to=0))))
    assert np.abs(_apply("sinc", img, {"size": size, "omega": omega}) - want).max() < 1e-5


def test_final_sinc_off_is_the_reference_pulse(ref, photo):
    """Without a sinc (p 0.2) srdistill runs no op; the reference filters with RealESRGANDataset's 21x21 pulse,
    which must leave the image unchanged for the two to agree."""
    img = ops.to_float(photo)
    pulse = torch.zeros(21, 21)
    pulse[10, 10] = 1
    assert np.array_equal(_n(ref.filter2D(_t(img), pulse[None])), img)


RESIZE_BRANCHES = [  # (relative_to, coords, scale): stage 1 up/down/keep, stage 2 up/down/keep, final to LR
    ("input", "scale_factor", 1.37), ("input", "scale_factor", 0.41), ("input", "scale_factor", 1.0),
    ("lr", "size", 1.13), ("lr", "size", 0.57), ("lr", "size", 1.0),
]


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize("relative_to,coords,scale", RESIZE_BRANCHES,
                         ids=lambda v: str(v))
def test_resize_op_matches_feed_data_interpolate(relative_to, coords, scale, mode):
    """Output size and values of the resize op as feed_data calls F.interpolate in each place: stage 1 by
    scale_factor, stage 2 to size int(ori / 4 * s), the final resize to ori // 4 (the input is the stage's
    current image, whose size differs from HR / 4)."""
    hr = (204, 148)  # HR/4 = 51 x 37: int(51 * s) and round(51 * s) differ for the scales above
    img = np.random.default_rng(2).random((83, 61, 3), dtype=np.float32)
    if coords == "scale_factor":
        want = F.interpolate(_t(img), scale_factor=scale, mode=mode)
    elif scale == 1.0:
        want = F.interpolate(_t(img), size=(hr[0] // 4, hr[1] // 4), mode=mode)
    else:
        want = F.interpolate(_t(img), size=(int(hr[0] / 4 * scale), int(hr[1] / 4 * scale)), mode=mode)
    got = _apply("resize", img, {"scale": scale, "mode": mode, "relative_to": relative_to, "coords": coords}, hr)
    assert got.shape == _n(want).shape
    assert np.abs(got - _n(want)).max() < 5e-5


def _noise_reference(ref, op: str, x: torch.Tensor, strength: float, gray: bool) -> torch.Tensor:
    d = ref.degradations
    if op == "gaussian_noise":  # feed_data's call: clip=True, rounds=False
        return d.add_gaussian_noise_pt(x, sigma=strength, gray_noise=float(gray), clip=True, rounds=False)
    return d.add_poisson_noise_pt(x, scale=strength, gray_noise=float(gray), clip=True, rounds=False)


@pytest.mark.parametrize("gray", [False, True], ids=["colour", "gray"])
@pytest.mark.parametrize("op,strength", [("gaussian_noise", 20.0), ("poisson_noise", 2.5)])
def test_noise_op_matches_reference_in_each_branch(ref, op, strength, gray):
    """The noise op on a photo with black and white areas (so the clamp to [0, 1] acts) and a saturated colour
    patch: the noise per channel, the clipped fractions and the correlation between channels agree with the
    reference's in distribution.

    KS (two-sample, p > P_MIN / 6 each) on each channel's output - input, over the image and over the patch;
    clipped fractions within 3 binomial standard errors of each other; channel correlation of the added noise
    (1 for gray, about 0 for colour) within 0.05 of the reference's."""
    img = ops.to_float(data.astronaut()[:192, :192])
    img[:40] = 0.0
    img[40:80] = 1.0
    img[80:140] = (0.1, 0.1, 0.9)  # a saturated colour: gray noise's strength follows the gray weights here
    key = "sigma" if op == "gaussian_noise" else "scale"
    got = _apply(op, img, {key: strength, "gray": gray, "seed": 11})
    torch.manual_seed(3)
    with torch.no_grad():
        want = _n(_noise_reference(ref, op, _t(img), strength, gray))
    # Poisson noise on the flat areas is discrete; rounded to 1e-5 so that an atom both put at k / vals - level / 255
    # sits on one value despite float32 vs float64 arithmetic (KS would count the offset as the atom's mass).
    d_got, d_want = np.round(got - img, 5), np.round(want - img, 5)
    p_min = P_MIN / 6  # Bonferroni over the six KS tests: the test as a whole keeps the 1% bar
    for c in range(3):
        assert stats.ks_2samp(d_got[..., c].ravel()[::5], d_want[..., c].ravel()[::5]).pvalue > p_min, c
        assert stats.ks_2samp(d_got[80:140, :, c].ravel(), d_want[80:140, :, c].ravel()).pvalue > p_min, ("patch", c)
    n = got.size
    for edge in (0.0, 1.0):
        fa, fb = np.mean(got == edge), np.mean(want == edge)
        assert abs(fa - fb) <= 3 * math.sqrt(fb * (1 - fb) / n * 2) + 1e-4, (edge, fa, fb)
    inside = ((got > 0) & (got < 1)).all(axis=-1) & ((want > 0) & (want < 1)).all(axis=-1)
    inside[:140] = False
    def corr(out):
        d = (out - img)[inside]
        return np.corrcoef(d[:, 0], d[:, 1])[0, 1]
    assert abs(corr(got) - corr(want)) < 0.05
    assert abs(corr(got) - (1.0 if gray else 0.0)) < 0.1


@pytest.mark.parametrize("quality", [30.0, 49.9, 50.0, 63.3, 95.0])
def test_diffjpeg_op_clamps_before_coding_as_feed_data(ref, quality):
    """The final JPEG may follow the sinc filter or a bicubic resize, which overshoot [0, 1]: the op must code
    the clamped image, as feed_data's torch.clamp before self.jpeger does (values from the factor's two
    branches, q < 50 and q >= 50, and their boundary)."""
    x = data.coffee()[:72, :104].astype(np.float32) / 255
    x = (x - 0.5) * 1.4 + 0.5  # about 30% of the values outside [0, 1]
    with torch.no_grad():
        want = _n(ref.DiffJPEG(differentiable=False)(torch.clamp(_t(x), 0, 1), quality=torch.tensor([quality])))
    got = _apply("jpeg", x, {"quality": quality, "codec": "diffjpeg"})
    d = np.abs(got - want)
    assert np.mean(d > 1e-5) <= 16 * 16 * 3 / d.size and np.median(d) < 1e-6, d.max()


@pytest.mark.parametrize("quality", [30, 47, 50, 71, 95])
@pytest.mark.parametrize("shape", [(64, 96), (57, 83)], ids=["x16", "odd"])
def test_libjpeg_op_matches_add_jpg_compression(ref, quality, shape):
    """realesrgan-libjpeg's codec against basicsr's OpenCV JPEG (add_jpg_compression, BGR in and out) at the
    integer qualities that preset draws: the same bytes, on an input overshooting [0, 1] (both clip first)."""
    h, w = shape
    x = data.chelsea()[:h, :w].astype(np.float32) / 255
    x = (x - 0.5) * 1.3 + 0.5
    want = ref.degradations.add_jpg_compression(np.ascontiguousarray(x[..., ::-1]), quality)[..., ::-1]
    got = _apply("jpeg", x, {"quality": float(quality), "codec": "libjpeg"})
    assert np.array_equal(got, want)


def test_final_quantize_matches_feed_data_clamp_and_round():
    """feed_data ends with torch.clamp((out * 255).round(), 0, 255): ties to even, clamped on both sides; the
    values include exact ties (float32 x * 255 == k + 0.5) and overshoots."""
    rng = np.random.default_rng(4)
    ties = np.float32(np.arange(256) + 0.5) / np.float32(255)
    ties = ties[(ties * np.float32(255)) % 1 == 0.5]
    x = np.concatenate([ties, rng.uniform(-0.3, 1.3, 5000).astype(np.float32)])
    x = np.resize(x, (len(x) // 3, 3))[None]
    want = torch.clamp((_t(x) * 255.0).round(), 0, 255)
    assert len(ties) > 100
    assert np.array_equal(ops.quantize(x).astype(np.float32), _n(want))


# ------------------------------------------------------------------ the whole chain, noise off


def _reference_chain(ref, hr: np.ndarray, gt_usm: torch.Tensor, params: dict, scale: int) -> np.ndarray:
    """The reference's ops, in the order of our record, on our draws (noise off: it adds 0 and clamps)."""
    h, w = hr.shape[:2]
    jpeger = ref.DiffJPEG(differentiable=False)
    out = gt_usm
    for o in params["ops"]:
        if o["op"] == "blur":
            out = ref.filter2D(out, _padded21(_ref_kernel(ref, o["kernel"])))
        elif o["op"] == "resize" and o["relative_to"] == "input":
            out = F.interpolate(out, scale_factor=o["scale"], mode=o["mode"])
        elif o["op"] == "resize":
            s = o["scale"]
            out = F.interpolate(out, size=(int(h / scale * s), int(w / scale * s)), mode=o["mode"])
        elif o["op"] in ("gaussian_noise", "poisson_noise"):
            out = torch.clamp(out, 0, 1)
        elif o["op"] == "jpeg":
            out = jpeger(torch.clamp(out, 0, 1), quality=out.new_tensor([o["quality"]]))
        elif o["op"] == "sinc":
            out = ref.filter2D(out, _padded21(_ref_kernel(ref, {"type": "sinc", "size": o["size"],
                                                                "omega": o["omega"]})))
        else:
            assert o["op"] == "usm"  # gt_usm is the reference's sharpened HR
    return _n(torch.clamp((out * 255.0).round(), 0, 255)).astype(np.uint8)


def test_noise_free_pipeline_matches_the_reference_chain(ref, photo):
    spec = load_spec("realesrgan")
    gt = _t(ops.to_float(photo))
    gt_usm = ref.USMSharp()(gt)
    equal, within_one, seen = [], [], set()
    for i in range(16):
        params = sample_params(spec, sample_rng(3, f"chain{i}"), photo.shape[:2])
        params["ops"] = [{"op": "gaussian_noise", "at": o["at"], "sigma": 0.0, "gray": False, "seed": 0}
                         if o["op"].endswith("_noise") else o for o in params["ops"]]
        ours = apply_params(photo, params, spec)
        with torch.no_grad():
            want = _reference_chain(ref, photo, gt_usm, params, spec.scale)
        assert ours.shape == want.shape
        diff = np.abs(ours.astype(int) - want.astype(int))
        equal.append(np.mean(diff == 0))
        within_one.append(diff.max() <= 1)
        stage1_resize = [o for o in params["ops"] if o["op"] == "resize" and o["at"] == "stage1"][0]
        final = [o["op"] for o in params["ops"] if o["at"] == "final"]
        seen.update([stage1_resize["mode"], "jpeg_first" if final[0] == "jpeg" else "resize_first"])
    assert len(seen) == 5  # every stage-1 mode and both final orders ran
    # Bit-identical but for float rounding: a value on a .5 of the final rounding (1 level), or a JPEG
    # coefficient on a rounding boundary (one block, rarely).
    assert np.mean(within_one) >= 0.85 and np.mean(equal) > 0.97, (within_one, equal)


# ------------------------------------------------------------------ as a distribution


def _photos(side: int) -> list[np.ndarray]:
    out = []
    for img in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        out.append(np.ascontiguousarray(img[top:top + side, left:left + side]))
    return out


@pytest.fixture(scope="module")
def reference_stats(ref):
    from srdistill.degrade.inspect.reference import ReferenceDegrader

    degrader = ReferenceDegrader(load_spec("realesrgan"), seed=0)
    try:
        return pd.DataFrame([lr_statistics(hr, degrader(hr)) for hr in _photos(192) for _ in range(30)])
    finally:
        degrader.close()


def _our_stats(preset: str) -> pd.DataFrame:
    spec = load_spec(preset)
    return pd.DataFrame([lr_statistics(hr, degrade_image(hr, spec, 0, f"photo{i}-draw{j}")[0])
                         for i, hr in enumerate(_photos(192)) for j in range(30)])


@pytest.mark.slow
def test_realesrgan_preset_has_the_reference_lr_distribution(reference_stats):
    ours = _our_stats("realesrgan")
    assert len(ours) == len(reference_stats) == 120
    assert set(ours.columns) >= {"psnr_vs_bicubic", "mad_vs_area", "colour_ratio", "sharpness_ratio",
                                 "noise_sigma", "blockiness"}
    pvalues = {c: stats.ks_2samp(ours[c], reference_stats[c]).pvalue for c in ours.columns}
    assert min(pvalues.values()) > P_MIN, pvalues


@pytest.mark.slow
def test_the_statistics_see_the_libjpeg_codec(reference_stats):
    """The KS tests above have the power to see the difference the issue found: libjpeg's smoother chroma."""
    ours = _our_stats("realesrgan-libjpeg")
    assert stats.ks_2samp(ours["colour_ratio"], reference_stats["colour_ratio"]).pvalue < P_MIN
    assert ours["colour_ratio"].median() < reference_stats["colour_ratio"].median()
