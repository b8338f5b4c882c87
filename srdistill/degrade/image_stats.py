"""Image statistics shared by `degrade diff` (on LR images) and `degrade curate` (on HR images): pure functions
on the float64 BT.601 luma `Y = 0.299 R + 0.587 G + 0.114 B` in 0..255 (unrounded, so 8-bit rounding of a grey
conversion adds no noise of its own).

Every statistic uses real pixels only (no padded border), and one that a too-small image cannot define is NaN,
never a value that would pass for a measurement:
- `noise_sigma`: Immerkaer's fast noise estimate (1996), `sqrt(pi/2) / (6 (W-2)(H-2)) * sum |Y * N|` over the
  (H-2)x(W-2) interior, `N = [[1,-2,1],[-2,4,-2],[1,-2,1]]`: the standard deviation of additive Gaussian noise
  in grey levels. NaN below 3x3.
- `laplacian_variance`: variance of the 4-neighbour Laplacian `[[0,1,0],[1,-4,1],[0,1,0]]` over the interior
  pixels. Blur lowers it sharply. NaN below 3x3.
- `blockiness`: per direction, the mean absolute step across 8-pixel block borders (between pixel 8k+7 and 8k+8)
  over the mean absolute step elsewhere, averaged over the directions where both kinds of step exist and the
  steps elsewhere are not all zero; about 1 without JPEG blocking, above 1 with it. NaN when no direction
  qualifies (an image under 9 pixels both ways, or a flat one).
"""

from __future__ import annotations

import math

import numpy as np


def luma(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> float64 HxW BT.601 luma in 0..255."""
    x = img.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def noise_sigma(y: np.ndarray) -> float:
    h, w = y.shape
    if h < 3 or w < 3:
        return float("nan")
    resp = (y[:-2, :-2] - 2 * y[:-2, 1:-1] + y[:-2, 2:]
            - 2 * y[1:-1, :-2] + 4 * y[1:-1, 1:-1] - 2 * y[1:-1, 2:]
            + y[2:, :-2] - 2 * y[2:, 1:-1] + y[2:, 2:])
    return float(math.sqrt(math.pi / 2) * np.abs(resp).sum() / (6.0 * (w - 2) * (h - 2)))


def laplacian_variance(y: np.ndarray) -> float:
    if min(y.shape) < 3:
        return float("nan")
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return float(lap.var())


def _block_ratio(steps: np.ndarray) -> float | None:
    """steps[:, i]: absolute step between columns i and i+1; None when this direction cannot be measured."""
    border = np.arange(steps.shape[1]) % 8 == 7
    if not border.any() or border.all():
        return None
    inside = steps[:, ~border].mean()
    return float(steps[:, border].mean() / inside) if inside > 0 else None


def blockiness(y: np.ndarray) -> float:
    ratios = [r for r in (_block_ratio(np.abs(np.diff(y, axis=1))), _block_ratio(np.abs(np.diff(y, axis=0)).T))
              if r is not None]
    return float(np.mean(ratios)) if ratios else float("nan")
