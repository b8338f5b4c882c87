"""Nightly benchmark history: a hive-partitioned parquet dataset, one partition per night.

Layout under the history folder::

    results/date=YYYY-MM-DD/part-0.parquet     one row per (method, dataset, image, metric)
    throughput/date=YYYY-MM-DD/part-0.parquet  one row per throughput benchmark
    runs/date=YYYY-MM-DD/part-0.parquet        one row: commit, versions, machine, spec hashes, ...
    BASELINE                                   the pinned baseline date (optional, one line)

Each table is readable alone with ``pandas.read_parquet(folder)`` or ``pyarrow.dataset``.
A night counts only once its ``runs`` row exists: writing a night removes that row first,
swaps the other partitions in by rename, and writes the row last, so a crash never leaves a
half-written night that readers would take for a complete one, and re-running a date replaces
its partitions instead of adding to them.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import date as _date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from srdistill.core.atomic import replace_folder
from srdistill.core.errors import UserError

RESULTS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("dataset", pa.string()),
        ("image", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("lower_better", pa.bool_()),
        ("method_fingerprint", pa.string()),
        ("dataset_fingerprint", pa.string()),
        ("status", pa.string()),
        ("seconds", pa.float64()),
        # the evaluation protocol (name and hash) each row was measured under; null in nights recorded before it
        ("protocol", pa.string()),
        ("protocol_hash", pa.string()),
    ]
)
THROUGHPUT_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("items", pa.int64()),
        ("seconds", pa.float64()),
    ]
)
# Nested run facts are stored as JSON text so the schema never changes when a new package or spec appears.
RUN_JSON_FIELDS = ("versions", "machine", "spec_hashes", "fingerprints", "suite")
RUNS_SCHEMA = pa.schema(
    [("started_at", pa.string()), ("seconds", pa.float64()), ("commit", pa.string()), ("dirty", pa.bool_())]
    + [(name, pa.string()) for name in RUN_JSON_FIELDS]
)
TABLES = {"results": RESULTS_SCHEMA, "throughput": THROUGHPUT_SCHEMA, "runs": RUNS_SCHEMA}
BASELINE_FILE = "BASELINE"
LOCK_FILE = ".lock"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Night:
    """Everything recorded for one night."""

    date: str
    run: dict
    results: pd.DataFrame
    throughput: pd.DataFrame = field(default_factory=lambda: THROUGHPUT_SCHEMA.empty_table().to_pandas())


def check_date(text: str) -> str:
    """Return ``text`` if it is a real YYYY-MM-DD date, else raise UserError."""
    if not _DATE_RE.match(text or ""):
        raise UserError(f"date {text!r} is not in YYYY-MM-DD form")
    try:
        _date.fromisoformat(text)
    except ValueError:
        raise UserError(f"date {text!r} is not a calendar date") from None
    return text


OPTIONAL_COLUMNS = ("protocol", "protocol_hash")   # null when the rows were not measured under a recorded protocol


def _to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    df = df.assign(**{name: None for name in OPTIONAL_COLUMNS if name in schema.names and name not in df.columns})
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"history table lacks columns {missing}")
    return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)


def _run_frame(run: dict) -> pd.DataFrame:
    row = {
        "started_at": str(run.get("started_at", "")),
        "seconds": float(run.get("seconds", 0.0)),
        "commit": str(run.get("commit", "unknown")),
        "dirty": bool(run.get("dirty", False)),
    }
    for name in RUN_JSON_FIELDS:
        row[name] = json.dumps(run.get(name, {}), sort_keys=True)
    return pd.DataFrame([row])


def _partition(root: Path, table: str, date: str) -> Path:
    return root / table / f"date={date}"


def _swap_in(root: Path, table: str, date: str, data: pa.Table) -> None:
    final = _partition(root, table, date)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Dot-prefixed names are skipped by pyarrow's dataset discovery, so readers never see them.
    tmp = final.parent / f".tmp-{date}-{uuid.uuid4().hex}"
    tmp.mkdir()
    pq.write_table(data, tmp / "part-0.parquet")
    replace_folder(tmp, final)


def write_night(history: str | Path, night: Night) -> Path:
    """Store ``night``, replacing any earlier record of the same date; return the history folder."""
    root = Path(history)
    date = check_date(night.date)
    tables = {
        "results": _to_table(night.results, RESULTS_SCHEMA),
        "throughput": _to_table(night.throughput, THROUGHPUT_SCHEMA),
        "runs": _to_table(_run_frame(night.run), RUNS_SCHEMA),
    }
    root.mkdir(parents=True, exist_ok=True)
    # One writer at a time: two runs of the same night must not interleave their swaps.
    with open(root / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs_part = _partition(root, "runs", date)
        if runs_part.exists():
            shutil.rmtree(runs_part)
        for name in ("results", "throughput", "runs"):
            _swap_in(root, name, date, tables[name])
    return root


def _read(root: Path, table: str, dates: list[str] | None) -> pd.DataFrame:
    schema = TABLES[table]
    folder = root / table
    full = schema.append(pa.field("date", pa.string()))
    if not folder.is_dir():
        return full.empty_table().to_pandas()
    part = pads.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    data = pads.dataset(folder, format="parquet", partitioning=part, schema=full)
    expr = None if dates is None else pads.field("date").isin(list(dates))
    df = data.to_table(filter=expr).to_pandas()
    return df.sort_values("date", kind="stable").reset_index(drop=True)


def nights(history: str | Path) -> list[str]:
    """Dates of complete nights, oldest first."""
    folder = Path(history) / "runs"
    if not folder.is_dir():
        return []
    return sorted(
        p.name.split("=", 1)[1]
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("date=") and (p / "part-0.parquet").exists()
    )


def read_runs(history: str | Path) -> pd.DataFrame:
    """One row per complete night, JSON fields decoded into dicts."""
    df = _read(Path(history), "runs", None)
    for name in RUN_JSON_FIELDS:
        df[name] = df[name].map(json.loads)
    return df


def read_results(history: str | Path, dates: list[str] | None = None) -> pd.DataFrame:
    """Per-image results of complete nights (all, or only ``dates``)."""
    complete = nights(history)
    wanted = complete if dates is None else [d for d in dates if d in complete]
    return _read(Path(history), "results", wanted)


def read_throughput(history: str | Path, dates: list[str] | None = None) -> pd.DataFrame:
    """Throughput figures of complete nights (all, or only ``dates``)."""
    complete = nights(history)
    wanted = complete if dates is None else [d for d in dates if d in complete]
    return _read(Path(history), "throughput", wanted)


def read_night(history: str | Path, date: str) -> Night:
    """The record of one complete night; UserError if there is none."""
    if date not in nights(history):
        raise UserError(f"history {history} has no complete night {date}")
    runs = read_runs(history)
    run = runs[runs["date"] == date].iloc[0].to_dict()
    run.pop("date")
    return Night(
        date=date,
        run=run,
        results=read_results(history, [date]).drop(columns="date"),
        throughput=read_throughput(history, [date]).drop(columns="date"),
    )


def previous_night(history: str | Path, date: str) -> str | None:
    """The latest complete night strictly before ``date``."""
    earlier = [d for d in nights(history) if d < date]
    return earlier[-1] if earlier else None


def pin_baseline(history: str | Path, date: str) -> None:
    """Pin ``date`` (a complete night) as the baseline later nights are compared against."""
    if check_date(date) not in nights(history):
        raise UserError(f"cannot pin {date} as baseline: history {history} has no complete night of that date")
    (Path(history) / BASELINE_FILE).write_text(date + "\n")


def pinned_baseline(history: str | Path) -> str | None:
    """The pinned baseline date, or None when none is pinned."""
    path = Path(history) / BASELINE_FILE
    if not path.exists():
        return None
    return check_date(path.read_text().strip())
