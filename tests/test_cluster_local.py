"""`srdistill.core.cluster` without a cluster: a run with one worker or one unit and no `--address` runs its units in
the command's own process, never importing Ray, and gives what a Ray run gives.

Each run is a fresh interpreter: this test session has joined its own cluster, which a run here would use. Kept
apart from test_cluster.py: the `shards` fixture leaves two warm runners on the session's 2-CPU cluster, which
would starve that file's CLI that joins the cluster by address."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.shards import shard_bytes

pytestmark = pytest.mark.slow


def _python(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, where no Ray has been joined (unlike this test session)."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout)


# The `shards` fixture's plan with one worker, then a one-unit plan with the default workers: both run in the
# command's own process, and Ray is never imported.
_LOCAL_BUILDS = """
import json, sys
from srdistill.degrade.cli import main
common = ["build", "--src", "sample", "--preset", "bicubic", "--quiet"]
codes = [main([*common, "--out", sys.argv[1], "--crop", "128", "--crops-per-image", "2", "--shard-samples", "4",
               "--seed", "0", "--workers", "1"]),
         main([*common, "--out", sys.argv[2], "--limit", "1", "--crop", "64"])]
print(json.dumps({"codes": codes, "ray": "ray" in sys.modules}))
"""


def test_a_local_one_worker_build_runs_here_without_ray_and_gives_the_ray_builds_bytes(shards, tmp_path):
    proc = _python(_LOCAL_BUILDS, str(tmp_path / "full"), str(tmp_path / "one"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"codes": [0, 0], "ray": False}
    assert shard_bytes(tmp_path / "full") == shard_bytes(shards)  # `shards` ran on 2 Ray workers
    assert len(shard_bytes(tmp_path / "one")) == 1


_INTERRUPTED_LOCAL_BUILD = """
import json, sys
from pathlib import Path
from srdistill.degrade.build.builder import build

opts = dict(crop=128, crops_per_image=2, shard_samples=4, seed=0, workers=1, progress=False)

class Crash(Exception):
    pass

def crash_after_two(record, seen=[]):
    seen.append(record.name)
    if len(seen) == 2:
        raise Crash

try:
    build("sample", sys.argv[1], "bicubic", on_shard=crash_after_two, **opts)
except Crash:
    pass
done = len(list(Path(sys.argv[1]).glob("*.tar")))
summary = build("sample", sys.argv[1], "bicubic", **opts)
print(json.dumps({"done": done, "reused": summary.shards_reused, "built": summary.shards_built,
                  "ray": "ray" in sys.modules}))
"""


def test_an_interrupted_local_build_resumes_to_the_ray_builds_bytes(shards, tmp_path):
    proc = _python(_INTERRUPTED_LOCAL_BUILD, str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    # Units run one after another here: nothing was queued behind the second shard when the caller stopped.
    assert json.loads(proc.stdout.splitlines()[-1]) == {"done": 2, "reused": 2, "built": 2, "ray": False}
    assert shard_bytes(tmp_path / "out") == shard_bytes(shards)


_LOCAL_UNITS = """
import errno, json, sys
from srdistill.core.cluster import Unit, run_units

def square(x, *, report):
    report(1)
    return x * x

def disk_full(x, *, report):
    raise OSError(errno.ENOSPC, "No space left on device")

done = []
run = run_units(square, [Unit(f"u{x}", (x,), size=3) for x in range(4)], workers=1, desc="squares",
                on_done=lambda unit, result: done.append([unit.name, result]))
try:
    run_units(disk_full, [Unit("a", (1,))], progress=False)
except OSError as exc:
    failed = [type(exc).__name__, exc.errno == errno.ENOSPC]
print(json.dumps({"results": run.results, "slots": run.slots, "done": done, "failed": failed,
                  "ray": "ray" in sys.modules}))
"""


def test_units_run_here_in_order_with_progress_and_a_task_error_as_itself():
    proc = _python(_LOCAL_UNITS)  # the error's run has one unit and the default workers
    assert proc.returncode == 0, proc.stderr
    squares = {f"u{x}": x * x for x in range(4)}
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "results": squares, "slots": 1, "done": [[k, v] for k, v in squares.items()], "failed": ["OSError", True],
        "ray": False}
    assert "squares" in proc.stderr and "12/12" in proc.stderr


_LOCAL_EVALUATION = """
import json, sys
from srdistill.evaluate.harness import run_evaluation
hr, lr, out = sys.argv[1:4]
s = run_evaluation("bicubic,lanczos", "", "psnry,ssim", out, hr=hr, lr=lr, progress=False, workers=1)
print(json.dumps({"computed": s.rows_computed, "ray": "ray" in sys.modules}))
"""


def test_a_one_worker_evaluation_runs_here_without_ray_and_writes_the_rows_of_one_process(tmp_path):
    import pandas as pd

    from helpers.images import downscale, real_photo, write_png
    from srdistill.evaluate.harness import run_evaluation
    from srdistill.evaluate.results import KEY, RESULTS_NAME

    for i, photo in enumerate(["astronaut", "coffee", "chelsea"]):
        hr = real_photo(photo, 64, 64, 30, 40)
        write_png(tmp_path / "HR" / f"im{i}.png", hr)
        write_png(tmp_path / "LR" / f"im{i}.png", downscale(hr))
    proc = _python(_LOCAL_EVALUATION, str(tmp_path / "HR"), str(tmp_path / "LR"), str(tmp_path / "one"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"computed": 12, "ray": False}
    run_evaluation("bicubic,lanczos", "", "psnry,ssim", tmp_path / "alone", hr=str(tmp_path / "HR"),
                   lr=str(tmp_path / "LR"), progress=False)
    cols = ["method", "dataset", "image", "metric", "value", "status", "protocol_hash"]
    one, alone = (pd.read_parquet(tmp_path / d / RESULTS_NAME).sort_values(KEY)[cols].reset_index(drop=True)
                  for d in ("one", "alone"))
    pd.testing.assert_frame_equal(one, alone)
