"""One writer per output: a lock file that names its holder, taken by every command that writes a shared folder.

The lock is a file holding the holder's host, PID, process start time and command, created whole and
exclusively (written under a private name, then hard-linked to the lock's name, which fails if it exists:
atomic on local file systems and NFS, and never seen half-written). A second writer is refused in one
sentence naming the holder. The lock is broken only when its holder is gone: on this host, no process with
that PID, or one that started at another time (a reused PID). A holder on another host is never presumed dead: the sentence says which file to
delete once that run is known to be over. Remote outputs (s3:// and other fsspec URLs) are not locked: object
stores offer no exclusive create that every one honours, so give each concurrent run its own prefix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from srdistill.core.errors import UserError
from srdistill.core.outputs import is_remote

LOCK_NAME = ".srdistill.lock"
_held: dict[str, int] = {}  # lock path -> nesting depth, for this process


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None where /proc has none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict) -> bool:
    """Whether the holder's process still runs (always presumed so on another host)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = _start_time(pid)
    return started is None or holder.get("started") in (None, started)


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # not a lock this module wrote (it writes whole files): treated as gone
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
    return (f"`{holder.get('command', '?')}` (PID {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {since})")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, flag: str = "--out", *, lock: str | os.PathLike | None = None):
    """Hold the lock of `output` (a folder: LOCK_NAME inside it; or the file `lock`, e.g. beside a single output
    file) for the block; refuse in one sentence while another live process holds it. Reentrant in one process."""
    if is_remote(output):
        yield
        return
    path = Path(lock) if lock is not None else Path(output) / LOCK_NAME
    key = str(path.absolute())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _acquire(path, output, flag)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if created:  # a folder made only to hold the lock goes with it when the command wrote nothing there
            with contextlib.suppress(OSError):
                path.parent.rmdir()


def _acquire(path: Path, output, flag: str) -> None:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
          "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]), "since": time.time()}
    mine = path.with_name(f"{path.name}.{os.getpid()}.new")
    mine.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(mine, path)
                return
            except FileExistsError:
                holder = _read(path)
                if holder and _alive(holder):
                    raise UserError(f"{output} is being written by {_describe(holder)}; wait for it to finish or "
                                    f"choose another {flag} (if that run is gone from its host, delete {path}).") from None
                _break(path, holder)
        raise UserError(f"{output} could not be locked: {path} keeps reappearing; another run is starting there.")
    finally:
        mine.unlink()


def _break(path: Path, seen: dict | None) -> None:
    """Remove a dead holder's lock, under an flock of its folder so that two processes breaking it at once cannot
    remove a lock a third has just taken: the file is removed only if it still names the holder seen dead."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _read(path) == seen:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)
