"""A build on a two-node local Ray cluster that loses its worker node mid-build, in a process of its own
(the test session's cluster cannot share a process with a second one).

`python node_loss.py SRC OUT` builds SRC into OUT (bicubic, crop 64, 2 crops per image, 2 samples per shard,
seed 5) and prints JSON: {"lost": [shard that finished first], "raylet_gone": bool, "shards": n, "samples": n}.
"""

from __future__ import annotations

import json
import sys

import psutil


def main(src: str, out: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from srdistill.degrade.build.builder import build

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    raylet_pid = worker.all_processes["raylet"][0].process.pid
    lost: list[str] = []
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()

        def lose_worker_node(record):
            if not lost:
                lost.append(record.name)
                cluster.remove_node(worker, allow_graceful=False)

        summary = build(src, out, "bicubic", crop=64, crops_per_image=2, shard_samples=2, seed=5, workers=2,
                        progress=True, on_shard=lose_worker_node)
        gone = not psutil.pid_exists(raylet_pid)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"lost": lost, "raylet_gone": gone, "shards": summary.shards, "samples": summary.samples}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
