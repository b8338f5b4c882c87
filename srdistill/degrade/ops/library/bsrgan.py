"""BSRGAN's degradation ops (Zhang et al., "Designing a Practical Degradation Model for Deep Blind Image
Super-Resolution", ICCV 2021), as its authors' public code defines them: cszn/BSRGAN utils/utils_blindsr.py at
commit ea4e5efb5edb630bbcc2501ca2242d94a4c5aeea (`degradation_bsrgan` and the helpers it calls: add_blur,
anisotropic_Gaussian / gm_blur_kernel, fspecial_gaussian, shift_pixel, add_Gaussian_noise, utils_image.imresize_np).

The ops here are the ones the core library does not already give exactly; BSRGAN's JPEG (cv2.imencode with only
a quality, integer quality randint(30, 95)) is core's `jpeg` with codec libjpeg. Every parameter default is the
reference's value at its default scale factor sf = 4; the `bsrgan` preset sets the sf = 2 ranges after its
downsample1. The reference draws with Python's `random` and numpy's global state; these ops draw from the
sample's stream instead, so the distributions are the reference's, not its exact numbers.

Borders: scipy.ndimage.convolve(mode='mirror') reflects about the edge pixel (d c b | a b c d), which is OpenCV's
BORDER_REFLECT_101, the border of ops.filter_2d. ndimage convolves (flips the kernel), so `_convolve` flips it
before filter_2d's correlation; it matters only for the (asymmetric) shifted kernel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.linalg import orth

from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.ops.opdef import Op, OpContext, Param, draw, register
from srdistill.core.errors import UserError

SOURCE = "cszn/BSRGAN utils/utils_blindsr.py @ ea4e5efb5edb630bbcc2501ca2242d94a4c5aeea"

# The reference's random.choice([1, 2, 3]) of cv2 interpolation flags.
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
_INTERP_PARAM = Param("interp", str, {"choice": list(INTERPOLATIONS)}, choices=tuple(INTERPOLATIONS),
                      doc="cv2.resize interpolation: linear | cubic | area (cv2 flags 1, 2, 3), drawn uniformly")

KERNEL_SIZES = tuple(range(7, 26, 2))  # 2 * randint(2, 11) + 3


# ------------------------------------------------------------------ kernels (pure maths)


def _offsets(ksize: int) -> np.ndarray:
    """Pixel offsets from the kernel centre, -(ksize-1)/2 .. (ksize-1)/2 (gm_blur_kernel's cx, fspecial's x)."""
    return np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0


def _quadratic(p: np.ndarray, var: float) -> np.ndarray:
    """p² / var; a zero variance is the limit (0 on the line p = 0, infinite off it), where 0/0 would be NaN."""
    if var > 0:
        return p * p / var
    return np.where(p == 0, 0.0, np.inf)


def anisotropic_gaussian(ksize: int, theta: float, l1: float, l2: float) -> np.ndarray:
    """anisotropic_Gaussian: the Gaussian with covariance V diag(l1, l2) V⁻¹, V = [[c, s], [s, -c]] (c, s = cos,
    sin theta), i.e. variance l1 along the direction (cos theta, sin theta) in (column, row) coordinates and l2
    across it, sampled at the integer offsets of a ksize x ksize grid, normalised to sum 1. kernel[row, col]."""
    x = _offsets(ksize)[None, :]
    y = _offsets(ksize)[:, None]
    c, s = math.cos(theta), math.sin(theta)
    q = _quadratic(c * x + s * y, l1) + _quadratic(s * x - c * y, l2)
    k = np.exp(-0.5 * q)
    return k / k.sum()


def fspecial_gaussian(ksize: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', ksize, sigma) as the reference ports it: exp(-(x² + y²) / (2 sigma²)), values
    below eps * max set to 0, normalised. sigma = 0 is its limit, a unit impulse (the formula is 0/0 there)."""
    x = _offsets(ksize)
    r2 = x[None, :] ** 2 + x[:, None] ** 2
    if sigma == 0:
        h = (r2 == 0).astype(np.float64)
    else:
        h = np.exp(-r2 / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


def _shift_matrix(n: int, shift: float) -> np.ndarray:
    """n x n linear interpolation at positions i + shift clipped to [0, n - 1] (one axis of shift_pixel)."""
    pos = np.minimum(np.arange(n) + shift, n - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    t = pos - i0
    m = np.zeros((n, n))
    rows = np.arange(n)
    np.add.at(m, (rows, i0), 1.0 - t)
    np.add.at(m, (rows, np.minimum(i0 + 1, n - 1)), t)
    return m


def shift_kernel(k: np.ndarray, sf: int) -> np.ndarray:
    """shift_pixel(k, sf) with upper_left=True: k resampled bilinearly (interp2d, kind 'linear') at (row + s,
    col + s), s = (sf - 1) / 2, positions clipped to the last row/column. Not renormalised."""
    s = (sf - 1) * 0.5
    rows = _shift_matrix(k.shape[0], s)
    cols = _shift_matrix(k.shape[1], s)
    return rows @ k @ cols.T


def _convolve(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """ndimage.convolve(img, k[..., None], mode='mirror'): a true convolution (flipped kernel), reflect-101."""
    return ops.filter_2d(img, np.ascontiguousarray(k[::-1, ::-1]))


def _cv2_resize(img: np.ndarray, size: tuple[int, int], interp: str) -> np.ndarray:
    h, w = size
    out = cv2.resize(img, (w, h), interpolation=INTERPOLATIONS[interp])
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------ bsrgan_blur


_BLUR_PARAMS = (
    Param("kind", str, {"choice": ["anisotropic", "isotropic"]}, choices=("anisotropic", "isotropic"),
          doc="kernel family, 50/50 (random.random() < 0.5 picks anisotropic)"),
    Param("l1", float, {"uniform": [0.0, 8.0]}, range=(0.0, 50.0),
          doc="anisotropic: variance (px²) along theta, (4 + sf) * U[0, 1)"),
    Param("l2", float, {"uniform": [0.0, 8.0]}, range=(0.0, 50.0),
          doc="anisotropic: variance (px²) across theta, (4 + sf) * U[0, 1)"),
    Param("ksize", int, {"choice": list(KERNEL_SIZES)}, choices=KERNEL_SIZES,
          doc="kernel size 2 * randint(2, 11) + 3, uniform over 7..25 odd"),
    Param("theta", float, {"uniform": [0.0, math.pi]}, range=(0.0, math.pi),
          doc="anisotropic: angle of the l1 axis from +x towards +y, pi * U[0, 1)"),
    Param("sigma", float, {"uniform": [0.0, 2.8]}, range=(0.0, 25.0),
          doc="isotropic: fspecial Gaussian std (px), (2 + 0.2 sf) * U[0, 1)"),
)
_ANISO_DRAWS = ("l1", "l2", "ksize", "theta")  # the reference's evaluation order
_ISO_DRAWS = ("ksize", "sigma")


def _spec_value(spec: dict, params: tuple[Param, ...], name: str):
    if name in spec:
        return spec[name]
    return next(p.default for p in params if p.name == name)


def _blur_draw(rng: np.random.Generator, spec: dict) -> dict:
    """kind first, then only the values that kind's kernel uses (add_blur draws nothing else)."""
    kind = draw(rng, _spec_value(spec, _BLUR_PARAMS, "kind"))
    names = _ANISO_DRAWS if kind == "anisotropic" else _ISO_DRAWS
    return {"kind": kind, **{n: draw(rng, _spec_value(spec, _BLUR_PARAMS, n)) for n in names}}


def blur_kernel(values: dict) -> np.ndarray:
    if values["kind"] == "anisotropic":
        return anisotropic_gaussian(values["ksize"], values["theta"], values["l1"], values["l2"])
    return fspecial_gaussian(values["ksize"], values["sigma"])


def _blur_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return _convolve(img, blur_kernel(values))


register(Op(
    name="bsrgan_blur",
    params=_BLUR_PARAMS,
    apply=_blur_apply,
    summary="BSRGAN's add_blur: anisotropic Gaussian (variances l1, l2 at angle theta) or isotropic fspecial "
            "Gaussian, 50/50, reflect-101 borders; unclipped",
    source=f"{SOURCE}: add_blur, anisotropic_Gaussian, fspecial_gaussian",
    draw=_blur_draw,
))


# ------------------------------------------------------------------ resizes


def _resize_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    h, w = img.shape[:2]
    f = values["factor"]
    # the reference's int(1/f * side), computed in that order; at least one pixel
    size = (max(1, int(1 / f * h)), max(1, int(1 / f * w)))
    return _cv2_resize(img, size, values["interp"])


register(Op(
    name="bsrgan_resize",
    params=(
        Param("factor", float, {"uniform": [1.0, 8.0]}, range=(0.125, 64.0),
              doc="divides each side: output int(1/factor * side); downsample2 draws U[1, 2 sf]"),
        _INTERP_PARAM,
    ),
    apply=_resize_apply,
    summary="BSRGAN's downsample1/downsample2 resize: cv2.resize by 1/factor with a drawn interpolation flag, "
            "clipped to [0, 1]",
    source=f"{SOURCE}: degradation_bsrgan (downsample1, downsample2)",
    resizes="each side to int(side / factor)",
))


def _resize_lr_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return _cv2_resize(img, ctx.lr_shape, values["interp"])


register(Op(
    name="bsrgan_resize_lr",
    params=(_INTERP_PARAM,),
    apply=_resize_lr_apply,
    summary="BSRGAN's downsample3: cv2.resize to the LR size HR/scale with a drawn interpolation flag, clipped "
            "to [0, 1]",
    # int(1/sf * a) of the size before downsample2, which is HR/scale since the HR is a multiple of the scale
    source=f"{SOURCE}: degradation_bsrgan (downsample3)",
    resizes="to the LR size HR/scale, whatever the input's",
))


def _imresize_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return np.clip(ops.bicubic_downsample(img, values["factor"]), 0.0, 1.0)


register(Op(
    name="bsrgan_imresize",
    params=(Param("factor", int, 2, range=(1, 16), doc="integer downscale factor (downsample1 halves)"),),
    apply=_imresize_apply,
    summary="BSRGAN's downsample1 alternative: MATLAB imresize bicubic (antialiased, a = -0.5, symmetric borders) "
            "by 1/factor, clipped to [0, 1]",
    source=f"{SOURCE}: degradation_bsrgan (downsample1), utils_image.imresize_np(img, 1/2, True)",
    resizes="each side divided by `factor`",
))


def _shift_decimate_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    sf = values["sf"]
    k = shift_kernel(fspecial_gaussian(values["ksize"], values["sigma"]), sf)
    out = _convolve(img, k / k.sum())[::sf, ::sf]
    return np.clip(out, 0.0, 1.0)


def _odd_ksize(values: dict, path: str) -> dict:
    k = values["ksize"]
    sizes = k.get("choice", k.get("pick")) if isinstance(k, dict) else [k]
    if sizes is None or any(s % 2 == 0 for s in sizes):
        raise UserError(f"{path}.ksize must give odd sizes (fixed, choice or pick), got {k!r}.")
    return values


register(Op(
    name="bsrgan_shift_decimate",
    params=(
        Param("sf", int, 4, range=(1, 16), doc="decimation step; the kernel moves (sf - 1)/2 px to the upper left"),
        Param("sigma", float, {"uniform": [0.1, 2.4]}, range=(0.0, 25.0),
              doc="Gaussian std (px), U[0.1, 0.6 sf]"),
        Param("ksize", int, 25, range=(3, 99), doc="Gaussian kernel size (odd)"),
    ),
    apply=_shift_decimate_apply,
    summary="BSRGAN's downsample2 alternative: blur with an fspecial Gaussian shifted (sf-1)/2 px by bilinear "
            "resampling (so sample 0 is centred on its sf x sf block), then keep every sf-th pixel; clipped",
    source=f"{SOURCE}: degradation_bsrgan (downsample2), shift_pixel, fspecial_gaussian",
    prepare=_odd_ksize,
    resizes="every `sf`-th pixel of each side: ceil(side / sf)",
))


# ------------------------------------------------------------------ bsrgan_noise

NOISE_MODES = ("color", "gray", "correlated")


def correlated_factor(rng: np.random.Generator, level: float) -> np.ndarray:
    """The 3x3 matrix M with noise = z @ M, z ~ N(0, I), of the correlated mode: D = diag(3 draws of U[0, 1)),
    U = orth(3x3 draws of U[0, 1)), covariance C = |(level/255)² Uᵀ D U| taken elementwise, as the reference
    does; M comes from C's SVD exactly as numpy's multivariate_normal builds it, so where the elementwise |.| made
    C indefinite the noise has the reference's realised covariance (C's matrix absolute value)."""
    d = rng.random(3)
    basis = orth(rng.random((3, 3)))
    cov = np.abs((level / 255.0) ** 2 * (basis.T @ np.diag(d) @ basis))
    _, s, vh = np.linalg.svd(cov)
    return np.sqrt(s)[:, None] * vh


def _noise_apply(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(values["seed"]))
    h, w = img.shape[:2]
    mode = values["mode"]
    if mode == "correlated":
        m = correlated_factor(rng, values["corr_level"])
        noise = (rng.standard_normal((h * w, 3)) @ m).astype(np.float32).reshape(h, w, 3)
    else:
        noise = rng.standard_normal((h, w, 3 if mode == "color" else 1), dtype=np.float32)
        noise *= np.float32(values["level"] / 255.0)
    out = img + noise
    np.clip(out, 0.0, 1.0, out=out)
    return out


register(Op(
    name="bsrgan_noise",
    params=(
        Param("level", int, {"randint": [2, 25]}, range=(0, 255),
              doc="noise std on the 0..255 scale (color and gray modes), randint(2, 25)"),
        Param("mode", str, {"choice": list(NOISE_MODES), "probs": [0.4, 0.4, 0.2]}, choices=NOISE_MODES,
              doc="color (independent per channel) | gray (one field for all) | correlated (random 3x3 covariance)"),
        Param("corr_level", float, 25.0, range=(0.0, 255.0),
              doc="correlated mode's scale L*255 (the reference uses noise_level2 = 25, not the drawn level)"),
    ),
    apply=_noise_apply,
    summary="BSRGAN's add_Gaussian_noise: color, gray or channel-correlated Gaussian noise (random orthogonal "
            "basis), clipped to [0, 1]",
    source=f"{SOURCE}: add_Gaussian_noise",
    seeded=True,
))
