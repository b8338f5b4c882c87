"""PNG plots from a leaderboard: fidelity-realism scatters and per-metric bars (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from srdistill.evaluate.render.leaderboard_md import header

SCATTER_PAIRS = (("psnry", "musiq"), ("lpips", "clipiqa"), ("psnry", "niqe"))


def _save(fig: Figure, path: Path) -> Path:
    # Figures built without pyplot: no global backend switch in the caller's process (e.g. a notebook).
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _means(board: pd.DataFrame, dataset: str) -> pd.DataFrame:
    part = board[(board["dataset"] == dataset) & (board["n"] > 0)]
    return part.pivot_table(index="method", columns="metric", values="mean")


def scatter_plots(board: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per dataset and (fidelity, realism) pair whose both metrics were scored."""
    written = []
    for dataset in sorted(board["dataset"].unique()):
        means = _means(board, dataset)
        for x, y in SCATTER_PAIRS:
            if x not in means or y not in means:
                continue
            pts = means[[x, y]].dropna()
            if pts.empty:
                continue
            fig = Figure(figsize=(5, 4), dpi=100)
            ax = fig.add_subplot()
            ax.scatter(pts[x], pts[y])
            for method, row in pts.iterrows():
                ax.annotate(method, (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel(header(x))
            ax.set_ylabel(header(y))
            ax.set_title(f"{dataset}: fidelity vs realism")
            written.append(_save(fig, Path(out) / f"scatter_{dataset}_{x}_{y}.png"))
    return written


def bar_plots(board: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per dataset and metric: mean ± std per method."""
    written = []
    for (dataset, metric), part in board[board["n"] > 0].groupby(["dataset", "metric"]):
        part = part.sort_values("method")
        fig = Figure(figsize=(max(4, 0.8 * len(part) + 2), 3.5), dpi=100)
        ax = fig.add_subplot()
        ax.bar(part["method"], part["mean"], yerr=part["std"].fillna(0), capsize=3)
        ax.set_ylabel(header(metric))
        ax.set_title(f"{dataset}: {header(metric)}")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        written.append(_save(fig, Path(out) / f"bars_{dataset}_{metric}.png"))
    return written


def write_plots(board: pd.DataFrame, out: Path) -> list[Path]:
    folder = Path(out) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    return scatter_plots(board, folder) + bar_plots(board, folder)
