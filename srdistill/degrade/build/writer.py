"""Writing one shard: each job's HR from its provider, the LR degraded by the spec, then the shard's record.

Jobs are written in key order, so a retried, resumed or differently scheduled write gives the same bytes.
The record goes to _build/ beside the shard, where a resumed build finds it before any manifest exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from srdistill.datasets.images import SHARD_PNG, BadImage, encode_png
from srdistill.datasets.shards.manifest import dump, part_name
from srdistill.degrade.build.plan import SampleJob
from srdistill.datasets.shards.format import Sample, ShardWriter
from srdistill.core.storage import Storage


@dataclass
class ShardRecord:
    """What a shard task reports; `name`, `samples`, `bytes`, `sha256` go into the manifest, and the PNG encoding
    its images were written with into the manifest's `image_encoding` (one for the whole build)."""

    name: str
    samples: int
    bytes: int
    sha256: str
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    image_encoding: dict | None = None
    reused: bool = False

    def manifest_entry(self) -> dict:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}


class HashingFile:
    """Forwards writes to a file and keeps their sha256 and length."""

    def __init__(self, fh) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size


def write_shard(storage: Storage, name: str, jobs: list[SampleJob], spec, seed: int,
                on_sample: Callable[[int], None] | None = None) -> ShardRecord:
    """Write one shard from `jobs` (sorted here by key) and its record in _build/; bad HR sources are skipped.
    `on_sample(n)` is told the number of samples written so far, after each one."""
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import spec_hash

    start, cpu_start = time.perf_counter(), time.process_time()
    digest = spec_hash(spec)
    skipped: dict[str, str] = {}
    loaded_ident, loaded = None, None
    with storage.writer(name) as raw:
        out = HashingFile(raw)
        with ShardWriter(out) as writer:
            for job in sorted(jobs, key=lambda j: j.key):
                p = job.provider
                if p.source_path in skipped:
                    continue
                if p.ident != loaded_ident:
                    loaded_ident, loaded = p.ident, None
                    try:
                        loaded = p.load()
                    except BadImage as exc:
                        skipped[p.source_path] = str(exc)
                        continue
                hr, fields = p.hr(loaded, job.key, seed)
                lr, params = degrade_image(hr, spec, seed, job.key)
                meta = {"key": job.key, **fields, "scale": spec.scale, "seed": seed, "spec_hash": digest, "params": params}
                writer.write(Sample(job.key, encode_png(hr, SHARD_PNG), encode_png(lr, SHARD_PNG), meta))
                if on_sample is not None:
                    on_sample(writer.count)
        count = writer.count
    record = ShardRecord(
        name=name,
        samples=count,
        bytes=out.size,
        sha256=out.digest.hexdigest(),
        skipped=[{"source_path": k, "reason": v} for k, v in sorted(skipped.items())],
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        image_encoding=SHARD_PNG.record(),
    )
    storage.write_bytes(part_name(name), dump(dataclasses.asdict(record)))
    return record
