"""Odd entries in a source folder are listed as skipped, never read: a name that is not UTF-8 (shown escaped), a FIFO
named like an image (reading it would block forever), a broken link; build and curate run on the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.images import real_photo, write_png

from srdistill.datasets.sources import resolve_source

REASONS = {
    "bad\\xffname.png": "its name is not valid UTF-8 (rename the file)",
    "pipe.png": "a FIFO, not a regular file",
    "gone.png": "a broken link (its target missing.png does not exist)",
}


@pytest.fixture
def odd_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_png(src / "good.png", real_photo("astronaut", 64, 64, 100, 100))
    with open(os.path.join(os.fsencode(src), b"bad\xffname.png"), "wb") as fh:
        fh.write((src / "good.png").read_bytes())
    os.mkfifo(src / "pipe.png")
    os.symlink("missing.png", src / "gone.png")
    return src


def test_odd_entries_are_skipped_with_their_reason(odd_folder):
    for spec in (str(odd_folder), str(odd_folder / "*.png")):
        source = resolve_source(spec)
        assert [i.rel for i in source.items()] == ["good.png"]
        assert {s.source_path: s.reason for s in source.skipped()} == REASONS


@pytest.mark.parametrize("command", ["build", "curate"])
def test_build_and_curate_finish_on_the_rest_and_list_what_they_skipped(command, odd_folder, tmp_path):
    out = tmp_path / "out"
    argv = {"build": ["build", "--src", str(odd_folder), "--out", str(out), "--preset", "bicubic", "--crop", "32"],
            "curate": ["curate", "--src", str(odd_folder), "--out", str(out / "s.parquet")]}[command]
    # A subprocess with a deadline: reading the FIFO would block forever.
    done = subprocess.run([sys.executable, "-m", "srdistill.degrade.cli", *argv, "--workers", "1", "--quiet"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    if command == "build":
        manifest = json.loads((out / "manifest.json").read_text())
        assert {s["source_path"]: s["reason"] for s in manifest["skipped"]} == REASONS
        assert manifest["totals"]["samples"] == 1
    else:
        import pandas as pd

        assert list(pd.read_parquet(out / "s.parquet")["path"]) == ["good.png"]
