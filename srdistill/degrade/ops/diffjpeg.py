"""The JPEG model of the Real-ESRGAN reference (basicsr's DiffJPEG, differentiable=False), in numpy float32.

It is not libjpeg, and its differences shape the LR distribution, so each is kept:
- quality -> factor: 5000/q below 50, else 200 - 2q, over 100, for a real-valued q; the standard tables are
  scaled by the factor and used unrounded (no 1..255 clamp), and the luma table is used transposed;
- the image is zero-padded at the bottom/right to multiples of 16 (those blocks ring towards black);
- YCbCr with JFIF coefficients on 0..255 floats, never rounded to integers before or after coding;
- chroma 4:2:0 by 2x2 averaging, and back up by repeating each chroma sample 2x2 (libjpeg's decoder
  interpolates instead, which keeps less chroma variance);
- the only rounding is of the quantised DCT coefficients (round half to even, as torch.round); the output is
  clamped to [0, 255] and returned in [0, 1] as float.

The 8x8 DCT is one (blocks, 64) x (64, 64) product per plane, the same contraction as the reference's
tensordot, and the colour transforms, pooling and repetition are OpenCV's per-pixel kernels, so the results
agree with the reference to float rounding (a coefficient that lies within float rounding of a rounding
boundary may round the other way: a rare single-block difference).
"""

from __future__ import annotations

import cv2
import numpy as np

# The reference's tables: luma transposed, chroma 99 outside its top-left 4x4 (also transposed, symmetric).
_Y_TABLE = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
     [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float32).T.reshape(64)
_C_TABLE = np.full((8, 8), 99, dtype=np.float32)
_C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T
_C_TABLE = _C_TABLE.reshape(64)

# Colour transforms as OpenCV transform matrices (rows = output channels; the forward one adds the shift).
_FORWARD = np.array([[0.299, 0.587, 0.114, 0.0], [-0.168736, -0.331264, 0.5, 128.0],
                     [0.5, -0.418688, -0.081312, 128.0]], dtype=np.float32)
_INVERSE = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32)


def _dct_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(forward basis, forward scale, inverse alpha, inverse basis), each flattened over (row, col) of a block."""
    n = np.arange(8)
    fwd = np.cos((2 * n[:, None] + 1) * n[None, :] * np.pi / 16)  # [x, u]
    inv = fwd.T  # [u, x]: cos((2x + 1) u pi / 16) indexed the other way round
    alpha = np.array([1.0 / np.sqrt(2)] + [1.0] * 7)
    basis = np.einsum("xu,yv->xyuv", fwd, fwd).astype(np.float32).reshape(64, 64)
    ibasis = np.einsum("xu,yv->xyuv", inv, inv).astype(np.float32).reshape(64, 64)
    return basis, (np.outer(alpha, alpha) * 0.25).astype(np.float32).reshape(64), \
        np.outer(alpha, alpha).astype(np.float32).reshape(64), ibasis


_DCT, _DCT_SCALE, _IDCT_ALPHA, _IDCT = _dct_matrices()


def quality_factor(quality: float) -> np.float32:
    """The reference's quality_to_factor in float32: (5000/q if q < 50 else 200 - 2q) / 100."""
    q = np.float32(quality)
    f = np.float32(5000.0) / q if q < 50 else np.float32(200.0) - q * np.float32(2.0)
    return f / np.float32(100.0)


def _code_plane(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """DCT, quantise (the one rounding), dequantise and inverse-DCT every 8x8 block of a plane."""
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    blocks = blocks - np.float32(128.0)
    coef = blocks @ _DCT
    coef *= _DCT_SCALE
    coef /= table
    np.rint(coef, out=coef)
    coef *= table
    coef *= _IDCT_ALPHA
    out = coef @ _IDCT
    out *= np.float32(0.25)
    out += np.float32(128.0)
    return out.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w)


def diffjpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Compress and decompress a float RGB image (HxWx3, values clamped to [0, 1] first, as the reference's
    feed_data does before every JPEG) at a real-valued quality in (0, 100); float32 HxWx3 in [0, 1]."""
    h, w = img.shape[:2]
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    x = np.zeros((ph, pw, 3), dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=x[:h, :w])
    x *= np.float32(255.0)
    ycc = cv2.transform(x, _FORWARD)

    factor = quality_factor(quality)
    y = _code_plane(np.ascontiguousarray(ycc[..., 0]), _Y_TABLE * factor)
    # 2x2 averages of Cb, Cr (OpenCV's exact-halving area path), coded, then each sample repeated 2x2
    pooled = cv2.resize(np.ascontiguousarray(ycc[..., 1:]), (pw // 2, ph // 2), interpolation=cv2.INTER_AREA)
    c_table = _C_TABLE * factor
    chroma = np.dstack([_code_plane(np.ascontiguousarray(pooled[..., c]), c_table) for c in (0, 1)])
    chroma -= np.float32(128.0)
    chroma = cv2.resize(chroma, (pw, ph), interpolation=cv2.INTER_NEAREST)
    rgb = cv2.transform(cv2.merge([y, chroma[..., 0], chroma[..., 1]]), _INVERSE)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    rgb = rgb[:h, :w]
    rgb /= np.float32(255.0)
    return np.ascontiguousarray(rgb)
