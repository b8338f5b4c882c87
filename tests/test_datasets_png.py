"""The shard PNG writer (datasets/png.py) against the PNG specification, read back by independent decoders.

The expected scanlines are computed here from the spec's filter definitions (section 9.2: Sub subtracts the
same byte of the pixel to the left, Up the byte above, both mod 256, zero outside the image), pixel by pixel in
plain Python; the chunks are parsed and their CRCs checked by hand, then Pillow and OpenCV decode the file."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from srdistill.datasets.png import FILTERS, encode_rgb

FILTER_TYPE = {"none": 0, "sub": 1, "up": 2}


def _expected_scanlines(img: np.ndarray, row_filter: str) -> bytes:
    h, w, c = img.shape
    raw = img.reshape(h, w * c).tolist()
    out = bytearray()
    for y in range(h):
        out.append(FILTER_TYPE[row_filter])
        for x in range(w * c):
            left = raw[y][x - c] if x >= c else 0
            up = raw[y - 1][x] if y > 0 else 0
            prior = {"none": 0, "sub": left, "up": up}[row_filter]
            out.append((raw[y][x] - prior) % 256)
    return bytes(out)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC on {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("row_filter", FILTERS)
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (7, 1, 3), (13, 17, 3)])
def test_file_follows_the_spec_and_decodes_everywhere(row_filter, shape):
    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_rgb(img, 1, row_filter)
    chunks = _chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks[0][1] == struct.pack(">IIBBBBB", shape[1], shape[0], 8, 2, 0, 0, 0)
    assert zlib.decompress(chunks[1][1]) == _expected_scanlines(img, row_filter)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), img)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(bgr[..., ::-1].reshape(shape), img)


def test_same_pixels_same_bytes_whatever_the_array_layout():
    img = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    view = np.asfortranarray(img)  # same pixels, another memory layout
    assert encode_rgb(np.ascontiguousarray(view), 1, "up") == encode_rgb(img, 1, "up") == encode_rgb(img.copy(), 1, "up")


def test_the_level_reaches_the_deflater():
    y, x = np.mgrid[0:128, 0:128]
    img = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.uint8)
    sizes = [len(encode_rgb(img, level, "up")) for level in (0, 1)]
    assert sizes[1] < sizes[0] < img.size  # level 1 finds matches that level 0 leaves
