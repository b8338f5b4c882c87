"""Visual comparison grid: the same zoomed crop of a few images across all methods, as the papers' figures show."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from srdistill.datasets.images import BadImage, encode_png, read_rgb


def busiest_crop(img: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the size x size window with the most gradient energy (a detailed area, deterministic)."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    box = cv2.boxFilter(energy, -1, (size, size), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    h, w = gray.shape
    valid = box[: max(1, h - size + 1), : max(1, w - size + 1)]
    top, left = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(top), int(left)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text[:28], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], 0)


def visual_grid(sr_root: Path, dataset: str, methods: list[str], hr_paths: dict[str, Path | None], out: Path, *,
                images: int = 3, crop: int = 96, zoom: int = 2) -> Path | None:
    """Rows = images (first `images` stems), columns = HR (if any) then each method; crop chosen on the HR
    (or first method's output) and applied to all. Returns the PNG path, None if nothing to show."""
    rows = []
    for stem in sorted(hr_paths)[:images]:
        columns = ([("HR", hr_paths[stem])] if hr_paths[stem] else []) + \
                  [(m, Path(sr_root) / m / dataset / f"{stem}.png") for m in methods]
        imgs = []
        for name, path in columns:
            try:
                imgs.append((name, read_rgb(path)))
            except (BadImage, FileNotFoundError, OSError):
                continue
        if not imgs:
            continue
        ref = imgs[0][1]
        size = min(crop, *ref.shape[:2])
        top, left = busiest_crop(ref, size)
        tiles = []
        for name, img in imgs:
            patch = img[top:top + size, left:left + size]
            if patch.shape[:2] != (size, size):
                patch = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            tiles.append(_label(cv2.resize(patch, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST), name))
        rows.append(np.concatenate(tiles, 1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = Path(out) / f"grid_{dataset}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.concatenate(rows, 0)))
    return path
