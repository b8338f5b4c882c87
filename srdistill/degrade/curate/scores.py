"""Weight-free scores of one HR image (pure functions on uint8 arrays), used by `degrade curate`.

All scores are computed on the BT.601 luma `Y = 0.299 R + 0.587 G + 0.114 B` as float64 in 0..255.

- `laplacian_var`, `noise_sigma`, `blockiness`: the statistics of degrade/image_stats.py (Laplacian variance, the
  common "is this photo sharp" threshold; Immerkaer's noise sigma; JPEG 8x8 blockiness, about 1 for an image never
  JPEG-compressed, whatever the file format now is), NaN where the image is too small to define them.
- `gradient_entropy`: Shannon entropy in bits of the histogram of gradient magnitudes
  `sqrt(dx^2 + dy^2)` (forward differences, on the (H-1)x(W-1) grid), rounded to integers and clipped to
  0..255 (256 bins, so at most 8 bits). Flat or blurred images concentrate near 0; detailed ones spread out.
- `complexity`: `gradient_entropy / 8`, in [0, 1].
- `jpeg_quality`: for a JPEG file, the IJG quality (1..100) whose scaled standard luminance table is closest
  to the file's own luminance quantisation table; NaN for other formats.
- `phash`: the 64-bit DCT perceptual hash (grey image resized to 32x32 by area averaging, 2-D DCT-II, the
  top-left 8x8 coefficients, each bit = coefficient > their median), as 16 hex digits.
"""

from __future__ import annotations

import io

import numpy as np

from srdistill.degrade.image_stats import blockiness, laplacian_variance, luma, noise_sigma

# The IJG (libjpeg) standard luminance quantisation table at quality 50 (ITU-T T.81 Annex K, table K.1).
STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)


def gradient_entropy(y: np.ndarray) -> float:
    if min(y.shape) < 2:
        return 0.0
    dx = y[:-1, 1:] - y[:-1, :-1]
    dy = y[1:, :-1] - y[:-1, :-1]
    mag = np.clip(np.rint(np.sqrt(dx * dx + dy * dy)), 0, 255).astype(np.int64)
    p = np.bincount(mag.ravel(), minlength=256) / mag.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def ijg_table(quality: int) -> np.ndarray:
    """The standard luminance table libjpeg writes at `quality` (jcparam.c's scaling, baseline clamp to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((STD_LUMINANCE * scale + 50) // 100, 1, 255)


def jpeg_quality(data: bytes) -> float:
    """Estimated IJG quality of a JPEG file's luminance table; NaN when `data` is not a JPEG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or not getattr(im, "quantization", None):
                return float("nan")
            table = np.sort(np.asarray(im.quantization[0], dtype=np.int64))
    except OSError:
        return float("nan")
    # Sorted values make the comparison independent of zigzag or natural order.
    errors = [np.abs(np.sort(ijg_table(q)) - table).sum() for q in range(1, 101)]
    return float(1 + int(np.argmin(errors)))


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


def phash(y: np.ndarray) -> str:
    import cv2

    small = cv2.resize(y.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    d = _dct_matrix(32)
    coeffs = (d @ small @ d.T)[:8, :8].ravel()
    bits = coeffs > np.median(coeffs)
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def weight_free_scores(img: np.ndarray) -> dict[str, float | str]:
    """Every weight-free score of one RGB image (see the module docstring); `jpeg_quality` comes from the file."""
    y = luma(img)
    entropy = gradient_entropy(y)
    return {"laplacian_var": laplacian_variance(y), "gradient_entropy": entropy, "complexity": entropy / 8.0,
            "noise_sigma": noise_sigma(y), "blockiness": blockiness(y), "phash": phash(y)}
