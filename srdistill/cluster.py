"""Ray for every distributed command: join or start a cluster, then run a fixed list of work units on it.

A command is a task function and a list of `Unit`s: `run_units` keeps at most one task per worker slot in
flight, lets Ray retry a unit whose worker or node died, draws one progress bar (with steps inside running
units when the task reports them) and hands each finished unit's result to the caller as it arrives, so the
caller can record it (and a killed run resumes from those records). Each unit must write its own output
atomically: a retried or resumed unit then gives the same result as one that ran once.

On a multi-node cluster (`address`) every node must reach the unit's inputs and outputs (a shared folder or
an fsspec URL such as s3://bucket/prefix): tasks run wherever Ray places them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from srdistill.errors import UserError

# Ray's own notices (token-auth warnings, gRPC retries) go to the driver's file descriptors from C++ and from
# the `ray` logger; both stay off the user's console.
_RAY_LOGGING = dict(logging_level=logging.ERROR, log_to_driver=False)
# A unit queued behind the running one on each worker hides the round trip of handing in a result (measured:
# with one in flight, a 1-worker evaluation ran ~50% slower than the single-process path). Only where the
# cluster itself cannot run more than `slots` units at once, so that the queued unit cannot start beside them.
IN_FLIGHT_PER_SLOT = 2


def _in_flight(slots: int, num_gpus: float) -> int:
    import ray

    res = ray.cluster_resources()
    concurrent = int(res.get("CPU", 0))
    if num_gpus:
        concurrent = min(concurrent, int(res.get("GPU", 0) / num_gpus))
    return IN_FLIGHT_PER_SLOT * slots if concurrent <= slots else slots


@dataclass(frozen=True)
class Unit:
    """One piece of work: `name` is unique in a run, `args` follow the run's shared arguments in the task call,
    `size` is its number of progress steps (samples, images)."""

    name: str
    args: tuple = ()
    size: int = 1


@dataclass
class UnitRun:
    """What `run_units` did: each unit's result by name, wall seconds and the worker slots it used."""

    results: dict[str, Any]
    seconds: float
    slots: int


def auth_hint(exc: BaseException) -> bool:
    """True when joining failed because the cluster wants a token this process did not send."""
    import ray.exceptions

    auth_error = getattr(ray.exceptions, "AuthenticationError", ())  # Ray >= 2.52
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, auth_error) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Send file descriptor 2 to a scratch file while Ray's C++ client retries (it logs every attempt there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect(workers: int | None = None, address: str | None = None) -> tuple[bool, int]:
    """Use the Ray this process already joined, join `address`, or start an embedded one; returns (started_here, slots).

    `address=None` or "local" starts a private cluster of `workers` CPUs (default: all of this machine's), never
    one that another process on this machine started.
    """
    import ray

    if ray.is_initialized():
        return False, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address and address != "local":
        try:
            with _native_stderr_quiet():
                ray.init(address=address, **_RAY_LOGGING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if auth_hint(exc):
                raise UserError(
                    f"the Ray cluster at {address!r} uses token authentication and refused this process: set "
                    "RAY_AUTH_MODE=token and give the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token "
                    "that `ray start --head` wrote on the head node), then re-run."
                ) from exc
            raise UserError(f"cannot join the Ray cluster at {address!r} ({exc}); check the address or leave out "
                            "--address.") from exc
        return True, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = workers or os.cpu_count() or 1
    ray.init(address="local", num_cpus=n, include_dashboard=False, **_RAY_LOGGING)
    return True, n


class _Board:
    """A Ray actor holding, per running unit, the steps its current attempt has done (for the driver's bar)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def set(self, name: str, n: int) -> None:
        self.counts[name] = n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def _run_unit(task: Callable, name: str, shared: tuple, args: tuple, board) -> Any:
    """Body of every Ray task: call `task(*shared, *args, report=...)`; `report(n)` shows n steps done in this unit."""
    report = (lambda n: None) if board is None else (lambda n: board.set.remote(name, n))
    return task(*shared, *args, report=report)


def _show_progress(bar, board, finished: int, running: set[str]):
    """Move the bar to finished steps + steps reported by running units; returns the board, or None once lost."""
    import ray

    partial = 0
    if board is not None:
        try:
            partial = sum(n for name, n in ray.get(board.get.remote(), timeout=10).items() if name in running)
        except (ray.exceptions.RayError, TimeoutError):
            board = None  # the progress actor's node went away: fall back to whole-unit steps
    if finished + partial > bar.n:
        bar.update(finished + partial - bar.n)
    return board


def run_units(task: Callable, units: Sequence[Unit], *, shared: tuple = (), workers: int | None = None,
              address: str | None = None, progress: bool = True, desc: str = "", unit: str = "it",
              on_done: Callable[[Unit, Any], None] | None = None, max_retries: int = 3,
              num_gpus: float = 0, runtime_env: dict | None = None) -> UnitRun:
    """Run `task(*shared, *u.args, report=...)` for every unit on Ray and return the results by unit name.

    Joins the Ray this process is connected to, else `address`, else an embedded cluster (shut down again at
    the end). At most `workers` tasks run at once; where the cluster has no room for more, a second task per
worker waits queued on it, so no worker idles while this process takes in a result; a task whose worker or node is lost is re-run up
    to `max_retries` times. `on_done(unit, result)` runs in this process as each unit finishes; an exception
    it raises stops the run. A task's own exception reaches the caller as itself (the Ray wrapper is its cause)
    after the units still running are cancelled. Each task holds one CPU and `num_gpus` GPUs, and runs under
    `runtime_env` (e.g. {"env_vars": {...}}: settings every worker must see, on any node).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    names = [u.name for u in units]
    if len(set(names)) != len(names):
        raise ValueError("unit names must be unique")
    started, slots = connect(workers, address)
    bound = _in_flight(slots, num_gpus)
    options = {"runtime_env": runtime_env} if runtime_env else {}
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=max_retries, **options)(_run_unit)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    board = ray.remote(num_cpus=0)(_Board).options(scheduling_strategy=here).remote() if progress else None
    results: dict[str, Any] = {}
    pending: dict = {}
    t0 = time.perf_counter()
    finished = 0
    try:
        queue = list(units)
        bar = tqdm(total=sum(u.size for u in units), unit=unit, desc=desc, disable=not progress, dynamic_ncols=True)
        while queue or pending:
            while queue and len(pending) < bound:
                u = queue.pop(0)
                pending[remote.remote(task, u.name, shared, u.args, board)] = u
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                u = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from exc
                results[u.name] = result
                finished += u.size
                if on_done is not None:
                    on_done(u, result)
            board = _show_progress(bar, board, finished, {u.name for u in pending.values()})
        bar.close()
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()
    return UnitRun(results, time.perf_counter() - t0, slots)
