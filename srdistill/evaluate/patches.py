"""Patch-level FID: the folder FID of the N×N patches cut from every SR and HR image.

Folder FID over a few hundred images is dominated by its small sample; several papers therefore compute FID over
the patches of the images instead (e.g. 256-px patches of 512-px crops). A protocol asks for it with the fid
options `patch_size` (and `patch_stride`, default = the size: non-overlapping). Patches are cut on a grid from the
top-left corner, whole patches only, in the same positions for an SR image and its HR.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from srdistill.datasets.images import encode_png, read_rgb
from srdistill.core.atomic import replace_folder
from srdistill.core.errors import UserError

# Options srdistill applies itself around a pyiqa metric (never passed to pyiqa.create_metric).
PATCH_OPTIONS = ("patch_size", "patch_stride")


def patch_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the whole `size` patches on a `stride` grid, row by row."""
    return [(top, left) for top in range(0, height - size + 1, stride) for left in range(0, width - size + 1, stride)]


def check_patch_options(metric: str, options: dict, where: str) -> None:
    """`patch_size`/`patch_stride` are positive whole numbers, and only folder-level metrics take them."""
    from srdistill.core.iqa.metrics import DATASET_LEVEL

    given = [k for k in PATCH_OPTIONS if k in options]
    if not given:
        return
    if metric not in DATASET_LEVEL:
        raise UserError(f"{where}: {given[0]} applies only to folder-level metrics ({', '.join(DATASET_LEVEL)}), not {metric}.")
    if "patch_stride" in options and "patch_size" not in options:
        raise UserError(f"{where}: patch_stride needs patch_size.")
    for key in given:
        value = options[key]
        if value != "unspecified" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{where}: {key} must be a positive whole number of pixels (or unspecified), got {value!r}.")


def cut_patch_folders(sr_dir: Path, hr_dir: Path, dest: Path, size: int, stride: int) -> tuple[Path, Path]:
    """DEST/sr and DEST/hr holding the patches of every SR image and of its HR (matched by file name).

    Built in a temporary folder and renamed, so an interrupted cut is never taken for a finished one."""
    if (dest / "sr").is_dir() and (dest / "hr").is_dir():
        return dest / "sr", dest / "hr"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    for sr_path in sorted(Path(sr_dir).glob("*.png")):
        hr_path = Path(hr_dir) / sr_path.name
        if not hr_path.exists():
            continue
        sr, hr = read_rgb(sr_path), read_rgb(hr_path)
        height, width = min(sr.shape[0], hr.shape[0]), min(sr.shape[1], hr.shape[1])
        for top, left in patch_grid(height, width, size, stride):
            for name, img in (("sr", sr), ("hr", hr)):
                out = tmp / name / f"{sr_path.stem}_{top}_{left}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(encode_png(img[top:top + size, left:left + size]))
            count += 1
    if not count:
        raise UserError(f"no {size}-px patch fits in the images of {sr_dir}: lower patch_size in the protocol.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(tmp, dest)
    return dest / "sr", dest / "hr"
