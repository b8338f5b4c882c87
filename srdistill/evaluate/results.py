"""results.parquet: one row per (method, dataset, protocol, image, metric), written so that no completed row is
ever lost.

The evaluation instance of `srdistill.core.parts.PartsStore`: new rows go to part files in results.parts/ as soon as
each (method, dataset, metric) finishes, and `merge()` folds them into results.parquet atomically. A crash or
Ctrl-C leaves parts behind, which the next run merges first; a damaged part or a foreign results.parquet is set
aside (renamed, kept) and its rows are computed again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from srdistill.core.parts import PartsStore, TableSchema

RESULTS_NAME = "results.parquet"
PARTS_DIR = "results.parts"
KEY = ["method", "dataset", "protocol", "image", "metric"]
COLUMNS = ["method", "dataset", "protocol", "image", "metric", "value", "status", "metric_version", "method_fingerprint",
           "dataset_fingerprint", "dataset_meta", "seconds", "protocol_hash"]
# Rows written before protocols existed: kept and shown under this name, never reused (their hash matches none).
UNRECORDED_PROTOCOL = "unrecorded"
OK = "ok"


def _with_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """Tables written before protocols existed gain the protocol columns."""
    if "protocol" not in frame.columns:
        frame["protocol"] = UNRECORDED_PROTOCOL
    if "protocol_hash" not in frame.columns:
        frame["protocol_hash"] = ""
    frame[["protocol", "protocol_hash"]] = frame[["protocol", "protocol_hash"]].fillna(
        {"protocol": UNRECORDED_PROTOCOL, "protocol_hash": ""})
    return frame


SCHEMA = TableSchema(
    columns={c: "float64" if c in ("value", "seconds") else "object" for c in COLUMNS},
    key=tuple(KEY),
    fingerprint=("metric_version", "method_fingerprint", "dataset_fingerprint", "protocol_hash"),
    usable=lambda frame: frame["status"] == OK,  # error rows are retried
    upgrade=_with_protocol,
)


def empty_results() -> pd.DataFrame:
    return SCHEMA.empty()


def _say(message: str) -> None:
    print(f"evaluate: {message}", file=sys.stderr)


class ResultStore(PartsStore):
    def __init__(self, out: str | Path, storage_options: dict | None = None):
        super().__init__(str(out), SCHEMA, name=RESULTS_NAME.removesuffix(".parquet"), storage_options=storage_options,
                         notify=_say)

    def has(self, key: tuple, metric_version: str, method_fp: str, dataset_fp: str, protocol_hash: str) -> bool:
        """A completed ok row (key in KEY order) with the same versions, fingerprints and protocol hash exists
        (error rows are retried)."""
        return super().has(key, (metric_version, method_fp, dataset_fp, protocol_hash))
