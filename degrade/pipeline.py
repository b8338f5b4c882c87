"""The degradation pipeline: draw every random choice as JSON parameters, then apply them to an HR image.

sample_params does no image work (cheap, so its statistics can be tested on many draws); apply_params is a
pure function of (hr, params, spec), so a sample's json `params` re-derive its LR bit-exactly. Noise fields
are regenerated from a recorded uint32 seed. The order of operations follows Real-ESRGAN's feed_data:

  USM-sharpen HR -> [blur k1 -> resize -> noise -> JPEG] -> [blur k2 (p) -> resize rel. HR/scale -> noise]
  -> either [resize to HR/scale -> sinc -> JPEG] or [JPEG -> resize to HR/scale -> sinc] -> round to uint8

Values stay float and unclamped between ops except where the reference clamps: after each noise, before each
JPEG, and at the final rounding.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from srdistill.degrade import kernels, ops
from srdistill.degrade.spec import DegradationSpec, NoiseSpec, ResizeSpec

PARAMS_VERSION = 2  # 2: jpeg_quality is a real number under jpeg_codec diffjpeg


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (global seed, sample key) only: independent of process, worker and order."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    digest = hashlib.sha256(f"srdistill.degrade\0{int(seed)}\0{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "little"))))


def _check_shape(hr_shape: tuple[int, int], scale: int) -> tuple[int, int]:
    h, w = int(hr_shape[0]), int(hr_shape[1])
    if h < scale or w < scale or h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} must be a positive multiple of the scale {scale}")
    return h, w


def _sample_resize(rng: np.random.Generator, rs: ResizeSpec) -> dict:
    direction = kernels.choose(rng, ("up", "down", "keep"), rs.probs)
    if direction == "up":
        scale = float(rng.uniform(1.0, rs.range[1]))
    elif direction == "down":
        scale = float(rng.uniform(rs.range[0], 1.0))
    else:
        scale = 1.0
    return {"direction": direction, "scale": scale, "mode": kernels.choose(rng, rs.modes, rs.mode_probs)}


def _sample_noise(rng: np.random.Generator, ns: NoiseSpec) -> dict:
    if rng.random() < ns.gaussian_prob:
        p = {"type": "gaussian", "sigma": float(rng.uniform(*ns.sigma_range))}
    else:
        p = {"type": "poisson", "scale": float(rng.uniform(*ns.poisson_scale_range))}
    p["gray"] = bool(rng.random() < ns.gray_prob)
    p["seed"] = int(rng.integers(0, 2**32, dtype=np.uint64))
    return p


def _quality(rng: np.random.Generator, q: tuple[float, float], codec: str) -> float | int:
    if codec == "libjpeg":
        return int(rng.integers(int(q[0]), int(q[1]) + 1))
    return float(rng.uniform(q[0], q[1]))


def sample_params(spec: DegradationSpec, rng: np.random.Generator, hr_shape: tuple[int, int]) -> dict:
    """Every random draw of one sample, as a JSON-serialisable dict (kernels as parameters, noise as seeds)."""
    h, w = _check_shape(hr_shape, spec.scale)
    params: dict = {"version": PARAMS_VERSION, "kind": spec.kind, "hr_shape": [h, w]}
    if spec.kind == "resize":
        return params
    st1, st2, fin = spec.stage1, spec.stage2, spec.final

    k1 = kernels.sample_kernel(rng, st1.kernel) if rng.random() < st1.blur_prob else None
    r1 = _sample_resize(rng, st1.resize)
    # torch's F.interpolate(scale_factor=s) output size: floor(in * s)
    r1["size"] = [max(1, math.floor(h * r1["scale"])), max(1, math.floor(w * r1["scale"]))]
    params["stage1"] = {"kernel": k1, "resize": r1, "noise": _sample_noise(rng, st1.noise),
                        "jpeg_quality": _quality(rng, st1.jpeg_quality, st1.jpeg_codec)}

    k2 = kernels.sample_kernel(rng, st2.kernel) if rng.random() < st2.blur_prob else None
    r2 = _sample_resize(rng, st2.resize)
    # the reference's size=(int(ori_h / scale * s), int(ori_w / scale * s))
    r2["size"] = [max(1, int(h / spec.scale * r2["scale"])), max(1, int(w / spec.scale * r2["scale"]))]
    params["stage2"] = {"kernel": k2, "resize": r2, "noise": _sample_noise(rng, st2.noise),
                        "jpeg_quality": _quality(rng, st2.jpeg_quality, st2.jpeg_codec)}

    order = "jpeg_first" if rng.random() < fin.jpeg_first_prob else "resize_first"
    mode = kernels.choose(rng, fin.modes, fin.mode_probs)
    sinc = kernels.sample_sinc(rng, fin.sinc_sizes, fin.sinc_omega) if rng.random() < fin.sinc_prob else None
    params["final"] = {"order": order, "mode": mode, "sinc": sinc}
    return params


def _blur(img: np.ndarray, k: dict | None) -> np.ndarray:
    if k is None:
        return img
    if k["type"] == "iso":  # the isotropic Gaussian is separable: two 1-D passes instead of one 2-D one
        return ops.filter_separable(img, kernels.gaussian_1d(k["size"], k["sigma_x"]))
    return ops.filter_2d(img, kernels.build_kernel(k))


def _noise(img: np.ndarray, n: dict) -> np.ndarray:
    if n["type"] == "gaussian":
        return ops.add_gaussian_noise(img, n["sigma"], n["gray"], n["seed"])
    return ops.add_poisson_noise(img, n["scale"], n["gray"], n["seed"])


def apply_params(hr: np.ndarray, params: dict, spec: DegradationSpec) -> np.ndarray:
    """Degrade an HR image (uint8 HxWx3 RGB, sides multiples of spec.scale) with recorded params -> uint8 LR
    of exactly (H/scale, W/scale, 3). Deterministic: the same inputs give the same bytes."""
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"HR must be a uint8 HxWx3 array, got {hr.dtype} {hr.shape}")
    h, w = _check_shape(hr.shape[:2], spec.scale)
    if params.get("kind") != spec.kind or list(params.get("hr_shape", ())) != [h, w]:
        raise ValueError(f"params were drawn for a {params.get('kind')} degradation of a "
                         f"{params.get('hr_shape')} HR, not for this {spec.kind} spec and {h}x{w} image")
    lr_size = (h // spec.scale, w // spec.scale)
    img = ops.to_float(hr)
    if spec.kind == "resize":
        return ops.quantize(ops.bicubic_downsample(img, spec.scale))

    if spec.usm is not None:
        u = spec.usm
        img = ops.usm_sharpen(img, u.radius, u.sigma, u.weight, u.threshold)
    for name in ("stage1", "stage2"):
        st, st_spec = params[name], getattr(spec, name)
        img = _blur(img, st["kernel"])
        r = st["resize"]
        img = ops.resize(img, tuple(r["size"]), r["mode"],
                         scale=r["scale"] if st_spec.resize.coords == "scale_factor" else None)
        img = _noise(img, st["noise"])
        if name == "stage1":
            img = ops.jpeg(img, st["jpeg_quality"], st_spec.jpeg_codec)
    fin = params["final"]
    q2, codec2 = params["stage2"]["jpeg_quality"], spec.stage2.jpeg_codec
    if fin["order"] == "jpeg_first":
        img = ops.jpeg(img, q2, codec2)
    img = ops.resize(img, lr_size, fin["mode"])
    if fin["sinc"] is not None:
        img = ops.filter_2d(img, kernels.build_kernel(fin["sinc"]))
    if fin["order"] == "resize_first":
        img = ops.jpeg(img, q2, codec2)
    return ops.quantize(img)


def degrade_image(hr: np.ndarray, spec: DegradationSpec, seed: int, key: str) -> tuple[np.ndarray, dict]:
    """Draw params for (seed, key) and apply them: returns (lr, params)."""
    params = sample_params(spec, sample_rng(seed, key), hr.shape[:2])
    return apply_params(hr, params, spec), params
