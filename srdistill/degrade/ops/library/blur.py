"""Optical blurs beside Real-ESRGAN's Gaussian family: defocus (a uniform disk) and linear motion (a line).

Both kernels are exact areas, not samples: the disk kernel is the area of the disk inside each pixel (MATLAB's
fspecial('disk') defines it so), the motion kernel a line segment's length distributed over the pixels by
bilinear interpolation. Each is normalised to sum 1 and applied with ops.filter_2d (reflect-101 borders).
"""

from __future__ import annotations

import math

import numpy as np

from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.ops.opdef import Op, OpContext, Param, register


def _quadrant_area(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Area of the disk of radius r (centre 0) inside [0, x] x [0, y], for x, y >= 0:
    y * min(xc, x') + integral over [min(xc, x'), x'] of sqrt(r^2 - t^2), with x' = min(x, r) and xc the
    abscissa where the circle's height falls to y."""
    xp = np.minimum(x, r)
    yc = np.minimum(y, r)
    xc = np.minimum(np.sqrt(r * r - yc * yc), xp)

    def prim(t):  # antiderivative of sqrt(r^2 - t^2)
        return 0.5 * (t * np.sqrt(np.maximum(r * r - t * t, 0.0)) + r * r * np.arcsin(np.clip(t / r, -1.0, 1.0)))

    return yc * xc + prim(xp) - prim(xc)


def _signed_area(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Area of the disk inside the quadrant [0, x] x [0, y] with signs, so rectangles follow by inclusion-exclusion."""
    return np.sign(x) * np.sign(y) * _quadrant_area(np.abs(x), np.abs(y), r)


def disk_kernel(radius: float) -> np.ndarray:
    """(2k+1)^2 kernel, k = ceil(radius - 0.5): each pixel's share of the disk's area, normalised to sum 1."""
    k = max(0, math.ceil(radius - 0.5))
    if k == 0:  # the disk lies inside the centre pixel (radius 0 included)
        return np.ones((1, 1))
    e = np.arange(-k, k + 2) - 0.5  # pixel edges
    a = _signed_area(e[None, :], e[:, None], radius)
    cells = a[1:, 1:] - a[:-1, 1:] - a[1:, :-1] + a[:-1, :-1]
    return cells / cells.sum()


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A centred line segment of `length` pixels at `angle` degrees (counter-clockwise from +x, with rows growing
    downwards): every point of the segment is split between its 4 nearest pixels by bilinear weights, and the
    weights are integrated along the segment exactly (Simpson's rule on each piece between integer crossings,
    where they are quadratic). Normalised to sum 1; length 0 is the identity."""
    theta = math.radians(angle)
    # exact zeros at multiples of 90 degrees (cos(pi/2) is 6e-17), or an axis-aligned line would leak into a
    # neighbouring row or column with a weight of that order
    dx, dy = (0.0 if abs(c) < 1e-12 else c for c in (math.cos(theta), -math.sin(theta)))
    half = length / 2
    k = math.ceil(half * max(abs(dx), abs(dy))) + 1
    size = 2 * k + 1
    kernel = np.zeros((size, size), dtype=np.float64)
    if length == 0:
        kernel[k, k] = 1.0
        return kernel
    # breakpoints along s in [-half, half] where x or y crosses an integer: the tent weights are linear in s
    # between them, their product quadratic, so Simpson's rule on each piece is exact
    cuts = {-half, half}
    for d in (dx, dy):
        if d != 0.0:
            lo, hi = sorted((-half * d, half * d))
            cuts.update(float(c) / d for c in range(math.ceil(lo), math.floor(hi) + 1))
    s = np.array(sorted(c for c in cuts if -half <= c <= half))
    a, b = s[:-1], s[1:]
    for sk, wk in ((a, 1 / 6), ((a + b) / 2, 4 / 6), (b, 1 / 6)):
        x, y = sk * dx, sk * dy
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        wt = wk * (b - a)
        for ox, wx in ((0, 1 - fx), (1, fx)):
            for oy, wy in ((0, 1 - fy), (1, fy)):
                np.add.at(kernel, ((y0 + oy).astype(int) + k, (x0 + ox).astype(int) + k), wt * wx * wy)
    return kernel / kernel.sum()


def defocus(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return ops.filter_2d(img, disk_kernel(values["radius"]))


def motion_blur(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return ops.filter_2d(img, motion_kernel(values["length"], values["angle"]))


register(Op(
    name="defocus",
    params=(
        Param("radius", float, {"uniform": [1.0, 4.0]}, range=(0.0, 50.0), doc="disk radius in pixels"),
    ),
    apply=defocus,
    summary="defocus blur: a uniform disk (pillbox) kernel, antialiased by each pixel's exact share of its area",
    source="geometric-optics defocus PSF; exact pixel areas as MATLAB's fspecial('disk')",
))

register(Op(
    name="motion_blur",
    params=(
        Param("length", float, {"uniform": [3.0, 15.0]}, range=(0.0, 100.0), doc="path length in pixels"),
        Param("angle", float, {"uniform": [0.0, 180.0]}, range=(-360.0, 360.0),
              doc="direction in degrees, counter-clockwise from the +x axis"),
    ),
    apply=motion_blur,
    summary="linear motion blur: a centred line segment of given length and angle, bilinearly antialiased",
    source="uniform linear-motion PSF (a line of the given length and angle, as MATLAB's fspecial('motion'))",
))
