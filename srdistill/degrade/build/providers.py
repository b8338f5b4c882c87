"""Where a sample's HR comes from: a crop of a source file (`SourceImage`, for `degrade build`) or the HR of a
sample in an existing shard (`ParentShard`, for `degrade regen`). The shard writer only sees `HRProvider`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from srdistill.datasets.images import DEFAULT_MAX_PIXELS, BadImage, decode_png, read_rgb
from srdistill.datasets.shards.format import read_samples
from srdistill.core.storage import Storage

CROP_RNG_SUFFIX = "#crop"
# Meta fields that the shard writer sets itself; a parent sample's other fields are carried over.
WRITER_FIELDS = ("key", "scale", "seed", "spec_hash", "params")


class HRProvider(Protocol):
    """Jobs sharing `ident` share one `load()`, whose result (any type) is handed to `hr()` for each of their keys."""

    ident: str
    source: str
    source_path: str  # a skipped provider is listed under this name

    def load(self) -> Any: ...  # raises BadImage

    def hr(self, loaded: Any, key: str, seed: int) -> tuple[np.ndarray, dict]: ...  # HR + json fields


@dataclass(frozen=True)
class CropPolicy:
    """`crop` > 0: K random crop x crop windows per image (reflect-padded first if smaller);
    `crop` == 0: the full image, cut at the bottom/right to a multiple of `scale`."""

    crop: int
    crops_per_image: int
    scale: int

    def describe(self) -> dict:
        if self.crop == 0:
            return {"mode": "full", "cut_to_multiple_of": self.scale}
        return {
            "mode": "random",
            "crop": self.crop,
            "crops_per_image": self.crops_per_image,
            "pad": "reflect101 bottom/right to the crop size when smaller",
            "position": f"uniform, drawn from sample_rng(seed, key + {CROP_RNG_SUFFIX!r})",
        }

    def keys(self, item_key: str) -> list[str]:
        if self.crop == 0:
            return [item_key]
        width = max(2, len(str(self.crops_per_image - 1)))
        return [f"{item_key}_c{i:0{width}d}" for i in range(self.crops_per_image)]


@dataclass(frozen=True)
class SourceImage:
    """HR crops of one source image under a crop policy: an image file, or one row of a parquet file."""

    source: str
    source_path: str  # relative to the source root (FILE#ROW for a parquet row); recorded in json and manifest
    path: str
    policy: CropPolicy
    max_pixels: int = DEFAULT_MAX_PIXELS
    row: int | None = None
    column: str | None = None

    @property
    def ident(self) -> str:
        return self.path if self.row is None else f"{self.path}#{self.row}"

    def load(self) -> np.ndarray:
        if self.row is None:
            image = read_rgb(self.path, max_pixels=self.max_pixels)
        else:
            from srdistill.datasets.parquet import read_parquet_image

            image = read_rgb(read_parquet_image(self.path, self.row, self.column or "image"), max_pixels=self.max_pixels)
        s = self.policy.scale
        if self.policy.crop == 0 and (image.shape[0] < s or image.shape[1] < s):
            raise BadImage(f"smaller than the scale: {image.shape[1]}x{image.shape[0]} pixels at scale {s}")
        return image

    def hr(self, image: np.ndarray, key: str, seed: int) -> tuple[np.ndarray, dict]:
        from srdistill.degrade.pipeline import sample_rng

        h, w = image.shape[:2]
        c, s = self.policy.crop, self.policy.scale
        fields: dict = {"source": self.source, "source_path": self.source_path, "source_size": [h, w]}
        if c == 0:
            hh, ww = h - h % s, w - w % s
            fields["crop"] = [0, 0, hh, ww]
            return np.ascontiguousarray(image[:hh, :ww]), fields
        pad_h, pad_w = max(0, c - h), max(0, c - w)
        if pad_h or pad_w:
            import cv2

            border = cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_REPLICATE
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, border)
            fields["pad"] = [pad_h, pad_w]
        rng = sample_rng(seed, key + CROP_RNG_SUFFIX)
        top = int(rng.integers(0, image.shape[0] - c + 1))
        left = int(rng.integers(0, image.shape[1] - c + 1))
        fields["crop"] = [top, left, c, c]
        return np.ascontiguousarray(image[top : top + c, left : left + c]), fields


@dataclass(frozen=True)
class ParentShard:
    """The HR of the samples of one existing shard, read once per task; keeps each sample's crop/source fields."""

    url: str
    options: dict
    name: str

    @property
    def ident(self) -> str:
        return f"{self.url}/{self.name}"

    @property
    def source(self) -> str:
        return self.url

    @property
    def source_path(self) -> str:
        return self.name

    def load(self) -> dict[str, tuple[bytes, dict]]:
        """{key: (hr_png, meta)} of the whole parent shard."""
        try:
            with Storage(self.url, self.options).open(self.name) as fh:
                return {key: (hr, meta) for key, hr, _, meta in read_samples(fh)}
        except (OSError, ValueError) as exc:
            raise BadImage(f"parent shard unreadable ({exc})") from exc

    def hr(self, loaded: dict[str, tuple[bytes, dict]], key: str, seed: int) -> tuple[np.ndarray, dict]:
        hr_png, meta = loaded[key]
        return decode_png(hr_png), {k: v for k, v in meta.items() if k not in WRITER_FIELDS}
