"""The ops of srdistill's first degradation model (Real-ESRGAN's second-order chain and plain bicubic).

The numeric defaults are Real-ESRGAN x4plus's (options/train_realesrgan_x4plus.yml, realesrgan 0.3.0): an op
named alone in a spec behaves like its first use in that model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from srdistill.degrade.ops import kernels
from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.ops.opdef import Op, OpContext, Param, register, value_bounds
from srdistill.core.errors import UserError

PI = math.pi
MODES = ("area", "bilinear", "bicubic")
EQUAL_MODES = {"choice": list(MODES)}  # equal odds
REAL_ESRGAN = "Wang et al., Real-ESRGAN (ICCVW 2021); realesrgan 0.3.0 + basicsr 1.4.2"
KERNEL1 = {
    "sizes": [7, 9, 11, 13, 15, 17, 19, 21], "sinc_prob": 0.1, "sinc_size_threshold": 13,
    "sinc_omega_small": [PI / 3, PI], "sinc_omega_large": [PI / 5, PI],
    "types": list(kernels.KERNEL_TYPES), "type_probs": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sigma_range": [0.2, 3.0], "rotation_range": [-PI, PI], "betag_range": [0.5, 4.0], "betap_range": [1.0, 2.0],
    "beta_pivot": 1.0, "beta_below_prob": 0.5,
}


def _usm(img: np.ndarray, v: dict, ctx: OpContext) -> np.ndarray:
    return ops.usm_sharpen(img, v["radius"], v["sigma"], v["weight"], v["threshold"])


register(Op(
    name="usm",
    params=(
        Param("radius", int, 50, (1, 1000), doc="Gaussian window size (even sizes are bumped to odd)"),
        Param("sigma", float, 0.0, (0, 1000), doc="Gaussian sigma; 0 derives it from the window (OpenCV)"),
        Param("weight", float, 0.5, doc="sharpening strength"),
        Param("threshold", float, 10.0, (0, 255), doc="residual threshold of the mask, 0..255 scale"),
    ),
    apply=_usm,
    summary="unsharp mask: blend towards img + weight (img - blur) where the residual exceeds the threshold",
    source=f"Real-ESRGAN's USMSharp ({REAL_ESRGAN})",
))


def _blur_prepare(values: dict, path: str) -> dict:
    # A partial kernel mapping is completed from the default; the kernel family is checked as a whole.
    kernel = {**KERNEL1, **values["kernel"]}
    return {**values, "kernel": json_plain(kernels.kernel_spec(kernel, f"{path}.kernel"))}


def json_plain(ks: kernels.KernelSpec) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(ks).items()}


def _blur_draw(rng: np.random.Generator, values: dict) -> dict:
    ks = kernels.KernelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in values["kernel"].items()})
    return {"kernel": kernels.sample_kernel(rng, ks)}


def _blur(img: np.ndarray, v: dict, ctx: OpContext) -> np.ndarray:
    k = v["kernel"]
    if k["type"] == "iso":  # the isotropic Gaussian is separable: two 1-D passes instead of one 2-D one
        return ops.filter_separable(img, kernels.gaussian_1d(k["size"], k["sigma_x"]))
    return ops.filter_2d(img, kernels.build_kernel(k))


register(Op(
    name="blur",
    params=(Param("kernel", dict, KERNEL1,
                  doc="the kernel family: sizes, sinc_prob, sinc_size_threshold, sinc_omega_small/_large, types, "
                      "type_probs, sigma_range, rotation_range, betag_range, betap_range, beta_pivot, "
                      "beta_below_prob; Real-ESRGAN x4plus stage 1's where left out; recorded as the drawn "
                      "kernel (type, size, sigma_x, ...)"),),
    apply=_blur,
    summary="blur with a kernel drawn from Real-ESRGAN's family: (an)isotropic, generalized and plateau "
            "Gaussians or a 2-D sinc, reflect-101 borders",
    source=f"RealESRGANDataset kernels ({REAL_ESRGAN})",
    draw=_blur_draw,
    prepare=_blur_prepare,
))


def _resize_size(img: np.ndarray, v: dict, ctx: OpContext) -> tuple[int, int]:
    s = v["scale"]
    if v["relative_to"] == "input":  # torch's F.interpolate(scale_factor=s) output size: floor(in * s)
        h, w = img.shape[:2]
        return max(1, math.floor(h * s)), max(1, math.floor(w * s))
    h, w = ctx.hr_shape  # the reference's size=(int(ori_h / scale * s), int(ori_w / scale * s))
    return max(1, int(h / ctx.scale * s)), max(1, int(w / ctx.scale * s))


def _resize(img: np.ndarray, v: dict, ctx: OpContext) -> np.ndarray:
    scale = v["scale"] if v["coords"] == "scale_factor" else None
    return ops.resize(img, _resize_size(img, v, ctx), v["mode"], scale=scale)


def _resize_prepare(values: dict, path: str) -> dict:
    if values["coords"] == "scale_factor" and values["relative_to"] != "input":
        raise UserError(f"{path}.coords can be scale_factor only with relative_to: input, got relative_to: "
                        f"{values['relative_to']}.")
    return values


register(Op(
    name="resize",
    params=(
        Param("scale", float, 1.0, (1e-3, 64), doc="size factor (of the input, or of HR/scale)"),
        Param("mode", str, EQUAL_MODES, choices=MODES, doc="torch F.interpolate mode, align_corners=False"),
        Param("relative_to", str, "input", choices=("input", "lr"),
              doc="input: floor(input size x scale); lr: int(HR size / SR scale x scale)"),
        Param("coords", str, "size", choices=("size", "scale_factor"),
              doc="pixel mapping: by the in/out size ratio, or by 1/scale (F.interpolate(scale_factor=...))"),
    ),
    apply=_resize,
    summary="resize like torch's F.interpolate (area = adaptive average pooling, bilinear, bicubic a = -0.75)",
    source=f"RealESRGANModel.feed_data's random resize ({REAL_ESRGAN})",
    prepare=_resize_prepare,
    resizes="to the input size (or HR/scale) times `scale`",
    overshoots="bicubic interpolation rings past the input's range at edges (the pipeline clamps later)",
))

register(Op(
    name="gaussian_noise",
    params=(
        Param("sigma", float, {"uniform": [1.0, 30.0]}, (0, 255), doc="standard deviation, 0..255 scale"),
        Param("gray", bool, {"bernoulli": 0.4}, doc="one noise field shared by the three channels"),
    ),
    apply=lambda img, v, ctx: ops.add_gaussian_noise(img, v["sigma"], v["gray"], v["seed"]),
    summary="add N(0, sigma/255) per pixel (per channel unless gray), then clip to [0, 1]",
    source=f"basicsr random_add_gaussian_noise_pt ({REAL_ESRGAN})",
    seeded=True,
))

register(Op(
    name="poisson_noise",
    params=(
        Param("scale", float, {"uniform": [0.05, 3.0]}, (0, 1000), doc="multiplier of the shot noise"),
        Param("gray", bool, {"bernoulli": 0.4}, doc="noise from the gray image, shared by the channels"),
    ),
    apply=lambda img, v, ctx: ops.add_poisson_noise(img, v["scale"], v["gray"], v["seed"]),
    summary="add scale x Poisson shot noise at 2^ceil(log2(distinct levels)) counts, then clip to [0, 1]",
    source=f"basicsr random_add_poisson_noise_pt ({REAL_ESRGAN})",
    seeded=True,
))


def _jpeg_prepare(values: dict, path: str) -> dict:
    bounds = value_bounds(values["quality"])
    if values["codec"] == "diffjpeg" and bounds is not None and bounds[1] >= 100:
        raise UserError(f"{path}.quality must stay below 100 with codec diffjpeg (its table factor is 0 at 100), "
                        f"got {values['quality']!r}.")
    return values


register(Op(
    name="jpeg",
    params=(
        Param("quality", float, {"uniform": [30.0, 95.0]}, (1, 100),
              doc="JPEG quality; libjpeg rounds it to an integer"),
        Param("codec", str, "diffjpeg", choices=("diffjpeg", "libjpeg"),
              doc="diffjpeg: the reference's DiffJPEG model; libjpeg: libjpeg-turbo via OpenCV, 4:2:0"),
    ),
    apply=lambda img, v, ctx: ops.jpeg(img, v["quality"], v["codec"]),
    summary="JPEG round trip (clipped to [0, 1] first)",
    source=f"basicsr DiffJPEG ({REAL_ESRGAN}); libjpeg-turbo through OpenCV",
    prepare=_jpeg_prepare,
))


def _sinc_prepare(values: dict, path: str) -> dict:
    size = values["size"]
    sizes = size.get("choice", size.get("pick")) if isinstance(size, dict) else [size]
    if sizes is None or any(s < 1 or s % 2 == 0 for s in sizes):
        raise UserError(f"{path}.size must give odd sizes >= 1 (fixed, choice or pick), got {size!r}.")
    return values


register(Op(
    name="sinc",
    params=(
        Param("size", int, {"pick": [7, 9, 11, 13, 15, 17, 19, 21]}, (1, 255), doc="odd kernel size"),
        Param("omega", float, {"uniform": [PI / 3, PI]}, (1e-6, PI), doc="cut-off frequency, rad/pixel"),
    ),
    apply=lambda img, v, ctx: ops.filter_2d(img, kernels.sinc_kernel(v["size"], v["omega"])),
    summary="2-D sinc (ideal circular low-pass) filter: ringing and overshoot",
    source=f"Real-ESRGAN's final sinc filter, basicsr circular_lowpass_kernel ({REAL_ESRGAN})",
    prepare=_sinc_prepare,
    overshoots="the sinc kernel's negative lobes ring past the input's range (the Real-ESRGAN pipeline clamps later)",
))

register(Op(
    name="bicubic_downsample",
    params=(),
    apply=lambda img, v, ctx: ops.bicubic_downsample(img, ctx.scale),
    summary="downscale by the SR scale: antialiased Keys cubic (a = -0.5), symmetric borders, float64",
    source="MATLAB imresize(img, 1/scale, 'bicubic'), the classic benchmark LR",
    resizes="to the LR size: the input size divided by the SR scale",
    overshoots="the cubic kernel's negative lobes ring past the input's range at edges",
))
