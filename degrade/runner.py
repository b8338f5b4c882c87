"""Running a plan's shards on Ray: one task per shard, at most one per worker slot, with a per-sample progress bar.

On a multi-node cluster (--address) every node must read the HR sources (a shared folder) and reach the
output (a shared folder or an fsspec URL such as s3://bucket/prefix): tasks run wherever Ray places them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from srdistill.degrade.plan import SampleJob
from srdistill.degrade.storage import Storage
from srdistill.degrade.writer import ShardRecord, write_shard
from srdistill.errors import UserError


class ProgressBoard:
    """A Ray actor holding, per shard, the samples its current attempt has written (for the driver's progress bar)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def set(self, name: str, n: int) -> None:
        self.counts[name] = n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def shard_task(url: str, options: dict, name: str, jobs: list[SampleJob], spec, seed: int, expected: dict | None,
               board=None) -> ShardRecord:
    """Body of the Ray task: reuse the shard if its bytes still match `expected`, else (re)write it."""
    import cv2

    cv2.setNumThreads(1)  # one core per task: Ray schedules one task per CPU
    storage = Storage(url, options)
    if (expected is not None and storage.exists(name) and storage.size(name) == expected["bytes"]
            and storage.sha256(name) == expected["sha256"]):
        return ShardRecord(**{**expected, "reused": True})
    report = None if board is None else (lambda n: board.set.remote(name, n))
    return write_shard(storage, name, jobs, spec, seed, on_sample=report)


def connect_ray(workers: int | None, address: str | None) -> tuple[bool, int]:
    """Join a running Ray (this process or --address) or start an embedded one; returns (started_here, slots)."""
    import ray

    if ray.is_initialized():
        return False, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address!r} ({exc}); check the address or leave out --address.") from exc
        return True, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = workers or os.cpu_count() or 1
    # address="local": always a fresh embedded cluster, never one that another process on this machine started.
    ray.init(address="local", num_cpus=n, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    return True, n


def _show_progress(bar, board, finished: int, running: set[str]):
    """Move the bar to finished shards + samples written by running ones; returns the board, or None once lost."""
    import ray

    partial = 0
    if board is not None:
        try:
            partial = sum(n for name, n in ray.get(board.get.remote(), timeout=10).items() if name in running)
        except (ray.exceptions.RayError, TimeoutError):
            board = None  # the progress actor's node went away: fall back to whole-shard steps
    if finished + partial > bar.n:
        bar.update(finished + partial - bar.n)
    return board


@dataclass
class ShardRun:
    records: dict[str, ShardRecord]
    built_samples: int
    seconds: float
    slots: int


def run_shards(storage: Storage, shards: list[tuple[str, list[SampleJob]]], spec, seed: int, done: dict[str, dict], *,
               workers: int | None = None, address: str | None = None, progress: bool = True,
               on_shard: Callable[[ShardRecord], None] | None = None, desc: str = "degrade build") -> ShardRun:
    """Write `shards` into `storage`; `done` holds the records of shards to reuse when their bytes still match.
    Starts an embedded Ray unless one is connected (and then shuts it down again)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    started, slots = connect_ray(workers, address)
    remote = ray.remote(num_cpus=1, max_retries=3)(shard_task)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    board = ray.remote(num_cpus=0)(ProgressBoard).options(scheduling_strategy=here).remote() if progress else None
    records: dict[str, ShardRecord] = {}
    t0 = time.perf_counter()
    built_samples = finished = 0
    try:
        queue = list(shards)
        pending: dict = {}
        bar = tqdm(total=sum(len(j) for _, j in shards), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
        while queue or pending:
            while queue and len(pending) < slots:
                name, jobs = queue.pop(0)
                ref = remote.remote(storage.url, storage.options, name, jobs, spec, seed, done.get(name), board)
                pending[ref] = (name, len(jobs))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                name, planned = pending.pop(ref)
                record = ray.get(ref)
                records[name] = record
                finished += planned
                if not record.reused:
                    built_samples += planned
                if on_shard is not None:
                    on_shard(record)
            board = _show_progress(bar, board, finished, {name for name, _ in pending.values()})
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return ShardRun(records, built_samples, time.perf_counter() - t0, slots)
