"""After a run: leaderboard.parquet, leaderboard.md, reproduction.{md,parquet}, plots and visual grids from
OUT/results.parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from srdistill.core.atomic import atomic_path
from srdistill.evaluate.leaderboard import LEADERBOARD_NAME, build_leaderboard
from srdistill.evaluate.protocol import DEFAULT_PROTOCOL, PRESETS, load_protocol
from srdistill.evaluate.reported import load_reported
from srdistill.evaluate.results import RESULTS_NAME, UNRECORDED_PROTOCOL

REPRODUCTION_NAME = "reproduction.parquet"


def _write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def known_protocols(results: pd.DataFrame, summary) -> dict:
    """Protocol objects for the names in the results: this run's, and presets whose hash still matches."""
    found = {}
    for name, hashes in results.groupby("protocol")["protocol_hash"].unique().items():
        if name in PRESETS:
            proto = load_protocol(name)
            if proto.hash in set(hashes):
                found[name] = proto
    if summary is not None and summary.protocol is not None:
        found[summary.protocol.name] = summary.protocol
    return found


def write_reports(out: Path, summary=None, *, include_reported: bool = True, latex: str | Path | None = None,
                  html: str | Path | None = None) -> list[Path]:
    """Write every report file under OUT for the methods and datasets of `summary` (all in results if None), plus
    the LaTeX tables to `latex` and the static site to `html` when given.

    Rows of other protocols for the same methods and datasets stay in the report, each in its own section."""
    from srdistill.evaluate.render.leaderboard_md import render_leaderboard_md
    from srdistill.evaluate.render.plots import write_plots
    from srdistill.evaluate.render.reproduction import render_reproduction_md, reproduction_table
    from srdistill.evaluate.render.visual_grid import visual_grid

    out = Path(out)
    results = pd.read_parquet(out / RESULTS_NAME)
    if "protocol" not in results.columns:  # written before protocols existed
        results = results.assign(protocol=UNRECORDED_PROTOCOL, protocol_hash="")
    if summary is not None:
        this_run = results["protocol"] == (summary.protocol.name if summary.protocol is not None else DEFAULT_PROTOCOL)
        results = results[results["method"].isin(summary.methods) & results["dataset"].isin(summary.datasets)
                          & (~this_run | results["metric"].isin(summary.metrics))]
    board = build_leaderboard(results)
    written = [_write_parquet(board, out / LEADERBOARD_NAME)]
    # per-metric skip reasons are listed under each dataset table; keep the rest of the summary here
    notes = [line for line in summary.lines()[1:] if not line.startswith("metric ")] if summary is not None else []
    reported = load_reported() if include_reported else None
    counterparts = summary.counterparts if summary is not None else None
    protocols = known_protocols(results, summary)
    md = render_leaderboard_md(board, reported, extra_notes=notes, counterparts=counterparts, protocols=protocols)
    (out / "leaderboard.md").write_text(md)
    written.append(out / "leaderboard.md")
    if include_reported:
        table = reproduction_table(board, reported, counterparts)
        written.append(_write_parquet(table, out / REPRODUCTION_NAME))
        (out / "reproduction.md").write_text(render_reproduction_md(table))
        written.append(out / "reproduction.md")
    # plots are per dataset: a protocol other than the default gets its own label, so no plot mixes protocols
    labelled = board.assign(dataset=[d if p == DEFAULT_PROTOCOL else f"{d}-{p}" for d, p in zip(board["dataset"], board["protocol"])])
    written += write_plots(labelled, out)
    sets = summary.sr_sets if summary is not None else {d: _hr_paths(out, d, rows) for d, rows in results.groupby("dataset")}
    for name, hr in sets.items():
        dataset = name.split("@")[0]
        methods = sorted(results.loc[results["dataset"] == dataset, "method"].unique())
        grid = visual_grid(out / "sr", name, methods, hr, out / "grids")
        if grid is not None:
            written.append(grid)
    if latex:
        written.append(write_latex(Path(latex), board, reported, protocols))
    if html:
        from srdistill.evaluate.render.site import write_site

        written.append(write_site(Path(html), board, results, reported=reported, counterparts=counterparts,
                                  protocols=protocols, sr_root=out / "sr", sr_sets=sets, plots=out / "plots",
                                  lr_sets=summary.lr_sets if summary is not None else None))
    return written


def write_latex(path: Path, board: pd.DataFrame, reported: pd.DataFrame | None, protocols: dict) -> Path:
    from srdistill.evaluate.render.leaderboard_tex import render_leaderboard_tex

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_leaderboard_tex(board, reported, protocols=protocols))
    return path


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
