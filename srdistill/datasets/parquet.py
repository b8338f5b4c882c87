"""Images stored in parquet files, as Hugging Face publishes image data sets (`data/train-00000-of-00195.parquet`).

A parquet source file holds one image per row in an image column: Hugging Face's `Image` feature, a struct of
`bytes` (the encoded file) and `path`, or a plain binary column. Only the footer is read when listing a file;
an image is read with its row group, and the last row group read is kept, because a shard's jobs come in key
order and so visit one file's rows one after another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from srdistill.datasets.images import BadImage

PARQUET_EXTENSIONS = (".parquet",)


@dataclass(frozen=True)
class ParquetListing:
    """What a parquet file offers as a source: its rows and the column holding the encoded images."""

    rows: int
    column: str


def image_column(schema) -> str | None:
    """The column holding encoded images: `image` if usable, else the first struct-with-bytes or binary column."""
    import pyarrow as pa

    def usable(field) -> bool:
        t = field.type
        if pa.types.is_struct(t):
            return any(t.field(i).name == "bytes" and _is_binary(t.field(i).type) for i in range(t.num_fields))
        return _is_binary(t)

    fields = list(schema)
    named = [f for f in fields if f.name == "image" and usable(f)]
    others = [f for f in fields if usable(f)]
    chosen = (named or others or [None])[0]
    return None if chosen is None else chosen.name


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def list_parquet(path: str | os.PathLike) -> ParquetListing:
    """Rows and image column of a parquet file from its footer; BadImage with the reason when it offers no images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise BadImage(f"unreadable parquet file ({exc})") from exc
    column = image_column(schema)
    if column is None:
        names = ", ".join(schema.names) or "none"
        raise BadImage(f"parquet file without an image column (a binary column or a struct with `bytes`; columns: {names})")
    return ParquetListing(meta.num_rows, column)


_last_group: dict = {}  # {(path, size, mtime_ns, column, group): (first_row, column values)}, at most one entry


def read_parquet_image(path: str | os.PathLike, row: int, column: str) -> bytes:
    """The encoded image in `row` of `column`; BadImage if the file, its row group or the cell cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        st = os.stat(path)
        pf = pq.ParquetFile(path)
        group, first = _row_group_of(pf.metadata, row)
        key = (str(path), st.st_size, st.st_mtime_ns, column, group)
        if key not in _last_group:
            values = pf.read_row_group(group, columns=[column]).column(column).combine_chunks()
            if pa.types.is_struct(values.type):
                values = values.field("bytes")
            _last_group.clear()
            _last_group[key] = (first, values)
        first, values = _last_group[key]
        data = values[row - first].as_py()
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise BadImage(f"unreadable parquet row ({exc})") from exc
    if not data:
        raise BadImage("empty image cell in the parquet file")
    return data


def _row_group_of(meta, row: int) -> tuple[int, int]:
    first = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        if row < first + n:
            return group, first
        first += n
    raise BadImage(f"row {row} is past the end of the parquet file ({first} rows)")
