"""BSRGAN's ops (degrade/ops/library/bsrgan.py) against the formulas of cszn/BSRGAN utils/utils_blindsr.py @ ea4e5ef,
written out here: kernel covariances, fspecial's truncation, shift_pixel's sub-pixel shift, mirror convolution,
decimation alignment, cv2 resize flags, MATLAB x2 bicubic taps, the three noise modes' covariances; the draw
distributions over many draws; replay (same values, same bytes, any OpenCV thread count)."""

from __future__ import annotations

import math
from collections import Counter

import cv2
import numpy as np
import pytest
import srdistill.degrade.ops.library  # noqa: F401  (registers the ops)
from scipy import ndimage, stats
from srdistill.degrade.ops.library import bsrgan
from srdistill.degrade.ops.opdef import REGISTRY, OpContext, draw

P_MIN = 1e-4  # fixed seeds make these deterministic; a wrong distribution fails them by orders of magnitude
SOURCE_COMMIT = "ea4e5efb5edb630bbcc2501ca2242d94a4c5aeea"


def _img(h=48, w=40, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _apply(name, img, values, hr_shape=None, scale=4):
    ctx = OpContext(scale=scale, hr_shape=hr_shape or img.shape[:2])
    return REGISTRY[name].apply(img, values, ctx)


def _moments(k):
    n = k.shape[0]
    off = np.arange(n) - (n - 1) / 2
    x, y = off[None, :], off[:, None]  # x = column, y = row
    return (k * x * x).sum(), (k * x * y).sum(), (k * y * y).sum(), (k * x).sum(), (k * y).sum()


# ------------------------------------------------------------------ kernels


@pytest.mark.parametrize("l1, l2, theta", [(4.0, 1.0, 0.3), (1.5, 5.0, 2.2), (3.0, 3.0, 1.0), (6.0, 0.8, 1.9)])
def test_anisotropic_kernel_has_the_covariance_of_l1_l2_theta(l1, l2, theta):
    k = bsrgan.anisotropic_gaussian(25, theta, l1, l2)
    c, s = math.cos(theta), math.sin(theta)
    # variance l1 along (cos, sin) in (x, y) = (column, row), l2 across it
    sxx, sxy, syy = l1 * c * c + l2 * s * s, (l1 - l2) * s * c, l1 * s * s + l2 * c * c
    mxx, mxy, myy, mx, my = _moments(k)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert (mx, my) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert (mxx, mxy, myy) == (pytest.approx(sxx, abs=1e-4), pytest.approx(sxy, abs=1e-4), pytest.approx(syy, abs=1e-4))


def test_anisotropic_kernel_matches_the_sampled_density_and_its_degenerate_limit():
    k = bsrgan.anisotropic_gaussian(9, 0.7, 2.0, 0.5)
    c, s = math.cos(0.7), math.sin(0.7)
    v = np.array([[c, s], [s, -c]])
    cov = v @ np.diag([2.0, 0.5]) @ np.linalg.inv(v)
    pts = np.stack(np.meshgrid(np.arange(9) - 4.0, np.arange(9) - 4.0), -1)  # [..., (x, y)]
    dens = stats.multivariate_normal(mean=[0, 0], cov=cov).pdf(pts)
    np.testing.assert_allclose(k, dens / dens.sum(), rtol=1e-10, atol=1e-15)
    # a zero variance is the limit, not NaN: both zero is an impulse
    assert np.isfinite(bsrgan.anisotropic_gaussian(7, 0.4, 0.0, 3.0)).all()
    impulse = np.zeros((7, 7))
    impulse[3, 3] = 1.0
    np.testing.assert_array_equal(bsrgan.anisotropic_gaussian(7, 0.4, 0.0, 0.0), impulse)


def test_fspecial_gaussian_formula_and_eps_truncation():
    k = bsrgan.fspecial_gaussian(25, 1.0)
    c = 12
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert k[c, c + 1] / k[c, c] == pytest.approx(math.exp(-0.5), rel=1e-12)
    assert k[c + 3, c + 4] / k[c, c] == pytest.approx(math.exp(-25 / 2), rel=1e-12)
    # MATLAB's h(h < eps*max(h)) = 0: exp(-36) = 2.3e-16 stays, exp(-40.5) = 2.6e-18 goes
    assert k[c + 6, c + 6] > 0 and k[c, c + 9] == 0 and k[c + 9, c] == 0
    impulse = bsrgan.fspecial_gaussian(7, 0.0)
    assert impulse[3, 3] == 1.0 and impulse.sum() == 1.0


@pytest.mark.parametrize("sf", [2, 3, 4])
def test_shift_kernel_is_a_bilinear_resample_at_plus_half_sf_minus_one(sf):
    k = np.random.default_rng(sf).random((25, 25))
    s = (sf - 1) / 2
    pos = np.minimum(np.arange(25) + s, 24.0)
    yy, xx = np.meshgrid(pos, pos, indexing="ij")
    expected = ndimage.map_coordinates(k, [yy, xx], order=1, mode="nearest")
    np.testing.assert_allclose(bsrgan.shift_kernel(k, sf), expected, rtol=1e-12, atol=1e-14)
    if sf == 4:  # s = 1.5: the mean of the 2x2 block one and two pixels down-right
        assert bsrgan.shift_kernel(k, 4)[5, 7] == pytest.approx(k[6:8, 8:10].mean(), rel=1e-12)


def test_blur_is_a_mirror_convolution_of_the_drawn_kernel():
    img = _img(40, 36)
    for values in ({"kind": "anisotropic", "ksize": 15, "l1": 5.0, "l2": 0.7, "theta": 0.9},
                   {"kind": "isotropic", "ksize": 9, "sigma": 1.7}):
        k = bsrgan.blur_kernel(values)
        expected = ndimage.convolve(img.astype(np.float64), k[..., None], mode="mirror")
        out = _apply("bsrgan_blur", img, values)
        assert out.dtype == np.float32 and out.shape == img.shape
        np.testing.assert_allclose(out, expected, atol=2e-6)


@pytest.mark.parametrize("sf", [2, 4])
def test_shift_decimate_matches_mirror_convolution_then_decimation(sf):
    img = _img(48, 40, seed=sf)
    k = bsrgan.shift_kernel(bsrgan.fspecial_gaussian(25, 1.3), sf)
    expected = ndimage.convolve(img.astype(np.float64), (k / k.sum())[..., None], mode="mirror")[::sf, ::sf]
    out = _apply("bsrgan_shift_decimate", img, {"sf": sf, "sigma": 1.3, "ksize": 25})
    assert out.shape == (48 // sf, 40 // sf, 3)
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=2e-6)


def test_shift_decimate_centres_each_sample_on_its_block():
    img = _img(32, 24, seed=5)
    # sigma 0.1 leaves an impulse after fspecial's truncation; the shift splits it over two pixels per axis
    two = _apply("bsrgan_shift_decimate", img, {"sf": 2, "sigma": 0.1, "ksize": 25})
    blocks2 = img.reshape(16, 2, 12, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(two, blocks2, atol=1e-6)
    four = _apply("bsrgan_shift_decimate", img, {"sf": 4, "sigma": 0.1, "ksize": 25})
    inner = img.reshape(8, 4, 6, 4, 3)[:, 1:3, :, 1:3].mean(axis=(1, 3))  # pixels 4i+1, 4i+2: centre 4i+1.5
    np.testing.assert_allclose(four, inner, atol=1e-6)


# ------------------------------------------------------------------ resizes


def test_resize_size_rule_and_interpolation_flags():
    img = _img(12, 12, seed=3)
    assert _apply("bsrgan_resize", _img(64, 50), {"factor": 2.5, "interp": "linear"}).shape == (25, 20, 3)
    assert _apply("bsrgan_resize", _img(64, 50), {"factor": 7.9, "interp": "area"}).shape == (8, 6, 3)
    area = _apply("bsrgan_resize", img, {"factor": 3.0, "interp": "area"})
    np.testing.assert_allclose(area, img.reshape(4, 3, 4, 3, 3).mean(axis=(1, 3)), atol=1e-6)
    linear = _apply("bsrgan_resize", img, {"factor": 3.0, "interp": "linear"})
    np.testing.assert_allclose(linear, img[1::3, 1::3], atol=1e-6)  # centres (i + 0.5) * 3 - 0.5 = 3i + 1
    row = np.tile(np.random.default_rng(1).random(32, dtype=np.float32) * 0.5 + 0.25, (4, 1))
    cubic = _apply("bsrgan_resize", np.repeat(row[..., None], 3, 2), {"factor": 2.0, "interp": "cubic"})
    taps = np.array([-0.09375, 0.59375, 0.59375, -0.09375])  # Keys a = -0.75 at t = 1/2
    i = np.arange(2, 14)
    expected = sum(w * row[0, 2 * i - 1 + j] for j, w in enumerate(taps))
    np.testing.assert_allclose(cubic[0, 2:14, 0], expected, atol=1e-6)


def test_resizes_clip_the_cubic_overshoot():
    step = np.zeros((16, 16, 3), np.float32)
    step[:, 7:] = 1.0
    raw = cv2.resize(step, (4, 4), interpolation=cv2.INTER_CUBIC)
    assert raw.min() < 0.0  # the ringing the clip exists for
    for name, values in (("bsrgan_resize", {"factor": 4.0, "interp": "cubic"}), ("bsrgan_resize_lr", {"interp": "cubic"}),
                         ("bsrgan_imresize", {"factor": 2})):
        out = _apply(name, step, values, hr_shape=(16, 16))
        assert out.min() == 0.0 and out.max() <= 1.0


def test_resize_lr_gives_hr_over_scale_from_any_size():
    out = _apply("bsrgan_resize_lr", _img(37, 29), {"interp": "area"}, hr_shape=(64, 48), scale=4)
    assert out.shape == (16, 12, 3)
    out = _apply("bsrgan_resize_lr", _img(9, 7), {"interp": "linear"}, hr_shape=(64, 48), scale=4)
    assert out.shape == (16, 12, 3)


def test_imresize_halves_with_matlab_antialiased_bicubic_taps():
    row = np.random.default_rng(2).random(40) * 0.5 + 0.25
    img = np.repeat(np.tile(row, (4, 1))[..., None], 3, 2).astype(np.float32)
    out = _apply("bsrgan_imresize", img, {"factor": 2})
    assert out.shape == (2, 20, 3)
    # Keys a = -0.5 stretched by 2: cubic(d / 2) / 2 at d = 0.5, 1.5, 2.5, 3.5 = (0.8671875, 0.2265625,
    # -0.0703125, -0.0234375) / 2 on each side of the output centre 2i + 0.5
    half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
    taps = np.concatenate([half, half[::-1]])
    i = np.arange(2, 18)
    expected = sum(w * row[2 * i - 3 + j] for j, w in enumerate(taps))
    np.testing.assert_allclose(out[0, 2:18, 0], expected, atol=1e-6)


# ------------------------------------------------------------------ noise


def _noise(mode, level=12, seed=4, size=256, corr_level=25.0):
    img = np.full((size, size, 3), 0.5, np.float32)
    out = _apply("bsrgan_noise", img, {"level": level, "mode": mode, "corr_level": corr_level, "seed": seed})
    return (out - img).reshape(-1, 3).astype(np.float64)


def test_color_noise_is_independent_per_channel_and_gray_is_shared():
    n = _noise("color")
    cov = np.cov(n.T)
    sd = 12 / 255
    np.testing.assert_allclose(np.diag(cov), sd * sd, rtol=0.02)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.02 * sd * sd
    g = _noise("gray")
    assert np.array_equal(g[:, 0], g[:, 1]) and np.array_equal(g[:, 0], g[:, 2])
    assert g[:, 0].std() == pytest.approx(sd, rel=0.02)


def _expected_correlated_cov(seed, corr_level=25.0):
    """The reference's covariance |L² Uᵀ D U| (elementwise), with D, U from the op's documented draws: the first
    3 then 9 uniforms of PCG64(seed); U's column signs (SVD convention) vanish under the elementwise |.|.
    Also returns the signed L² Uᵀ D U, to show that the |.| matters for this seed."""
    rng = np.random.Generator(np.random.PCG64(seed))
    d = rng.random(3)
    u = np.linalg.svd(rng.random((3, 3)))[0]
    signed = (corr_level / 255) ** 2 * (u.T @ np.diag(d) @ u)
    return np.abs(signed), signed


def test_correlated_noise_has_the_reference_covariance():
    for seed in (4, 11, 30):
        c, signed = _expected_correlated_cov(seed)
        assert np.linalg.eigvalsh(c).min() >= 0  # so numpy's sampler realises c itself
        cov = np.cov(_noise("correlated", level=2, seed=seed).T)  # the drawn level plays no part in this mode
        assert np.abs(cov - c).max() < 0.02 * np.abs(c).max()
        assert np.abs(signed - c).max() > 0.1 * np.abs(c).max()  # a missing |.| would fail


def test_noise_is_clipped_and_replays_from_its_seed():
    img = _img(64, 64, seed=9)
    values = {"level": 25, "mode": "color", "corr_level": 25.0, "seed": 77}
    a = _apply("bsrgan_noise", img, values)
    assert a.min() == 0.0 and a.max() == 1.0
    assert a.tobytes() == _apply("bsrgan_noise", img, dict(values)).tobytes()
    assert a.tobytes() != _apply("bsrgan_noise", img, {**values, "seed": 78}).tobytes()


# ------------------------------------------------------------------ draws


def _uniform(xs, lo, hi):
    xs = np.asarray(xs)
    assert xs.min() >= lo and xs.max() <= hi
    assert stats.kstest(xs, "uniform", args=(lo, hi - lo)).pvalue > P_MIN


def _chi2(values, categories, probs):
    counts = Counter(values)
    assert set(counts) <= set(categories)
    obs = np.array([counts[c] for c in categories], dtype=float)
    assert stats.chisquare(obs, np.asarray(probs) * len(values)).pvalue > P_MIN, dict(counts)


@pytest.mark.parametrize("sf", [2, 4])
def test_blur_draws_follow_add_blur(sf):
    # the preset's ranges for the current sf: l1, l2 ~ (4 + sf) U[0, 1), sigma ~ (2 + 0.2 sf) U[0, 1)
    spec = {"l1": {"uniform": [0.0, 4.0 + sf]}, "l2": {"uniform": [0.0, 4.0 + sf]},
            "sigma": {"uniform": [0.0, 2.0 + 0.2 * sf]}}
    if sf == 4:
        spec = {}  # the defaults are the sf = 4 ranges
    rng = np.random.default_rng(sf)
    draws = [REGISTRY["bsrgan_blur"].draw(rng, spec) for _ in range(20000)]
    aniso = [d for d in draws if d["kind"] == "anisotropic"]
    iso = [d for d in draws if d["kind"] == "isotropic"]
    assert stats.binomtest(len(aniso), len(draws), 0.5).pvalue > P_MIN
    assert {frozenset(d) for d in aniso} == {frozenset({"kind", "l1", "l2", "ksize", "theta"})}
    assert {frozenset(d) for d in iso} == {frozenset({"kind", "ksize", "sigma"})}
    _chi2([d["ksize"] for d in draws], [2 * r + 3 for r in range(2, 12)], [0.1] * 10)
    _uniform([d["l1"] for d in aniso], 0, 4 + sf)
    _uniform([d["l2"] for d in aniso], 0, 4 + sf)
    _uniform([d["theta"] for d in aniso], 0, math.pi)
    _uniform([d["sigma"] for d in iso], 0, 2 + 0.2 * sf)
    assert np.corrcoef([d["l1"] for d in aniso], [d["l2"] for d in aniso])[0, 1] == pytest.approx(0, abs=0.05)


def test_defaults_are_the_reference_distributions_at_sf_4():
    rng = np.random.default_rng(0)

    def draws(op, name, n=20000):
        default = next(p.default for p in REGISTRY[op].params if p.name == name)
        return [draw(rng, default) for _ in range(n)]

    _chi2(draws("bsrgan_noise", "level"), list(range(2, 26)), [1 / 24] * 24)
    _chi2(draws("bsrgan_noise", "mode"), ["color", "gray", "correlated"], [0.4, 0.4, 0.2])
    assert draws("bsrgan_noise", "corr_level", 1) == [25.0]
    _uniform(draws("bsrgan_resize", "factor"), 1.0, 8.0)  # U[1, 2 sf]
    _chi2(draws("bsrgan_resize", "interp"), ["linear", "cubic", "area"], [1 / 3] * 3)
    _uniform(draws("bsrgan_shift_decimate", "sigma"), 0.1, 2.4)  # U[0.1, 0.6 sf]
    assert draws("bsrgan_shift_decimate", "sf", 1) == [4] and draws("bsrgan_shift_decimate", "ksize", 1) == [25]
    assert draws("bsrgan_imresize", "factor", 1) == [2]
    assert REGISTRY["bsrgan_noise"].seeded and not REGISTRY["bsrgan_blur"].seeded


# ------------------------------------------------------------------ replay and the op table


OP_VALUES = {
    "bsrgan_blur": {"kind": "anisotropic", "ksize": 25, "l1": 7.0, "l2": 0.3, "theta": 0.4},
    "bsrgan_resize": {"factor": 1.37, "interp": "area"},
    "bsrgan_resize_lr": {"interp": "cubic"},
    "bsrgan_imresize": {"factor": 2},
    "bsrgan_shift_decimate": {"sf": 4, "sigma": 2.0, "ksize": 25},
    "bsrgan_noise": {"level": 9, "mode": "correlated", "corr_level": 25.0, "seed": 123},
}


@pytest.mark.parametrize("name", sorted(OP_VALUES))
def test_ops_replay_bit_exactly_for_any_opencv_thread_count(name):
    img = cv2.resize(_img(64, 64, seed=8), (256, 256), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    default = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = _apply(name, img, dict(OP_VALUES[name]), hr_shape=(256, 256))
        cv2.setNumThreads(max(default, 4))
        many = _apply(name, img.copy(), dict(OP_VALUES[name]), hr_shape=(256, 256))
    finally:
        cv2.setNumThreads(default)
    assert one.dtype == np.float32 and one.tobytes() == many.tobytes()
    assert not np.shares_memory(one, img)


def test_every_op_documents_its_params_and_names_the_source_commit():
    ours = [op for op in REGISTRY.values() if op.name.startswith("bsrgan_")]
    assert sorted(op.name for op in ours) == sorted(OP_VALUES)
    for op in ours:
        assert op.summary and SOURCE_COMMIT in op.source and "utils_blindsr.py" in op.source
        assert all(p.doc for p in op.params), op.name
        names = {p.name for p in op.params} | ({"seed"} if op.seeded else set())
        assert names >= set(OP_VALUES[op.name])


@pytest.mark.parametrize("ksize", [24, {"choice": [25, 24]}, {"randint": [3, 9]}])
def test_an_even_shifted_kernel_size_is_one_sentence_naming_the_path(ksize):
    from srdistill.degrade.spec.schema import spec_from_dict

    from srdistill.core.errors import UserError

    doc = {"version": 2, "name": "t", "scale": 4,
           "pipeline": [{"op": "bsrgan_shift_decimate", "ksize": ksize}, {"op": "bsrgan_resize_lr"}]}
    with pytest.raises(UserError, match=r"spec\.pipeline\[0\]\.ksize must give odd sizes"):
        spec_from_dict(doc)
    assert spec_from_dict({**doc, "pipeline": [{"op": "bsrgan_shift_decimate", "ksize": 25}]}).pipeline
