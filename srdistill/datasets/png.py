"""A PNG writer for shard images: 8-bit RGB, one row filter for every row, ISA-L's deflate (python-isal).

libpng with zlib (OpenCV's encoder) spends most of a 512x512 crop's encoding in zlib: ISA-L deflates the same
filtered rows several times faster for a few per cent more bytes (bench/bench_build.py --png). The file is a
plain PNG (IHDR, one IDAT holding a zlib stream, IEND) that every reader decodes; the same array, level, filter
and python-isal version give the same bytes.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

FILTERS = ("none", "sub", "up")  # PNG filter types 0, 1, 2: each a whole-array numpy operation
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def filtered_rows(img: np.ndarray, row_filter: str) -> np.ndarray:
    """The (H, 1 + 3W) scanlines PNG compresses: each row's filter type byte, then its filtered bytes (mod 256)."""
    h, w, c = img.shape
    raw = img.reshape(h, w * c)
    rows = np.empty((h, w * c + 1), dtype=np.uint8)
    rows[:, 0] = FILTERS.index(row_filter)
    if row_filter == "none":
        rows[:, 1:] = raw
    elif row_filter == "sub":  # minus the same channel of the pixel to the left (0 left of the first)
        rows[:, 1:c + 1] = raw[:, :c]
        np.subtract(raw[:, c:], raw[:, :-c], out=rows[:, c + 1:])
    else:  # up: minus the row above (0 above the first)
        rows[0, 1:] = raw[0]
        np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])
    return rows


def encode_rgb(img: np.ndarray, level: int, row_filter: str) -> bytes:
    """uint8 HxWx3 RGB -> PNG bytes, deflated by ISA-L at `level` (0-3)."""
    from isal import isal_zlib  # here, not at the top: readers of shards (the training loader) never need it

    h, w, _ = img.shape
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour, deflate, adaptive filtering, no interlace
    idat = isal_zlib.compress(filtered_rows(img, row_filter).tobytes(), level)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
