"""A static, self-contained leaderboard site: DIR/index.html (inline CSS and JS, no request beyond its folder) with
the images and plots it shows copied beside it, so it opens from file:// on a machine without network.

The page holds, per (dataset, protocol), the leaderboard.md table (measured rows ranked as there, reported and
Δ rows below), sortable by any column; a per-image drill-down (one metric at a time, methods as columns); the
plots; and a comparison viewer: two of HR, LR (shown at HR size, nearest) and the methods' SR outputs of one image,
split by a slider, panned (drag) and zoomed (wheel) together since both layers share one transform.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
from srdistill.core.errors import UserError
from srdistill.core.iqa.metrics import metric_info
from srdistill.datasets.images import read_rgb
from srdistill.evaluate.render.leaderboard_md import DISPLAY, _metric_order, format_value, gaps, reported_for
from srdistill.evaluate.results import OK

_ASSETS = Path(__file__).with_name("site_assets")
GENERATOR = '<meta name="generator" content="srdistill evaluate --html">'


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _mark(rank, complete: bool) -> str:
    if not complete or pd.isna(rank):
        return ""
    return {1: "best", 2: "second"}.get(int(rank), "")


def section_data(board: pd.DataFrame, results: pd.DataFrame, dataset: str, protocol: str,
                 reported: pd.DataFrame | None, counterparts: dict | None, protocols: dict | None) -> dict:
    """One (dataset, protocol): its metrics, its table rows (measured, reported, delta) and per-image values."""
    part = board[(board["dataset"] == dataset) & (board["protocol"] == protocol)]
    proto = (protocols or {}).get(protocol)
    metrics = _metric_order(list(part["metric"].unique()), list(proto.metrics) if proto is not None else None)
    rows = []
    for method in sorted(part["method"].unique()):
        mine = part[part["method"] == method].set_index("metric")
        cells = {}
        for m in metrics:
            if m not in mine.index:
                continue
            r = mine.loc[m]
            text = format_value(m, r["mean"])
            if not bool(r["complete"]) and text != "–":
                text += f" (n={int(r['n'])}, unranked)"
            cells[m] = {"v": _num(r["mean"]), "t": text, "mark": _mark(r["rank"], bool(r["complete"]))}
        rows.append({"kind": "measured", "label": method, "cells": cells})
    rep = reported_for(reported, dataset, protocol, metrics)
    for (paper, table, method), group in rep.groupby(["paper", "table", "method"], sort=True):
        values = group.set_index("metric")["value"]
        rows.append({"kind": "reported", "label": f"{method} (reported, {paper} {table})",
                     "cells": {m: {"v": float(values[m]), "t": format_value(m, float(values[m])), "mark": ""}
                               for m in metrics if m in values.index}})
    for gap in gaps(part, rep, counterparts):
        rows.append({"kind": "delta", "label": f"Δ {gap['method']} − {gap['reported']} ({gap['paper']} {gap['table']})",
                     "cells": {m: {"v": d, "t": format_value(m, d, signed=True), "mark": ""}
                               for m, d in gap["delta"].items() if not math.isnan(d)}})
    mine = results[(results["dataset"] == dataset) & (results["protocol"] == protocol) & (results["status"] == OK)
                   & (results["image"] != "*")]
    per_image = {m: {meth: {i: float(v) for i, v in zip(g["image"], g["value"]) if math.isfinite(float(v))}
                     for meth, g in rows_m.groupby("method")}
                 for m, rows_m in mine.groupby("metric")}
    hashes = sorted(h for h in part["protocol_hash"].unique() if h)
    return {"id": re.sub(r"[^A-Za-z0-9]+", "-", f"{dataset}-{protocol}").strip("-"), "dataset": dataset,
            "protocol": protocol, "hash": ", ".join(hashes), "title": proto.title if proto is not None else "",
            "metrics": [{"name": m, "label": DISPLAY.get(m, m), "lower": bool(metric_info(m).lower_better)}
                        for m in metrics],
            "rows": rows, "images": sorted(mine["image"].unique()), "perImage": per_image}


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def collect_images(dest: Path, sr_root: Path, sr_sets: dict[str, dict[str, Path | None]], methods: list[str],
                   lr_sets: dict[str, dict[str, Path]] | None = None) -> dict:
    """Copy each image with an HR into DEST/images/set<i>/p<j>/<stem>.<ext>; returns set -> stem -> {size, panels}
    with paths relative to DEST. LR from `lr_sets`, else the HR's sibling lr/ file when the set's cache has one."""
    sets = {}
    for index, (name, stems) in enumerate(sorted(sr_sets.items())):
        found = {}
        for stem, hr in sorted(stems.items()):
            if hr is None or not Path(hr).is_file():
                continue
            hr = Path(hr)
            sources = {"HR": hr}
            lr = (lr_sets or {}).get(name, {}).get(stem)
            if lr is None and hr.parent.name == "hr":
                lr = hr.parent.parent / "lr" / f"{stem}.png"
            if lr is not None and Path(lr).is_file():
                sources["LR"] = Path(lr)
            for method in methods:
                path = Path(sr_root) / method / name / f"{stem}.png"
                if path.is_file():
                    sources[method] = path
            if len(sources) < 2:
                continue
            panels = {}
            for k, (panel, src) in enumerate(sources.items()):
                rel = Path("images") / f"set{index}" / f"p{k}" / f"{stem}{src.suffix.lower()}"
                _copy(src, dest / rel)
                panels[panel] = rel.as_posix()
            h, w = read_rgb(hr).shape[:2]
            found[stem] = {"w": int(w), "h": int(h), "panels": panels}
        if found:
            sets[name] = found
    return sets


def is_site(folder: Path) -> bool:
    """FOLDER holds a site write_site wrote (its index carries GENERATOR), so replacing it loses nothing else."""
    index = Path(folder) / "index.html"
    return index.is_file() and GENERATOR in index.read_text(errors="replace")[:2000]


def check_site_dest(dest: str | Path) -> None:
    """Refuse a DEST that holds anything but an earlier site (it is emptied before writing)."""
    dest = Path(dest)
    if dest.exists() and not is_site(dest) and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"--html {dest} exists and is not a site this command wrote; name a new or empty folder "
                        "(an earlier site there is replaced).")


def render_index(data: dict) -> str:
    """index.html: the page skeleton, the inline stylesheet and script, and the data as inline JSON."""
    payload = json.dumps(data, allow_nan=False, ensure_ascii=False).replace("</", "<\\/")
    page = (_ASSETS / "index.html").read_text()
    return (page.replace("/*STYLE*/", (_ASSETS / "site.css").read_text())
                .replace("/*SCRIPT*/", (_ASSETS / "site.js").read_text())
                .replace("/*DATA*/", payload)
                .replace("<!--TITLE-->", html.escape(data["title"])))


def write_site(dest: Path, board: pd.DataFrame, results: pd.DataFrame, *, reported: pd.DataFrame | None = None,
               counterparts: dict | None = None, protocols: dict | None = None, sr_root: Path | None = None,
               sr_sets: dict | None = None, lr_sets: dict | None = None, plots: Path | None = None,
               title: str = "Leaderboard") -> Path:
    """Write DEST/index.html with its images and plots copied under DEST; returns the index path."""
    dest = Path(dest)
    check_site_dest(dest)
    if dest.exists():
        shutil.rmtree(dest)  # a stale image or plot of an earlier run must not stay linked
    dest.mkdir(parents=True)
    if "protocol" not in board.columns:
        board = board.assign(protocol="unrecorded", protocol_hash="")
    if "protocol" not in results.columns:
        results = results.assign(protocol="unrecorded")
    keys = board[["dataset", "protocol"]].drop_duplicates().sort_values(["dataset", "protocol"])
    sections = [section_data(board, results, d, p, reported, counterparts, protocols) for d, p in keys.itertuples(index=False)]
    plot_files = []
    for path in sorted(Path(plots).glob("*.png")) if plots is not None and Path(plots).is_dir() else []:
        _copy(path, dest / "plots" / path.name)
        plot_files.append(f"plots/{path.name}")
    methods = sorted(board["method"].unique())
    images = collect_images(dest, Path(sr_root), sr_sets or {}, methods, lr_sets) if sr_root is not None else {}
    data = {"title": title, "sections": sections, "plots": plot_files, "images": images}
    index = dest / "index.html"
    index.write_text(render_index(data))
    return index
