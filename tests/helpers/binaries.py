"""System programs a test needs (pdflatex, chromium): skip where missing, except under CI, where they must exist."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(*names: str) -> str:
    """The first of `names` on PATH; a missing one skips the test, except under CI (CI=true), where it fails."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{' or '.join(names)} is not installed (.ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must run this test")
    pytest.skip(message)
