"""Images for tests: smooth synthetic images, crops of real photos, folders of good and awkward files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
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
        save(root / f"img{i}.png", smooth_image(size, size + 8 * i, seed=i))
    return root


def png16(h: int, w: int, channels: int) -> bytes:
    arr = (np.arange(h * w * channels, dtype=np.uint32).reshape(h, w, channels) * 997 % 65536).astype(np.uint16)
    ok, buf = cv2.imencode(".png", arr if channels == 3 else arr[:, :, 0])
    assert ok
    return buf.tobytes()


def bad_folder(root: Path) -> dict[str, str]:
    """Every kind of awkward source file; returns {relative path: word expected in its skip reason} for the bad ones."""
    root.mkdir(parents=True, exist_ok=True)
    save(root / "ok_rgb.png", smooth_image(80, 80, 1))
    save(root / "ok_gray.png", Image.fromarray(smooth_image(80, 80, 2)[:, :, 0], "L"))
    (root / "ok_gray16.png").write_bytes(png16(80, 80, 1))
    (root / "ok_rgb16.png").write_bytes(png16(80, 80, 3))
    save(root / "ok_rgba.png", Image.fromarray(np.dstack([smooth_image(80, 80, 3), np.full((80, 80), 7, np.uint8)]), "RGBA"))
    save(root / "ok_palette.png", Image.fromarray(smooth_image(80, 80, 4)).convert("P"))
    save(root / "ok_small.png", smooth_image(20, 30, 5))  # smaller than the crop: reflect-padded
    save(root / "ok_photo.jpg", smooth_image(80, 80, 6), quality=90)
    full = io.BytesIO()
    Image.fromarray(smooth_image(80, 80, 7)).save(full, format="PNG")
    (root / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    jpg = io.BytesIO()
    Image.fromarray(smooth_image(80, 80, 8)).save(jpg, format="JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    (root / "notes.png").write_text("this is a text file with an image name\n")
    (root / "empty.jpg").write_bytes(b"")
    save(root / "huge.png", smooth_image(200, 200, 9))  # over the test's max_pixels limit
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "readme.txt").write_text("not an image\n")
    return {
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "corrupt.png": "not an image",
        "notes.png": "not an image",
        "empty.jpg": "empty",
        "huge.png": "too large",
        "dangling.png": "a broken link",
        "readme.txt": "not an image file name",
    }


def real_photo(name: str, h: int, w: int, top: int = 0, left: int = 0) -> np.ndarray:
    """An h x w RGB crop of one of scikit-image's sample photos (`astronaut`, `chelsea`, `coffee`, `rocket`...)."""
    return np.ascontiguousarray(getattr(skimage.data, name)()[top:top + h, left:left + w, :3])


def downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Area downscale by `scale` (an LR for evaluation folders)."""
    return cv2.resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale), interpolation=cv2.INTER_AREA)


def write_png(path: Path, img: np.ndarray) -> Path:
    """Write with the shards' deterministic PNG encoder, creating the folder."""
    from srdistill.datasets.images import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(img))
    return path


def to_uint8(t) -> np.ndarray:
    """[3,H,W] float in [0,1] (exact k/255 values) -> HxWx3 uint8."""
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
