"""User mistakes and how they reach the terminal: one sentence on stderr and an exit code, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option, missing data or weights); the message says how."""


def run_command(tool: str, command: Callable[[], int], on_interrupt: str) -> int:
    """Run a CLI command: UserError -> `tool: message`, exit 2; Ctrl-C -> `tool: on_interrupt`, exit 130."""
    try:
        return command()
    except UserError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{tool}: {on_interrupt}", file=sys.stderr)
        return 130
