"""leaderboard.md: per dataset, a table in the papers' style (arrows in headers, best bold, second underlined).

Measured rows come from the leaderboard; reported rows (published numbers) follow, labelled with their paper and
table, and are never ranked with or mixed into measured rows.
"""

from __future__ import annotations

import math

import pandas as pd
from srdistill.evaluate.metrics import CONVENTION, metric_info

DISPLAY = {"psnry": "PSNR", "psnr": "PSNR(RGB)", "ssim": "SSIM", "lpips": "LPIPS", "dists": "DISTS", "niqe": "NIQE",
           "musiq": "MUSIQ", "maniqa": "MANIQA", "clipiqa": "CLIPIQA", "qalign": "Q-Align", "qualiclip": "QualiCLIP",
           "fid": "FID"}


def format_value(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric in ("psnry", "psnr", "musiq", "fid"):
        return f"{value:.2f}"
    if metric == "niqe":
        return f"{value:.3f}"
    return f"{value:.4f}"


def header(metric: str) -> str:
    return f"{DISPLAY.get(metric, metric)}{'↓' if metric_info(metric).lower_better else '↑'}"


def _cell(metric: str, value: float, rank) -> str:
    text = format_value(metric, value)
    if pd.isna(rank) or text == "–":
        return text
    if int(rank) == 1:
        return f"**{text}**"
    if int(rank) == 2:
        return f"<u>{text}</u>"
    return text


def _metric_order(metrics: list[str]) -> list[str]:
    known = list(DISPLAY)
    return sorted(metrics, key=lambda m: (known.index(m) if m in known else len(known), m))


def render_dataset(board: pd.DataFrame, dataset: str, reported: pd.DataFrame | None) -> list[str]:
    part = board[board["dataset"] == dataset]
    metrics = _metric_order(list(part["metric"].unique()))
    lines = [f"## {dataset}", "", "| Method | " + " | ".join(header(m) for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for method in sorted(part["method"].unique()):
        rows = part[part["method"] == method].set_index("metric")
        cells = [_cell(m, rows.loc[m, "mean"], rows.loc[m, "rank"]) if m in rows.index else "–" for m in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if reported is not None and len(reported):
        rep = reported[(reported["dataset"] == dataset) & reported["metric"].isin(metrics)]
        for (paper, table, method), rows in rep.groupby(["paper", "table", "method"], sort=True):
            values = rows.set_index("metric")["value"]
            cells = [format_value(m, float(values[m])) if m in values.index else "–" for m in metrics]
            lines.append(f"| {method} *(reported, {paper} {table})* | " + " | ".join(cells) + " |")
    notes = part[part["n"] == 0]
    n = part[part["n"] > 0].groupby("metric")["n"].max()
    lines.append("")
    if len(n):
        lines.append("Images per metric: " + ", ".join(f"{DISPLAY.get(m, m)} {int(v)}" for m, v in n.items()) + ".")
    for metric, rows in notes.groupby("metric"):
        lines.append(f"- {DISPLAY.get(metric, metric)}: {rows['note'].iloc[0]}")
    lines.append("")
    return lines


def render_leaderboard_md(leaderboard: pd.DataFrame, reported: pd.DataFrame | None = None, *,
                          title: str = "Leaderboard", extra_notes: list[str] | None = None) -> str:
    """The whole report: one section per dataset; best **bold**, second <u>underlined</u>, reported rows marked."""
    lines = [f"# {title}", "", f"Measured values are means over images. {CONVENTION} "
             "Best measured value per column in **bold**, second <u>underlined</u>; rows marked *(reported)* are "
             "published numbers from the papers, not ranked.", ""]
    for note in extra_notes or []:
        lines.append(f"- {note}")
    if extra_notes:
        lines.append("")
    for dataset in sorted(leaderboard["dataset"].unique()):
        lines += render_dataset(leaderboard, dataset, reported)
    return "\n".join(lines).rstrip() + "\n"
