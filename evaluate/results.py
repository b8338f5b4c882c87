"""results.parquet: one row per (method, dataset, image, metric), written so that no completed row is ever lost.

The evaluation instance of `srdistill.parts.PartsStore`: new rows go to part files in results.parts/ as soon as
each (method, dataset, metric) finishes, and `merge()` folds them into results.parquet atomically. A crash or
Ctrl-C leaves parts behind, which the next run merges first; a damaged part or a foreign results.parquet is set
aside (renamed, kept) and its rows are computed again.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from srdistill.parts import PartsStore, TableSchema

RESULTS_NAME = "results.parquet"
PARTS_DIR = "results.parts"
KEY = ["method", "dataset", "image", "metric"]
COLUMNS = ["method", "dataset", "image", "metric", "value", "status", "metric_version", "method_fingerprint",
           "dataset_fingerprint", "dataset_meta", "seconds"]
OK = "ok"

SCHEMA = TableSchema(
    columns={c: "float64" if c in ("value", "seconds") else "object" for c in COLUMNS},
    key=tuple(KEY),
    fingerprint=("metric_version", "method_fingerprint", "dataset_fingerprint"),
    usable=lambda frame: frame["status"] == OK,  # error rows are retried
)


def empty_results() -> pd.DataFrame:
    return SCHEMA.empty()


def _say(message: str) -> None:
    import sys

    print(f"evaluate: {message}", file=sys.stderr)


class ResultStore(PartsStore):
    def __init__(self, out: str | Path, storage_options: dict | None = None):
        super().__init__(str(out), SCHEMA, name=RESULTS_NAME.removesuffix(".parquet"), storage_options=storage_options,
                         notify=_say)

    def has(self, key: tuple, metric_version: str, method_fp: str, dataset_fp: str) -> bool:
        """A completed ok row with the same versions and fingerprints exists (error rows are retried)."""
        return super().has(key, (metric_version, method_fp, dataset_fp))
