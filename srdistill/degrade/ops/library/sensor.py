"""Camera sensor noise: shot + read noise in linear light.

BSRGAN (Zhang et al., ICCV 2021, sec. 3.3) adds "camera sensor noise" by converting the image to raw with an
ISP model, adding noise there and processing it back; that ISP model is not in its public code. This op uses the
standard noise model it builds on, from Brooks et al. 2019 ("Unprocessing images for learned raw denoising",
CVPR, sec. 3.2 and 4): in linear light x, y ~ N(x, read + shot * x), with the shot level drawn log-uniform on
[0.0001, 0.012] and log(read) ~ N(2.18 log(shot) + 1.20, 0.26^2). Linear light here is the inverse sRGB transfer
curve of the image (IEC 61966-2-1), per RGB channel (no mosaic, white balance or colour matrix: the stand-in for
the unreleased ISP, stated in the op's source).
"""

from __future__ import annotations

import math

import numpy as np

from srdistill.degrade.ops.opdef import Op, OpContext, Param, draw, register
from srdistill.core.errors import UserError

# Brooks et al. 2019, sec. 4: log(read) = READ_SLOPE * log(shot) + READ_INTERCEPT + N(0, READ_STD^2)
READ_SLOPE, READ_INTERCEPT, READ_STD = 2.18, 1.20, 0.26
FROM_SHOT = "from_shot"


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def prepare_sensor_noise(values: dict, path: str) -> dict:
    """`read` is from_shot or a fixed variance (its range is checked with the other values)."""
    read = values["read"]
    if isinstance(read, str) and read != FROM_SHOT or isinstance(read, (bool, dict, list)):
        raise UserError(f"{path}.read must be {FROM_SHOT} or a fixed read-noise variance in [0, 1], got {read!r}.")
    return {**values, "read": read if read == FROM_SHOT else float(read)}


def draw_sensor_noise(rng: np.random.Generator, spec: dict) -> dict:
    """shot from its distribution, then read: Brooks' relation from shot (one standard normal draw) when
    from_shot, else the spec's fixed value."""
    shot = float(draw(rng, spec["shot"]))
    read = spec["read"]
    if read == FROM_SHOT:
        read = math.exp(READ_SLOPE * math.log(shot) + READ_INTERCEPT + READ_STD * float(rng.standard_normal()))
    return {"shot": shot, "read": float(read)}


def add_sensor_noise(img: np.ndarray, shot: float, read: float, seed: int) -> np.ndarray:
    """sRGB image -> linear light x -> x + sqrt(read + shot * x) * N(0, 1) per pixel and channel, clipped to
    [0, 1] (the sensor's range) -> sRGB."""
    rng = np.random.Generator(np.random.PCG64(seed))
    x = srgb_to_linear(np.clip(img.astype(np.float64), 0.0, 1.0))
    y = x + np.sqrt(read + shot * x) * rng.standard_normal(x.shape)
    return linear_to_srgb(np.clip(y, 0.0, 1.0)).astype(np.float32)


def sensor_noise(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return add_sensor_noise(img, values["shot"], values["read"], values["seed"])


register(Op(
    name="sensor_noise",
    params=(
        Param("shot", float, {"log_uniform": [0.0001, 0.012]}, range=(1e-9, 1.0),  # > 0: read follows log(shot)
              doc="shot-noise variance per unit linear signal"),
        # type object: a number or the word from_shot (prepare_sensor_noise checks which)
        Param("read", object, FROM_SHOT, range=(0.0, 1.0),
              doc="read-noise variance, fixed, or from_shot: log(read) ~ N(2.18 log(shot) + 1.20, 0.26^2)"),
    ),
    apply=sensor_noise,
    summary="camera sensor noise in linear light: variance read + shot * x on the inverse-sRGB image",
    source="BSRGAN (Zhang et al. 2021) camera sensor noise; its ISP is unreleased, so Brooks et al. 2019 "
           "(unprocessing) noise model and levels on inverse-sRGB linear light",
    seeded=True,
    draw=draw_sensor_noise,
    prepare=prepare_sensor_noise,
))
