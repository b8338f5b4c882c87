"""Image primitives of the degradation model: float32 RGB images in [0, 1], HxWx3, on the CPU.

Each op is a pure function of its inputs (noise ops take an integer seed), and none depends on the thread
count: OpenCV's filter2D (direct or DFT), sepFilter2D and resize give the same bits with 1 or N threads
(tests/test_degrade_pipeline.py checks it), and the numpy/SciPy parts are single-threaded.

Where the Real-ESRGAN reference (torch ops in realesrgan/models/realesrgan_model.py) differs, the docstring
says how and why the difference is acceptable.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse

_BORDER = cv2.BORDER_REFLECT_101  # torch's F.pad(mode="reflect"), used by basicsr's filter2D
_GRAY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale weights, used by the reference's gray Poisson noise


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return img.astype(np.float32) / np.float32(255.0)


def quantize(img: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8: clip(round(x * 255)), round half to even like torch.round."""
    return np.clip(np.rint(img * np.float32(255.0)), 0, 255).astype(np.uint8)


def filter_2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with an odd-sized kernel, reflect-101 borders (basicsr filter2D).

    The reference zero-pads every kernel to 21x21 first; that only widens the reflect padding and leaves the
    result unchanged, so kernels are used at their own size here.
    """
    return cv2.filter2D(img, -1, kernel.astype(np.float32), borderType=_BORDER)


def filter_separable(img: np.ndarray, k1d: np.ndarray) -> np.ndarray:
    """filter_2d with the kernel outer(k1d, k1d), done as two 1-D passes (same values up to float rounding)."""
    k = k1d.astype(np.float32)
    return cv2.sepFilter2D(img, -1, k, k, borderType=_BORDER)


def usm_sharpen(img: np.ndarray, radius: int, sigma: float, weight: float, threshold: float) -> np.ndarray:
    """Real-ESRGAN's USMSharp: blend towards img + weight*(img - blur) where the residual exceeds the threshold.

    soft_mask = blur(|img - blur(img)| * 255 > threshold); out = img + soft_mask * (clip(sharp) - img), which is
    the reference's soft_mask * sharp + (1 - soft_mask) * img rearranged. The 2-D Gaussian is separable, so it
    runs as two 1-D passes.
    """
    if radius % 2 == 0:
        radius += 1
    g = cv2.getGaussianKernel(radius, sigma)[:, 0]
    blur = filter_separable(img, g)
    residual = img - blur
    mask = (np.abs(residual) * np.float32(255.0) > np.float32(threshold)).astype(np.float32)
    soft = filter_separable(mask, g)
    sharp = img + np.float32(weight) * residual
    np.clip(sharp, 0.0, 1.0, out=sharp)
    sharp -= img
    sharp *= soft
    sharp += img
    return sharp


def _pooling_matrix(n: int, m: int) -> sparse.csr_matrix:
    """m x n averaging matrix of torch's adaptive_avg_pool: row i averages [floor(i*n/m), ceil((i+1)*n/m))."""
    i = np.arange(m)
    start = (i * n) // m
    count = -((-(i + 1) * n) // m) - start
    offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    cols = np.repeat(start, count) + offsets
    vals = np.repeat((1.0 / count).astype(np.float32), count)
    return sparse.csr_matrix((vals, (np.repeat(i, count), cols)), shape=(m, n))


def _area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Adaptive average pooling to (h, w), one sparse product per axis (single-threaded, so deterministic)."""
    H, W, C = img.shape
    rows = (_pooling_matrix(H, h) @ img.reshape(H, W * C)).reshape(h, W, C)
    cols = _pooling_matrix(W, w) @ np.ascontiguousarray(rows.transpose(1, 0, 2)).reshape(W, h * C)
    return np.ascontiguousarray(cols.reshape(w, h, C).transpose(1, 0, 2), dtype=np.float32)


def resize(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize to size (h, w) like torch's F.interpolate(mode=...) with align_corners=False and no antialias.

    - area: torch's area mode is adaptive average pooling (integer bins that may overlap); done exactly here,
      not with cv2.INTER_AREA, which weights fractional pixel areas instead.
    - bilinear, bicubic (a = -0.75, replicated borders): cv2 INTER_LINEAR / INTER_CUBIC agree with torch to
      float rounding (~1e-5). When torch gets a scale_factor (stage 1) it maps coordinates with 1/scale_factor
      rather than in/out size; the two differ by less than one output pixel across the whole image.
    """
    h, w = size
    if (h, w) == img.shape[:2]:
        return img.copy()  # every torch mode is the identity at the same size
    if mode == "area":
        return _area(img, h, w)
    interp = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[mode]
    return cv2.resize(img, (w, h), interpolation=interp)


def add_gaussian_noise(img: np.ndarray, sigma: float, gray: bool, seed: int) -> np.ndarray:
    """img + N(0, sigma/255) per pixel (one field shared by the 3 channels when gray), clipped to [0, 1]."""
    rng = np.random.Generator(np.random.PCG64(seed))
    h, w = img.shape[:2]
    noise = rng.standard_normal((h, w, 1) if gray else (h, w, 3), dtype=np.float32)
    noise *= np.float32(sigma / 255.0)
    out = img + noise
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _poisson_field(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot noise of the reference: levels = round(x*255); vals = 2^ceil(log2(#distinct levels));
    noise = Poisson(levels/255 * vals) / vals - levels/255."""
    levels = np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)
    count = int(np.count_nonzero(np.bincount(levels.ravel(), minlength=256)))
    vals = 2.0 ** np.ceil(np.log2(count))
    rounded = levels.astype(np.float64) / 255.0
    out = rng.poisson(rounded * vals) / vals
    return (out - rounded).astype(np.float32)


def add_poisson_noise(img: np.ndarray, scale: float, gray: bool, seed: int) -> np.ndarray:
    """img + scale * Poisson shot noise (computed on the gray image and shared by the channels when gray),
    clipped to [0, 1]."""
    rng = np.random.Generator(np.random.PCG64(seed))
    if gray:
        r, g, b = (np.float32(c) for c in _GRAY)
        src = (r * img[..., 0] + g * img[..., 1] + b * img[..., 2])[..., None]
    else:
        src = img
    noise = _poisson_field(src, rng)
    noise *= np.float32(scale)
    out = img + noise
    np.clip(out, 0.0, 1.0, out=out)
    return out


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Clip, quantise to uint8, JPEG-encode (baseline, 4:2:0, libjpeg-turbo via OpenCV) and decode.

    The reference uses basicsr's DiffJPEG (same YCbCr 4:2:0 + standard tables scaled by quality, in float on
    the GPU, fractional quality, no uint8 rounding of the input or output). Here the codec is the real one,
    which is what real-world JPEG artefacts come from, so integer qualities and the uint8 round trip are
    acceptable (and deterministic).
    """
    bgr = cv2.cvtColor(quantize(img), cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY, int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
        cv2.IMWRITE_JPEG_OPTIMIZE, 0,
        cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
    ]
    ok, buf = cv2.imencode(".jpg", bgr, params)
    if not ok:
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return to_float(cv2.cvtColor(dec, cv2.COLOR_BGR2RGB))


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB imresize, PIL BICUBIC)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return np.where(ax <= 1, 1.5 * ax3 - 2.5 * ax2 + 1,
                    np.where(ax < 2, -0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2, 0.0))


def bicubic_taps(scale: int) -> tuple[int, np.ndarray]:
    """For an integer downscale: first tap offset j0 and normalised weights; output i reads input s*i + j0 + t.

    The antialiased kernel is cubic(d / s) / s over input distance d from the output centre s*i + (s-1)/2.
    """
    centre = (scale - 1) / 2.0
    j = np.arange(int(np.floor(centre - 2 * scale)), int(np.ceil(centre + 2 * scale)) + 1)
    w = _cubic((centre - j) / scale) / scale
    nz = np.flatnonzero(w)  # trim the zero end taps only: interior zeros (|d| = s) keep the taps contiguous
    j, w = j[nz[0]:nz[-1] + 1], w[nz[0]:nz[-1] + 1]
    return int(j[0]), w / w.sum()


def _downsample_axis(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    j0, w = bicubic_taps(scale)
    n = x.shape[axis]
    m = n // scale
    pad_lo = max(0, -j0)
    pad_hi = max(0, scale * (m - 1) + j0 + len(w) - n)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (pad_lo, pad_hi)
    xp = np.pad(x, pad, mode="symmetric")
    out = np.zeros(x.shape[:axis] + (m,) + x.shape[axis + 1:], dtype=np.float64)
    for t, wt in enumerate(w):
        start = j0 + t + pad_lo
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(start, start + scale * (m - 1) + 1, scale)
        out += wt * xp[tuple(sl)]
    return out


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB imresize(img, 1/scale, 'bicubic') for an integer scale: antialiased Keys cubic (a = -0.5),
    symmetric (edge-repeating) borders, separable, in float64. Returns float32."""
    return _downsample_axis(_downsample_axis(img.astype(np.float64), scale, 0), scale, 1).astype(np.float32)
