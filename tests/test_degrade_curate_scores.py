"""The weight-free curation scores against their definitions, computed independently here."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import fft, ndimage

from srdistill.degrade import image_stats as st
from srdistill.degrade.curate import scores as cs


def _grey(photo: np.ndarray) -> np.ndarray:
    return photo.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_laplacian_variance_is_the_variance_of_the_4_neighbour_laplacian(photo):
    y = _grey(photo)
    lap = ndimage.convolve(y, np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float))[1:-1, 1:-1]
    assert st.laplacian_variance(st.luma(photo)) == pytest.approx(lap.var(), rel=1e-9)
    blurred = cv2.GaussianBlur(photo, (0, 0), 3)
    assert st.laplacian_variance(st.luma(blurred)) < 0.1 * st.laplacian_variance(st.luma(photo))


def test_gradient_entropy_counts_bits_of_the_gradient_magnitude_histogram():
    # Columns alternate 0, 10, 0, 10 ... : dx is +-10 everywhere, dy 0, so every magnitude is 10: 0 bits.
    stripes = np.tile(np.array([0.0, 10.0]), (16, 8))
    assert cs.gradient_entropy(stripes) == 0.0
    # Half the rows flat, half striped: magnitudes 0 and 10 in equal numbers (forward differences on 8x15): 1 bit.
    half = np.vstack([np.zeros((8, 16)), np.tile(np.array([0.0, 10.0]), (9, 8))])
    mags = np.hypot(np.diff(half, axis=1)[:-1], np.diff(half, axis=0)[:, :-1])
    p = np.unique(np.rint(mags), return_counts=True)[1] / mags.size
    assert cs.gradient_entropy(half) == pytest.approx(-(p * np.log2(p)).sum())
    assert cs.weight_free_scores(np.zeros((8, 8, 3), np.uint8))["complexity"] == 0.0


def test_noise_sigma_recovers_the_sigma_of_added_gaussian_noise():
    rng = np.random.default_rng(0)
    flat = np.full((256, 256), 128.0)
    for sigma in (3.0, 10.0):
        assert st.noise_sigma(flat + rng.normal(0, sigma, flat.shape)) == pytest.approx(sigma, rel=0.05)
    assert st.noise_sigma(flat) == 0.0


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_jpeg_quality_is_read_from_the_files_quantisation_table(photo, quality):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=quality)
    assert cs.jpeg_quality(buf.getvalue()) == quality
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    assert math.isnan(cs.jpeg_quality(png.getvalue()))


def test_blockiness_flags_a_jpeg_decoded_into_a_png(photo):
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=10)
    decoded = np.asarray(Image.open(buf).convert("RGB"))
    assert st.blockiness(st.luma(photo)) < 1.2
    assert st.blockiness(st.luma(decoded)) > 1.5
    # Shifting by 4 pixels moves the blocks off the 8-grid: the ratio falls back.
    assert st.blockiness(st.luma(decoded[4:, 4:])) < st.blockiness(st.luma(decoded))


def test_phash_follows_its_definition_and_survives_a_resize(photo):
    y = st.luma(photo)
    small = cv2.resize(y.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = fft.dctn(small, type=2, norm="ortho")[:8, :8].ravel()
    bits = "".join("1" if c > np.median(low) else "0" for c in low)
    assert cs.phash(y) == f"{int(bits, 2):016x}"
    h, w = photo.shape[:2]
    resized = cv2.resize(photo, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    assert cs.hamming(cs.phash(y), cs.phash(st.luma(resized))) <= 4
    assert cs.hamming(cs.phash(y), cs.phash(st.luma(photo[:, ::-1]))) > 16
