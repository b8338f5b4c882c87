"""Reading shards back in tests: their tar members and their bytes by name."""

from __future__ import annotations

import tarfile
from pathlib import Path


def tar_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def shard_bytes(out: Path) -> dict[str, bytes]:
    """{shard name: bytes} of every shard in a local build folder."""
    return {p.name: p.read_bytes() for p in sorted(Path(out).glob("*.tar"))}
