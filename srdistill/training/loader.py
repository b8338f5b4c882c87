"""Read `degrade build` shards back as training batches: paired crops, flips, shuffling, exact resumption.

The stream is a stock webdataset pipeline (shard list -> tar samples -> shuffle buffer -> decode/augment ->
batches) run in DataLoader workers. Every random choice is seeded so that the stream depends only on
(seed, epoch, rank, world size, number of workers):

- the shard order of an epoch comes from Random(seed, epoch); shard i goes to rank i % world, then to
  worker j % workers within that rank;
- each worker's shuffle buffer has its own Random(seed, epoch, rank, worker);
- a sample's crop, flips and (online mode) degradation are drawn from (seed, epoch, key) alone, so they
  do not depend on which worker read it or on what came before.

Crop policies: ``random`` and ``center`` cut paired crops on the LR grid; ``resize_center`` (StrSR's released
loader) first scales the HR so its short side is the crop, then centre-crops it, and needs online degradation.

DataLoader hands out worker batches round-robin, so the whole batch sequence is reproducible and a
resumed run regenerates the epoch and skips the batches it already consumed (`LoaderPosition`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from srdistill.datasets.images import decode_png
from srdistill.datasets.shards.manifest import MANIFEST_NAME, read_manifest
from srdistill.core.errors import UserError


@dataclass
class LoaderPosition:
    """Where a stream stands: the epoch and how many batches of it were consumed, plus the layout that fixes the order."""

    epoch: int = 0
    batches: int = 0
    num_workers: int = 0
    world_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoaderPosition:
        return cls(**d)


def shard_urls(shards: str | Path | list, split: str | None = None) -> list[str]:
    """Shard paths from a folder (its manifest.json, else its *.tar), a brace pattern, or a list.

    `split` keeps only shards named `{split}-NNNNNN.tar` (folders only).
    """
    if isinstance(shards, (list, tuple)):
        urls = [str(u) for u in shards]
    elif Path(shards).is_dir():
        folder = Path(shards)
        if (folder / MANIFEST_NAME).exists():
            names = [s["name"] for s in read_manifest(str(folder)).get("shards", [])]
        else:
            names = sorted(p.name for p in folder.glob("*.tar"))
        if split is not None:
            names = [n for n in names if n.startswith(f"{split}-")]
        urls = [str(folder / n) for n in names]
    else:
        urls = list(wds.shardlists.expand_urls(str(shards)))
        missing = [u for u in urls if "://" not in u and not Path(u).exists()]
        if missing and len(missing) == len(urls):
            raise UserError(f"no shards found at {shards!r}: give a folder written by `degrade build`, a brace pattern or a list of .tar files.")
    if not urls:
        where = f" with split {split!r}" if split else ""
        raise UserError(f"no shards{where} in {shards}: build some with `degrade build --out {shards}`.")
    return urls


def read_scale(shards: str | Path) -> int | None:
    """The scale recorded in a shard folder's manifest, or None when there is no manifest."""
    manifest = Path(shards) / MANIFEST_NAME if not isinstance(shards, (list, tuple)) else None
    if manifest is None or not manifest.exists():
        return None
    return int(read_manifest(str(manifest.parent))["scale"])


def _seed_int(*parts: Any) -> int:
    """A 64-bit seed from any tuple of values, stable across processes and Python versions (no hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] (any strides) -> contiguous float32 in [0,1] (exactly k/255)."""
    return images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


@dataclass
class _Augment:
    """Per-sample decode, paired crop, optional online degradation, flips and 90° rotations (picklable)."""

    crop: int | None
    scale: int
    seed: int
    epoch: int
    flips: bool
    online_spec: Any = None
    online_seed: int = 0
    crop_policy: str = "random"   # one of CROP_POLICIES

    def __call__(self, sample: dict) -> dict:
        key = sample["__key__"]
        meta = json.loads(sample["json"])
        # Online, the LR comes from the spec, so its scale sets the crop grid.
        scale = int(self.online_spec.scale) if self.online_spec is not None else int(meta.get("scale", self.scale))
        hr = decode_png(sample["hr.png"])
        if self.crop_policy == "resize_center":
            hr = resize_short_side(hr, self.crop)
            meta = {**meta, "train_resize": list(hr.shape[:2])}
        rng = np.random.default_rng(_seed_int("augment", self.seed, self.epoch, key))
        if self.online_spec is None:
            lr = decode_png(sample["lr.png"])
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise ValueError(f"sample {key}: LR {lr.shape[:2]} is not HR {hr.shape[:2]} / {scale}")
        top, left, h, w = self._crop_box(hr.shape[:2], scale, rng, key)
        hr = hr[top:top + h, left:left + w]
        if self.online_spec is None:
            lr = lr[top // scale:(top + h) // scale, left // scale:(left + w) // scale]
        else:
            from srdistill.degrade.pipeline import degrade_image

            lr, params = degrade_image(np.ascontiguousarray(hr), self.online_spec, self.online_seed, f"{key}-epoch{self.epoch}")
            meta = {**meta, "params": params, "online": True}
        flip_h, flip_v, rot = (bool(rng.integers(2)), bool(rng.integers(2)), int(rng.integers(4))) if self.flips else (False, False, 0)
        hr, lr = (_geometric(x, flip_h, flip_v, rot) for x in (hr, lr))
        meta = {**meta, "train_crop": [top, left, h, w], "flip_h": flip_h, "flip_v": flip_v, "rot90": rot, "epoch": self.epoch}
        return {"lr": np.ascontiguousarray(lr), "hr": np.ascontiguousarray(hr), "meta": meta}

    def _crop_box(self, shape: tuple[int, int], scale: int, rng: np.random.Generator, key: str) -> tuple[int, int, int, int]:
        H, W = shape
        if not self.crop:
            return 0, 0, H - H % scale, W - W % scale
        if self.crop % scale:
            raise UserError(f"crop {self.crop} is not a multiple of the shards' scale {scale}; "
                            f"use --set trainer.crop=N with N a multiple of {scale}.")
        if H < self.crop or W < self.crop:
            raise UserError(f"sample {key} is {H}x{W}, smaller than the training crop {self.crop}; lower it with "
                            f"--set trainer.crop=N (N at most {min(H, W) - min(H, W) % scale}) or rebuild the shards with larger crops.")
        if self.crop_policy == "resize_center":   # online only: the LR is made from this crop, so no LR grid
            return (H - self.crop) // 2, (W - self.crop) // 2, self.crop, self.crop
        # Draw on the LR grid so that the HR box maps exactly onto whole LR pixels.
        c = self.crop // scale
        if self.crop_policy == "center":
            return (H // scale - c) // 2 * scale, (W // scale - c) // 2 * scale, self.crop, self.crop
        top = int(rng.integers(H // scale - c + 1)) * scale
        left = int(rng.integers(W // scale - c + 1)) * scale
        return top, left, self.crop, self.crop


CROP_POLICIES = ("random", "center", "resize_center")


def check_crop_policy(policy: str, crop: int | None, online) -> None:
    """One sentence for a crop policy the stream cannot honour."""
    if policy not in CROP_POLICIES:
        raise UserError(f"crop_policy must be one of {', '.join(CROP_POLICIES)}, got {policy!r}.")
    if policy == "resize_center" and (not crop or online is None):
        raise UserError("crop_policy resize_center rescales each HR image before its centre crop, so it needs a crop "
                        "size and online degradation (the LR made from the rescaled crop): set trainer.crop and "
                        "trainer.online (e.g. realesrgan).")


def resize_short_side(img: np.ndarray, size: int) -> np.ndarray:
    """Scale a uint8 HxWx3 image so its short side is ``size``, as guided-diffusion's center_crop_arr does before its
    crop (StrSR's released loader): box-filter halvings while the short side is at least 2 ``size``, then one PIL
    bicubic resize with each side rounded; an image already ``size`` on its short side is unchanged."""
    from PIL import Image

    pil = Image.fromarray(img)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    return np.asarray(pil)


def _damaged_shard(exc: tarfile.TarError, shards) -> str:
    """One sentence for a shard that stops mid-tar; webdataset puts the reason and the file in the message."""
    text = str(exc)
    name = re.search(r"name='([^']+)'", text)
    reason = re.search(r"([A-Za-z][^\"'@(]*?) @ <", text)
    where = name.group(1) if name else f"one of the shards in {shards}"
    why = reason.group(1).strip() if reason else type(exc).__name__
    return f"training shard {where} cannot be read ({why}); `degrade verify` on its build lists every damaged shard."


def _geometric(img: np.ndarray, flip_h: bool, flip_v: bool, rot: int) -> np.ndarray:
    if flip_h:
        img = img[:, ::-1]
    if flip_v:
        img = img[::-1]
    return np.rot90(img, rot) if rot else img


def _collate(samples: list[dict]) -> dict:
    # uint8 crosses the worker boundary (4x less than float); NHWC storage seen as NCHW.
    return {
        "lr": torch.from_numpy(np.stack([s["lr"] for s in samples])).permute(0, 3, 1, 2),
        "hr": torch.from_numpy(np.stack([s["hr"] for s in samples])).permute(0, 3, 1, 2),
        "meta": [s["meta"] for s in samples],
    }


def _as_float(batches: Iterator[dict]) -> Iterator[dict]:
    for b in batches:
        yield {**b, "lr": to_float(b["lr"]), "hr": to_float(b["hr"])}


@dataclass
class _WorkerShards:
    """Pipeline source: this rank's shards for the epoch, split over DataLoader workers (picklable)."""

    urls: list[str]

    def __call__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for url in self.urls[worker::workers]:
            yield {"url": url}


@dataclass
class _SeededShuffle:
    """Shuffle buffer whose RNG depends on (seed, epoch, rank, worker) only (picklable)."""

    bufsize: int
    seed: int
    epoch: int
    rank: int

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(_seed_int("shuffle", self.seed, self.epoch, self.rank, worker))
        if self.bufsize <= 1:
            yield from src
            return
        yield from wds.filters._shuffle(src, bufsize=self.bufsize, initial=self.bufsize, rng=rng)


def epoch_shards(urls: list[str], seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[str]:
    """This rank's shards for an epoch: the list shuffled by (seed, epoch), then every world_size-th from rank."""
    order = list(urls)
    random.Random(_seed_int("shards", seed, epoch)).shuffle(order)
    mine = order[rank::world_size]
    if not mine:
        raise UserError(f"{len(urls)} shard(s) cannot feed {world_size} processes: build at least one shard per process (lower --shard-samples).")
    return mine


def make_loader(
    shards,
    *,
    batch_size: int,
    crop: int | None,
    seed: int,
    epoch: int = 0,
    num_workers: int = 2,
    online_spec=None,
    scale: int | None = None,
    shuffle_buffer: int = 256,
    flips: bool = True,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
    split: str | None = None,
    drop_last: bool = True,
    uint8: bool = False,
    crop_policy: str = "random",
) -> Iterator[dict]:
    """An iterator over one epoch of batches dict(lr=[B,3,h,w], hr=[B,3,H,W] float in [0,1], meta=list[dict]).

    `uint8=True` yields the images as uint8 [B,3,H,W] instead, for converting on the GPU (`to_float`).

    `online_spec` (a preset name, file or DegradationSpec) re-degrades each HR crop in the workers with
    `degrade_image(hr, spec, seed, f"{key}-epoch{epoch}")`, so the LR differs from epoch to epoch but is the
    same for a given (seed, epoch, key). `skip_batches` drops the first batches of the epoch (resumption).
    """
    check_crop_policy(crop_policy, crop, online_spec)
    urls = shard_urls(shards, split=split)
    if scale is None:
        scale = read_scale(shards) if not isinstance(shards, (list, tuple)) and Path(str(shards)).is_dir() else None
    if online_spec is not None:
        from srdistill.degrade.spec.schema import load_spec

        spec = load_spec(online_spec) if isinstance(online_spec, (str, Path)) else online_spec
        scale = scale or int(spec.scale)
    else:
        spec = None
    mine = epoch_shards(urls, seed, epoch, rank, world_size)
    augment = _Augment(crop=crop, scale=scale or 4, seed=seed, epoch=epoch, flips=flips, online_spec=spec, online_seed=seed,
                       crop_policy=crop_policy)
    pipeline = wds.DataPipeline(
        _WorkerShards(mine),
        wds.tarfile_to_samples(),
        _SeededShuffle(shuffle_buffer, seed, epoch, rank),
        wds.map(augment),
        wds.batched(batch_size, collation_fn=_collate, partial=not drop_last),
    )
    workers = min(num_workers, len(mine))
    loader = torch.utils.data.DataLoader(
        pipeline, batch_size=None, num_workers=workers, persistent_workers=False,
        prefetch_factor=2 if workers else None,
        # A private generator: creating an iterator must not consume the global torch RNG the recipes draw from.
        generator=torch.Generator().manual_seed(_seed_int("loader", seed, epoch, rank) % (1 << 63)),
    )
    it = iter(loader)
    for _ in range(skip_batches):
        next(it, None)
    return it if uint8 else _as_float(it)


class BatchStream:
    """An endless batch stream over epochs that knows its `LoaderPosition` (for checkpoints) and can resume from one."""

    def __init__(self, shards, *, batch_size: int, crop: int | None, seed: int, num_workers: int = 2,
                 online_spec=None, shuffle_buffer: int = 256, flips: bool = True, rank: int = 0,
                 world_size: int = 1, position: LoaderPosition | None = None, split: str | None = None,
                 uint8: bool = False, crop_policy: str = "random"):
        if online_spec is not None and not hasattr(online_spec, "scale"):
            from srdistill.degrade.spec.schema import load_spec

            online_spec = load_spec(online_spec)   # once, and a bad name fails here rather than in a worker
        self.kwargs = {"shards": shards, "batch_size": batch_size, "crop": crop, "seed": seed, "online_spec": online_spec,
                       "shuffle_buffer": shuffle_buffer, "flips": flips, "rank": rank, "world_size": world_size,
                       "split": split, "uint8": uint8, "crop_policy": crop_policy}
        self.num_workers = num_workers
        pos = position or LoaderPosition(num_workers=num_workers, world_size=world_size)
        if position is not None and (pos.num_workers, pos.world_size) != (num_workers, world_size):
            raise UserError(
                f"the checkpoint's data stream was made with {pos.num_workers} loader workers and {pos.world_size} processes; "
                f"resume with the same (now {num_workers} and {world_size}) to replay it exactly."
            )
        self.position = LoaderPosition(pos.epoch, pos.batches, num_workers, world_size)
        self._it: Iterator[dict] | None = None

    def _open(self) -> None:
        self._it = make_loader(**self.kwargs, epoch=self.position.epoch, num_workers=self.num_workers,
                               skip_batches=self.position.batches)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict:
        empty_epochs = 0
        while True:
            if self._it is None:
                self._open()
            try:
                batch = next(self._it, None)
            except UserError as exc:
                # DataLoader re-raises a worker's exception with its traceback in the message; keep the sentence.
                raise UserError(str(exc).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
            except tarfile.TarError as exc:
                raise UserError(_damaged_shard(exc, self.kwargs["shards"])) from None
            if batch is not None:
                self.position.batches += 1
                return batch
            if self.position.batches == 0:
                empty_epochs += 1
                if empty_epochs > 1:
                    raise UserError(f"the shards in {self.kwargs['shards']} hold fewer samples than one batch ({self.kwargs['batch_size']}) per process.")
            self._it = None
            self.position = LoaderPosition(self.position.epoch + 1, 0, self.num_workers, self.world_size)

    @property
    def world_size(self) -> int:
        return self.kwargs["world_size"]

    def close(self) -> None:
        self._it = None


def iter_samples(shards, split: str | None = None) -> Iterator[dict]:
    """Every sample of the shards in order, unaugmented: dict(key, lr, hr uint8 arrays, meta) — for validation."""
    for url in shard_urls(shards, split=split):
        for sample in wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()):
            yield {
                "key": sample["__key__"],
                "hr": decode_png(sample["hr.png"]),
                "lr": decode_png(sample["lr.png"]),
                "meta": json.loads(sample["json"]),
            }
