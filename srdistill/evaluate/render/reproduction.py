"""The reproduction table: each method we ran beside each published number it reproduces, under the same protocol.

A measured (method, dataset, protocol, metric) is paired with a reported row when the reported row was measured
under the same protocol on the same dataset and its method is one the measured method reproduces (Real-ESRGAN for
realesrgan-x4plus, the recipe's paper method for a trained student, or the same canonical name for published
outputs). The gap is measured − reported.
"""

from __future__ import annotations

import pandas as pd
from srdistill.evaluate.reported import canonical_method
from srdistill.evaluate.render.leaderboard_md import DISPLAY, format_value, header

COLUMNS = ["dataset", "protocol", "metric", "method", "reported_method", "paper", "table", "measured", "reported", "gap",
           "n", "complete"]


def reproduction_table(board: pd.DataFrame, reported: pd.DataFrame | None,
                       counterparts: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per (measured leaderboard row, reported row) pair under the same dataset, protocol and metric."""
    if reported is None or reported.empty or board.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    scored = board[board["n"] > 0]
    for r in scored.itertuples(index=False):
        ids = set((counterparts or {}).get(r.method, [])) | {canonical_method(r.method)}
        match = reported[(reported["dataset"] == r.dataset) & (reported["protocol"] == r.protocol)
                         & (reported["metric"] == r.metric) & reported["method"].isin(ids)]
        for rep in match.itertuples(index=False):
            rows.append({"dataset": r.dataset, "protocol": r.protocol, "metric": r.metric, "method": r.method,
                         "reported_method": rep.method, "paper": rep.paper, "table": rep.table,
                         "measured": float(r.mean), "reported": float(rep.value), "gap": float(r.mean) - float(rep.value),
                         "n": int(r.n), "complete": bool(r.complete)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["dataset", "protocol", "method", "paper", "table", "metric"]).reset_index(drop=True)


def render_reproduction_md(table: pd.DataFrame) -> str:
    lines = ["# Reproduction", "",
             "Methods we ran beside the published numbers they reproduce, under the same protocol and dataset. "
             "Gap = measured − reported; n = images measured.", ""]
    if table.empty:
        lines.append("No measured method has a reported counterpart under the protocols of this run "
                     "(reproducible: realesrgan-x4plus as Real-ESRGAN, trained students as their recipe's paper method).")
        return "\n".join(lines) + "\n"
    lines += ["| Dataset | Protocol | Method | Reported as | Source | Metric | Measured | Reported | Gap | n |",
              "|---|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in table.itertuples(index=False):
        n = f"{r.n}" if r.complete else f"{r.n} (incomplete)"
        lines.append(f"| {r.dataset} | {r.protocol} | {r.method} | {r.reported_method} | {r.paper} {r.table} | "
                     f"{header(r.metric) if r.metric in DISPLAY else r.metric} | {format_value(r.metric, r.measured)} | "
                     f"{format_value(r.metric, r.reported)} | {format_value(r.metric, r.gap, signed=True)} | {n} |")
    return "\n".join(lines) + "\n"
