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
tensordot, and the colour transforms and pooling are OpenCV's per-pixel kernels, so the results agree with
the reference to float rounding (a coefficient that lies within float rounding of a rounding boundary may
round the other way: a rare single-block difference). The blocks of the three planes are gathered into one
array straight from the strided planes and written back into one YCbCr image, with no per-plane copies. The
separable form (two 8x8 products per block) would be cheaper but sums in another order, so it would change
numbers that shards already hold; so would one product over all planes (BLAS's order depends on the row count).
"""

from __future__ import annotations

import cv2
import numpy as np
from threadpoolctl import ThreadpoolController

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


# OpenBLAS splits a product over its threads in a way that changes float rounding, so the block products run on
# one BLAS thread whatever the process allows (Ray's workers already have one): the same bytes everywhere.
_BLAS = ThreadpoolController()


def _blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> the view of its 8x8 blocks as (H/8, W/8, 8, 8), row-major over blocks."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def _code_blocks(blocks: np.ndarray, planes: list[tuple[slice, np.ndarray]]) -> np.ndarray:
    """DCT, quantise (the one rounding), dequantise and inverse-DCT rows of 64 block pixels, in place: `planes`
    gives each plane's run of rows and its quantisation table. Each plane is its own pair of (blocks, 64) x
    (64, 64) products: BLAS's summation order depends on the row count, so a product over several planes at
    once would round differently."""
    with _BLAS.limit(limits=1, user_api="blas"):
        return _code_blocks_one_thread(blocks, planes)


def _code_blocks_one_thread(blocks: np.ndarray, planes: list[tuple[slice, np.ndarray]]) -> np.ndarray:
    blocks -= np.float32(128.0)
    coef = np.empty_like(blocks)
    for rows, _ in planes:
        np.matmul(blocks[rows], _DCT, out=coef[rows])
    coef *= _DCT_SCALE
    for rows, table in planes:
        part = coef[rows]
        part /= table
        np.rint(part, out=part)
        part *= table
    coef *= _IDCT_ALPHA
    for rows, _ in planes:
        np.matmul(coef[rows], _IDCT, out=blocks[rows])
    blocks *= np.float32(0.25)
    blocks += np.float32(128.0)
    return blocks


def diffjpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Compress and decompress a float RGB image (HxWx3, values clamped to [0, 1] first, as the reference's
    feed_data does before every JPEG) at a real-valued quality in (0, 100); float32 HxWx3 in [0, 1]."""
    h, w = img.shape[:2]
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    x = np.empty((ph, pw, 3), dtype=np.float32)
    x[h:], x[:h, w:] = 0.0, 0.0
    np.clip(img, 0.0, 1.0, out=x[:h, :w])
    x *= np.float32(255.0)
    ycc = cv2.transform(x, _FORWARD)
    # 2x2 averages of Cb, Cr: OpenCV's exact-halving area path on all three channels (its per-channel sums are
    # those of the two-channel call the reference port was checked with; the one-channel path adds in another
    # order), Y's average unused.
    pooled = cv2.resize(ycc, (pw // 2, ph // 2), interpolation=cv2.INTER_AREA)

    # The blocks of the three planes in one (blocks, 64) array, gathered straight from the strided planes.
    ny, nc = (ph // 8) * (pw // 8), (ph // 16) * (pw // 16)
    planes = [slice(0, ny), slice(ny, ny + nc), slice(ny + nc, ny + 2 * nc)]
    blocks = np.empty((ny + 2 * nc, 64), dtype=np.float32)
    for c, (rows, src) in enumerate(zip(planes, (ycc, pooled, pooled))):
        hh, ww = src.shape[:2]
        blocks[rows].reshape(hh // 8, ww // 8, 8, 8)[...] = _blocks(src[..., c])
    factor = quality_factor(quality)
    y_table, c_table = _Y_TABLE * factor, _C_TABLE * factor
    out = _code_blocks(blocks, [(planes[0], y_table), (planes[1], c_table), (planes[2], c_table)])
    out[ny:] -= np.float32(128.0)

    # Back to pixels in one YCbCr image: Y block by block; Cb, Cr as one half-size image whose samples OpenCV's
    # nearest-neighbour resize repeats 2x2 (a copy, no arithmetic), moved into the image's chroma channels.
    ycc[..., 0].reshape(ph // 8, 8, pw // 8, 8)[...] = _blocks_back(out[planes[0]], ph // 8, pw // 8)
    chroma = np.empty((ph // 2, pw // 2, 2), dtype=np.float32)
    for c in (1, 2):
        chroma[..., c - 1].reshape(ph // 16, 8, pw // 16, 8)[...] = _blocks_back(out[planes[c]], ph // 16, pw // 16)
    cv2.mixChannels([cv2.resize(chroma, (pw, ph), interpolation=cv2.INTER_NEAREST)], [ycc], [0, 1, 1, 2])
    rgb = cv2.transform(ycc, _INVERSE)
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return np.divide(rgb[:h, :w], np.float32(255.0))


def _blocks_back(rows: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """(bh * bw, 64) rows of blocks -> the (bh, 8, bw, 8) view that reshapes to their (8 bh, 8 bw) plane."""
    return rows.reshape(bh, bw, 8, 8).transpose(0, 2, 1, 3)
