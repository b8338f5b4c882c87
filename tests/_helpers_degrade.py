"""Tiny image folders (good and bad files) and shard readers shared by the degrade/sources tests."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 RGB image (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def save(path: Path, img: Image.Image | np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path, **kw)
    return path


def good_folder(root: Path, n: int = 4, size: int = 96) -> Path:
    for i in range(n):
        save(root / f"img{i}.png", photo(size, size + 8 * i, seed=i))
    return root


def png16(h: int, w: int, channels: int) -> bytes:
    import cv2

    arr = (np.arange(h * w * channels, dtype=np.uint32).reshape(h, w, channels) * 997 % 65536).astype(np.uint16)
    ok, buf = cv2.imencode(".png", arr if channels == 3 else arr[:, :, 0])
    assert ok
    return buf.tobytes()


def bad_folder(root: Path) -> dict[str, str]:
    """Every kind of awkward source file; returns {relative path: word expected in its skip reason} for the bad ones."""
    root.mkdir(parents=True, exist_ok=True)
    save(root / "ok_rgb.png", photo(80, 80, 1))
    save(root / "ok_gray.png", Image.fromarray(photo(80, 80, 2)[:, :, 0], "L"))
    (root / "ok_gray16.png").write_bytes(png16(80, 80, 1))
    (root / "ok_rgb16.png").write_bytes(png16(80, 80, 3))
    save(root / "ok_rgba.png", Image.fromarray(np.dstack([photo(80, 80, 3), np.full((80, 80), 7, np.uint8)]), "RGBA"))
    save(root / "ok_palette.png", Image.fromarray(photo(80, 80, 4)).convert("P"))
    save(root / "ok_small.png", photo(20, 30, 5))  # smaller than the crop: reflect-padded
    save(root / "ok_photo.jpg", photo(80, 80, 6), quality=90)
    full = io.BytesIO()
    Image.fromarray(photo(80, 80, 7)).save(full, format="PNG")
    (root / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    jpg = io.BytesIO()
    Image.fromarray(photo(80, 80, 8)).save(jpg, format="JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (root / "notes.png").write_text("this is a text file with an image name\n")
    (root / "empty.jpg").write_bytes(b"")
    save(root / "huge.png", photo(200, 200, 9))  # over the test's max_pixels limit
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "readme.txt").write_text("not an image\n")
    return {
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "corrupt.png": "not an image",
        "notes.png": "not an image",
        "empty.jpg": "empty",
        "huge.png": "too large",
        "dangling.png": "unreadable",
        "readme.txt": "not an image file name",
    }


def tar_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("*.tar"))}
