"""Output paths checked before any work: a folder (or file) the user names must be creatable and writable.

One check for the four tools, so `--out`, `--history` and friends fail in one sentence, up front, rather than
with a traceback after minutes of work. Remote URLs (s3://...) are left to their own storage layer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from srdistill.core.errors import UserError


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (as anything)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def _probe_writable(folder: Path, flag: str, shown: Path) -> None:
    """Create and remove a file in `folder`: permission bits say nothing for root or read-only mounts."""
    try:
        fd, name = tempfile.mkstemp(prefix=".srdistill-write-check-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"{flag} {shown} is not writable ({reason} in {folder}); choose a folder you can write to.") from None
    os.close(fd)
    os.unlink(name)


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` is (or can be created as) a writable folder; nothing is created. Returns it as a Path."""
    if is_remote(path):
        return Path(str(path))
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {target} is a file, not a folder; give a folder path.")
    if target.is_symlink() and not target.exists():
        raise UserError(f"{flag} {target} is a broken symbolic link; give a folder path.")
    found = _existing_ancestor(target.absolute())
    if not found.is_dir():
        raise UserError(f"{flag} {target} cannot be created: {found} is a file, not a folder.")
    _probe_writable(found, flag, target)
    return target


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` is a file that can be written (an existing folder under that name is refused)."""
    if is_remote(path):
        return Path(str(path))
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {target} is a folder; give a file name.")
    check_output_dir(target.absolute().parent, flag)
    return target
