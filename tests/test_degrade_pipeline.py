"""Degradation pipeline and its image ops: sampled frequencies against the spec, bit-exact replay,
determinism across processes and thread counts, exact LR shapes, and the ops against third-party maths.

The realesrgan preset's frequencies are checked against its numbers as the version-1 view names them
(v1_view.from_v2), reading each sample's op record by stage."""

import hashlib
import json
import math
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage, stats
from skimage import data
from srdistill.degrade.ops import kernels
from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.spec.v1_view import from_v2
from srdistill.degrade.pipeline import apply_params, degrade_image, sample_params, sample_rng
from srdistill.degrade.spec.schema import load_spec

P_MIN = 1e-4  # fixed seeds make these deterministic; a wrong sampler fails them by many orders of magnitude


@pytest.fixture(scope="module")
def spec():
    return load_spec("realesrgan")


@pytest.fixture(scope="module")
def numbers(spec):
    return from_v2(spec)


def view(record: dict) -> dict:
    """A Real-ESRGAN record by stage: kernel (None when not blurred), resize (+ direction), noise (+ type),
    jpeg_quality; final: order, mode, sinc (None when not filtered)."""
    out = {}
    for st in ("stage1", "stage2"):
        ops_ = [o for o in record["ops"] if o["at"] == st]
        blur = [o["kernel"] for o in ops_ if o["op"] == "blur"]
        (resize,) = [dict(o) for o in ops_ if o["op"] == "resize"]
        resize["direction"] = "up" if resize["scale"] > 1 else "down" if resize["scale"] < 1 else "keep"
        (noise,) = [dict(o, type=o["op"].removesuffix("_noise")) for o in ops_ if o["op"].endswith("_noise")]
        out[st] = {"kernel": blur[0] if blur else None, "resize": resize, "noise": noise}
    fin = [o for o in record["ops"] if o["at"] == "final"]
    out["stage1"]["jpeg_quality"] = [o["quality"] for o in record["ops"] if o["at"] == "stage1" and o["op"] == "jpeg"][0]
    out["stage2"]["jpeg_quality"] = [o["quality"] for o in fin if o["op"] == "jpeg"][0]
    sinc = [o for o in fin if o["op"] == "sinc"]
    out["final"] = {"order": "jpeg_first" if fin[0]["op"] == "jpeg" else "resize_first",
                    "mode": [o["mode"] for o in fin if o["op"] == "resize"][0], "sinc": sinc[0] if sinc else None}
    return out


@pytest.fixture(scope="module")
def draws(spec):
    rng = sample_rng(0, "frequency-test")
    return [view(sample_params(spec, rng, (64, 64))) for _ in range(20000)]


def _chi2(values, categories, probs):
    counts = Counter(values)
    assert set(counts) <= set(categories)
    obs = np.array([counts[c] for c in categories], dtype=float)
    exp = np.asarray(probs, dtype=float) * len(values)
    assert stats.chisquare(obs, exp).pvalue > P_MIN, (dict(zip(categories, obs)), exp)


def _binom(flags, p):
    flags = list(flags)
    assert stats.binomtest(int(sum(flags)), len(flags), p).pvalue > P_MIN, (sum(flags) / len(flags), p)


def _uniform(xs, lo, hi):
    xs = np.asarray(xs)
    assert xs.min() >= lo and xs.max() <= hi
    assert stats.kstest(xs, "uniform", args=(lo, hi - lo)).pvalue > P_MIN


# ------------------------------------------------------------------ sampling statistics


def test_params_are_json_and_need_no_image(spec):
    rng = sample_rng(0, "json")
    for _ in range(200):
        p = sample_params(spec, rng, (64, 64))
        assert json.loads(json.dumps(p)) == p
        assert p["hr_shape"] == [64, 64] and p["scale"] == 4 and p["version"] == 3


def test_kernel_frequencies(numbers, draws):
    spec = numbers
    for stage in ("stage1", "stage2"):
        ks = getattr(spec, stage).kernel
        ks_drawn = [p[stage]["kernel"] for p in draws if p[stage]["kernel"] is not None]
        _binom((k["type"] == "sinc" for k in ks_drawn), ks.sinc_prob)
        _chi2([k["size"] for k in ks_drawn], ks.sizes, [1 / len(ks.sizes)] * len(ks.sizes))
        shaped = [k for k in ks_drawn if k["type"] != "sinc"]
        _chi2([k["type"] for k in shaped], ks.types, ks.type_probs)
        _uniform([k["sigma_x"] for k in shaped], *ks.sigma_range)
        aniso = [k for k in shaped if k["type"].endswith("aniso")]
        _uniform([k["sigma_y"] for k in aniso], *ks.sigma_range)
        _uniform([k["theta"] for k in aniso], *ks.rotation_range)
        for k in (k for k in ks_drawn if k["type"] == "sinc"):
            lo, hi = ks.sinc_omega_small if k["size"] < ks.sinc_size_threshold else ks.sinc_omega_large
            assert lo <= k["omega"] <= hi
        gen = [k["beta"] for k in shaped if k["type"].startswith("generalized")]
        _binom((b < 1 for b in gen), ks.beta_below_prob)
        assert min(gen) >= ks.betag_range[0] and max(gen) <= ks.betag_range[1]
        plateau = [k["beta"] for k in shaped if k["type"].startswith("plateau")]
        _binom((b == 1.0 for b in plateau), ks.beta_below_prob)  # the reference's [1, 1] half of [1, 2]
        _uniform([b for b in plateau if b > 1], 1.0, 2.0)
    _binom((p["stage2"]["kernel"] is not None for p in draws), spec.stage2.blur_prob)
    assert all(p["stage1"]["kernel"] is not None for p in draws)


def test_resize_frequencies_and_sizes(numbers, draws):
    spec = numbers
    for stage in ("stage1", "stage2"):
        rs = getattr(spec, stage).resize
        rz = [p[stage]["resize"] for p in draws]
        _chi2([r["direction"] for r in rz], ("up", "down", "keep"), rs.probs)
        _chi2([r["mode"] for r in rz], rs.modes, rs.mode_probs)
        _uniform([r["scale"] for r in rz if r["direction"] == "up"], 1.0, rs.range[1])
        _uniform([r["scale"] for r in rz if r["direction"] == "down"], rs.range[0], 1.0)
        assert all(r["scale"] == 1.0 for r in rz if r["direction"] == "keep")
    for p in draws[:500]:  # stage 1 relative to its input (the HR), stage 2 to HR/scale
        s1, s2 = p["stage1"]["resize"], p["stage2"]["resize"]
        assert (s1["relative_to"], s1["coords"], s2["relative_to"], s2["coords"]) == (
            "input", "scale_factor", "lr", "size")


def test_resize_output_sizes(photo):
    """Stage 1's size is floor(H * s) (F.interpolate(scale_factor=s)), stage 2's int(H / scale * s), at least 1."""
    from srdistill.degrade.ops.opdef import REGISTRY, OpContext

    resize = REGISTRY["resize"].apply
    ctx = OpContext(scale=4, hr_shape=(96, 128))
    img = ops.to_float(photo)
    for s in (0.15, 0.3377, 1.0, 1.21, 1.5):
        rel_in = {"scale": s, "mode": "bilinear", "relative_to": "input", "coords": "scale_factor"}
        assert resize(img, rel_in, ctx).shape[:2] == (max(1, math.floor(96 * s)), max(1, math.floor(128 * s)))
        rel_lr = {"scale": s, "mode": "area", "relative_to": "lr", "coords": "size"}
        assert resize(img, rel_lr, ctx).shape[:2] == (max(1, int(96 / 4 * s)), max(1, int(128 / 4 * s)))
    tiny = {"scale": 0.001, "mode": "area", "relative_to": "input", "coords": "size"}
    assert resize(img, tiny, ctx).shape[:2] == (1, 1)


def test_noise_and_jpeg_frequencies(numbers, draws):
    spec = numbers
    for stage in ("stage1", "stage2"):
        ns = getattr(spec, stage).noise
        nz = [p[stage]["noise"] for p in draws]
        _binom((n["type"] == "gaussian" for n in nz), ns.gaussian_prob)
        _binom((n["gray"] for n in nz), ns.gray_prob)
        _uniform([n["sigma"] for n in nz if n["type"] == "gaussian"], *ns.sigma_range)
        _uniform([n["scale"] for n in nz if n["type"] == "poisson"], *ns.poisson_scale_range)
        seeds = [n["seed"] for n in nz]
        assert all(0 <= s < 2**32 for s in seeds) and len(set(seeds)) > 0.99 * len(seeds)
        assert getattr(spec, stage).jpeg_codec == "diffjpeg"  # the reference's real-valued quality
        _uniform([p[stage]["jpeg_quality"] for p in draws], *getattr(spec, stage).jpeg_quality)


def test_libjpeg_qualities_are_uniform_integers():
    spec = load_spec("realesrgan-libjpeg")
    lj = from_v2(spec)
    rng = sample_rng(0, "libjpeg-quality")
    draws = [view(sample_params(spec, rng, (64, 64))) for _ in range(5000)]
    for stage in ("stage1", "stage2"):
        lo, hi = (int(q) for q in getattr(lj, stage).jpeg_quality)
        qs = [p[stage]["jpeg_quality"] for p in draws]
        assert all(isinstance(q, int) for q in qs)
        _chi2(qs, range(lo, hi + 1), [1 / (hi - lo + 1)] * (hi - lo + 1))


def test_final_step_frequencies(numbers, draws):
    fin = numbers.final
    fp = [p["final"] for p in draws]
    _binom((f["order"] == "jpeg_first" for f in fp), fin.jpeg_first_prob)
    _chi2([f["mode"] for f in fp], fin.modes, fin.mode_probs)
    _binom((f["sinc"] is not None for f in fp), fin.sinc_prob)
    sincs = [f["sinc"] for f in fp if f["sinc"] is not None]
    _chi2([s["size"] for s in sincs], fin.sinc_sizes, [1 / len(fin.sinc_sizes)] * len(fin.sinc_sizes))
    _uniform([s["omega"] for s in sincs], *fin.sinc_omega)


def test_sample_rng_depends_on_seed_and_key_only():
    a = sample_rng(7, "img_000").integers(0, 2**63, size=4)
    assert (a == sample_rng(7, "img_000").integers(0, 2**63, size=4)).all()
    assert (a != sample_rng(7, "img_001").integers(0, 2**63, size=4)).any()
    assert (a != sample_rng(8, "img_000").integers(0, 2**63, size=4)).any()
    with pytest.raises(ValueError):
        sample_rng(-1, "x")


# ------------------------------------------------------------------ replay and determinism


def _digest(lr, params):
    return hashlib.sha256(lr.tobytes() + json.dumps(params, sort_keys=True).encode()).hexdigest()


def test_replay_from_json_params_is_bit_exact(spec, photo):
    seen = Counter()
    for i in range(24):
        lr, params = degrade_image(photo, spec, 5, f"key{i}")
        assert lr.shape == (24, 32, 3) and lr.dtype == np.uint8
        replay = apply_params(photo, json.loads(json.dumps(params)), spec)
        assert replay.tobytes() == lr.tobytes()
        v = view(params)
        seen.update([v["stage1"]["noise"]["type"], v["final"]["order"], "sinc" if v["final"]["sinc"] else "nosinc"])
    assert len(seen) == 6  # both noise types, both orders, sinc on and off were exercised


@pytest.mark.parametrize("ktype", ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                                   "plateau_aniso", "sinc"])
@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_every_kernel_and_mode_replays(spec, photo, ktype, mode):
    params = sample_params(spec, sample_rng(1, "forced"), photo.shape[:2])
    k = {"type": ktype, "size": 21}
    k.update({"omega": 1.0} if ktype == "sinc" else {"sigma_x": 2.2})
    if ktype.endswith("aniso"):
        k.update(sigma_y=0.6, theta=1.1)
    if ktype.startswith(("generalized", "plateau")):
        k["beta"] = 1.4
    blurs = [o for o in params["ops"] if o["op"] == "blur"]
    assert len(blurs) == 2  # this key blurs in both stages
    for o in params["ops"]:
        if o["op"] == "blur":
            o["kernel"] = k
        if o["op"] == "resize":
            o["mode"] = mode
    a = apply_params(photo, params, spec)
    assert a.shape == (24, 32, 3)
    assert apply_params(photo, json.loads(json.dumps(params)), spec).tobytes() == a.tobytes()


def test_hr_is_sharpened_before_degrading(spec, photo):
    params = sample_params(spec, sample_rng(4, "usm"), photo.shape[:2])
    assert params["ops"][0]["op"] == "usm"
    kept = []
    for o in params["ops"]:
        if o["op"] in ("blur", "sinc"):
            continue
        if o["op"].endswith("_noise"):
            o["sigma" if o["op"] == "gaussian_noise" else "scale"] = 0.0
        if o["op"] == "jpeg":
            o["quality"] = 95
        kept.append(o)
    params["ops"] = kept
    sharp = apply_params(photo, params, spec)
    plain = apply_params(photo, {**params, "ops": kept[1:]}, spec)
    # sharpening raises local contrast: the LR's Laplacian energy grows
    lap = [np.abs(cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)).mean() for x in (sharp, plain)]
    assert lap[0] > lap[1] * 1.02


def test_same_seed_and_key_give_identical_bytes_in_another_process(spec, photo, tmp_path):
    keys = ["a", "b", "c"]
    here = [_digest(*degrade_image(photo, spec, 11, k)) for k in keys]
    script = (
        "import json, sys, hashlib, numpy as np\n"
        "from skimage import data\n"
        "from srdistill.degrade.spec.schema import load_spec\n"
        "from srdistill.degrade.pipeline import degrade_image\n"
        "photo = np.ascontiguousarray(data.astronaut()[100:196, 150:278])\n"
        "out = []\n"
        "for k in ['a', 'b', 'c']:\n"
        "    lr, p = degrade_image(photo, load_spec('realesrgan'), 11, k)\n"
        "    out.append(hashlib.sha256(lr.tobytes() + json.dumps(p, sort_keys=True).encode()).hexdigest())\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == here


def test_results_do_not_depend_on_opencv_thread_count(spec):
    hr = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    params = sample_params(spec, sample_rng(2, "threads"), hr.shape[:2])
    # a large non-separable kernel (OpenCV's DFT path) and up-scaling, where tiling would show
    stage1 = [o for o in params["ops"] if o["at"] == "stage1"]
    blur1, resize1 = [o for o in stage1 if o["op"] == "blur"][0], [o for o in stage1 if o["op"] == "resize"][0]
    blur1["kernel"] = {"type": "aniso", "size": 21, "sigma_x": 2.5, "sigma_y": 0.7, "theta": 0.4}
    resize1.update(scale=1.3, mode="bicubic")
    i = params["ops"].index(resize1)
    params["ops"].insert(i + 1, {"op": "blur", "at": "stage2", "kernel": {"type": "sinc", "size": 17, "omega": 0.9}})
    default = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = apply_params(hr, params, spec)
        cv2.setNumThreads(max(default, 4))
        many = apply_params(hr, params, spec)
    finally:
        cv2.setNumThreads(default)
    assert one.tobytes() == many.tobytes()


@pytest.mark.parametrize("preset", ["realesrgan", "bicubic"])
@pytest.mark.parametrize("shape", [(4, 4), (8, 12), (36, 52), (100, 64)])
def test_lr_shape_is_exactly_hr_over_scale(preset, shape):
    s = load_spec(preset)
    hr = cv2.resize(data.astronaut(), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    for key in ("x", "y", "z"):
        lr, _ = degrade_image(hr, s, 3, key)
        assert lr.shape == (shape[0] // 4, shape[1] // 4, 3) and lr.dtype == np.uint8


def test_bad_inputs_raise(spec, photo):
    with pytest.raises(ValueError, match="multiple of the scale"):
        degrade_image(photo[:95], spec, 0, "k")
    with pytest.raises(ValueError, match="uint8"):
        apply_params(photo.astype(np.float32), sample_params(spec, sample_rng(0, "k"), (96, 128)), spec)
    with pytest.raises(ValueError, match="params were drawn"):
        apply_params(photo[:64], sample_params(spec, sample_rng(0, "k"), (96, 128)), spec)


# ------------------------------------------------------------------ ops against independent maths


def test_filter_2d_is_reflect101_correlation():
    rng = np.random.default_rng(0)
    img = rng.random((40, 33, 3), dtype=np.float32)
    for size in (7, 21):  # 21 takes OpenCV's DFT path
        k = rng.random((size, size))
        k /= k.sum()
        want = np.stack([ndimage.correlate(img[..., c].astype(np.float64), k, mode="mirror") for c in range(3)], -1)
        assert np.abs(ops.filter_2d(img, k) - want).max() < 1e-5
    g = kernels.gaussian_1d(9, 1.4)
    assert np.abs(ops.filter_separable(img, g) - ops.filter_2d(img, np.outer(g, g))).max() < 1e-6


def _torch(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None]


def _np(t):
    return t[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [(23, 17), (50, 71), (40, 33), (9, 7)])
def test_resize_matches_torch_interpolate(size):
    img = np.random.default_rng(1).random((40, 33, 3), dtype=np.float32)
    area = _np(F.adaptive_avg_pool2d(_torch(img), size))
    assert np.abs(ops.resize(img, size, "area") - area).max() < 1e-6
    for mode in ("bilinear", "bicubic"):
        want = _np(F.interpolate(_torch(img), size=size, mode=mode, align_corners=False))
        assert np.abs(ops.resize(img, size, mode) - want).max() < 1e-4


def test_usm_matches_reference_formula():
    img = ops.to_float(cv2.resize(data.astronaut(), (48, 40), interpolation=cv2.INTER_AREA))
    radius, weight, threshold = 9, 0.5, 10.0
    g = cv2.getGaussianKernel(radius, 0)[:, 0]
    k = np.outer(g, g)

    def blur(x):
        return np.stack([ndimage.correlate(x[..., c].astype(np.float64), k, mode="mirror") for c in range(3)], -1)

    residual = img - blur(img)
    soft = blur((np.abs(residual) * 255 > threshold).astype(np.float64))
    sharp = np.clip(img + weight * residual, 0, 1)
    want = soft * sharp + (1 - soft) * img
    got = ops.usm_sharpen(img, radius - 1, 0.0, weight, threshold)  # an even radius is bumped to odd
    assert np.abs(got - want).max() < 1e-5
    flat = np.full((20, 20, 3), 0.3, np.float32)
    assert np.array_equal(ops.usm_sharpen(flat, 50, 0.0, 0.5, 10.0), flat)


def test_gaussian_noise_statistics():
    img = np.full((200, 200, 3), 0.5, np.float32)
    noisy = ops.add_gaussian_noise(img, 10.0, False, 123)
    d = (noisy - img) * 255
    assert abs(d.std() - 10.0) < 0.2 and abs(d.mean()) < 0.1
    assert abs(np.corrcoef(d[..., 0].ravel(), d[..., 1].ravel())[0, 1]) < 0.02
    gray = ops.add_gaussian_noise(img, 10.0, True, 123)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    assert np.array_equal(ops.add_gaussian_noise(img, 10.0, False, 123), noisy)
    assert not np.array_equal(ops.add_gaussian_noise(img, 10.0, False, 124), noisy)
    assert ops.add_gaussian_noise(np.zeros_like(img), 30.0, False, 1).min() == 0.0  # clipped


def test_poisson_noise_follows_the_reference_level_rule():
    # a constant image has one level, so vals = 1 and noise = scale * (Poisson(x) - x)
    x, scale = 51 / 255, 0.5
    img = np.full((100, 100, 3), x, np.float32)
    out = ops.add_poisson_noise(img, scale, False, 9)
    k_zero = np.isclose(out, x - scale * x, atol=1e-6)
    _binom(k_zero.ravel()[:3000], math.exp(-x))
    gray = ops.add_poisson_noise(img, scale, True, 9)
    assert np.array_equal(gray[..., 0], gray[..., 2])
    # many levels: vals = 256 so the noise is small and zero-mean
    ramp = np.repeat(np.linspace(0.2, 0.8, 200, dtype=np.float32)[None, :, None], 200, 0).repeat(3, 2)
    d = ops.add_poisson_noise(ramp, 1.0, False, 3) - ramp
    assert abs(d.mean()) < 2e-3 and 0.02 < d.std() < 0.06  # sqrt(0.5 * 256) / 256 ~ 0.044


def test_jpeg_round_trip():
    photo = ops.to_float(data.astronaut()[:128, :128])
    for codec in ("libjpeg", "diffjpeg"):
        q95, q30 = ops.jpeg(photo, 95, codec), ops.jpeg(photo, 30, codec)
        assert np.abs(q95 - photo).mean() < np.abs(q30 - photo).mean()
        assert np.array_equal(q30, ops.jpeg(photo, 30, codec))
    assert not np.array_equal(q30 * 255, np.round(q30 * 255))  # DiffJPEG never rounds to uint8
    lj = ops.jpeg(photo, 30, "libjpeg")
    assert np.array_equal(lj * 255, np.round(lj * 255))  # decoded uint8 values
    flat = np.full((32, 32, 3), 128 / 255, np.float32)
    assert np.array_equal(ops.jpeg(flat, 50, "libjpeg"), flat)
    assert np.abs(ops.jpeg(flat, 50.5, "diffjpeg") - flat).max() < 1e-5  # no uint8 round trip: float error only


def test_quantize_rounds_half_to_even_and_clips():
    x = np.array([-0.1, 0.5, 1.2, 2 / 255], np.float32)
    assert ops.quantize(x).tolist() == [0, 128, 255, 2]


# ------------------------------------------------------------------ bicubic preset


def test_bicubic_taps_for_x4_are_keys_a_minus_half():
    j0, w = ops.bicubic_taps(4)
    assert j0 == -6 and len(w) == 16
    d = np.abs(1.5 - np.arange(-6, 10)) / 4  # distances from the output centre 4i + 1.5, in output pixels
    hand = np.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2)
    assert np.allclose(w, hand / hand.sum(), atol=1e-15)


def test_bicubic_preset_hand_checks():
    s = load_spec("bicubic")
    flat = np.full((32, 48, 3), 77, np.uint8)
    lr, params = degrade_image(flat, s, 0, "k")
    assert lr.shape == (8, 12, 3) and (lr == 77).all() and [o["op"] for o in params["ops"]] == ["bicubic_downsample"]
    # Keys' a = -0.5 cubic reproduces linear functions, so a column ramp lands on the output centres 4i + 1.5
    ramp = np.repeat((np.arange(64, dtype=np.float64) * 2 + 30)[None, :, None], 16, 0).repeat(3, 2)
    out = ops.bicubic_downsample(ramp, 4)
    assert np.allclose(out[:, 2:-2, 0], (4 * np.arange(2, 14) + 1.5) * 2 + 30, atol=1e-4)


def test_bicubic_interior_agrees_with_pil():
    img = data.astronaut()[:128, :96].astype(np.float32)
    ours = ops.bicubic_downsample(img[..., 0], 4)
    pil = np.asarray(Image.fromarray(np.ascontiguousarray(img[..., 0])).resize((24, 32), Image.BICUBIC))
    assert np.abs(ours[2:-2, 2:-2] - pil[2:-2, 2:-2]).max() < 1e-2  # PIL renormalises at borders instead
