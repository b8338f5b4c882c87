"""The plan of a build, fixed before any work: which samples go into which shard, and the build id.

Every source image becomes K sample jobs with stable keys; jobs are sorted by key and cut into shards of
`shard_samples`. The identity holds everything that decides the bytes, so its hash tells a resumable build
from a different one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from srdistill.datasets.sources import Skip, resolve_source
from srdistill.degrade.manifest import build_id
from srdistill.degrade.providers import CropPolicy, HRProvider, SourceImage
from srdistill.degrade.shards import SCHEMA_VERSION, shard_name
from srdistill.errors import UserError


@dataclass(frozen=True)
class SampleJob:
    key: str
    provider: HRProvider


@dataclass
class Plan:
    identity: dict
    build_id: str
    shards: list[tuple[str, list[SampleJob]]]
    source_skipped: list[Skip]
    source_root: str
    images: int


def make_plan(src: str, spec, *, crop: int, crops_per_image: int, shard_samples: int, seed: int, limit: int | None,
              data_root: str | None, split: str, max_pixels: int) -> Plan:
    from srdistill.degrade.spec import spec_hash

    s = spec.scale
    if crop < 0 or (crop and crop % s):
        raise UserError(f"--crop must be 0 (full images) or a positive multiple of the scale {s}, got {crop}.")
    if crops_per_image < 1:
        raise UserError(f"--crops-per-image must be at least 1, got {crops_per_image}.")
    if crop == 0 and crops_per_image != 1:
        raise UserError("--crops-per-image needs --crop > 0: with --crop 0 each image is one full-size sample.")
    if shard_samples < 1:
        raise UserError(f"--shard-samples must be at least 1, got {shard_samples}.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}.")
    if not split or not all(ch.isalnum() or ch in "_-" for ch in split):
        raise UserError(f"--split must hold only letters, digits, '_' and '-', got {split!r}.")
    source = resolve_source(src, data_root)
    items = source.items()[:limit] if limit else source.items()
    policy = CropPolicy(crop, crops_per_image, s)
    jobs = sorted(
        (SampleJob(key, SourceImage(item.source, item.rel, item.path, policy, max_pixels))
         for item in items for key in policy.keys(item.key)),
        key=lambda j: j.key,
    )
    identity = {
        "schema_version": SCHEMA_VERSION,
        "source": source.name,
        "items": hashlib.sha256("\n".join(i.rel for i in items).encode()).hexdigest()[:16],
        "images": len(items),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": s,
        "crop_policy": policy.describe(),
        "shard_samples": shard_samples,
        "split": split,
        "max_pixels": max_pixels,
    }
    shards = [(shard_name(split, i // shard_samples), jobs[i : i + shard_samples]) for i in range(0, len(jobs), shard_samples)]
    return Plan(identity, build_id(identity), shards, source.skipped(), str(source.root), len(items))
