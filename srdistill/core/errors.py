"""User mistakes and how they reach the terminal: one sentence on stderr and an exit code, never a traceback."""

from __future__ import annotations

import errno
import sys
from typing import Callable

# A full disk or quota is the user's to fix wherever it strikes (a shard, a manifest, a checkpoint, a parquet part).
FULL_DEVICE = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option, missing data or weights); the message says how."""


def run_command(tool: str, command: Callable[[], int], on_interrupt: str) -> int:
    """Run a CLI command: UserError -> `tool: message`, exit 2; a full disk -> one sentence naming the file, exit 2;
    Ctrl-C -> `tool: on_interrupt`, exit 130."""
    try:
        return command()
    except UserError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in FULL_DEVICE:
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"{tool}: no space left on the device{where} ({exc.strerror}); what was finished is kept: free some space "
              "and re-run the same command to resume.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{tool}: {on_interrupt}", file=sys.stderr)
        return 130
