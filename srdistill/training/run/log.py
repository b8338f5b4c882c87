"""The run log: one JSON object per line (training steps, validations, events), append-only and resumable.

A process killed mid-write leaves a torn last line; readers skip it and a resume drops it (its step was never
checkpointed, so it is logged again). A bad line anywhere else is damage, reported with its line number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from srdistill.core.errors import UserError

LOG_NAME = "log.jsonl"


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLog:
    """Appends records to RUN_DIR/log.jsonl; on resume, drops records past the resumed step first."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(run_dir) / LOG_NAME
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line, record in _records(self.path) if record.get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in record.items()}, sort_keys=False) + "\n")


def _records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) of every complete line."""
    lines = path.read_text(errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((line, json.loads(line)))
        except ValueError:
            if i == len(lines) - 1:   # torn by a kill mid-write
                break
            raise UserError(f"{path} line {i + 1} is not JSON; the log is damaged (move it aside to start a new one).") from None
    return out


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / LOG_NAME
    return [record for _, record in _records(path)] if path.exists() else []
