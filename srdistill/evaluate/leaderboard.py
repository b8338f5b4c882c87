"""results.parquet -> leaderboard: one row per (dataset, protocol, metric, method) with mean, std, n, rank, direction.

Ranks compare like with like: only rows of one (dataset, protocol, metric), and only methods scored on the same
images. A method missing images that others in its group have is `complete = False`, keeps its mean (over what it
has) but gets no rank, and its note names how many images are missing.
"""

from __future__ import annotations

import json

import pandas as pd
from srdistill.core.iqa.metrics import metric_info
from srdistill.evaluate.results import OK, UNRECORDED_PROTOCOL

LEADERBOARD_NAME = "leaderboard.parquet"
COLUMNS = ["dataset", "protocol", "protocol_hash", "metric", "metric_options", "metric_version", "method", "mean", "std", "n", "n_failed",
           "complete", "rank", "lower_better", "note", "dataset_meta"]


def build_leaderboard(results: pd.DataFrame) -> pd.DataFrame:
    """Aggregate ok rows; a (method, dataset, protocol, metric) with no ok row keeps n=0, NaN mean and the reason in
    `note`. Rank 1 is best within (dataset, protocol, metric) among complete methods, by mean in the metric's
    direction; ties share the lower rank."""
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    results = results.copy()
    for column, default in (("protocol", UNRECORDED_PROTOCOL), ("protocol_hash", ""), ("metric_version", ""), ("dataset_meta", "{}")):
        if column not in results.columns:
            results[column] = default
    groups = []
    for (dataset, protocol, metric), part in results.groupby(["dataset", "protocol", "metric"], sort=True):
        images = {method: set(rows.loc[rows["status"] == OK, "image"]) for method, rows in part.groupby("method")}
        union = set().union(*images.values())
        for method, rows in part.groupby("method", sort=True):
            ok = rows.loc[rows["status"] == OK, "value"].astype(float)
            failed = rows[rows["status"] != OK]
            notes = []
            if len(failed):
                reasons = failed["status"].value_counts()
                notes.append(f"{len(failed)} rows {reasons.index[0]}")
            complete = len(ok) > 0 and images[method] == union
            if len(ok) and not complete:
                notes.append(f"incomplete: {len(images[method])} of the {len(union)} images other methods have, not ranked")
            groups.append({"dataset": dataset, "protocol": protocol, "protocol_hash": rows["protocol_hash"].iloc[-1],
                           "metric": metric, "metric_options": metric_options_text(rows["metric_version"].iloc[-1]),
                           "metric_version": rows["metric_version"].iloc[-1], "method": method,
                           "mean": float(ok.mean()) if len(ok) else float("nan"),
                           "std": float(ok.std(ddof=0)) if len(ok) else float("nan"),
                           "n": int(len(ok)), "n_failed": int(len(failed)), "complete": bool(complete),
                           "lower_better": metric_info(metric).lower_better, "note": "; ".join(notes),
                           "dataset_meta": _meta(rows["dataset_meta"].iloc[-1])})
    board = pd.DataFrame(groups)
    board["rank"] = float("nan")
    for (_, _, metric), idx in board.groupby(["dataset", "protocol", "metric"]).groups.items():
        ranked = board.loc[idx][board.loc[idx, "complete"]]
        board.loc[ranked.index, "rank"] = ranked["mean"].rank(method="min", ascending=bool(metric_info(metric).lower_better))
    board["rank"] = board["rank"].astype("Int64")
    return board[COLUMNS].sort_values(["dataset", "protocol", "metric", "rank", "method"]).reset_index(drop=True)


def metric_options_text(metric_version: str) -> str:
    """`pyiqa-0.1.16;crop_border=0;test_y_channel=unspecified` -> `crop_border=0;test_y_channel=unspecified`."""
    return ";".join(str(metric_version).split(";")[1:])


def _meta(text) -> str:
    """The set's description without per-run noise (kept as JSON text)."""
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except (TypeError, ValueError):
        return "{}"
