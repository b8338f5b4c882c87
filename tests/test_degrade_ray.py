"""A two-node local Ray cluster that loses a node mid-build still finishes with the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import node_loss
from helpers.images import good_folder
from helpers.shards import shard_bytes
from srdistill.degrade.build.plan import make_plan
from srdistill.degrade.spec.schema import load_spec
from srdistill.core.storage import Storage
from srdistill.degrade.build.writer import write_shard

pytestmark = pytest.mark.slow


def test_losing_a_node_mid_build_keeps_the_bytes(tmp_path):
    src = good_folder(tmp_path / "src", n=6, size=96)
    spec = load_spec("bicubic")
    # The reference: every planned shard written in this process, without Ray.
    plan = make_plan(str(src), spec, crop=64, crops_per_image=2, shard_samples=2, seed=5, limit=None, data_root=None,
                     split="train", max_pixels=10**8)
    ref = Storage(str(tmp_path / "ref"))
    for name, jobs in plan.shards:
        write_shard(ref, name, jobs, spec, 5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(node_loss.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, node_loss.__file__, str(src), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["lost"] and result["raylet_gone"]
    assert (result["shards"], result["samples"]) == (6, 12)
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")
