"""A folder the test process cannot write in, as a real fault (root ignores permission bits, so it is made
immutable instead; skipped where neither is possible)."""

from __future__ import annotations

import os
import subprocess

import pytest


@pytest.fixture
def read_only_dir(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0
    except OSError:
        made = False
    if not made:
        pytest.skip("running as root where `chattr +i` is not permitted: no way to make a read-only folder")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
