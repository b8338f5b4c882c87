"""Ray for every distributed command: join or start a cluster, then run a fixed list of work units on it.

A command is a task function and a list of `Unit`s: `run_units` runs them on one Ray actor per worker slot
(so exactly `workers` run at once on any cluster, and what a task caches in its process, such as a loaded
network or a built metric, serves every later unit that actor runs), keeps a second unit queued on each actor
so none idles while this process takes in a result, replaces an actor whose process or node died and re-runs
its units, draws one progress bar (with steps inside running units when the task reports them) and hands
each finished unit's result to the caller as it arrives, so the caller can record it (and a killed run resumes
from those records). Each unit must write its own output atomically: a retried or resumed unit then gives the
same result as one that ran once.

A run that would start a cluster only to run its units one at a time (no `address`, no Ray joined yet, one
worker or one unit) runs them in this process instead, in the same order and with the same callbacks, without
importing Ray: starting an embedded cluster costs several seconds, more than a small run's work.

On a multi-node cluster (`address`) every node must reach the unit's inputs and outputs (a shared folder or
an fsspec URL such as s3://bucket/prefix): actors run wherever Ray places them.
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

from srdistill.core.errors import UserError

# Ray's own notices (token-auth warnings, gRPC retries) go to the driver's file descriptors from C++ and from
# the `ray` logger; both stay off the user's console.
_RAY_LOGGING = dict(logging_level=logging.ERROR, log_to_driver=False)
# A unit queued behind the running one on each actor hides the round trip of handing in a result (measured:
# with one in flight, a 1-worker evaluation ran ~50% slower than the single-process path).
IN_FLIGHT_PER_SLOT = 2


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
    # No idle worker processes started ahead: each runner actor starts its own, and a run with fewer units than
    # CPUs starts fewer runners (run_units).
    ray.init(address="local", num_cpus=n, include_dashboard=False, **_RAY_LOGGING,
             _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False})
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


class _Runner:
    """A Ray actor running units one after another in one worker process."""

    def where(self) -> tuple[str, int]:
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def run(self, task: Callable, name: str, shared: tuple, args: tuple, board) -> Any:
        return _run_unit(task, name, shared, args, board)


# The runners of this driver, kept between run_units calls on the same cluster (a command's phases, a
# benchmark's repeated runs) so that their caches stay warm; replaced when the settings or the cluster change.
_RUNNERS: dict[str, Any] = {"key": None, "actors": [], "where": {}}
_STOP_WAIT_S = 10.0  # how long drop_runners waits for a killed runner's process to be gone


def _runner_pool(slots: int, num_gpus: float, runtime_env: dict | None) -> list:
    import ray

    context = ray.get_runtime_context()
    key = (context.get_node_id(), context.get_job_id(), num_gpus, repr(runtime_env))
    if _RUNNERS["key"] != key:
        drop_runners()
        options = {"runtime_env": runtime_env} if runtime_env else {}
        _RUNNERS.update(key=key, cls=ray.remote(num_cpus=1, num_gpus=num_gpus, max_restarts=0, **options)(_Runner))
    actors = _RUNNERS["actors"]
    while len(actors) < slots:
        actors.append(_new_runner())
    return actors[:slots]


def _new_runner():
    actor = _RUNNERS["cls"].remote()
    _RUNNERS["where"][actor] = actor.where.remote()  # first in its queue: known before any unit is done
    return actor


def _replace_runner(runners: list, i: int):
    """A new runner in place of runner i, whose process or node is gone; returns the ref that says it is up."""
    import ray

    with contextlib.suppress(ray.exceptions.RayError, ValueError):
        ray.kill(runners[i], no_restart=True)
    _RUNNERS["where"].pop(runners[i], None)
    runners[i] = _RUNNERS["actors"][i] = _new_runner()
    return runners[i].__ray_ready__.remote()


def drop_runners() -> None:
    """Stop this driver's runner actors (they hold a CPU each) and, for those on this machine, wait until their
    processes are gone, so that nothing a stopped unit was doing reaches its outputs afterwards (Ray reports an
    actor dead before its process has exited). A no-op when the cluster they ran on is gone."""
    import psutil
    import ray

    key, actors, where = _RUNNERS["key"], _RUNNERS["actors"], _RUNNERS["where"]
    _RUNNERS.update(key=None, actors=[], where={})
    if not actors or not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    if key[:2] != (context.get_node_id(), context.get_job_id()):
        return
    pids = []
    for actor in actors:
        ref = where.get(actor)
        if ref is not None and ray.wait([ref], timeout=0)[0]:
            with contextlib.suppress(ray.exceptions.RayError):
                node, pid = ray.get(ref)
                if node == context.get_node_id():
                    pids.append(pid)
        ray.kill(actor)
    deadline = time.monotonic() + _STOP_WAIT_S
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=max(0.0, deadline - time.monotonic()))


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


def needs_cluster(units: Sequence[Unit], workers: int | None, address: str | None) -> bool:
    """False when the run would start an embedded cluster for a single runner (`run_units` then runs the units in
    this process); a Ray this process already joined (a caller's cluster, a test session's) is used as it is."""
    if address and address != "local":
        return True
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return True
    return workers != 1 and len(units) != 1


def _run_here(task: Callable, units: Sequence[Unit], shared: tuple, progress: bool, desc: str, unit: str,
              on_done: Callable[[Unit, Any], None] | None) -> UnitRun:
    """The units one after another in this process; a task's exception reaches the caller as itself (there is no
    worker process to lose, so nothing is retried)."""
    from tqdm import tqdm

    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=sum(u.size for u in units), unit=unit, desc=desc, disable=not progress, dynamic_ncols=True)
    finished = 0

    def report(n: int) -> None:
        if finished + n > bar.n:
            bar.update(finished + n - bar.n)

    for u in units:
        results[u.name] = task(*shared, *u.args, report=report)
        finished += u.size
        report(0)
        if on_done is not None:
            on_done(u, results[u.name])
    bar.close()
    return UnitRun(results, time.perf_counter() - t0, 1)


def run_units(task: Callable, units: Sequence[Unit], *, shared: tuple = (), workers: int | None = None,
              address: str | None = None, progress: bool = True, desc: str = "", unit: str = "it",
              on_done: Callable[[Unit, Any], None] | None = None, max_retries: int = 3,
              num_gpus: float = 0, runtime_env: dict | None = None) -> UnitRun:
    """Run `task(*shared, *u.args, report=...)` for every unit on Ray and return the results by unit name.

    A run that needs no cluster (see the module docstring) runs here, with the same results and callbacks, under
    this process's devices and environment. Else joins the Ray this process is connected to, else `address`,
    else an embedded cluster (shut down again at the end). The units run on `workers` runner actors (no more than there are units), each with one unit running
    and one queued; a runner whose process or node is lost is replaced, and its units are re-run, each up to
    `max_retries` times. `on_done(unit, result)` runs in this process as each unit finishes; an exception
    it raises stops the run. A task's own exception reaches the caller as itself (the Ray wrapper is its cause)
    after the runners are stopped. Each runner holds one CPU and `num_gpus` GPUs, and runs under
    `runtime_env` (e.g. {"env_vars": {...}}: settings every worker must see, on any node).
    """
    names = [u.name for u in units]
    if len(set(names)) != len(names):
        raise ValueError("unit names must be unique")
    if not needs_cluster(units, workers, address):
        return _run_here(task, units, shared, progress, desc, unit, on_done)
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    started, slots = connect(workers, address)
    slots = max(1, min(slots, len(units)))  # a runner per unit at most: each is a process to start
    runners = _runner_pool(slots, num_gpus, runtime_env)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    board = ray.remote(num_cpus=0)(_Board).options(scheduling_strategy=here).remote() if progress else None
    results: dict[str, Any] = {}
    pending: dict = {}  # ref -> (unit, runner index, runner)
    starting: dict = {}  # ready ref -> index of a replaced runner, not given units until it is up
    load = [0] * slots
    lost: dict[str, int] = {}
    t0 = time.perf_counter()
    finished = 0
    queue = list(units)

    def fill() -> None:
        busy = set(starting.values())
        for depth in range(1, IN_FLIGHT_PER_SLOT + 1):  # every runner gets a unit before any gets a second
            for i, runner in enumerate(runners):
                if queue and load[i] < depth and i not in busy:
                    u = queue.pop(0)
                    pending[runner.run.remote(task, u.name, shared, u.args, board)] = (u, i, runner)
                    load[i] += 1

    ok = False
    try:
        bar = tqdm(total=sum(u.size for u in units), unit=unit, desc=desc, disable=not progress, dynamic_ncols=True)
        while queue or pending:
            fill()
            ready, _ = ray.wait([*pending, *starting], num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in starting:
                    i = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                        starting[_replace_runner(runners, i)] = i
                    continue
                u, i, runner = pending.pop(ref)
                load[i] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from exc
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    # The runner's process or node went away: a new runner takes its place (where the cluster has
                    # room) and the unit runs again.
                    lost[u.name] = lost.get(u.name, 0) + 1
                    if lost[u.name] > max_retries:
                        raise
                    queue.insert(0, u)
                    if runners[i] is runner:
                        starting[_replace_runner(runners, i)] = i
                    continue
                results[u.name] = result
                finished += u.size
                if on_done is not None:
                    on_done(u, result)
            board = _show_progress(bar, board, finished, {u.name for u, _, _ in pending.values()})
        bar.close()
        ok = True
    finally:
        if not ok or started:  # stops the units still running; a cluster started here goes with its runners
            drop_runners()
        if started:
            ray.shutdown()
    return UnitRun(results, time.perf_counter() - t0, slots)
