"""Published numbers transcribed from the papers' tables (evaluate/data/reported.csv), shown beside measured rows."""

from __future__ import annotations

from importlib import resources

import pandas as pd

COLUMNS = ["paper", "table", "dataset", "method", "metric", "value"]


def load_reported() -> pd.DataFrame:
    """Every transcribed value: paper, table, dataset, method, metric (pyiqa name), value."""
    with resources.files("srdistill.evaluate").joinpath("data/reported.csv").open("r") as f:
        frame = pd.read_csv(f, dtype={"value": "float64"})
    return frame[COLUMNS]
