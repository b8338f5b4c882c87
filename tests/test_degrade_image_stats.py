"""The image statistics of `degrade diff` and `degrade curate`, against values worked out by hand on tiny arrays
(interior pixels only, NaN where undefined) and against known noise and blocking."""

import math

import numpy as np
import pytest

from srdistill.degrade.image_stats import blockiness, laplacian_variance, luma, noise_sigma

# One bright pixel at row 1, column 1 of a 3x4 image: two interior positions, (1, 1) and (1, 2).
DOT = np.array([[0, 0, 0, 0], [0, 9, 0, 0], [0, 0, 0, 0]], dtype=np.float64)


def test_luma_is_bt601_unrounded():
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 11]]], dtype=np.uint8)
    assert luma(img)[0].tolist() == pytest.approx([76.245, 149.685, 29.07, 10.114])


def test_noise_sigma_sums_the_immerkaer_response_over_the_interior_only():
    # responses: 4*9 = 36 at (1, 1), -2*9 = -18 at (1, 2); sigma = sqrt(pi/2) * 54 / (6 * 2 * 1)
    assert noise_sigma(DOT) == pytest.approx(math.sqrt(math.pi / 2) * 4.5)


def test_laplacian_variance_is_over_the_interior_only():
    # Laplacian at (1, 1) = -36, at (1, 2) = 9: mean -13.5, variance 22.5^2
    assert laplacian_variance(DOT) == pytest.approx(506.25)


@pytest.mark.parametrize("shape", [(2, 5), (5, 2), (1, 1)])
def test_too_small_for_a_3x3_stencil_is_nan(shape):
    y = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    assert math.isnan(noise_sigma(y)) and math.isnan(laplacian_variance(y))


def test_blockiness_is_border_step_over_inner_step_per_direction():
    r = np.array([0, 1, 2, 3, 4, 5, 6, 7, 17], dtype=np.float64)  # steps 1 inside, 10 across the 7|8 border
    s = np.array([0, 2, 4, 6, 8, 10, 12, 14, 19], dtype=np.float64)  # steps 2 inside, 5 across
    assert blockiness(r[None, :] + s[:, None]) == pytest.approx((10 + 2.5) / 2)
    # a single row has no vertical steps: only the horizontal ratio counts
    assert blockiness(r[None, :]) == pytest.approx(10.0)


@pytest.mark.parametrize("y", [np.zeros((16, 16)), np.arange(64, dtype=np.float64).reshape(8, 8)],
                         ids=["flat", "no 8-pixel border"])
def test_blockiness_without_a_measurable_direction_is_nan(y):
    assert math.isnan(blockiness(y))


def test_noise_estimate_tracks_added_gaussian_noise():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 128.0)
    for sigma in (2.0, 5.0, 10.0):
        assert noise_sigma(flat + rng.normal(0, sigma, flat.shape)) == pytest.approx(sigma, rel=0.1)
    assert noise_sigma(flat) == 0.0


def test_blockiness_sees_8x8_steps():
    rng = np.random.default_rng(1)
    smooth = rng.normal(0, 1, (64, 64)).cumsum(axis=1)
    blocky = smooth + np.kron(rng.normal(0, 20, (8, 8)), np.ones((8, 8)))
    assert blockiness(blocky) > 2.0
    assert blockiness(smooth) == pytest.approx(1.0, abs=0.3)
