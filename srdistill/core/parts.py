"""A keyed parquet table that never loses a finished row: `NAME.parquet` plus small part files in `NAME.parts/`.

Rows are persisted as soon as they exist, each batch as one part file written atomically (a local temporary
file renamed, or one whole upload to an fsspec URL such as s3://bucket/prefix). `merge()` folds the parts into
`NAME.parquet` (atomic replace, sorted by the key, last write of a key wins) and removes the parts it folded.
A crash or Ctrl-C leaves parts behind, which the next store on the same folder reads first.

A file that cannot be read (a part truncated by a full disk or a kill during upload) or that holds a foreign
table (a column missing) is set aside under a `.damaged` name, kept for inspection, and its rows
count as missing, so they are computed again; the store says so through `notify`.

The index answers "is this key done, with these fingerprints?": a row counts when `usable(frame)` keeps it
and its `fingerprint` columns (versions, input hashes) equal the caller's.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from srdistill.core.storage import Storage, default_storage_options


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _every_row(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=frame.index)


def _as_is(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


@dataclass(frozen=True)
class TableSchema:
    """The table's columns in order with their pandas dtypes, the key that names a row, the fingerprint columns
    a reused row must match, which rows count as done, and how a table written by an older version gains the
    columns added since."""

    columns: dict[str, str]
    key: tuple[str, ...]
    fingerprint: tuple[str, ...] = ()
    usable: Callable[[pd.DataFrame], pd.Series] = field(default=_every_row, compare=False)
    upgrade: Callable[[pd.DataFrame], pd.DataFrame] = field(default=_as_is, compare=False)

    def empty(self) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in self.columns.items()})

    def foreign(self, frame: pd.DataFrame) -> list[str]:
        """Columns the (upgraded) frame lacks: a table of some other kind."""
        return [c for c in self.columns if c not in frame.columns]


class PartsStore:
    """`NAME.parquet` and `NAME.parts/` under `url` (a folder or fsspec URL), rows shaped by `schema`."""

    def __init__(self, url: str, schema: TableSchema, *, name: str, storage_options: dict | None = None,
                 notify: Callable[[str], None] = _stderr):
        self.schema = schema
        self.table = f"{name}.parquet"
        self.parts_dir = f"{name}.parts"
        self.notify = notify
        options = default_storage_options(str(url)) if storage_options is None else storage_options
        self.storage = Storage(str(url), options)
        self.storage.makedirs()
        self.set_aside: list[str] = []
        self._parts: list[str] = []
        self.frame = self._load()
        self._index: dict[tuple, tuple] = {}
        self._add_to_index(self.frame)

    def _read(self, name: str) -> pd.DataFrame | None:
        """The table in `name`, or None after setting a damaged or foreign file aside."""
        try:
            frame = pd.read_parquet(io.BytesIO(self.storage.read_bytes(name)))
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            return self._put_aside(name, f"it cannot be read ({_first_words(str(exc))})")
        frame = self.schema.upgrade(frame)
        missing = self.schema.foreign(frame)
        if missing:
            return self._put_aside(name, f"it lacks the column(s) {', '.join(missing)}")
        return frame

    def _put_aside(self, name: str, why: str) -> None:
        target, n = f"{name}.damaged", 1
        while self.storage.exists(target):
            n += 1
            target = f"{name}.damaged{n}"
        self.storage.fs.mv(self.storage.path(name), self.storage.path(target))
        self.set_aside.append(target)
        self.notify(f"set {self.storage.display(name)} aside as {target} because {why}; its rows will be "
                    "computed again.")
        return None

    def _load(self) -> pd.DataFrame:
        frames = []
        if self.storage.exists(self.table):
            frames.append(self._read(self.table))
        for name in self.storage.listdir(self.parts_dir):
            if name.endswith(".parquet"):
                frame = self._read(name)
                frames.append(frame)
                if frame is not None:
                    self._parts.append(name)
        frames = [f for f in frames if f is not None]
        if not frames:
            return self.schema.empty()
        frame = pd.concat(frames, ignore_index=True)[list(self.schema.columns)]
        return frame.drop_duplicates(list(self.schema.key), keep="last").reset_index(drop=True)

    def _add_to_index(self, frame: pd.DataFrame) -> None:
        done = frame[self.schema.usable(frame)]
        keys = done[list(self.schema.key)].itertuples(index=False, name=None)
        prints = done[list(self.schema.fingerprint)].itertuples(index=False, name=None)
        self._index.update(zip(keys, prints))

    def has(self, key: tuple, fingerprint: Sequence = ()) -> bool:
        """A usable row under `key` exists with exactly these fingerprint values."""
        return self._index.get(tuple(key)) == tuple(fingerprint)

    def add(self, rows: list[dict]) -> None:
        """Persist rows now (one part file)."""
        if not rows:
            return
        part = pd.DataFrame(rows, columns=list(self.schema.columns))
        # Named in write order, so that a restart reads the parts in that order and the last write of a key wins.
        name = f"{self.parts_dir}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        self.storage.write_bytes(name, _parquet_bytes(part))
        self._parts.append(name)
        self.frame = pd.concat([self.frame, part], ignore_index=True) if len(self.frame) else part
        self._add_to_index(part)

    def merge(self) -> pd.DataFrame:
        """Fold the parts into NAME.parquet (atomic replace), remove them, and return the merged frame."""
        key = list(self.schema.key)
        frame = self.frame.drop_duplicates(key, keep="last").sort_values(key).reset_index(drop=True)
        self.storage.write_bytes(self.table, _parquet_bytes(frame))
        for name in self._parts:
            self.storage.remove(name)
        self._parts = []
        self.frame = frame
        return frame


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _first_words(text: str, limit: int = 160) -> str:
    """The first line of `text`, cut at a word boundary (marked ...) when longer than `limit`."""
    line = (text.strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."
