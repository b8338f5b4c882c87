"""Real shards for the training tests, built once per session by `degrade build` on the embedded sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_BUILT: dict[tuple, Path] = {}


def sample_shards(tmp_path_factory, preset: str = "bicubic", crop: int = 128) -> Path:
    """16 samples (8 sample photos x 2 crops of crop x crop), 4 per shard, x4, seed 0 (shared by all training tests)."""
    key = (preset, crop)
    if key not in _BUILT:
        from srdistill.degrade.build import build

        out = tmp_path_factory.getbasetemp() / f"training-shards-{preset}-{crop}"
        # address="local": always a private embedded cluster, never one that another process started on this machine.
        build("sample", str(out), preset, crop=crop, crops_per_image=2, shard_samples=4, seed=0, workers=2, address="local",
              progress=False, command="tests")
        _BUILT[key] = out
    return _BUILT[key]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """[3,H,W] float in [0,1] (exact k/255 values) -> HxWx3 uint8."""
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
