"""results.parquet -> leaderboard: one row per (method, dataset, metric) with mean, std, n, rank and direction."""

from __future__ import annotations

import pandas as pd
from srdistill.evaluate.metrics import metric_info
from srdistill.evaluate.results import OK

LEADERBOARD_NAME = "leaderboard.parquet"
COLUMNS = ["dataset", "metric", "method", "mean", "std", "n", "n_failed", "rank", "lower_better", "note"]


def build_leaderboard(results: pd.DataFrame) -> pd.DataFrame:
    """Aggregate ok rows; a (method, dataset, metric) with no ok row keeps n=0, NaN mean and the reason in `note`.

    Rank 1 is best within (dataset, metric), by mean in the metric's direction; ties share the lower rank.
    """
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    groups = []
    for (dataset, metric, method), rows in results.groupby(["dataset", "metric", "method"], sort=True):
        ok = rows.loc[rows["status"] == OK, "value"].astype(float)
        failed = rows[rows["status"] != OK]
        note = ""
        if len(failed):
            reasons = failed["status"].value_counts()
            note = f"{len(failed)} rows {reasons.index[0]}"
        groups.append({"dataset": dataset, "metric": metric, "method": method,
                       "mean": float(ok.mean()) if len(ok) else float("nan"),
                       "std": float(ok.std(ddof=0)) if len(ok) else float("nan"),
                       "n": int(len(ok)), "n_failed": int(len(failed)),
                       "lower_better": metric_info(metric).lower_better, "note": note})
    board = pd.DataFrame(groups)
    board["rank"] = float("nan")
    for (_, metric), idx in board.groupby(["dataset", "metric"]).groups.items():
        part = board.loc[idx, "mean"]
        board.loc[idx, "rank"] = part.rank(method="min", ascending=bool(metric_info(metric).lower_better))
    board["rank"] = board["rank"].astype("Int64")
    return board[COLUMNS].sort_values(["dataset", "metric", "rank", "method"]).reset_index(drop=True)
