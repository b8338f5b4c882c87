"""`evaluate leaderboard --workers N`: Ray units give the rows of one process, resume without duplicates, survive a
lost node, and bad cluster options are one sentence that keeps results.parquet as it was."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import eval_node_loss
from helpers.images import downscale, real_photo, write_png
from srdistill.evaluate import distributed
from srdistill.evaluate.cli import main
from srdistill.evaluate.harness import run_evaluation
from srdistill.evaluate.results import KEY, PARTS_DIR, RESULTS_NAME, ResultStore
from test_evaluate_harness import write_random_fid_inception

from srdistill.core.cluster import Unit, run_units

METHODS = "bicubic,lanczos"
METRICS = "psnry,ssim,niqe"
CONTENT = ["method", "dataset", "protocol", "image", "metric", "value", "status", "metric_version", "method_fingerprint",
           "dataset_fingerprint", "dataset_meta", "protocol_hash"]  # every column but seconds


def pairs(root: Path, n: int) -> tuple[Path, Path]:
    """n HR/LR pairs of 96x96 real-photo crops (NIQE needs 96 px) (LR = area downscale x4)."""
    photos = ["astronaut", "chelsea", "coffee", "rocket"]
    for i in range(n):
        hr = real_photo(photos[i % 4], 96, 96, 20 + 16 * (i // 4), 40 + 24 * (i // 4))
        write_png(root / "HR" / f"im{i:02d}.png", hr)
        write_png(root / "LR" / f"im{i:02d}.png", downscale(hr))
    return root / "HR", root / "LR"


def run(out, pair, metrics=METRICS, **kw):
    hr, lr = pair
    return run_evaluation(METHODS, "", metrics, out, hr=str(hr), lr=str(lr), progress=False, **kw)


def content(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / RESULTS_NAME)
    assert not frame.duplicated(KEY).any()
    return frame[CONTENT].sort_values(KEY).reset_index(drop=True)


@pytest.fixture
def small_units(monkeypatch):
    monkeypatch.setattr(distributed, "CHUNK_IMAGES", 2)


@pytest.mark.slow
def test_one_and_two_workers_write_the_rows_of_one_process(ray_cluster, tmp_path, offline_weights, small_units):
    pair = pairs(tmp_path / "data", 5)  # 3 units per (method, set): two of 2 images, one of 1
    write_random_fid_inception()
    opts = {"metric_opts": {"fid": {"dims": "logits_unbiased"}}}
    alone = run(tmp_path / "alone", pair, metrics=METRICS + ",fid", **opts)
    one = run(tmp_path / "one", pair, metrics=METRICS + ",fid", workers=1, **opts)
    two = run(tmp_path / "two", pair, metrics=METRICS + ",fid", workers=2, **opts)
    reference = content(tmp_path / "alone")
    assert len(reference) == 2 * (5 * 3 + 1) and (reference["status"] == "ok").all()
    pd.testing.assert_frame_equal(content(tmp_path / "one"), reference)
    pd.testing.assert_frame_equal(content(tmp_path / "two"), reference)
    for summary in (alone, one, two):
        assert (summary.rows_computed, summary.rows_reused, summary.rows_failed, summary.sr_generated) == (32, 0, 0, 10)
    assert not list((tmp_path / "two" / PARTS_DIR).glob("*.parquet"))
    # FID ran after its set's SR images existed: a row over 5 images, finite, as in one process
    fid = content(tmp_path / "two").query("metric == 'fid'")
    assert (fid["image"] == "*").all() and len(fid) == 2


def test_interrupted_ray_run_resumes_with_every_row_once(ray_cluster, tmp_path, offline_weights, small_units,
                                                         monkeypatch):
    pair = pairs(tmp_path / "data", 5)
    run(tmp_path / "ref", pair)
    out = tmp_path / "out"
    real_add = ResultStore.add
    added = []

    def interrupting(self, rows):
        if rows and len(added) == 2:
            raise KeyboardInterrupt
        added.append(len(rows))
        real_add(self, rows)

    monkeypatch.setattr(ResultStore, "add", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run(out, pair, workers=2)
    monkeypatch.setattr(ResultStore, "add", real_add)
    kept = pd.read_parquet(out / RESULTS_NAME)
    assert len(kept) == sum(added) and 0 < len(kept) < 30
    resumed = run(out, pair, workers=2)
    assert resumed.rows_reused == len(kept) and resumed.rows_computed == 30 - len(kept)
    pd.testing.assert_frame_equal(content(out), content(tmp_path / "ref"))


@pytest.mark.slow
def test_losing_a_node_mid_run_keeps_every_row_exactly_once(tmp_path, offline_weights):
    hr, lr = pairs(tmp_path / "data", 16)
    run(tmp_path / "ref", (hr, lr), metrics="psnry,niqe")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(eval_node_loss.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, eval_node_loss.__file__, str(hr), str(lr), str(tmp_path / "out"), METHODS,
                           "psnry,niqe"], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1 <= result["parts_at_loss"] < 16 and result["raylet_gone"]  # lost while units were left
    assert (result["computed"], result["reused"]) == (2 * 16 * 2, 0)
    pd.testing.assert_frame_equal(content(tmp_path / "out"), content(tmp_path / "ref"))


def test_download_and_weights_settings_reach_the_workers(ray_cluster, tmp_path, monkeypatch):
    """The session's workers started before these were set: only the tasks' runtime_env can carry them."""
    settings = {"SRDISTILL_OFFLINE": "1", "SRDISTILL_MIRROR": "http://127.0.0.1:9/mirror",
                "HF_ENDPOINT": "http://127.0.0.1:9/hub", "SRDISTILL_WEIGHTS": str(tmp_path / "weights")}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    names = distributed.FORWARDED_ENV

    def forwarded_settings(*, report) -> dict:  # nested: pickled by value, as workers cannot import this module
        return {name: os.environ.get(name) for name in names}

    run = run_units(forwarded_settings, [Unit("probe")], workers=1, progress=False,
                    runtime_env=distributed.worker_runtime_env())
    assert {name: run.results["probe"][name] for name in settings} == settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_cluster_options_are_one_sentence_and_keep_the_results(ray_cluster, tmp_path, offline_weights, capsys):
    hr, lr = pairs(tmp_path / "data", 2)
    out = tmp_path / "out"
    run(out, (hr, lr), metrics="psnry")
    before = pd.read_parquet(out / RESULTS_NAME)
    base = ["leaderboard", "--methods", METHODS, "--hr", str(hr), "--lr", str(lr), "--metrics", "psnry,ssim",
            "--out", str(out), "--quiet"]
    cases = [
        (["--workers", "1", "--gpus-per-worker", "1"], "--gpus-per-worker 1 asks for GPUs, but the Ray cluster has 0"),
        (["--workers", "1", "--address", f"127.0.0.1:{_free_port()}"], "nothing answers at --address 127.0.0.1:"),
        (["--gpus-per-worker", "1"], "give --workers N"),
        (["--workers", "0"], "--workers must be at least 1"),
    ]
    for args, message in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("evaluate: ") and message in err and "\n" not in err and "Traceback" not in err, err
        pd.testing.assert_frame_equal(pd.read_parquet(out / RESULTS_NAME), before)
        assert not list((out / PARTS_DIR).glob("*.parquet"))
