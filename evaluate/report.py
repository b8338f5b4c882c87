"""After a run: leaderboard.parquet, leaderboard.md, plots and visual grids from OUT/results.parquet."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from srdistill.evaluate.leaderboard import LEADERBOARD_NAME, build_leaderboard
from srdistill.evaluate.reported import load_reported
from srdistill.evaluate.results import RESULTS_NAME


def write_reports(out: Path, summary=None, *, include_reported: bool = True) -> list[Path]:
    """Write every report file under OUT for the methods and datasets of `summary` (all in results if None)."""
    from srdistill.reports.leaderboard_md import render_leaderboard_md
    from srdistill.reports.plots import write_plots
    from srdistill.reports.visual_grid import visual_grid

    out = Path(out)
    results = pd.read_parquet(out / RESULTS_NAME)
    if summary is not None:
        results = results[results["method"].isin(summary.methods) & results["dataset"].isin(summary.datasets)
                          & results["metric"].isin(summary.metrics)]
    board = build_leaderboard(results)
    written = [out / LEADERBOARD_NAME]
    tmp = out / f".{LEADERBOARD_NAME}.tmp"
    board.to_parquet(tmp, index=False)
    os.replace(tmp, out / LEADERBOARD_NAME)
    # per-metric skip reasons are listed under each dataset table; keep the rest of the summary here
    notes = [line for line in summary.lines()[1:] if not line.startswith("metric ")] if summary is not None else []
    seeds = sorted(set(results["dataset"] + ": " + results["dataset_meta"].astype(str)))
    notes += [f"dataset {s}" for s in seeds if '"synthesized"' in s]
    md = render_leaderboard_md(board, load_reported() if include_reported else None, extra_notes=notes)
    (out / "leaderboard.md").write_text(md)
    written.append(out / "leaderboard.md")
    written += write_plots(board, out)
    for dataset, rows in results.groupby("dataset"):
        hr = summary.hr_images.get(dataset) if summary is not None and dataset in summary.hr_images else _hr_paths(out, dataset, rows)
        grid = visual_grid(out / "sr", dataset, sorted(rows["method"].unique()), hr, out / "grids")
        if grid is not None:
            written.append(grid)
    return written


def _hr_paths(out: Path, dataset: str, rows: pd.DataFrame) -> dict[str, Path | None]:
    """HR path per stem when the dataset's HR is cached/linked under OUT/cache, else None (grid shows methods only)."""
    stems = sorted(s for s in rows["image"].unique() if s != "*")
    found: dict[str, Path | None] = {s: None for s in stems}
    cache = out / "cache"
    if cache.is_dir():
        for folder in sorted(cache.glob(f"{dataset}-*")):
            for candidate in (folder / "hr", folder):
                for stem in stems:
                    for path in candidate.glob(f"{stem}.*") if candidate.is_dir() else []:
                        found[stem] = found[stem] or path
    return found
