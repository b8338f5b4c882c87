"""The plan of a build, fixed before any work: which samples go into which shard, and the build id.

Every source image becomes K sample jobs with stable keys; jobs are sorted by key and cut into shards of
`shard_samples`. The identity holds everything that decides the bytes, so its hash tells a resumable build
from a different one. It names the source files but not their contents: each shard also gets a digest of the
identity of its source files (size and modification time, or their sha256 with `--source-identity content`),
so that a resumed build rewrites exactly the shards whose sources changed.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field

from srdistill.datasets.sources import DATA_ROOT_ENV, Skip, SourceItem, is_named, resolve_source
from srdistill.datasets.shards.manifest import build_id
from srdistill.degrade.build.providers import CropPolicy, HRProvider, SourceImage
from srdistill.datasets.shards.format import SCHEMA_VERSION, shard_name
from srdistill.core.errors import UserError
from srdistill.core.hashing import short_sha256


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
    shard_sources: dict[str, str] = field(default_factory=dict)  # shard -> digest of its source files' identity
    source_identity: str = "stat"
    source_notes: list[str] = field(default_factory=list)
    source_resolve: dict = field(default_factory=dict)  # how to find the source again (for `degrade verify`)
    changed: list[str] = field(default_factory=list)  # shards to rewrite because their sources changed (set on resume)


SOURCE_IDENTITIES = ("stat", "content")


def file_stamp(path: str, mode: str) -> str:
    """A source file's identity: 'SIZE:MTIME_NS' (stat) or its sha256 (content); 'missing' if it cannot be read."""
    try:
        if mode == "stat":
            st = os.stat(path)
            return f"{st.st_size}:{st.st_mtime_ns}"
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()
    except OSError:
        return "missing"


def item_file(item: SourceItem) -> str:
    """The source-relative file an item comes from (a parquet row's file)."""
    return item.rel if item.row is None else item.rel.rsplit("#", 1)[0]


def shard_digest(files: dict[str, str]) -> str:
    """sha256 (16 hex) of {relative file: stamp}."""
    return short_sha256("\n".join(f"{rel}\t{stamp}" for rel, stamp in sorted(files.items())).encode())


def make_plan(src: str, spec, *, crop: int, crops_per_image: int, shard_samples: int, seed: int, limit: int | None,
              data_root: str | None, split: str, max_pixels: int, source_identity: str = "stat", curation=None) -> Plan:
    """`curation` (curate_select.Curation): keeps only the items it selects, cropped to their best tile if asked."""
    from srdistill.degrade.spec.schema import spec_hash

    s = spec.scale
    if crop < 0 or (crop and crop % s):
        raise UserError(f"--crop must be 0 (full images) or a positive multiple of the scale {s}, got {crop}.")
    if crop * crop > max_pixels:
        raise UserError(f"--crop {crop} is over the limit: a crop may hold at most --max-pixels {max_pixels} pixels, "
                        f"so --crop must be at most {math.isqrt(max_pixels)}.")
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
    if source_identity not in SOURCE_IDENTITIES:
        raise UserError(f"--source-identity must be one of {', '.join(SOURCE_IDENTITIES)}, got {source_identity!r}.")
    source = resolve_source(src, data_root)
    items = source.items()[:limit] if limit else source.items()
    if curation is not None:
        items = curation.apply(source, items)
    policy = CropPolicy(crop, crops_per_image, s)
    provider = curation.provider if curation is not None else _source_image
    jobs = sorted(
        (SampleJob(key, provider(item, policy, max_pixels))
         for item in items for key in policy.keys(item.key)),
        key=lambda j: j.key,
    )
    stamps = {rel: file_stamp(path, source_identity) for rel, path in {item_file(i): i.path for i in items}.items()}
    file_of = {key: item_file(i) for i in items for key in policy.keys(i.key)}
    identity = {
        "schema_version": SCHEMA_VERSION,
        "source": source.name,
        "items": short_sha256("\n".join(i.rel for i in items).encode()),
        "images": len(items),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": s,
        "crop_policy": policy.describe(),
        "shard_samples": shard_samples,
        "split": split,
        "max_pixels": max_pixels,
    }
    if curation is not None:
        identity["curation"] = curation.identity()
    shards = [(shard_name(split, i // shard_samples), jobs[i : i + shard_samples]) for i in range(0, len(jobs), shard_samples)]
    shard_sources = {name: shard_digest({file_of[j.key]: stamps[file_of[j.key]] for j in shard_jobs})
                     for name, shard_jobs in shards}
    return Plan(identity, build_id(identity), shards, source.skipped(), str(source.root), len(items), shard_sources,
                source_identity, list(source.notes), _resolve_args(src, data_root, limit))


def _source_image(item: SourceItem, policy: CropPolicy, max_pixels: int) -> SourceImage:
    return SourceImage(item.source, item.rel, item.path, policy, max_pixels, item.row, item.column)


def _resolve_args(src: str, data_root: str | None, limit: int | None) -> dict:
    """`src`, data root and limit, with paths made absolute, so `degrade verify` can list the source again."""
    named = is_named(src)
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    return {"src": src if named else os.path.abspath(os.path.expanduser(src)),
            "data_root": os.path.abspath(os.path.expanduser(root)) if named and root else None, "limit": limit}
