"""Colour degradations: chroma subsampling as codecs do it, and colour quantisation with dithering.

chroma_subsample converts to Y'CbCr, halves the chroma resolution with an encoder's filter, brings it back with
a decoder's upsampling and converts back, in float32 with no 8-bit rounding (that belongs to the codec ops), so
luma is untouched and a grey image comes back unchanged. color_quantize reduces each channel to 2**bits levels,
plain, with Bayer's ordered dither or with Floyd-Steinberg error diffusion.
"""

from __future__ import annotations

import numpy as np

from srdistill.degrade.ops.opdef import Op, OpContext, Param, register

# Luma weights (Kr, Kb) of the two matrices encoders use: BT.601 (JFIF/JPEG, SD video) and BT.709 (HD video).
KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def rgb_to_ycbcr(img: np.ndarray, matrix: str) -> np.ndarray:
    """Full-range Y'CbCr with Cb, Cr centred on 0: Y = Kr R + Kg G + Kb B, Cb = (B - Y) / (2 (1 - Kb)),
    Cr = (R - Y) / (2 (1 - Kr)) (ITU-R BT.601 / BT.709 with their own Kr, Kb)."""
    kr, kb = KR_KB[matrix]
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b
    return np.stack([y, (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))], axis=-1)


def ycbcr_to_rgb(ycc: np.ndarray, matrix: str) -> np.ndarray:
    kr, kb = KR_KB[matrix]
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.stack([r, g, b], axis=-1)


def _take(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    return np.take(x, np.clip(idx, 0, x.shape[axis] - 1), axis=axis)


def down2(x: np.ndarray, axis: int, siting: str) -> np.ndarray:
    """Halve one axis (ceil(n / 2) samples, edges replicated as encoders pad).
    centre: box average of each pair (libjpeg's h2v1/h2v2 downsampling; chroma sited between the pair).
    left: [1, 2, 1] / 4 centred on the even sample (chroma co-sited with it, MPEG-2 / H.264 / HEVC's default
    horizontal chroma location)."""
    n = x.shape[axis]
    even = np.arange(0, n, 2)
    if siting == "centre":
        return (_take(x, even, axis) + _take(x, even + 1, axis)) / 2
    return (_take(x, even - 1, axis) + 2 * _take(x, even, axis) + _take(x, even + 1, axis)) / 4


def up2(c: np.ndarray, n: int, axis: int, siting: str, up: str) -> np.ndarray:
    """Back to n samples along one axis.
    nearest: each chroma sample repeated (libjpeg with do_fancy_upsampling off; DiffJPEG).
    fancy, centre-sited: libjpeg's triangle filter, output 2i = 3/4 c[i] + 1/4 c[i-1], 2i + 1 = 3/4 c[i] +
    1/4 c[i+1], ends replicated. fancy, left-sited: linear interpolation, 2i = c[i], 2i + 1 = (c[i] + c[i+1]) / 2."""
    m = c.shape[axis]
    i = np.arange(m)
    if up == "nearest":
        even, odd = c, c
    elif siting == "centre":
        even = 0.75 * c + 0.25 * _take(c, i - 1, axis)
        odd = 0.75 * c + 0.25 * _take(c, i + 1, axis)
    else:
        even, odd = c, (c + _take(c, i + 1, axis)) / 2
    out = np.stack([even, odd], axis=axis + 1)
    shape = list(c.shape)
    shape[axis] = 2 * m
    return np.take(out.reshape(shape), np.arange(n), axis=axis)


def chroma_subsample_image(img: np.ndarray, layout: str, siting: str, up: str, matrix: str) -> np.ndarray:
    ycc = rgb_to_ycbcr(img, matrix)
    h, w = img.shape[:2]
    chroma = ycc[..., 1:]
    c = down2(chroma, 1, siting)
    c = up2(c, w, 1, siting, up)
    if layout == "4:2:0":  # vertically, chroma is sited between the two rows in every codec
        c = up2(down2(c, 0, "centre"), h, 0, "centre", up)
    ycc = np.concatenate([ycc[..., :1], c], axis=-1)
    return ycbcr_to_rgb(ycc, matrix).astype(np.float32)


def chroma_subsample(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return chroma_subsample_image(img, values["layout"], values["siting"], values["upsampling"], values["matrix"])


def bayer_matrix(n: int) -> np.ndarray:
    """Bayer's n x n (n a power of 2) threshold indices 0 .. n*n - 1: M_2n = [[4M, 4M+2], [4M+3, 4M+1]]."""
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < n:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return m


def _levels(x: np.ndarray, n: int) -> np.ndarray:
    return np.clip(np.rint(x * (n - 1)), 0, n - 1)  # nearest level, half to even


def floyd_steinberg(img: np.ndarray, n: int) -> np.ndarray:
    """Floyd-Steinberg (1976) error diffusion to n levels per channel, raster order: each pixel's error goes
    7/16 right, 3/16 down-left, 5/16 down, 1/16 down-right (lost past the borders). Pixels on one anti-diagonal
    x + 2y = t depend only on earlier ones, so each is a vector step; the contributions reach a pixel in the
    raster order's sequence (1/16, 5/16, 3/16, 7/16), so the float64 sums are the sequential algorithm's."""
    h, w, ch = img.shape
    buf = np.zeros((h + 1, w + 2, ch), dtype=np.float64)  # one guard row below, one guard column each side
    buf[:h, 1:w + 1] = img
    out = np.empty((h, w, ch), dtype=np.float64)
    y_all = np.arange(h)
    for t in range(w + 2 * (h - 1)):
        x_all = t - 2 * y_all
        ok = (x_all >= 0) & (x_all < w)
        ys, xs = y_all[ok], x_all[ok] + 1  # xs: column in buf
        v = buf[ys, xs]
        q = _levels(v, n) / (n - 1)
        out[ys, xs - 1] = q
        e = v - q
        buf[ys + 1, xs - 1] += e * (3 / 16)
        buf[ys + 1, xs] += e * (5 / 16)
        buf[ys + 1, xs + 1] += e * (1 / 16)
        buf[ys, xs + 1] += e * (7 / 16)
    return out


def color_quantize_image(img: np.ndarray, bits: int, dither: str) -> np.ndarray:
    n = 2 ** int(bits)
    x = np.clip(img.astype(np.float64), 0.0, 1.0)
    if dither == "none":
        q = _levels(x, n)
    elif dither == "ordered":
        b = bayer_matrix(8)
        h, w = x.shape[:2]
        t = (b[np.arange(h)[:, None] % 8, np.arange(w)[None, :] % 8] + 0.5) / 64
        q = np.minimum(np.floor(x * (n - 1) + t[..., None]), n - 1)
    else:
        return floyd_steinberg(x, n).astype(np.float32)
    return (q / (n - 1)).astype(np.float32)


def color_quantize(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return color_quantize_image(img, values["bits"], values["dither"])


register(Op(
    name="chroma_subsample",
    params=(
        Param("layout", str, "4:2:0", choices=("4:2:0", "4:2:2"),
              doc="4:2:0 halves chroma both ways, 4:2:2 horizontally only"),
        Param("siting", str, "centre", choices=("centre", "left"),
              doc="horizontal chroma siting and its down filter: centre = box average (libjpeg), left = "
                  "[1 2 1]/4 co-sited (MPEG-2/H.264/HEVC)"),
        Param("upsampling", str, "fancy", choices=("nearest", "fancy"),
              doc="decoder upsampling: nearest = replicate, fancy = libjpeg's triangle filter (linear when "
                  "left-sited)"),
        Param("matrix", str, "bt601", choices=tuple(KR_KB), doc="Y'CbCr matrix: bt601 (JPEG, SD) or bt709 (HD)"),
    ),
    apply=chroma_subsample,
    summary="chroma subsampling alone: Y'CbCr, chroma down by an encoder's filter and up by a decoder's, luma "
            "untouched (float, no 8-bit rounding)",
    source="ITU-R BT.601 / BT.709 matrices; libjpeg-turbo 3 jcsample.c (box) / jdsample.c (fancy triangle); "
           "MPEG-2/H.264 left chroma siting",
    overshoots="a chroma sample averaged over pixels of different colours maps back outside the RGB cube "
               "(float, unclamped, as a decoder before its final clip)",
))

register(Op(
    name="color_quantize",
    params=(
        Param("bits", int, {"randint": [3, 6]}, range=(1, 8), doc="bits per channel: 2**bits levels over [0, 1]"),
        Param("dither", str, {"choice": ["none", "ordered", "floyd_steinberg"]},
              choices=("none", "ordered", "floyd_steinberg"),
              doc="none = nearest level; ordered = 8x8 Bayer thresholds; floyd_steinberg = error diffusion"),
    ),
    apply=color_quantize,
    summary="colour quantisation to 2**bits levels per channel, plain or dithered",
    source="Bayer 1973 (ordered dither matrix); Floyd & Steinberg 1976 (error diffusion, raster order)",
))
