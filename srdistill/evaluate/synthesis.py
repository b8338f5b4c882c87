"""LR synthesis for evaluation, the one place benchmark LR is made with `degrade`: sets released without LR
(DIV2K-val, the sample: the `realesrgan` preset, seed 0) and a protocol's re-synthesized or cropped sets (its own
spec and seed). Each image's LR is keyed by its stem, so it is the same whichever set or run asks for it; pairs are
cached under the evaluation's cache folder, named by the spec's hash and the seed, and a rerun reuses them.
`degrade` is imported when LR is made, so loading sets with released LR stays quick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from srdistill.datasets.benchmarks import (
    SCALE,
    Benchmark,
    BenchmarkItem,
    ToSynthesize,
    crop_for_scale,
    file_token,
    fingerprint,
    unique_by_stem,
)
from srdistill.datasets.images import BadImage, encode_png, read_rgb

from srdistill.core import atomic
from srdistill.core.errors import UserError

SYNTH_PRESET = "realesrgan"
SYNTH_SEED = 0


def synthesize_lr(hr: np.ndarray, spec: str, seed: int, key: str) -> np.ndarray:
    """The LR `degrade` makes from `hr` with `spec` (a preset name or YAML file), `seed` and sample key `key`."""
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    lr, _ = degrade_image(hr, load_spec(spec), seed, key)
    return lr


def synthesize(found: ToSynthesize, cache: Path, *, preset: str = SYNTH_PRESET, seed: int = SYNTH_SEED) -> Benchmark:
    """HR (cut to a multiple of 4, center-cropped to max_side) and LR by `degrade`, cached; reruns reuse the cache."""
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec, spec_hash

    name, max_side = found.name, found.max_side
    spec = load_spec(preset)
    tag = f"{name}-{preset}-{spec_hash(spec)}-seed{seed}" + (f"-max{max_side}" if max_side else "")
    hr_out, lr_out = cache / tag / "hr", cache / tag / "lr"
    hr_out.mkdir(parents=True, exist_ok=True)
    lr_out.mkdir(parents=True, exist_ok=True)
    items, by_stem = [], unique_by_stem(name, found.hr, "HR")
    for stem, src in sorted(by_stem.items()):
        hr_path, lr_path = hr_out / f"{stem}.png", lr_out / f"{stem}.png"
        if not (hr_path.is_file() and lr_path.is_file()):
            try:
                hr = crop_for_scale(read_rgb(src), SCALE, max_side)
            except BadImage as exc:
                raise UserError(f"benchmark {name}: cannot read {src}: {exc}") from exc
            lr, _ = degrade_image(hr, spec, seed, stem)
            write_png(hr_path, hr)
            write_png(lr_path, lr)
        items.append(BenchmarkItem(stem, lr_path, hr_path))
    tokens = [tag] + [f"{i.stem}|{file_token(Path(by_stem[i.stem]))}" for i in items]
    meta = {"kind": "synthesized", "preset": preset, "spec_hash": spec_hash(spec), "seed": seed, "scale": SCALE}
    if max_side:
        meta["max_side"] = max_side
    return Benchmark(name, items, hr_out, fingerprint(tokens), meta)


def write_png(path: Path, img: np.ndarray) -> None:
    """`img` as PNG at `path`, through a temporary file, so a killed run never leaves half an image in the cache."""
    atomic.write_bytes(path, encode_png(img))
