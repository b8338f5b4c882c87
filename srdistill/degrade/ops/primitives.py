"""Image primitives of the degradation model: float32 RGB images in [0, 1], HxWx3, on the CPU.

Each op is a pure function of its inputs (noise ops take an integer seed), and none depends on the thread
count: OpenCV's filter2D (direct or DFT), sepFilter2D and resize give the same bits with 1 or N threads
(tests/test_degrade_pipeline.py checks it), the numpy/SciPy parts are single-threaded, and DiffJPEG's BLAS
products split rows between threads, never the sums (checked the same way).

Where the Real-ESRGAN reference (torch ops in realesrgan/models/realesrgan_model.py) differs, the docstring
says how and why the difference is acceptable.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse

from srdistill.degrade.ops import diffjpeg

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
    runs as two 1-D passes. The element-wise steps work in two buffers: a 512x512 crop's temporaries cost
    more in page faults than in arithmetic.
    """
    if radius % 2 == 0:
        radius += 1
    g = cv2.getGaussianKernel(radius, sigma)[:, 0]
    blur = filter_separable(img, g)
    mask = cv2.absdiff(img, blur)
    mask *= np.float32(255.0)
    # THRESH_BINARY is `src > thresh ? 1 : 0` in float32, the same test as the reference's.
    cv2.threshold(mask, float(np.float32(threshold)), 1.0, cv2.THRESH_BINARY, dst=mask)
    soft = filter_separable(mask, g)
    sharp = np.subtract(img, blur, out=blur)
    sharp *= np.float32(weight)
    sharp += img
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


def _separable(img: np.ndarray, rows: sparse.csr_matrix, cols: sparse.csr_matrix) -> np.ndarray:
    """rows @ img @ cols.T per channel: one sparse product per axis (single-threaded, so deterministic)."""
    H, W, C = img.shape
    h, w = rows.shape[0], cols.shape[0]
    out = (rows @ img.reshape(H, W * C)).reshape(h, W, C)
    out = cols @ np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(W, h * C)
    return np.ascontiguousarray(out.reshape(w, h, C).transpose(1, 0, 2), dtype=np.float32)


def _area(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Adaptive average pooling to (h, w)."""
    H, W = img.shape[:2]
    return _separable(img, _pooling_matrix(H, h), _pooling_matrix(W, w))


def _cubic_torch(t: np.ndarray) -> np.ndarray:
    """Weights of the 4 taps x0-1 .. x0+2 at fraction t, Keys cubic with a = -0.75 (torch, OpenCV)."""
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def _scale_matrix(n: int, m: int, scale: float, mode: str) -> sparse.csr_matrix:
    """m x n interpolation matrix of F.interpolate(scale_factor=scale): output i samples (i + 0.5)/scale - 0.5,
    reads clamped to [0, n - 1] (linear also clamps negative positions to 0, and leaves an axis whose size
    does not change untouched, as torch's CPU kernel does)."""
    if mode == "bilinear" and m == n:
        return sparse.identity(n, dtype=np.float32, format="csr")
    src = (np.arange(m) + 0.5) / scale - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        x0 = np.floor(src).astype(np.int64)
        t = src - x0
        idx = np.stack([x0, x0 + 1], axis=1)
        wts = np.stack([1 - t, t], axis=1)
    else:
        x0 = np.floor(src).astype(np.int64)
        idx = x0[:, None] + np.arange(-1, 3)
        wts = _cubic_torch(src - x0)
    rows = np.repeat(np.arange(m), idx.shape[1])
    mat = sparse.csr_matrix((wts.ravel().astype(np.float32), (rows, np.clip(idx, 0, n - 1).ravel())), shape=(m, n))
    mat.sum_duplicates()
    return mat


def resize(img: np.ndarray, size: tuple[int, int], mode: str, scale: float | None = None) -> np.ndarray:
    """Resize to size (h, w) like torch's F.interpolate(mode=...) with align_corners=False and no antialias.

    - area: torch's area mode is adaptive average pooling (integer bins that may overlap); done exactly here,
      not with cv2.INTER_AREA, which weights fractional pixel areas instead. It ignores `scale`, as torch does.
    - bilinear, bicubic (a = -0.75, replicated borders): cv2 INTER_LINEAR / INTER_CUBIC agree with torch to
      float rounding (~1e-5).
    - `scale` given: F.interpolate(scale_factor=scale) semantics (the reference's stage 1; `size` is then
      floor(in * scale)): output pixel i samples input (i + 0.5) / scale - 0.5 instead of using the in/out size
      ratio. Torch's bilinear leaves an axis whose size does not change untouched; bicubic still resamples.
    """
    h, w = size
    same = (h, w) == img.shape[:2]
    if mode == "area":
        return img.copy() if same else _area(img, h, w)
    interp = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[mode]
    if scale is None or scale == 1.0 or (same and mode == "bilinear"):
        return img.copy() if same else cv2.resize(img, (w, h), interpolation=interp)
    H, W = img.shape[:2]
    # OpenCV maps with 1/fx when it derives the output size itself, as round(in * fx) (>= floor); but it copies
    # when that size equals the input's, it cannot be smaller than asked (a 1-pixel minimum) and it has no
    # per-axis identity: then the interpolation matrices, exact but slower (rare: scale within ~1/size of 1).
    dh, dw = round(H * scale), round(W * scale)
    if (dh, dw) == (H, W) or dh < h or dw < w or (mode == "bilinear" and (h == H or w == W)):
        return _separable(img, _scale_matrix(H, h, scale, mode), _scale_matrix(W, w, scale, mode))
    out = cv2.resize(img, (0, 0), fx=scale, fy=scale, interpolation=interp)
    return np.ascontiguousarray(out[:h, :w])


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
    noise = Poisson(levels/255 * vals) / vals - levels/255.

    vals is a power of two, so levels / (255 / vals) is levels/255 * vals to the bit, and dividing the rate by
    vals gives back levels/255 exactly: the same float64 values in one buffer, where the formula takes three.
    """
    levels = x * np.float32(255.0)
    np.rint(levels, out=levels)
    np.clip(levels, 0, 255, out=levels)
    levels = levels.astype(np.uint8)
    count = int(np.count_nonzero(cv2.calcHist([levels.reshape(-1, 1)], [0], None, [256], [0, 256])))
    vals = 2.0 ** np.ceil(np.log2(count))
    rate = levels.astype(np.float64)
    rate /= 255.0 / vals
    noise = rng.poisson(rate) / vals
    rate /= vals
    noise -= rate
    return noise.astype(np.float32)


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


def jpeg(img: np.ndarray, quality: float, codec: str) -> np.ndarray:
    """JPEG round trip with the named codec: `diffjpeg` (the reference's model, real-valued quality, float in
    and out; see degrade/ops/diffjpeg.py) or `libjpeg` (the real codec; quality rounded to an integer)."""
    if codec == "diffjpeg":
        return diffjpeg.diffjpeg(img, quality)
    if codec == "libjpeg":
        return libjpeg(img, round(quality))
    raise ValueError(f"unknown JPEG codec {codec!r}")


def libjpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Clip, quantise to uint8, JPEG-encode (baseline, 4:2:0, libjpeg-turbo via OpenCV) and decode.

    Unlike the reference's DiffJPEG, this is the codec real-world JPEG artefacts come from: integer qualities,
    rounded tables, a uint8 round trip, smooth (not repeated) chroma up-sampling and edge (not zero) padding
    of partial blocks.
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
