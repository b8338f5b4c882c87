"""An evaluation on a two-node local Ray cluster that loses its worker node mid-run, in a process of its own
(the test session's cluster cannot share a process with a second one).

`python eval_node_loss.py HR LR OUT METHODS METRICS` evaluates the pairs into OUT with 2 workers, 2 images per
unit, removes the worker node as soon as the first unit's rows are on disk, and prints JSON:
{"parts_at_loss": n, "raylet_gone": bool, "computed": n, "reused": n}.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psutil


def main(hr: str, lr: str, out: str, methods: str, metrics: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from srdistill.evaluate import distributed
    from srdistill.evaluate.harness import run_evaluation
    from srdistill.evaluate.results import PARTS_DIR

    distributed.CHUNK_IMAGES = 2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    raylet_pid = worker.all_processes["raylet"][0].process.pid
    parts = Path(out) / PARTS_DIR
    seen: list[int] = []

    def lose_worker_node_after_first_unit() -> None:
        while not seen:
            found = list(parts.glob("*.parquet")) if parts.is_dir() else []
            if found:
                seen.append(len(found))
                cluster.remove_node(worker, allow_graceful=False)
            time.sleep(0.005)

    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()
        watcher = threading.Thread(target=lose_worker_node_after_first_unit, daemon=True)
        watcher.start()
        summary = run_evaluation(methods, "", metrics, Path(out), hr=hr, lr=lr, progress=False, workers=2,
                                 address=cluster.address)
        seen.append(-1)  # stops the watcher if no part ever appeared
        watcher.join()
        gone = not psutil.pid_exists(raylet_pid)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"parts_at_loss": seen[0], "raylet_gone": gone, "computed": summary.rows_computed,
            "reused": summary.rows_reused}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:6])))
