"""Apply a protocol's dataset preparation to a loaded benchmark set: centre crops, seeded random crops, or LR
re-synthesized with another spec/seed. Prepared pairs are cached under the evaluation's cache folder, named by
the preparation's content hash, so a rerun reuses them and two preparations never share files.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from srdistill.datasets.benchmarks import Benchmark, BenchmarkItem, crop_for_scale
from srdistill.datasets.images import BadImage, read_rgb
from srdistill.evaluate.protocol import DatasetPrep, Protocol
from srdistill.evaluate.synthesis import synthesize_lr, write_png

from srdistill.core.errors import UserError


def center_box(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left of the centred size x size window of an h x w image (floor of the margins' halves)."""
    return (h - size) // 2, (w - size) // 2


def random_boxes(sizes: list[tuple[int, int]], count: int, crop: int, seed: int) -> list[tuple[int, int, int]]:
    """`count` (image index, top, left) windows of crop x crop: image i % len(sizes), position from one seeded stream."""
    rng = np.random.default_rng(seed)
    boxes = []
    for i in range(count):
        index = i % len(sizes)
        h, w = sizes[index]
        boxes.append((index, int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))))
    return boxes


def _read(protocol: Protocol, bench: Benchmark, path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except BadImage as exc:
        raise UserError(f"protocol {protocol.name}, dataset {bench.name}: cannot read {path}: {exc}") from exc


def _too_small(protocol: Protocol, bench: Benchmark, stem: str, what: str, shape: tuple[int, ...], size: int) -> UserError:
    return UserError(f"protocol {protocol.name}, dataset {bench.name}: the {size}-px {what} crop is larger than image "
                     f"{stem} ({what} is {shape[1]}x{shape[0]}); lower the crop size or use images: full.")


def prepare(bench: Benchmark, prep: DatasetPrep, protocol: Protocol, cache: Path) -> Benchmark:
    """The benchmark as the protocol prepares it; the same object when the preparation is the loader's own."""
    if prep.is_identity or not bench.has_hr and prep.run_images == "full":
        return replace(bench, meta={**bench.meta, "prep": prep.describe()})
    if not bench.has_hr:
        raise UserError(f"protocol {protocol.name}, dataset {bench.name}: {prep.run_images} needs HR images, and this set has none.")
    folder = cache / f"{bench.name}-prep-{prep.tag()}-{bench.fingerprint}"
    (folder / "hr").mkdir(parents=True, exist_ok=True)
    (folder / "lr").mkdir(parents=True, exist_ok=True)
    if prep.run_images == "random-crops":
        items = _random_crops(bench, prep, protocol, folder)
    elif prep.run_images == "center-crop":
        items = _center_crops(bench, prep, protocol, folder)
    else:
        items = _resynthesized(bench, prep, protocol, folder)
    fingerprint = hashlib.sha256(f"{bench.fingerprint}|{prep.tag()}".encode()).hexdigest()[:16]
    meta = {**bench.meta, "prep": prep.describe(), "prep_tag": prep.tag()}
    return Benchmark(bench.name, items, folder / "hr", fingerprint, meta)


def _synthesize_lr(hr: np.ndarray, prep: DatasetPrep, key: str) -> np.ndarray:
    return synthesize_lr(hr, prep.run_spec, prep.run_seed, key)


def _pair(folder: Path, stem: str) -> tuple[Path, Path]:
    return folder / "hr" / f"{stem}.png", folder / "lr" / f"{stem}.png"


def _center_crops(bench: Benchmark, prep: DatasetPrep, protocol: Protocol, folder: Path) -> list[BenchmarkItem]:
    size, scale = prep.lr_size, protocol.scale
    items = []
    for item in bench.items:
        hr_path, lr_path = _pair(folder, item.stem)
        if not (hr_path.is_file() and lr_path.is_file()):
            hr = _read(protocol, bench, item.hr)
            if prep.lr == "synthesized":
                if min(hr.shape[:2]) < size * scale:
                    raise _too_small(protocol, bench, item.stem, "HR", hr.shape, size * scale)
                top, left = center_box(hr.shape[0], hr.shape[1], size * scale)
                hr = hr[top:top + size * scale, left:left + size * scale]
                lr = _synthesize_lr(hr, prep, item.stem)
            else:
                lr = _read(protocol, bench, item.lr)
                if min(lr.shape[:2]) < size:
                    raise _too_small(protocol, bench, item.stem, "LR", lr.shape, size)
                if hr.shape[0] < lr.shape[0] * scale or hr.shape[1] < lr.shape[1] * scale:
                    raise UserError(f"protocol {protocol.name}, dataset {bench.name}: HR of {item.stem} is smaller than "
                                    f"{scale} x its LR, so the pair cannot be cropped at scale {scale}.")
                top, left = center_box(lr.shape[0], lr.shape[1], size)
                lr = lr[top:top + size, left:left + size]
                hr = hr[top * scale:(top + size) * scale, left * scale:(left + size) * scale]
            write_png(hr_path, np.ascontiguousarray(hr))
            write_png(lr_path, np.ascontiguousarray(lr))
        items.append(BenchmarkItem(item.stem, lr_path, hr_path))
    return items


def _random_crops(bench: Benchmark, prep: DatasetPrep, protocol: Protocol, folder: Path) -> list[BenchmarkItem]:
    from PIL import Image

    crop = prep.hr_size
    sizes = []
    for item in bench.items:
        with Image.open(item.hr) as img:
            w, h = img.size
        if min(h, w) < crop:
            raise _too_small(protocol, bench, item.stem, "HR", (h, w), crop)
        sizes.append((h, w))
    boxes = random_boxes(sizes, prep.count, crop, prep.crop_seed)
    items: list[BenchmarkItem] = []
    for index, item in enumerate(bench.items):  # each source image is read once, and only if a crop of it is missing
        mine = [(i, top, left) for i, (j, top, left) in enumerate(boxes) if j == index]
        source = None
        for i, top, left in mine:
            stem = f"{item.stem}_c{i:05d}"
            hr_path, lr_path = _pair(folder, stem)
            if not (hr_path.is_file() and lr_path.is_file()):
                source = _read(protocol, bench, item.hr) if source is None else source
                hr = np.ascontiguousarray(source[top:top + crop, left:left + crop])
                write_png(hr_path, hr)
                write_png(lr_path, _synthesize_lr(hr, prep, stem))
            items.append(BenchmarkItem(stem, lr_path, hr_path))
    return sorted(items, key=lambda it: it.stem)


def _resynthesized(bench: Benchmark, prep: DatasetPrep, protocol: Protocol, folder: Path) -> list[BenchmarkItem]:
    """Full images with LR degraded by the protocol's spec and seed (the loader's is realesrgan, seed 0)."""
    items = []
    for item in bench.items:
        hr_path, lr_path = _pair(folder, item.stem)
        if not (hr_path.is_file() and lr_path.is_file()):
            hr = crop_for_scale(_read(protocol, bench, item.hr), protocol.scale)
            write_png(hr_path, hr)
            write_png(lr_path, _synthesize_lr(hr, prep, item.stem))
        items.append(BenchmarkItem(item.stem, lr_path, hr_path))
    return items
