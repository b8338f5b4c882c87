"""The shard file format (schema version 2): plain POSIX tars of {key}.hr.png, {key}.lr.png, {key}.json.
Version 1 differs only in the params of the json (see degrade/spec/v1.py) and stays readable.

Member headers are fixed (mtime, owner, mode) and samples are written in key order, so a shard's bytes
depend only on its content. Stock `tar` and `webdataset.WebDataset` read the files as they are.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

SCHEMA_VERSION = 2  # 2: params version 3 (the op record of schema-2 specs)
READABLE_VERSIONS = (1, 2)
MEMBER_SUFFIXES = ("hr.png", "lr.png", "json")
_MTIME = 0
_MODE = 0o644
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_-]+)-(?P<index>\d{6})\.tar$")


@dataclass(frozen=True)
class Sample:
    """One encoded sample, ready to be written."""

    key: str
    hr_png: bytes
    lr_png: bytes
    meta: dict


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def is_shard_name(name: str) -> bool:
    return _SHARD_RE.match(name) is not None


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(f"sample key {key!r} must hold only letters, digits, '_' and '-' (webdataset splits at dots)")
    return key


def meta_bytes(meta: dict) -> bytes:
    """Canonical JSON for a sample's metadata: sorted keys, no whitespace, UTF-8."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class ShardWriter:
    """Streams samples into a tar file object; the caller supplies samples in strictly increasing key order."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)
        self._last: str | None = None
        self.count = 0

    def write(self, sample: Sample) -> None:
        check_key(sample.key)
        if self._last is not None and sample.key <= self._last:
            raise ValueError(f"samples must come in increasing key order: {sample.key!r} after {self._last!r}")
        self._last = sample.key
        for suffix, data in zip(MEMBER_SUFFIXES, (sample.hr_png, sample.lr_png, meta_bytes(sample.meta))):
            info = tarfile.TarInfo(f"{sample.key}.{suffix}")
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = _MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_shard(fileobj: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {"hr.png": ..., "lr.png": ..., "json": ...}) per sample, in file order; raises ValueError on a bad layout."""
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                raise ValueError(f"unexpected tar member {info.name!r} (not a regular file)")
            key, _, suffix = info.name.partition(".")
            if suffix not in MEMBER_SUFFIXES:
                raise ValueError(f"unexpected tar member {info.name!r}")
            if key != current:
                if current is not None:
                    yield current, _complete(current, members)
                current, members = key, {}
            data = tar.extractfile(info)
            members[suffix] = data.read() if data is not None else b""
    if current is not None:
        yield current, _complete(current, members)


def read_samples(fileobj: BinaryIO) -> Iterable[tuple[str, bytes, bytes, dict]]:
    """(key, hr_png, lr_png, meta) per sample."""
    for key, members in iter_shard(fileobj):
        yield key, members["hr.png"], members["lr.png"], json.loads(members["json"])


def _complete(key: str, members: dict[str, bytes]) -> dict[str, bytes]:
    missing = [s for s in MEMBER_SUFFIXES if s not in members]
    if missing:
        raise ValueError(f"sample {key!r} lacks {', '.join(key + '.' + m for m in missing)}")
    return members
