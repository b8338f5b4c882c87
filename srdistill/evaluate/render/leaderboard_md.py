"""leaderboard.md: one section per (dataset, protocol), a table in the papers' style (arrows in headers, best bold,
second underlined).

Each section's header states the protocol, its hash, how the set was prepared and every metric's options
(`unspecified` where the protocol's source is silent). Measured rows come from the leaderboard; reported rows
(published numbers) follow only in the section of the protocol they were measured under, labelled with paper
and table, never ranked; a measured method that reproduces a reported one gets a Δ row (measured − reported).
"""

from __future__ import annotations

import json
import math

import pandas as pd
from srdistill.core.iqa.metrics import metric_info
from srdistill.evaluate.reported import canonical_method

DISPLAY = {"psnry": "PSNR", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "lpips-vgg": "LPIPS-VGG", "dists": "DISTS",
           "fid": "FID", "niqe": "NIQE", "musiq": "MUSIQ", "maniqa": "MANIQA", "maniqa-pipal": "MANIQA-PIPAL",
           "clipiqa": "CLIPIQA", "qalign": "Q-Align", "qualiclip": "QualiCLIP"}


def format_value(metric: str, value: float, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    sign = "+" if signed else ""
    if metric in ("psnry", "psnr", "musiq", "fid"):
        return f"{value:{sign}.2f}"
    if metric == "niqe":
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.4f}"


def header(metric: str) -> str:
    return f"{DISPLAY.get(metric, metric)}{'↓' if metric_info(metric).lower_better else '↑'}"


def _cell(metric: str, value: float, rank, complete: bool = True, n: int = 0) -> str:
    text = format_value(metric, value)
    if text == "–":
        return text
    if not complete:
        return f"{text} *(n={n}, unranked)*"
    if pd.isna(rank):
        return text
    if int(rank) == 1:
        return f"**{text}**"
    if int(rank) == 2:
        return f"<u>{text}</u>"
    return text


def _metric_order(metrics: list[str], protocol_order: list[str] | None = None) -> list[str]:
    known = list(protocol_order or []) + [m for m in DISPLAY if m not in (protocol_order or [])]
    return sorted(metrics, key=lambda m: (known.index(m) if m in known else len(known), m))


def _options(metric_version: str) -> str:
    """`pyiqa-0.1.14;net=vgg;crop_border=unspecified` -> `net=vgg, crop_border=unspecified` (or pyiqa defaults)."""
    parts = str(metric_version).split(";")[1:]
    return ", ".join(parts) if parts else "pyiqa defaults"


def _prep(part: pd.DataFrame) -> str:
    metas = [m for m in part["dataset_meta"].dropna().unique() if m and m != "{}"] if "dataset_meta" in part else []
    for text in metas:
        try:
            meta = json.loads(text)
        except ValueError:
            continue
        if meta.get("prep"):
            return meta["prep"]
    return "not recorded"


def section_header(part: pd.DataFrame, dataset: str, protocol: str, metrics: list[str], protocols: dict | None) -> list[str]:
    """Protocol, hash, preparation and every metric's options; unspecified settings and the protocol's notes."""
    hashes = sorted(h for h in part["protocol_hash"].unique() if h) if "protocol_hash" in part else []
    lines = [f"## {dataset} — protocol {protocol}" + (f" ({', '.join(hashes)})" if hashes else ""), ""]
    proto = (protocols or {}).get(protocol)
    if proto is not None:
        lines.append(f"Protocol: {proto.title}.")
    lines.append(f"Images: {_prep(part).rstrip('.')}.")
    versions = part.groupby("metric")["metric_version"].last() if "metric_version" in part else pd.Series(dtype=str)
    if len(versions):
        lines.append("Metrics: " + "; ".join(f"{m} ({_options(versions[m])})" for m in metrics if m in versions)
                     + f"; {str(versions.iloc[0]).split(';')[0]}.")
    if proto is not None:
        unspecified = [u for u in proto.unspecified() if u.split(".")[0] in (dataset, *metrics)]
        if unspecified:
            lines.append(f"Unspecified by the protocol's source (run at the tool's defaults): {', '.join(unspecified)}.")
        lines += [f"Note: {n}" for n in proto.notes]
    lines.append("")
    return lines


def render_section(board: pd.DataFrame, dataset: str, protocol: str, reported: pd.DataFrame | None, *,
                   counterparts: dict[str, list[str]] | None = None, protocols: dict | None = None) -> list[str]:
    part = board[(board["dataset"] == dataset) & (board["protocol"] == protocol)]
    proto = (protocols or {}).get(protocol)
    metrics = _metric_order(list(part["metric"].unique()), list(proto.metrics) if proto is not None else None)
    lines = section_header(part, dataset, protocol, metrics, protocols)
    lines += ["| Method | " + " | ".join(header(m) for m in metrics) + " |", "|---|" + "---:|" * len(metrics)]
    measured = {}
    for method in sorted(part["method"].unique()):
        rows = part[part["method"] == method].set_index("metric")
        measured[method] = rows
        cells = [_cell(m, rows.loc[m, "mean"], rows.loc[m, "rank"], bool(rows.loc[m, "complete"]), int(rows.loc[m, "n"]))
                 if m in rows.index else "–" for m in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    rep = reported_for(reported, dataset, protocol, metrics)
    for (paper, table, method), rows in rep.groupby(["paper", "table", "method"], sort=True):
        values = rows.set_index("metric")["value"]
        cells = [format_value(m, float(values[m])) if m in values.index else "–" for m in metrics]
        lines.append(f"| {method} *(reported, {paper} {table})* | " + " | ".join(cells) + " |")
    for gap in gaps(part, rep, counterparts):
        cells = [format_value(m, gap["delta"].get(m, math.nan), signed=True) for m in metrics]
        lines.append(f"| Δ {gap['method']} − {gap['reported']} ({gap['paper']} {gap['table']}) | " + " | ".join(cells) + " |")
    lines.append("")
    counted = part[part["n"] > 0]
    if len(counted):
        per_metric = []
        for metric, rows in counted.groupby("metric"):
            full = rows[rows["complete"]]["n"]
            text = f"{DISPLAY.get(metric, metric)} {int(full.max()) if len(full) else 0}"
            short = rows[~rows["complete"]]
            if len(short):
                text += " (" + ", ".join(f"{r.method} {r.n}, unranked" for r in short.itertuples()) + ")"
            per_metric.append(text)
        lines.append("Images per metric: " + ", ".join(per_metric) + ".")
    for (metric, note), rows in part[part["note"].astype(bool)].groupby(["metric", "note"], sort=True):
        lines.append(f"- {DISPLAY.get(metric, metric)} ({', '.join(sorted(rows['method']))}): {note}")
    lines.append("")
    return lines


def reported_for(reported: pd.DataFrame | None, dataset: str, protocol: str, metrics: list[str]) -> pd.DataFrame:
    """Reported rows measured on this dataset under this protocol, for these metrics."""
    if reported is None or reported.empty:
        return pd.DataFrame(columns=["paper", "table", "method", "metric", "value"])
    keep = (reported["dataset"] == dataset) & (reported["protocol"] == protocol) & reported["metric"].isin(metrics)
    return reported[keep]


def gaps(part: pd.DataFrame, rep: pd.DataFrame, counterparts: dict[str, list[str]] | None) -> list[dict]:
    """Per measured method and each reported row group it reproduces: measured − reported per metric."""
    out = []
    if rep.empty:
        return out
    for method in sorted(part["method"].unique()):
        ids = set((counterparts or {}).get(method, [])) | {canonical_method(method)}
        mine = part[(part["method"] == method) & (part["n"] > 0)].set_index("metric")["mean"]
        for (paper, table, rid), rows in rep[rep["method"].isin(ids)].groupby(["paper", "table", "method"], sort=True):
            values = rows.set_index("metric")["value"]
            delta = {m: float(mine[m] - values[m]) for m in values.index if m in mine.index}
            out.append({"method": method, "reported": rid, "paper": paper, "table": table, "delta": delta})
    return out


def render_leaderboard_md(leaderboard: pd.DataFrame, reported: pd.DataFrame | None = None, *,
                          title: str = "Leaderboard", extra_notes: list[str] | None = None,
                          counterparts: dict[str, list[str]] | None = None, protocols: dict | None = None) -> str:
    """The whole report: one section per (dataset, protocol); best **bold**, second <u>underlined</u> among methods
    scored on the same images, reported rows marked and never ranked."""
    lines = [f"# {title}", "", "Measured values are means over images, under the protocol named in each section "
             "(`evaluate protocols` lists them). Best measured value per column in **bold**, second <u>underlined</u>, "
             "among methods scored on the same images; rows marked *(reported)* are published numbers measured under "
             "that section's protocol, not ranked; Δ rows are measured − reported.", ""]
    for note in extra_notes or []:
        lines.append(f"- {note}")
    if extra_notes:
        lines.append("")
    if "protocol" not in leaderboard.columns:
        leaderboard = leaderboard.assign(protocol="unrecorded")
    keys = leaderboard[["dataset", "protocol"]].drop_duplicates().sort_values(["dataset", "protocol"])
    for dataset, protocol in keys.itertuples(index=False):
        lines += render_section(leaderboard, dataset, protocol, reported, counterparts=counterparts, protocols=protocols)
    return "\n".join(lines).rstrip() + "\n"
