"""Where a build's files go: a local folder or any fsspec URL (s3://bucket/prefix), behind one small interface.

Writes are atomic: a local file is written under a temporary name in the same folder and renamed; a remote
object is uploaded whole from a local temporary file (an S3 PUT becomes visible only when complete).
S3-compatible endpoints are taken from the standard AWS_ENDPOINT_URL variable or from `storage_options`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import fsspec

from srdistill.core.atomic import atomic_file
from srdistill.core.errors import UserError

_CHUNK = 1 << 20


def default_storage_options(url: str) -> dict:
    """Options a worker needs to reach `url` the way the driver does (S3 endpoint from the environment)."""
    if url.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
        return {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return {}


@dataclass
class Storage:
    """A folder (local or remote) addressed by relative names like "train-000000.tar" or "_build/plan.json"."""

    url: str
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.options)
        except (ImportError, ValueError) as exc:
            raise UserError(f"cannot open output {self.url!r}: {exc}.") from exc
        self.root = self.root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def display(self, name: str = "") -> str:
        base = self.url.rstrip("/")
        return f"{base}/{name}" if name else base

    def exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self.path(name))
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self.path(name))

    def open(self, name: str) -> BinaryIO:
        return self.fs.open(self.path(name), "rb")

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.open(name) as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def listdir(self, sub: str = "") -> list[str]:
        """Names (relative to the root) of the files directly in `sub`; empty if it does not exist."""
        self.fs.invalidate_cache()
        target = self.path(sub) if sub else self.root
        if not self.fs.exists(target):
            return []
        prefix = f"{sub}/" if sub else ""
        out = [prefix + e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(target, detail=True) if e.get("type") == "file"]
        return sorted(out)

    def remove(self, name: str) -> None:
        if self.exists(name):
            self.fs.rm(self.path(name))

    def remove_tree(self, sub: str) -> None:
        if self.fs.exists(self.path(sub)):
            self.fs.rm(self.path(sub), recursive=True)

    def makedirs(self, sub: str = "") -> None:
        if self.local:
            os.makedirs(self.path(sub) if sub else self.root, exist_ok=True)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.writer(name) as fh:
            fh.write(data)

    @contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        """A file handle whose content appears under `name` only if the block completes."""
        if self.local:
            final = self.path(name)
            os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
            with atomic_file(final, fsync=True) as fh:
                yield fh
        else:
            with tempfile.TemporaryDirectory(prefix="srdistill-upload-") as tmpdir:
                tmp = Path(tmpdir) / "part"
                with open(tmp, "wb") as fh:
                    yield fh
                self.fs.put_file(str(tmp), self.path(name))

    def remove_temporaries(self) -> list[str]:
        """Delete leftovers of interrupted local writes (`.NAME.XXXXXXXX.tmp`); returns their names."""
        if not self.local or not os.path.isdir(self.root):
            return []
        gone = []
        for dirpath, _, filenames in os.walk(self.root):
            for fname in filenames:
                if fname.startswith(".") and fname.endswith(".tmp"):
                    os.unlink(os.path.join(dirpath, fname))
                    gone.append(os.path.relpath(os.path.join(dirpath, fname), self.root))
        return sorted(gone)
