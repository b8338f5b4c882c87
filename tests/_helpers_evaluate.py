"""Shared fixtures for the evaluate tests: isolated weight/cache folders and tiny real-photo benchmark folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from srdistill.datasets.images import encode_png


def photo(name: str, h: int, w: int, top: int = 0, left: int = 0) -> np.ndarray:
    return np.ascontiguousarray(getattr(skimage.data, name)()[top:top + h, left:left + w, :3])


def downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    return cv2.resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale), interpolation=cv2.INTER_AREA)


def write_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(img))
    return path


@pytest.fixture
def offline_weights(tmp_path, monkeypatch) -> Path:
    """An empty weights folder (plus what registry packages ship), restored after the test."""
    root = tmp_path / "weights"
    for var, value in (("SRDISTILL_WEIGHTS", str(root)), ("TORCH_HOME", str(root / "torch")),
                       ("HF_HOME", str(root / "huggingface")), ("SRDISTILL_CACHE", str(tmp_path / "cache"))):
        monkeypatch.setenv(var, value)
    from srdistill.evaluate import weights

    weights.configure_weights_dir(root)
    yield root
    monkeypatch.undo()
    import pyiqa.utils.download_util as download_util
    import torch.hub

    download_util.DEFAULT_CACHE_DIR = str(Path(torch.hub.get_dir()) / "pyiqa")


@pytest.fixture
def pair_dirs(tmp_path) -> tuple[Path, Path]:
    """HR/LR folders of three small real photos (LR = area downscale x4)."""
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    for stem, (name, top, left) in {"astro": ("astronaut", 40, 150), "cat": ("chelsea", 60, 120),
                                    "cup": ("coffee", 100, 200)}.items():
        hr = photo(name, 96, 96, top, left)
        write_png(hr_dir / f"{stem}.png", hr)
        write_png(lr_dir / f"{stem}.png", downscale(hr))
    return hr_dir, lr_dir
