"""Leaderboard aggregation and the papers-style markdown: ranks by direction, bold/underline, reported rows apart."""

import math

import pandas as pd
import pytest
from srdistill.evaluate.leaderboard import build_leaderboard
from srdistill.evaluate.reported import load_reported
from srdistill.reports.leaderboard_md import render_leaderboard_md


def results_frame(rows):
    return pd.DataFrame([{"method": m, "dataset": d, "image": i, "metric": k, "value": v, "status": s}
                         for m, d, i, k, v, s in rows])


@pytest.fixture
def board():
    rows = []
    for method, psnr, niqe in (("a", (30.0, 32.0), (5.0, 7.0)), ("b", (28.0, 28.0), (4.0, 4.0)), ("c", (31.0, 31.0), (6.0, 6.0))):
        for img, p, n in zip(("x", "y"), psnr, niqe):
            rows += [(method, "set", img, "psnry", p, "ok"), (method, "set", img, "niqe", n, "ok"),
                     (method, "set", img, "lpips", math.nan, "skipped: missing weights alex.pth")]
    return build_leaderboard(results_frame(rows))


def test_means_std_n_and_ranks_follow_each_metrics_direction(board):
    psnr = board[board["metric"] == "psnry"].set_index("method")
    assert psnr.loc["a", "mean"] == 31.0 and psnr.loc["a", "std"] == 1.0 and psnr.loc["a", "n"] == 2
    assert psnr.loc["a", "rank"] == 1 and psnr.loc["c", "rank"] == 1 and psnr.loc["b", "rank"] == 3  # tie shares rank 1
    niqe = board[board["metric"] == "niqe"].set_index("method")
    assert bool(niqe["lower_better"].iloc[0]) and list(niqe.sort_values("rank").index) == ["b", "a", "c"]
    lpips = board[board["metric"] == "lpips"]
    assert (lpips["n"] == 0).all() and lpips["mean"].isna().all() and lpips["rank"].isna().all()
    assert lpips["note"].iloc[0] == "2 rows skipped: missing weights alex.pth"


def test_markdown_marks_best_bold_second_underlined_with_arrows(board):
    md = render_leaderboard_md(board, None)
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "Method" not in line}
    assert "| Method | PSNR↑ | LPIPS↓ | NIQE↓ |" in md
    assert "**31.00**" in lines["a"] and "**31.00**" in lines["c"] and "<u>28.00</u>" not in lines["b"]
    assert "**4.000**" in lines["b"] and "<u>6.000</u>" in lines["a"] and "6.000" in lines["c"] and "**" not in lines["c"].split("|")[4]
    assert lines["a"].split("|")[3].strip() == "–"
    assert "LPIPS: 2 rows skipped: missing weights alex.pth" in md and "crop border 0" in md


def test_reported_rows_are_labelled_and_never_ranked_with_measured(board):
    reported = pd.DataFrame([{"paper": "D3SR", "table": "Table 1", "dataset": "set", "method": "a", "metric": "psnry", "value": 99.0},
                             {"paper": "D3SR", "table": "Table 1", "dataset": "other", "method": "z", "metric": "psnry", "value": 1.0}])
    md = render_leaderboard_md(board, reported)
    rep = [line for line in md.splitlines() if "reported" in line and line.startswith("|")]
    assert rep == ["| a *(reported, D3SR Table 1)* | 99.00 | – | – |"]
    measured_a = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert "99.00" not in measured_a and "**31.00**" in measured_a


def test_transcribed_numbers_are_the_papers_values():
    rep = load_reported()
    assert set(rep["paper"]) == {"D3SR", "CTSR"} and rep["value"].notna().all()
    key = rep.set_index(["paper", "table", "dataset", "method", "metric"])["value"]
    assert key[("D3SR", "Table 1", "RealSR", "D3SR", "psnry")] == 23.98
    assert key[("CTSR", "Table 2", "DIV2K-val", "CTSR (t=0.0)", "fid")] == 24.56
    assert key[("D3SR", "Table 2", "RealSet65", "OSEDiff-s1", "maniqa")] == 0.6024
    assert not rep.duplicated(["paper", "table", "dataset", "method", "metric"]).any()
