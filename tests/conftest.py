"""Session-wide test settings: offline, headless, quiet Ray."""

import os

import pytest

# Nothing may reach the network during tests: srdistill and the Hub are offline unless a test points them
# (with monkeypatch) at its own server on 127.0.0.1.
os.environ.setdefault("SRDISTILL_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is fastest and avoids oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
