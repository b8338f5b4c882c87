"""results.parquet: one row per (method, dataset, image, metric), written so that no completed row is ever lost.

New rows go to small part files (written to a temporary name, then renamed) as soon as each
(method, dataset, metric) finishes; `merge()` folds parts into results.parquet atomically. A crash or Ctrl-C
leaves parts behind, which the next run merges first.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

RESULTS_NAME = "results.parquet"
PARTS_DIR = "results.parts"
KEY = ["method", "dataset", "protocol", "image", "metric"]
COLUMNS = ["method", "dataset", "protocol", "image", "metric", "value", "status", "metric_version", "method_fingerprint",
           "dataset_fingerprint", "dataset_meta", "seconds", "protocol_hash"]
# Rows written before protocols existed: kept and shown under this name, never reused (their hash matches none).
UNRECORDED_PROTOCOL = "unrecorded"
OK = "ok"


def empty_results() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "seconds") else "object") for c in COLUMNS})
    return frame


class ResultStore:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / RESULTS_NAME
        self.parts = self.out / PARTS_DIR
        self.out.mkdir(parents=True, exist_ok=True)
        self.frame = self._load()
        self._index = self._build_index(self.frame)

    def _load(self) -> pd.DataFrame:
        frames = [pd.read_parquet(self.path)] if self.path.exists() else []
        if self.parts.is_dir():
            frames += [pd.read_parquet(p) for p in sorted(self.parts.glob("*.parquet"))]
        if not frames:
            return empty_results()
        frame = pd.concat(frames, ignore_index=True)
        if "protocol" not in frame.columns:
            frame["protocol"] = UNRECORDED_PROTOCOL
        if "protocol_hash" not in frame.columns:
            frame["protocol_hash"] = ""
        frame[["protocol", "protocol_hash"]] = frame[["protocol", "protocol_hash"]].fillna({"protocol": UNRECORDED_PROTOCOL, "protocol_hash": ""})
        return frame[COLUMNS].drop_duplicates(KEY, keep="last").reset_index(drop=True)

    @staticmethod
    def _build_index(frame: pd.DataFrame) -> dict[tuple, tuple]:
        ok = frame[frame["status"] == OK]
        return {tuple(k): (mv, mf, df, ph) for k, mv, mf, df, ph in zip(
            ok[KEY].itertuples(index=False, name=None), ok["metric_version"], ok["method_fingerprint"],
            ok["dataset_fingerprint"], ok["protocol_hash"])}

    def has(self, key: tuple, metric_version: str, method_fp: str, dataset_fp: str, protocol_hash: str) -> bool:
        """A completed ok row (key in KEY order) with the same versions, fingerprints and protocol hash exists
        (error rows are retried)."""
        return self._index.get(key) == (metric_version, method_fp, dataset_fp, protocol_hash)

    def add(self, rows: list[dict]) -> None:
        """Persist rows now (one part file)."""
        if not rows:
            return
        part = pd.DataFrame(rows, columns=COLUMNS)
        self.parts.mkdir(exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.parts / f".{name}.tmp"
        part.to_parquet(tmp, index=False)
        os.replace(tmp, self.parts / name)
        self.frame = pd.concat([self.frame, part], ignore_index=True) if len(self.frame) else part
        for row in rows:
            if row["status"] == OK:
                self._index[tuple(row[k] for k in KEY)] = (
                    row["metric_version"], row["method_fingerprint"], row["dataset_fingerprint"], row["protocol_hash"])

    def merge(self) -> pd.DataFrame:
        """Fold part files into results.parquet (atomic replace) and return the merged frame."""
        frame = self.frame.drop_duplicates(KEY, keep="last").sort_values(KEY).reset_index(drop=True)
        tmp = self.out / f".{RESULTS_NAME}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
        if self.parts.is_dir():
            for p in self.parts.glob("*.parquet"):
                p.unlink()
        self.frame = frame
        return frame
