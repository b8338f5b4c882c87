"""Byte-identity baseline of the shipped degradation presets: sha256 of the HR and LR of many (image, key) pairs.

Taken once at the commit before the schema-2 refactor (issue 15) and stored as degrade_v1_baseline.json;
tests/test_degrade_baseline.py degrades the same inputs with the current engine and compares the hashes, so
no refactor of the engine can change a pixel of an existing preset unnoticed. The keys are many enough that
every branch of each preset runs (both final orders, resize up/down/keep, Gaussian/Poisson, gray/colour,
final sinc or not, every kernel type): `coverage` in the file counts them.

Regenerate (only when a preset's bytes are meant to change):
    SRDISTILL_ROOT=$PWD .venv/bin/python tests/data/make_degrade_baseline.py
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import skimage.data

OUT = Path(__file__).with_name("degrade_v1_baseline.json")
PHOTOS = (("astronaut", 30, 140), ("coffee", 100, 200), ("chelsea", 60, 120))
SIZES = ((64, 64), (96, 128), (128, 80))
KEYS_PER_INPUT = {"realesrgan": 16, "realesrgan-libjpeg": 8, "bicubic": 1}
SEED = 7


def inputs() -> list[tuple[str, np.ndarray]]:
    """(name, HR uint8 crop) for every photo and size."""
    out = []
    for photo, top, left in PHOTOS:
        img = getattr(skimage.data, photo)()[..., :3]
        for h, w in SIZES:
            out.append((f"{photo}-{h}x{w}", np.ascontiguousarray(img[top:top + h, left:left + w])))
    return out


def cases(preset: str) -> list[tuple[str, np.ndarray]]:
    """(key, HR) pairs degraded with `preset`."""
    return [(f"{name}-k{k}", hr) for name, hr in inputs() for k in range(KEYS_PER_INPUT[preset])]


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def branches(record: dict) -> list[str]:
    """The branches one sample's params took (for the coverage count), from a version-3 op record."""
    out = []
    ops = record.get("ops", [])
    names = [o["op"] for o in ops]
    for o in ops:
        at = o.get("at")
        if o["op"] == "blur":
            out.append(f"{at}.kernel.{o['kernel']['type']}")
        elif o["op"] == "resize" and at != "final":
            out.append(f"{at}.resize.{'keep' if o['scale'] == 1.0 else 'up' if o['scale'] > 1 else 'down'}")
        elif o["op"] in ("gaussian_noise", "poisson_noise"):
            out.append(f"{at}.{o['op']}.{'gray' if o['gray'] else 'colour'}")
    fin = [n for o, n in zip(ops, names) if o.get("at") == "final"]
    if fin:
        out.append("final." + ("jpeg_first" if fin[0] == "jpeg" else "resize_first"))
        out.append("final." + ("sinc" if "sinc" in fin else "no_sinc"))
    return out


def branches_v1(params: dict) -> list[str]:
    """The same branch names from a version-1/2 params dict (the format at the baseline commit)."""
    if "stage1" not in params:
        return []
    out = []
    for st in ("stage1", "stage2"):
        p = params[st]
        if p["kernel"] is not None:
            out.append(f"{st}.kernel.{p['kernel']['type']}")
        out.append(f"{st}.resize.{p['resize']['direction']}")
        n = p["noise"]
        out.append(f"{st}.{n['type']}_noise.{'gray' if n['gray'] else 'colour'}")
    out.append(f"final.{params['final']['order']}")
    out.append("final." + ("sinc" if params["final"]["sinc"] is not None else "no_sinc"))
    return out


def run(preset: str) -> tuple[dict, Counter]:
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    spec = load_spec(preset)
    hashes, cov = {}, Counter()
    for key, hr in cases(preset):
        lr, params = degrade_image(hr, spec, SEED, key)
        hashes[key] = {"hr": sha(hr), "lr": sha(lr), "lr_shape": list(lr.shape)}
        cov.update(branches(params) if "ops" in params else branches_v1(params))
    return hashes, cov


def main() -> None:
    doc = {"seed": SEED, "presets": {}, "coverage": {}}
    for preset in KEYS_PER_INPUT:
        hashes, cov = run(preset)
        doc["presets"][preset] = hashes
        doc["coverage"][preset] = dict(sorted(cov.items()))
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{p}: {len(h)} samples" for p, h in doc["presets"].items()))


if __name__ == "__main__":
    main()
