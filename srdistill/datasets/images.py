"""Reading any image into uint8 RGB, and the deterministic PNG codec used inside shards.

Conversion policy (applied by `read_rgb`):
- grayscale (L, LA, 1-bit) is replicated to three channels;
- palette images are expanded through their palette;
- alpha is dropped, keeping the stored colour, as OpenCV's imread (Real-ESRGAN's reader) does;
- 16-bit images keep their high byte (Pillow's rule for 16-bit RGB, applied to 16-bit gray too);
- CMYK / YCbCr / LAB / HSV go through Pillow's conversion to RGB;
- the EXIF orientation tag is applied, as OpenCV's imread does;
- 32-bit integer and float images are refused (their value range is unknown).
Anything that cannot be decoded completely raises `BadImage` with a short reason.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srdistill.datasets import png

# 64 MiP: a decoded image of this size is 192 MiB of uint8 RGB, which keeps a worker well under 1 GiB.
DEFAULT_MAX_PIXELS = 64 * 2**20

_PNG_STRATEGIES = {"default": cv2.IMWRITE_PNG_STRATEGY_DEFAULT, "rle": cv2.IMWRITE_PNG_STRATEGY_RLE,
                   "huffman": cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY}
_PNG_FILTERS = {"adaptive": cv2.IMWRITE_PNG_ALL_FILTERS, "none": cv2.IMWRITE_PNG_FILTER_NONE,
                "sub": cv2.IMWRITE_PNG_FILTER_SUB, "up": cv2.IMWRITE_PNG_FILTER_UP, "avg": cv2.IMWRITE_PNG_FILTER_AVG}


@dataclass(frozen=True)
class PngEncoding:
    """How PNG bytes are made, fixed per use so the same array gives the same bytes: the deflate library (`zlib`:
    libpng and zlib through OpenCV; `isal`: datasets/png.py with ISA-L), its level, zlib's strategy (zlib only)
    and the PNG row filter."""

    level: int
    strategy: str
    filter: str
    deflate: str = "zlib"

    def params(self) -> list[int]:
        return [cv2.IMWRITE_PNG_COMPRESSION, self.level, cv2.IMWRITE_PNG_STRATEGY, _PNG_STRATEGIES[self.strategy],
                cv2.IMWRITE_PNG_FILTER, _PNG_FILTERS[self.filter]]

    def record(self) -> dict:
        if self.deflate == "isal":
            return {"format": "png", "deflate": f"isal {_isal_version()}", "deflate_level": self.level,
                    "row_filter": self.filter}
        return {"format": "png", "zlib_level": self.level, "zlib_strategy": self.strategy, "row_filter": self.filter}


def describe_encoding(record: dict | None) -> str:
    """A manifest's or shard record's `image_encoding` in words; older builds recorded none."""
    if not record:
        return "an encoding an older srdistill did not record"
    if "deflate" in record:
        return f"{record['deflate']} level {record.get('deflate_level')}, {record.get('row_filter')} rows"
    return (f"zlib level {record.get('zlib_level')}, {record.get('zlib_strategy')} strategy, "
            f"{record.get('row_filter')} rows")


def _isal_version() -> str:
    import isal

    return isal.__version__


# Image files (prepared benchmarks, patches, grids): level 3, close to level 9 in size on photos and several
# times faster.
FILE_PNG = PngEncoding(3, "default", "adaptive")
# Inside shards: Up-filtered rows deflated by ISA-L at level 1. On the sample's 512x512 crops (HR + LR) it
# encodes 3.7x faster than libpng's fastest useful setting (zlib level 1, RLE strategy, Average rows: the shards'
# encoding before) for 5% more bytes, and decodes faster (bench/bench_build.py --png). The bytes depend on the
# python-isal version, which the manifest records; the pixels do not.
SHARD_PNG = PngEncoding(1, "default", "up", deflate="isal")

_MODES_TO_RGB = {"RGB", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "1"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


class BadImage(Exception):
    """A source file that cannot become an RGB training image; the message is the reason recorded in the manifest."""


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the header alone; raises BadImage for data that is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except UnidentifiedImageError as exc:
        raise BadImage("not an image (no known image format)") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses such a header before giving its size (its limit is above DEFAULT_MAX_PIXELS).
        raise BadImage(f"too large: over {2 * Image.MAX_IMAGE_PIXELS} pixels, Pillow's decompression-bomb limit") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"not an image ({_short(exc)})") from exc
    return height, width


def read_rgb(path_or_bytes: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file (path or bytes) into a uint8 HxWx3 RGB array following the module's conversion policy."""
    data = _read_bytes(path_or_bytes)
    if not data:
        raise BadImage("empty file")
    height, width = image_size(data)
    if height * width > max_pixels:
        raise BadImage(f"too large: {width}x{height} pixels is over the limit of {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(f"corrupt or truncated image ({_short(exc)})") from exc


def encode_png(img: np.ndarray, encoding: PngEncoding = FILE_PNG) -> bytes:
    """uint8 HxWx3 RGB -> PNG bytes; same array and encoding, same bytes."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_png expects uint8 HxWx3, got {img.dtype} {img.shape}")
    if encoding.deflate == "isal":
        return png.encode_rgb(np.ascontiguousarray(img), encoding.level, encoding.filter)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), encoding.params())
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes written by `encode_png` -> uint8 HxWx3 RGB; raises BadImage if they do not decode."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise BadImage("PNG does not decode")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def _read_bytes(path_or_bytes: str | os.PathLike | bytes) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    try:
        return Path(path_or_bytes).read_bytes()
    except OSError as exc:
        raise BadImage(f"unreadable path ({exc.strerror or type(exc).__name__})") from exc


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and _is_16bit_range(im)):
        arr = np.asarray(im).astype(np.uint32) >> 8
        gray = arr.astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode not in _MODES_TO_RGB:
        raise BadImage(f"unsupported pixel format {mode}")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _is_16bit_range(im: Image.Image) -> bool:
    lo, hi = im.getextrema()
    if lo < 0 or hi > 65535:
        raise BadImage("unsupported pixel format: 32-bit integer values")
    return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
