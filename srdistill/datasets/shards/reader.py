"""Reading a finished build back (for verify, replay, preview and diff): its storage and manifest, and its
samples in manifest order."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from srdistill.datasets.shards.manifest import read_manifest
from srdistill.datasets.shards.format import read_samples
from srdistill.core.storage import Storage, default_storage_options


def open_build(out: str, storage_options: dict | None = None) -> tuple[Storage, dict]:
    """The storage and manifest of the finished build at `out` (folder or fsspec URL); UserError if there is none."""
    manifest = read_manifest(out, storage_options)
    storage = Storage(str(out), storage_options if storage_options is not None else default_storage_options(str(out)))
    return storage, manifest


def build_samples(storage: Storage, manifest: dict,
                  per_shard: int | None = None) -> Iterator[tuple[str, str, bytes, bytes, dict]]:
    """(shard, key, hr_png, lr_png, meta) of the build's samples in manifest order, at most `per_shard` per shard;
    a shard is opened only when the consumer reaches it."""
    for entry in manifest.get("shards", []):
        with storage.open(entry["name"]) as fh:
            for key, hr_png, lr_png, meta in islice(read_samples(fh), per_shard):
                yield entry["name"], key, hr_png, lr_png, meta
