"""Atomic writes to local paths: the content is written under a temporary name beside its target and renamed over
it, so a reader (or a resumed run) sees the old file or the whole new one, never a part.

Temporary files are named `.NAME.XXXXXXXX.tmp` (dot first, so listings and pyarrow skip them; a random part, so
concurrent writers of one name never share one), and are removed when the write fails."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def temporary_name(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside `path`: `.NAME.XXXXXXXX` + suffix."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for the caller to write; it replaces `path` when the block completes, else it is removed."""
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_file(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears at `path` only if the block completes (`fsync`: on disk first)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_file(path, fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """`obj` as JSON (json.dumps options in `dumps`) and a final newline."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def replace_folder(staged: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the finished folder `staged` at `final`: an earlier `final` is renamed aside first and deleted after,
    so `final` is always either the old folder or the whole new one."""
    staged, final = Path(staged), Path(final)
    old = None
    if final.exists():
        old = temporary_name(final, ".old")
        final.rename(old)
    staged.rename(final)
    if old is not None:
        shutil.rmtree(old)
    return final
