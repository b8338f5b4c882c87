"""Running a plan's shards on Ray: one `srdistill.core.cluster` work unit per shard, its progress counted in samples.

A full disk stops the run with one sentence; the shards already written keep their bytes and their records, so
re-running the same command after freeing space resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from srdistill.core import allocator
from srdistill.core.cluster import Unit, run_units
from srdistill.degrade.build.plan import SampleJob
from srdistill.core.storage import Storage
from srdistill.degrade.build.writer import ShardRecord, write_shard
from srdistill.core.errors import FULL_DEVICE, UserError


def shard_task(url: str, options: dict, spec, seed: int, name: str, jobs: list[SampleJob], expected: dict | None, *,
               report: Callable[[int], None]) -> ShardRecord:
    """One unit: reuse the shard if its bytes still match `expected`, else (re)write it."""
    import cv2

    cv2.setNumThreads(1)  # one core per runner: each holds one CPU
    allocator.keep_freed_memory()
    storage = Storage(url, options)
    if (expected is not None and storage.exists(name) and storage.size(name) == expected["bytes"]
            and storage.sha256(name) == expected["sha256"]):
        return ShardRecord(**{**expected, "reused": True})
    return write_shard(storage, name, jobs, spec, seed, on_sample=report)


@dataclass
class ShardRun:
    records: dict[str, ShardRecord]
    built_samples: int
    seconds: float
    slots: int


def run_shards(storage: Storage, shards: list[tuple[str, list[SampleJob]]], spec, seed: int, done: dict[str, dict], *,
               workers: int | None = None, address: str | None = None, progress: bool = True,
               on_shard: Callable[[ShardRecord], None] | None = None, desc: str = "degrade build") -> ShardRun:
    """Write `shards` into `storage`; `done` holds the records of shards to reuse when their bytes still match."""
    units = [Unit(name, (name, jobs, done.get(name)), len(jobs)) for name, jobs in shards]
    finished: list[ShardRecord] = []

    def record(unit: Unit, shard: ShardRecord) -> None:
        finished.append(shard)
        if on_shard is not None:
            on_shard(shard)

    try:
        run = run_units(shard_task, units, shared=(storage.url, storage.options, spec, seed), workers=workers,
                        address=address, progress=progress, desc=desc, unit="img", on_done=record)
    except OSError as exc:
        if exc.errno not in FULL_DEVICE:
            raise
        raise UserError(f"no space left on the device holding {storage.display()} ({exc.strerror}); the "
                        f"{len(finished)} shards finished so far are kept: free some space and re-run the same "
                        "command to resume.") from exc
    built = sum(len(jobs) for name, jobs in shards if not run.results[name].reused)
    return ShardRun(run.results, built, run.seconds, run.slots)
