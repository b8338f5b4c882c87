"""Leaderboard aggregation and the papers-style markdown: ranks by direction over the same images, bold/underline,
one section per (dataset, protocol), reported rows only under their own protocol, Δ rows, the reproduction table."""

import math

import pandas as pd
import pytest
from srdistill.evaluate.leaderboard import build_leaderboard
from srdistill.evaluate.reported import load_reported
from srdistill.evaluate.render.leaderboard_md import render_leaderboard_md
from srdistill.evaluate.render.reproduction import render_reproduction_md, reproduction_table


def results_frame(rows, protocol="p1"):
    return pd.DataFrame([{"method": m, "dataset": d, "image": i, "metric": k, "value": v, "status": s, "protocol": protocol,
                          "protocol_hash": f"{protocol}-hash", "metric_version": f"pyiqa-x;opt={protocol}",
                          "dataset_meta": '{"prep": "full images"}'} for m, d, i, k, v, s in rows])


@pytest.fixture
def board():
    rows = []
    for method, psnr, niqe in (("a", (30.0, 32.0), (5.0, 7.0)), ("b", (28.0, 28.0), (4.0, 4.0)), ("c", (31.0, 31.0), (6.0, 6.0))):
        for img, p, n in zip(("x", "y"), psnr, niqe):
            rows += [(method, "set", img, "psnry", p, "ok"), (method, "set", img, "niqe", n, "ok"),
                     (method, "set", img, "lpips", math.nan, "skipped: missing weights alex.pth")]
    return build_leaderboard(results_frame(rows))


def reported_rows(*rows):
    return pd.DataFrame([{"paper": p, "table": t, "protocol": proto, "dataset": d, "method_printed": m, "method": m,
                          "metric": k, "metric_options": "", "value": v} for p, t, proto, d, m, k, v in rows])


def test_means_std_n_and_ranks_follow_each_metrics_direction(board):
    psnr = board[board["metric"] == "psnry"].set_index("method")
    assert psnr.loc["a", "mean"] == 31.0 and psnr.loc["a", "std"] == 1.0 and psnr.loc["a", "n"] == 2
    assert psnr.loc["a", "rank"] == 1 and psnr.loc["c", "rank"] == 1 and psnr.loc["b", "rank"] == 3  # tie shares rank 1
    niqe = board[board["metric"] == "niqe"].set_index("method")
    assert bool(niqe["lower_better"].iloc[0]) and list(niqe.sort_values("rank").index) == ["b", "a", "c"]
    lpips = board[board["metric"] == "lpips"]
    assert (lpips["n"] == 0).all() and lpips["mean"].isna().all() and lpips["rank"].isna().all()
    assert lpips["note"].iloc[0] == "2 rows skipped: missing weights alex.pth"
    assert set(board["protocol"]) == {"p1"} and set(board["protocol_hash"]) == {"p1-hash"}
    assert set(board["metric_version"]) == {"pyiqa-x;opt=p1"} and set(board["metric_options"]) == {"opt=p1"}


def test_a_method_missing_images_is_not_ranked_over_a_different_image_set():
    # issue 13: 'paper' has 3 of 6 images and a higher mean there; ranking it above bicubic compares different sets
    rows = [("bicubic", "set", f"i{k}", "psnry", v, "ok") for k, v in enumerate((29.0, 29.0, 28.7, 25.5, 25.5, 25.5))]
    rows += [("paper", "set", f"i{k}", "psnry", 28.97, "ok") for k in range(3)]
    rows += [("paper", "set", f"i{k}", "psnry", math.nan, "error: no SR output named it") for k in range(3, 6)]
    rows += [("lanczos", "set", f"i{k}", "psnry", 27.0, "ok") for k in range(6)]
    board = build_leaderboard(results_frame(rows)).set_index("method")
    assert not board.loc["paper", "complete"] and pd.isna(board.loc["paper", "rank"]) and board.loc["paper", "n"] == 3
    assert board.loc["bicubic", "rank"] == 1 and board.loc["lanczos", "rank"] == 2
    assert "incomplete: 3 of the 6 images other methods have, not ranked" in board.loc["paper", "note"]
    md = render_leaderboard_md(build_leaderboard(results_frame(rows)))
    line = next(x for x in md.splitlines() if x.startswith("| paper |"))
    assert "28.97 *(n=3, unranked)*" in line and "**" not in line and "<u>" not in line
    assert "**27.20**" in next(x for x in md.splitlines() if x.startswith("| bicubic |"))
    assert "Images per metric: PSNR 6 (paper 3, unranked)." in md


def test_an_image_no_method_could_score_leaves_every_method_complete():
    rows = [(m, "set", "i0", "psnry", v, "ok") for m, v in (("a", 30.0), ("b", 31.0))]
    rows += [(m, "set", "i1", "psnry", math.nan, "error: too small") for m in ("a", "b")]
    board = build_leaderboard(results_frame(rows)).set_index("method")
    assert board["complete"].all() and board.loc["b", "rank"] == 1 and board.loc["a", "rank"] == 2


def test_markdown_marks_best_bold_second_underlined_with_arrows(board):
    md = render_leaderboard_md(board, None)
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "Method" not in line}
    assert "| Method | PSNR↑ | LPIPS↓ | NIQE↓ |" in md
    assert "**31.00**" in lines["a"] and "**31.00**" in lines["c"] and "<u>28.00</u>" not in lines["b"]
    assert "**4.000**" in lines["b"] and "<u>6.000</u>" in lines["a"] and "6.000" in lines["c"] and "**" not in lines["c"].split("|")[4]
    assert lines["a"].split("|")[3].strip() == "–"
    assert "LPIPS (a, b, c): 2 rows skipped: missing weights alex.pth" in md
    assert "## set — protocol p1 (p1-hash)" in md and "psnry (opt=p1)" in md and "Images: full images." in md


def test_one_section_per_protocol_and_reported_rows_only_under_their_own(board):
    other = build_leaderboard(results_frame([("a", "set", "x", "psnry", 20.0, "ok")], protocol="p2"))
    both = pd.concat([board, other], ignore_index=True)
    reported = reported_rows(("D3SR", "Table 1", "p1", "set", "a", "psnry", 99.0), ("CTSR", "Table 3", "p2", "set", "z", "psnry", 1.0),
                             ("D3SR", "Table 1", "p1", "other", "z", "psnry", 1.0))
    md = render_leaderboard_md(both, reported)
    sections = {s.split("\n", 1)[0]: s for s in md.split("\n## ")[1:]}
    assert set(sections) == {"set — protocol p1 (p1-hash)", "set — protocol p2 (p2-hash)"}
    p1, p2 = sections["set — protocol p1 (p1-hash)"], sections["set — protocol p2 (p2-hash)"]
    assert "| a *(reported, D3SR Table 1)* | 99.00 | – | – |" in p1 and "CTSR" not in p1 and "| z " not in p1
    assert "| z *(reported, CTSR Table 3)* | 1.00 |" in p2 and "D3SR" not in p2
    assert "**20.00**" in p2 and "20.00" not in p1  # p2's measured row is ranked alone
    measured_a = next(line for line in p1.splitlines() if line.startswith("| a |"))
    assert "99.00" not in measured_a and "**31.00**" in measured_a
    assert "| Δ a − a (D3SR Table 1) | -68.00 | – | – |" in p1  # 31.00 measured − 99.00 reported


def test_reproduction_pairs_measured_and_reported_under_the_same_protocol_only(board):
    reported = reported_rows(("CTSR", "Table 2", "p1", "set", "Real-ESRGAN", "psnry", 30.5),
                             ("CTSR", "Table 2", "p1", "set", "Real-ESRGAN", "niqe", 4.5),
                             ("CTSR", "Table 2", "p2", "set", "Real-ESRGAN", "psnry", 10.0),
                             ("CTSR", "Table 2", "p1", "set", "SinSR", "psnry", 10.0))
    table = reproduction_table(board, reported, {"b": ["Real-ESRGAN"]})
    assert list(zip(table["method"], table["metric"], table["reported"], table["gap"])) == [
        ("b", "niqe", 4.5, pytest.approx(-0.5)), ("b", "psnry", 30.5, pytest.approx(-2.5))]
    md = render_reproduction_md(table)
    assert "| set | p1 | b | Real-ESRGAN | CTSR Table 2 | PSNR↑ | 28.00 | 30.50 | -2.50 | 2 |" in md
    assert "No measured method" in render_reproduction_md(reproduction_table(board, reported, {}))


def test_transcribed_numbers_are_the_papers_values():
    rep = load_reported()
    assert set(rep["paper"]) == {"D3SR", "CTSR", "StrSR", "VPD-SR"} and rep["value"].notna().all()
    key = rep.set_index(["paper", "table", "dataset", "method", "metric"])["value"]
    assert key[("D3SR", "Table 1", "RealSR", "D3SR", "psnry")] == 23.98
    assert key[("CTSR", "Table 3", "DIV2K-val", "CTSR (t=0.0)", "fid")] == 24.56
    assert key[("D3SR", "Table 2", "RealSet65", "OSEDiff", "maniqa")] == 0.6024
    assert key[("VPD-SR", "Table III", "StableSR-DRealSR", "VPD-SR", "niqe")] == 5.9779
    assert key[("StrSR", "Table 3", "RealLQ250", "StrSR-F", "qalign")] == 4.2851
