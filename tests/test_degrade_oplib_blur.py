"""defocus and motion_blur: kernels that sum to 1, with the disk's exact pixel areas and the line's exact length,
direction and spread, applied as a correlation that keeps flat images flat."""

import math

import numpy as np
import pytest
from helpers.images import real_photo
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.library import blur
from srdistill.degrade.ops.opdef import REGISTRY, OpContext
from srdistill.degrade.ops.primitives import to_float

CTX = OpContext(scale=4, hr_shape=(64, 64))


def _supersampled_disk(radius: float, k: int, n: int = 400) -> np.ndarray:
    """Each pixel's share of the disk by counting n x n sub-pixel centres inside it (independent of the op)."""
    sub = (np.arange(n) + 0.5) / n - 0.5
    out = np.zeros((2 * k + 1, 2 * k + 1))
    for i in range(2 * k + 1):
        for j in range(2 * k + 1):
            yy = (i - k) + sub[:, None]
            xx = (j - k) + sub[None, :]
            out[i, j] = np.count_nonzero(xx**2 + yy**2 <= radius**2) / n**2
    return out


@pytest.mark.parametrize("radius", [0.4, 1.0, 1.5, 2.3, 4.0])
def test_disk_kernel_is_each_pixels_share_of_the_disk(radius):
    k = blur.disk_kernel(radius)
    half = k.shape[0] // 2
    assert k.shape[0] == k.shape[1] == 2 * max(0, math.ceil(radius - 0.5)) + 1
    assert abs(k.sum() - 1) < 1e-12
    for view in (k.T, k[::-1], k[:, ::-1]):
        assert np.allclose(view, k, atol=1e-15)
    areas = _supersampled_disk(radius, half)
    assert abs(areas.sum() - math.pi * radius**2) < 2e-3 * max(1, radius**2)  # the disk fits in the kernel
    assert np.abs(k - areas / areas.sum()).max() < 3e-4
    assert k[half, half] == pytest.approx(min(1.0, 1 / (math.pi * radius**2)), rel=1e-12)


def _moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = k.shape[0] // 2
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    pos = np.stack([xs.ravel(), -ys.ravel()])  # x right, y up
    mean = pos @ k.ravel()
    cov = (pos * k.ravel()) @ pos.T - np.outer(mean, mean)
    return mean, cov


@pytest.mark.parametrize("length,angle", [(9.0, 0.0), (9.0, 90.0), (7.5, 30.0), (12.0, 135.0), (3.3, -20.0),
                                          (1.0, 60.0), (20.0, 200.0)])
def test_motion_kernel_is_a_centred_segment_of_that_length_and_direction(length, angle):
    """Points spread uniformly along a segment of length L in direction u, each split bilinearly between its
    pixels: mean 0 and covariance L^2/12 u u^T + diag(E[fx(1-fx)], E[fy(1-fy)]), f the fractional parts along
    the segment (the split's own variance), here averaged over a million points of the segment."""
    k = blur.motion_kernel(length, angle)
    assert abs(k.sum() - 1) < 1e-12 and k.min() >= 0
    assert np.allclose(k, k[::-1, ::-1], atol=1e-15)
    mean, cov = _moments(k)
    t = math.radians(angle)
    u = np.array([math.cos(t), math.sin(t)])
    s = (np.arange(1_000_000) + 0.5) / 1_000_000 * length - length / 2
    split = [np.mean((f := np.mod(s * c, 1.0)) * (1 - f)) for c in u]
    assert np.abs(mean).max() < 1e-12
    assert np.abs(cov - (length**2 / 12 * np.outer(u, u) + np.diag(split))).max() < 1e-6


def test_axis_aligned_motion_kernels_are_one_row_or_one_column():
    k = blur.motion_kernel(5.0, 0.0)
    half = k.shape[0] // 2
    rows = np.flatnonzero(k.sum(axis=1))
    assert rows.tolist() == [half]
    # x in [-2.5, 2.5]: pixel 2 gets the tent's area over [1, 2.5] = 0.875, pixel 3 over [2, 2.5] = 0.125; / 5
    expect = np.array([0.025, 0.175, 0.2, 0.2, 0.2, 0.175, 0.025])
    assert np.allclose(k[half, half - 3:half + 4], expect, atol=1e-15) and k[half].sum() == pytest.approx(1.0)
    assert np.flatnonzero(blur.motion_kernel(5.0, 90.0).sum(axis=0)).tolist() == [half]


def test_a_zero_length_or_radius_is_the_identity_and_blurs_keep_flat_images_flat():
    img = to_float(real_photo("astronaut", 40, 50, 100, 150))
    assert np.array_equal(REGISTRY["motion_blur"].apply(img, {"length": 0.0, "angle": 30.0}, CTX), img)
    assert np.array_equal(REGISTRY["defocus"].apply(img, {"radius": 0.0}, CTX), img)
    flat = np.full((30, 31, 3), 0.37, np.float32)
    for name, values in [("defocus", {"radius": 3.2}), ("motion_blur", {"length": 11.0, "angle": 70.0})]:
        assert np.abs(REGISTRY[name].apply(flat, values, CTX) - 0.37).max() < 1e-6


def test_a_point_of_light_becomes_the_kernel_oriented_as_drawn():
    img = np.zeros((31, 31, 3), np.float32)
    img[15, 15] = 1.0
    out = REGISTRY["motion_blur"].apply(img, {"length": 10.0, "angle": 45.0}, CTX)[..., 0]
    assert out[12, 18] > 0.05 and out[18, 12] > 0.05  # up-right and down-left of the point (rows grow down)
    assert out[12, 12] == 0 and out[18, 18] == 0
    k = blur.motion_kernel(10.0, 45.0)
    h = k.shape[0] // 2
    assert np.allclose(out[15 - h:16 + h, 15 - h:16 + h], k, atol=1e-7)
    disk = REGISTRY["defocus"].apply(img, {"radius": 2.5}, CTX)[..., 0]
    d = blur.disk_kernel(2.5)
    h = d.shape[0] // 2
    assert np.allclose(disk[15 - h:16 + h, 15 - h:16 + h], d, atol=1e-7) and disk.sum() == pytest.approx(1.0)


def test_blurs_replay_to_the_same_bytes():
    img = to_float(real_photo("coffee", 48, 64, 150, 200))
    for name, values in [("defocus", {"radius": 2.7}), ("motion_blur", {"length": 8.5, "angle": 33.0})]:
        assert REGISTRY[name].apply(img, values, CTX).tobytes() == REGISTRY[name].apply(img.copy(), values,
                                                                                        CTX).tobytes()
