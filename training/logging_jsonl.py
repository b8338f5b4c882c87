"""The run log: one JSON object per line (training steps, validations, events), append-only and resumable."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({k: _plain(v) for k, v in record.items()}, sort_keys=False) + "\n")


def read_log(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
