"""Trend plots from the history: each metric over nights, one line per method (PNG, headless)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def nightly_means(results: pd.DataFrame) -> pd.DataFrame:
    """Mean of ok rows per date × method × dataset × metric."""
    ok = results[results["status"] == "ok"]
    return (
        ok.groupby(["date", "method", "dataset", "metric"], sort=True)["value"]
        .mean()
        .reset_index()
    )


def _line_plot(path: Path, title: str, ylabel: str, series: dict[str, pd.Series], dates: list[str]) -> Path:
    # A Figure without pyplot keeps no global state and needs no display.
    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.add_subplot()
    pos = {d: i for i, d in enumerate(dates)}
    for label, s in sorted(series.items()):
        ax.plot([pos[d] for d in s.index], s.to_numpy(), marker="o", label=label)
    ax.set_xticks(range(len(dates)))
    ax.set_xticklabels(dates, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_metric_trends(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One PNG per dataset × metric under ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    means = nightly_means(results)
    dates = sorted(results["date"].unique())
    paths = []
    for (dataset, metric), g in means.groupby(["dataset", "metric"], sort=True):
        lower = bool(results[(results["dataset"] == dataset) & (results["metric"] == metric)]["lower_better"].iloc[0])
        series = {m: mg.set_index("date")["value"] for m, mg in g.groupby("method")}
        arrow = "↓" if lower else "↑"
        path = out / f"trend_{_slug(dataset)}_{_slug(metric)}.png"
        paths.append(_line_plot(path, f"{metric} {arrow} on {dataset}", metric, series, dates))
    return paths


def plot_throughput_trends(throughput: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One PNG per throughput unit, one line per benchmark; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dates = sorted(throughput["date"].unique())
    paths = []
    for unit, g in throughput.groupby("unit", sort=True):
        series = {n: ng.set_index("date")["value"] for n, ng in g.groupby("name")}
        path = out / f"throughput_{_slug(unit)}.png"
        paths.append(_line_plot(path, f"throughput ({unit})", unit, series, dates))
    return paths
