"""One writer per output folder: real second processes are refused in one sentence naming the holder, nothing the
first one writes is lost or deleted, and a lock whose holder is gone (dead PID, reused PID) is broken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from srdistill.core.errors import UserError
from srdistill.core.lock import LOCK_NAME, output_lock

# Runs a real CLI in a process of its own, with one function of it held at a gate (a file) until the test opens it:
# the first writer is then certainly mid-run, holding its folder, when the second one starts.
_GATED = """
import importlib, sys, time
from pathlib import Path

module, attr, gate, cli, name = sys.argv[1:6]
owner = importlib.import_module(module)
real = getattr(owner, attr)

def gated(*args, **kwargs):
    Path(gate + ".reached").touch()
    while not Path(gate).exists():
        time.sleep(0.05)
    return real(*args, **kwargs)

setattr(owner, attr, gated)
sys.argv = [name, *sys.argv[6:]]
sys.exit(importlib.import_module(cli).main(sys.argv[1:]))
"""

# Holds a lock in a process of its own until its stdin closes.
_HOLDER = """
import sys
from srdistill.core.lock import output_lock

out, lock = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
sys.argv = ["holder", "--out", out]
with output_lock(out, lock=lock):
    print("held", flush=True)
    sys.stdin.read()
"""


def _gated(tmp_path, module, attr, cli, name, argv) -> tuple[subprocess.Popen, Path]:
    gate = tmp_path / f"gate-{len(list(tmp_path.glob('gate-*')))}"
    proc = subprocess.Popen([sys.executable, "-c", _GATED, module, attr, str(gate), cli, name, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not Path(f"{gate}.reached").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc, gate


def _refusal(err: str, holder_pid: int, out) -> None:
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"{out} is being written by `" in err and f"(PID {holder_pid} on {socket.gethostname()}, since " in err
    assert "; wait for it to finish or choose another --out (if that run is gone from its host, delete " in err


@pytest.mark.slow  # three evaluation processes, each with its own Ray
def test_a_second_evaluation_into_one_out_is_refused_and_no_row_is_lost(pair_dirs, tmp_path):
    hr, lr = pair_dirs
    out = tmp_path / "eval"

    def argv(method):
        return ["leaderboard", "--methods", method, "--hr", str(hr), "--lr", str(lr), "--metrics", "psnry",
                "--out", str(out), "--quiet", "--workers", "1"]

    first, gate = _gated(tmp_path, "srdistill.evaluate.harness", "run_evaluation", "srdistill.evaluate.cli",
                         "evaluate", argv("bicubic"))
    second = subprocess.run([sys.executable, "-m", "srdistill.evaluate.cli", *argv("lanczos")], capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2
    _refusal(second.stderr.removeprefix("evaluate: "), first.pid, out)
    assert "`evaluate leaderboard --methods bicubic" in second.stderr
    gate.touch()
    assert first.wait(timeout=300) == 0, first.communicate()
    assert not (out / LOCK_NAME).exists()
    again = subprocess.run([sys.executable, "-m", "srdistill.evaluate.cli", *argv("lanczos")], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = pd.read_parquet(out / "results.parquet")
    assert sorted(rows.groupby("method").size().items()) == [("bicubic", 3), ("lanczos", 3)]


@pytest.mark.slow  # two build processes, each with its own Ray
def test_a_second_identical_build_is_refused_and_deletes_nothing_of_the_first(tmp_path):
    from srdistill.datasets.shards.manifest import PLAN_NAME
    from srdistill.degrade.inspect.verify import verify

    out = tmp_path / "shards"
    argv = ["build", "--src", "sample", "--out", str(out), "--preset", "bicubic", "--crop", "64", "--limit", "4",
            "--shard-samples", "2", "--workers", "1", "--quiet"]
    first, gate = _gated(tmp_path, "srdistill.degrade.build.builder", "run_shards", "srdistill.degrade.cli", "degrade",
                         argv)
    planted = out / f".train-000000.tar.{'x' * 8}.tmp"  # what a running shard task has in flight
    planted.write_bytes(b"in flight")
    second = subprocess.run([sys.executable, "-m", "srdistill.degrade.cli", *argv], capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2
    _refusal(second.stderr.removeprefix("degrade: "), first.pid, out)
    assert planted.read_bytes() == b"in flight" and (out / PLAN_NAME).exists()
    planted.unlink()
    gate.touch()
    assert first.wait(timeout=300) == 0, first.communicate()
    assert verify(str(out)).ok and not (out / LOCK_NAME).exists()


@pytest.fixture
def holder(tmp_path):
    """Starts a process that holds a lock (folder `out`, or the file `lock`) until the test ends."""
    procs = []

    def hold(out, lock=None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), *([str(lock)] if lock else [])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=60)


@pytest.mark.parametrize("command", ["degrade build", "degrade regen", "degrade curate", "evaluate leaderboard",
                                     "train"])
def test_every_writer_takes_its_output(command, holder, shards, pair_dirs, tmp_path, capsys):
    from srdistill.degrade.cli import main as degrade
    from srdistill.evaluate.cli import main as evaluate
    from srdistill.training.cli import main as train

    out = tmp_path / "out"
    lock = None
    if command == "degrade build":
        run = lambda: degrade(["build", "--src", "sample", "--out", str(out), "--preset", "bicubic", "--quiet"])
    elif command == "degrade regen":
        run = lambda: degrade(["regen", "--from", str(shards), "--out", str(out), "--preset", "bicubic", "--quiet"])
    elif command == "degrade curate":
        lock = out / ".scores.parquet.lock"
        run = lambda: degrade(["curate", "--src", "sample", "--out", str(out / "scores.parquet"), "--quiet"])
    elif command == "evaluate leaderboard":
        hr, lr = pair_dirs
        run = lambda: evaluate(["leaderboard", "--methods", "bicubic", "--hr", str(hr), "--lr", str(lr), "--metrics",
                                "psnry", "--out", str(out), "--quiet"])
    else:
        run = lambda: train(["--recipe", "d3sr", "--shards", str(shards), "--out", str(out), "--quiet"])
    proc = holder(out, lock)
    assert run() == 2
    err = capsys.readouterr().err.split(": ", 1)[1]
    shown = out / "scores.parquet" if command == "degrade curate" else out
    _refusal(err, proc.pid, shown)
    assert sorted(p.name for p in out.iterdir()) == [(lock or out / LOCK_NAME).name]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("case", ["dead PID", "reused PID", "not a lock"])
def test_a_lock_whose_holder_is_gone_is_broken(case, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    me = {"host": socket.gethostname(), "command": "degrade build", "since": 0}
    if case == "dead PID":
        (out / LOCK_NAME).write_text(json.dumps({**me, "pid": _dead_pid(), "started": None}))
    elif case == "reused PID":  # this PID runs, but it is not the process that took the lock
        (out / LOCK_NAME).write_text(json.dumps({**me, "pid": os.getpid(), "started": "1"}))
    else:
        (out / LOCK_NAME).write_text("")
    with output_lock(out):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert list(out.iterdir()) == []


def test_a_holder_on_another_host_is_never_presumed_dead(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    held = {"host": "gpu-node-7", "pid": 4242, "started": "99", "command": "train --out out", "since": 0}
    (out / LOCK_NAME).write_text(json.dumps(held))
    with pytest.raises(UserError) as err:
        with output_lock(out):
            pass
    assert str(err.value).startswith(f"{out} is being written by `train --out out` (PID 4242 on gpu-node-7, since ")
    assert str(err.value).endswith(f"delete {out / LOCK_NAME}).")
    assert json.loads((out / LOCK_NAME).read_text()) == held


def test_the_lock_is_reentrant_in_one_process_and_remote_outputs_are_not_locked(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with output_lock(out):
            pass
        assert (out / LOCK_NAME).exists()
    assert not out.exists()  # made only for the lock, removed with it
    with output_lock("s3://bucket/prefix"):
        pass
