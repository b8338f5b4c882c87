"""A two-node local Ray cluster that loses a node mid-build still finishes with the same bytes."""

from __future__ import annotations

import psutil
import pytest

from _helpers_degrade import good_folder, shard_bytes
from srdistill.degrade.build import build
from srdistill.degrade.plan import make_plan
from srdistill.degrade.writer import write_shard
from srdistill.degrade.spec import load_spec
from srdistill.degrade.storage import Storage

pytestmark = pytest.mark.slow


def test_losing_a_node_mid_build_keeps_the_bytes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    src = good_folder(tmp_path / "src", n=6, size=96)
    opts = dict(crop=64, crops_per_image=2, shard_samples=2, seed=5, limit=None, data_root=None, split="train",
                max_pixels=10**8)
    spec = load_spec("bicubic")
    # The reference: every planned shard written in this process, without Ray.
    plan = make_plan(str(src), spec, **{k: v for k, v in opts.items()})
    ref = Storage(str(tmp_path / "ref"))
    for name, jobs in plan.shards:
        write_shard(ref, name, jobs, spec, 5)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    raylet_pid = worker.all_processes["raylet"][0].process.pid
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()
        nodes_seen: set[str] = set()

        def lose_worker_node(record):
            if not nodes_seen:
                nodes_seen.add(record.name)
                cluster.remove_node(worker, allow_graceful=False)

        summary = build(str(src), str(tmp_path / "out"), spec, crop=64, crops_per_image=2, shard_samples=2, seed=5,
                        workers=2, progress=True, on_shard=lose_worker_node)
        worker_gone = not psutil.pid_exists(raylet_pid)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert nodes_seen and worker_gone
    assert summary.shards == 6 and summary.samples == 12
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")
