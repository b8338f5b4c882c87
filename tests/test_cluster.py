"""`srdistill.core.cluster`: work units on Ray (bounded, retried, reported) and joining a cluster; and `degrade build`'s use
of it: options checked before Ray starts, a full disk as one sentence with the finished shards kept."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from helpers.images import good_folder
from helpers.shards import shard_bytes
from srdistill.core.cluster import Unit, run_units
from srdistill.degrade.build.builder import build
from srdistill.degrade.build.regen import regen
from srdistill.core.errors import UserError

pytestmark = pytest.mark.slow

# Ray workers cannot import test modules: ship this module's task functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(folder: str, x: int, *, report) -> int:
    """Marks itself running in `folder` while it works, so the test can see how many ran at once."""
    import time

    mark = Path(folder) / f"running-{x}"
    mark.touch()
    running = len(list(Path(folder).glob("running-*")))
    report(1)
    time.sleep(0.3)
    (Path(folder) / f"seen-{x}-{running}").touch()
    mark.unlink()
    return x * x


def test_every_unit_runs_once_with_at_most_workers_in_flight(ray_cluster, tmp_path):
    done = []
    run = run_units(square, [Unit(f"u{x}", (x,), size=2) for x in range(5)], shared=(str(tmp_path),), workers=1,
                    desc="squares", on_done=lambda unit, result: done.append((unit.name, result)))
    assert run.results == {f"u{x}": x * x for x in range(5)} and run.slots == 1
    assert sorted(done) == sorted(run.results.items())
    # The cluster has two CPUs: only the runner's bound keeps a second unit from starting beside the first.
    assert sorted(p.name for p in tmp_path.glob("seen-*")) == [f"seen-{x}-1" for x in range(5)]


def pid_of(x: int, *, report) -> int:
    return os.getpid()


def test_one_worker_runs_every_unit_in_one_process_that_stays_warm(ray_cluster):
    # One runner actor per worker: a second unit waits queued on it instead of starting in another process of
    # the 2-CPU cluster, and the process (with whatever a task cached in it) serves the next call too.
    first = run_units(pid_of, [Unit(f"u{x}", (x,)) for x in range(6)], workers=1, progress=False)
    again = run_units(pid_of, [Unit(f"v{x}", (x,)) for x in range(3)], workers=1, progress=False)
    assert len(set(first.results.values()) | set(again.results.values())) == 1
    assert os.getpid() not in first.results.values()


def mark_after(folder: str, x: int, *, report) -> int:
    import time

    time.sleep(0.6)
    (Path(folder) / f"done-{x}").touch()
    return x


def test_a_stopped_run_leaves_no_unit_running(ray_cluster, tmp_path):
    # The caller stops at the first result; the unit queued behind it on the runner has started by then and
    # must not reach its output afterwards.
    def stop(unit, result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_units(mark_after, [Unit(f"u{x}", (x,)) for x in range(4)], shared=(str(tmp_path),), workers=1,
                  progress=False, on_done=stop)
    at_stop = sorted(p.name for p in tmp_path.iterdir())
    time.sleep(1.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == at_stop == ["done-0"]


def test_progress_bar_counts_unit_sizes(ray_cluster, tmp_path, capsys):
    run_units(square, [Unit(f"u{x}", (x,), size=3) for x in range(2)], shared=(str(tmp_path),), workers=2,
              desc="squares")
    err = capsys.readouterr().err
    assert "squares" in err and "6/6" in err


def die_once(folder: str, x: int, *, report) -> int:
    """Kills its own worker process the first time (a lost worker, not an exception), then succeeds."""
    mark = Path(folder) / f"died-{x}"
    if not mark.exists():
        mark.touch()
        os._exit(1)
    return x + 100


def test_a_unit_whose_worker_dies_is_run_again(ray_cluster, tmp_path):
    run = run_units(die_once, [Unit("a", (1,)), Unit("b", (2,))], shared=(str(tmp_path),), workers=2, progress=False)
    assert run.results == {"a": 101, "b": 102}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["died-1", "died-2"]


def disk_full(x: int, *, report) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_task_error_reaches_the_caller_as_itself(ray_cluster):
    with pytest.raises(OSError) as err:
        run_units(disk_full, [Unit("a", (1,))], workers=1, progress=False)
    assert err.value.errno == errno.ENOSPC and type(err.value) is OSError


def test_bad_options_are_refused_before_any_work(tmp_path):
    # A source that does not exist would be the next complaint: the seed is checked first.
    with pytest.raises(UserError, match=r"--seed must be a non-negative integer, got -5\."):
        build(str(tmp_path / "missing"), str(tmp_path / "o"), "bicubic", seed=-5, progress=False)
    with pytest.raises(UserError, match=r"--workers must be at least 1, got 0\."):
        build(str(tmp_path / "missing"), str(tmp_path / "o"), "bicubic", workers=0, progress=False)
    with pytest.raises(UserError, match=r"--seed must be a non-negative integer, got -5\."):
        regen(str(tmp_path / "missing"), str(tmp_path / "o"), "bicubic", seed=-5, progress=False)


def _cli(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srdistill.degrade.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_joining_by_address_without_the_token_says_what_to_set(ray_cluster, tmp_path):
    """The session's cluster has token authentication on, as `ray start --head` has in Ray 2.60."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray's own connect budget (20 s by default)
    proc = _cli(["build", "--src", "sample", "--out", str(tmp_path / "o"), "--preset", "bicubic", "--limit", "1",
                 "--address", ray_cluster, "--quiet"], env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "InvalidAuthToken" not in proc.stderr, proc.stderr
    assert "uses token authentication" in proc.stderr and "RAY_AUTH_MODE=token" in proc.stderr
    joined = _cli(["build", "--src", "sample", "--out", str(tmp_path / "ok"), "--preset", "bicubic", "--limit", "1",
                   "--crop", "64", "--address", ray_cluster, "--quiet"], {**env, "RAY_AUTH_MODE": "token"})
    assert joined.returncode == 0 and joined.stderr == "", joined.stderr
    assert "1 samples in 1 shards" in joined.stdout


def test_a_full_disk_is_one_sentence_and_keeps_the_finished_shards(ray_cluster, tmp_path):
    """A real ENOSPC: the CLI writes into a 200 KiB tmpfs (in a private mount namespace), room for two shards. With
    one worker the CLI runs its units in its own process; the resume runs on the session's cluster."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs")
    src = good_folder(tmp_path / "src", n=6, size=160)
    opts = dict(crop=128, crops_per_image=2, shard_samples=2, workers=1, progress=False)
    build(str(src), str(tmp_path / "ref"), "bicubic", **opts)
    reference = shard_bytes(tmp_path / "ref")
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    command = " ".join(map(str, [sys.executable, "-m", "srdistill.degrade.cli", "build", "--src", src, "--preset",
                                 "bicubic", "--crop", 128, "--crops-per-image", 2, "--shard-samples", 2, "--workers",
                                 1, "--quiet", "--out", disk / "out"]))
    script = (f"mount -t tmpfs -o size=200k none {disk} && {{ {command} 2> {tmp_path}/err; echo $? > {tmp_path}/rc; "
              f"cp -a {disk}/out {kept}; }}")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=240)
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"no space left on the device holding {disk}/out" in err and "re-run the same command" in err
    finished = shard_bytes(kept)
    assert 1 <= len(finished) < len(reference) and not (kept / "manifest.json").exists()
    assert not [p for p in kept.iterdir() if p.name.endswith(".tmp")]
    assert all(reference[name] == data for name, data in finished.items())
    resumed = build(str(src), str(kept), "bicubic", **opts)
    assert resumed.shards_reused == len(finished) and shard_bytes(kept) == reference
