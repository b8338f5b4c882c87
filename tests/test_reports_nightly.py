"""End to end: nights on the embedded sample through the real harness, history, comparison, plots and report."""

import math
import os
import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml

from srdistill.reports import history as h
from srdistill.reports.cli import main
from srdistill.reports.suite import load_suite

pytestmark = pytest.mark.slow


def _suite(tmp: Path, name: str, methods: list[str]) -> Path:
    doc = {
        "name": "test",
        "datasets": ["sample"],
        "methods": methods,
        "metrics": ["psnr"],
        "specs": ["bicubic"],
        "throughput": [{"name": "degrade-bicubic-64", "kind": "degrade", "spec": "bicubic", "images": 2, "size": 64}],
        "compare": {"throughput_rel": 10.0},
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_nights_on_sample_record_history_flag_a_planted_regression_and_plot_trends(tmp_path, capsys):
    hist_dir, out = tmp_path / "history", tmp_path / "reports"
    common = ["--history", str(hist_dir), "--out", str(out), "--quiet"]

    assert main(["nightly", "--suite", str(_suite(tmp_path, "s1.yaml", ["bicubic"])), "--date", "2026-01-01", *common,
                 "--latex", str(tmp_path / "night.tex"), "--html", str(tmp_path / "site")]) == 0
    first = (out / "2026-01-01" / "report.md").read_text()
    assert "First night" in first and "### sample" in first
    # tonight's leaderboard as LaTeX and as a site: bicubic, alone, is the best on its one metric
    tex = (tmp_path / "night.tex").read_text()
    psnr = pd.read_parquet(out / "2026-01-01" / "eval" / "results.parquet")["value"].mean()
    assert r"\textit{sample}" in tex and f"bicubic & \\textbf{{{psnr:.2f}}} \\\\" in tex
    page = (tmp_path / "site" / "index.html").read_text()
    assert "Nightly leaderboard" in page and len(list((tmp_path / "site" / "images").rglob("*.png"))) == 8 * 3

    # An "external" method whose SR outputs are bicubic's, then the same outputs brightened: a planted regression.
    good, bad = tmp_path / "good", tmp_path / "bad"
    shutil.copytree(out / "2026-01-01" / "eval" / "sr" / "bicubic" / "sample", good)
    bad.mkdir()
    for png in good.glob("*.png"):
        cv2.imwrite(str(bad / png.name), cv2.add(cv2.imread(str(png)), (12, 12, 12, 0)))

    s2 = _suite(tmp_path, "s2.yaml", ["bicubic", "ext=good"])
    assert main(["nightly", "--suite", str(s2), "--date", "2026-01-02", *common]) == 0
    second = (out / "2026-01-02" / "report.md").read_text()
    assert "| ext | sample | new |" in second
    assert "0 regression(s)" in second

    s3 = _suite(tmp_path, "s3.yaml", ["bicubic", "ext=bad"])
    capsys.readouterr()
    assert main(["nightly", "--suite", str(s3), "--date", "2026-01-03", *common]) == 1
    assert "REGRESSION ext / sample / psnr" in capsys.readouterr().out
    third = (out / "2026-01-03" / "report.md").read_text()
    top = third.split("## Leaderboard")[0]
    assert "❌ vs previous night (2026-01-02): 1 regression(s)" in top
    assert "| ext | sample | psnr ↑ |" in top and "regression" in top
    # bicubic's results are identical night to night: listed, never flagged.
    assert "| bicubic | sample | psnr ↑ |" in third.split("## All changes")[1]
    plots = sorted(p.name for p in (out / "2026-01-03" / "plots").glob("*.png"))
    assert "trend_sample_psnr.png" in plots
    assert (out / "2026-01-03" / "plots" / "trend_sample_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![plots/trend_sample_psnr.png](plots/trend_sample_psnr.png)" in third

    # Re-running a date replaces its night; pinning a baseline adds a second comparison.
    assert main(["pin", "2026-01-01", "--history", str(hist_dir)]) == 0
    assert main(["nightly", "--suite", str(s2), "--date", "2026-01-03", *common]) == 0
    rerun = (out / "2026-01-03" / "report.md").read_text()
    assert "✅ vs previous night (2026-01-02)" in rerun and "✅ vs baseline (2026-01-01)" in rerun
    assert h.nights(hist_dir) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    res = h.read_results(hist_dir)
    assert len(res[res["date"] == "2026-01-03"]) == 16  # 2 methods x 8 images x 1 metric, not doubled
    night = h.read_night(hist_dir, "2026-01-03")
    assert night.run["spec_hashes"]["bicubic"] and night.run["versions"]["numpy"]
    assert set(night.throughput["name"]) == {"degrade-bicubic-64"}
    capsys.readouterr()
    assert main(["nights", "--history", str(hist_dir)]) == 0
    assert "2026-01-01  commit" in capsys.readouterr().out


def test_training_job_student_is_evaluated_and_fingerprinted(tmp_path, ray_cluster):
    from srdistill.degrade.build.builder import build

    shards = tmp_path / "shards"
    build("sample", str(shards), "bicubic", crop=64, limit=2, shard_samples=4, seed=0, workers=1, address="local",
          progress=False, command="tests")
    job = {"name": "student", "recipe": "ctsr", "shards": "shards", "steps": 1, "components": "tiny",
           "overrides": {"trainer.batch_size": 1, "trainer.crop": 64, "trainer.num_workers": 0}}
    suite = tmp_path / "train.yaml"
    suite.write_text(yaml.safe_dump({"name": "train", "datasets": ["sample"], "methods": ["bicubic"],
                                     "metrics": ["psnr"], "training": [job]}))
    hist_dir, out = tmp_path / "history", tmp_path / "reports"
    assert main(["nightly", "--suite", str(suite), "--date", "2026-02-01", "--history", str(hist_dir),
                 "--out", str(out), "--quiet"]) == 0
    night = h.read_night(hist_dir, "2026-02-01")
    rows = night.results[night.results["method"] == "student"]
    # every sample image, including LR sizes that are no multiple of the latent students' downsampling
    assert len(rows) == 8 and (rows["status"] == "ok").all() and rows["value"].map(math.isfinite).all()
    fingerprint = night.run["fingerprints"]["method:student"]
    assert fingerprint.startswith("student-") and set(rows["method_fingerprint"]) == {fingerprint}
    assert night.run["spec_hashes"]["shards:student"]
    assert (out / "2026-02-01" / "train" / "student" / "export").is_dir()
    assert "| student |" in (out / "2026-02-01" / "report.md").read_text()


def test_user_mistakes_exit_2_with_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [bicubic]\nfrobnicate: 1\n")
    assert main(["nightly", "--suite", str(bad), "--history", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reports: ") and "frobnicate" in err and err.count("\n") == 1
    assert main(["nightly", "--date", "2026-13-01", "--history", str(tmp_path / "h")]) == 2
    assert main(["pin", "2026-01-01", "--history", str(tmp_path / "h")]) == 2
    assert main(["nightly", "--baseline", "2025-01-01", "--history", str(tmp_path / "h"), "--out", str(tmp_path)]) == 2
    assert "not a night recorded" in capsys.readouterr().err


def test_default_suite_is_offline_sample_suite():
    suite = load_suite()
    assert suite.datasets == ("sample",)
    assert set(suite.methods) == {"bicubic", "lanczos"}
    assert {"psnr", "ssim"} <= set(suite.metrics)
    assert len(suite.fingerprint()) == 16


def test_download_flags_reach_the_night(tmp_path, capsys, monkeypatch):
    # --offline is applied before the suite is read (so even a failing night has fetched nothing) ...
    monkeypatch.delenv("SRDISTILL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    missing = tmp_path / "missing.yaml"
    assert main(["nightly", "--offline", "--suite", str(missing), "--history", str(tmp_path / "h")]) == 2
    assert os.environ.get("SRDISTILL_OFFLINE") == "1" and os.environ.get("HF_HUB_OFFLINE") == "1"
    capsys.readouterr()
    # ... and a mirror that is not an http(s) URL is one sentence.
    assert main(["nightly", "--mirror", "ftp://mirror.lan", "--history", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert "not an http(s) URL" in err and err.count("\n") == 1
