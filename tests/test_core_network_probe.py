"""The one network probe of a run: a closed port and a live local server, and what going offline changes."""

from __future__ import annotations

import sys

import pytest

from helpers.mirror import dead_url, serve
from srdistill.core.fetch import download


def test_a_closed_port_is_unreachable_and_a_listening_server_is_not(tmp_path):
    assert "refused" in download.unreachable(dead_url(), timeout=2.0).lower()
    with serve(tmp_path) as server:
        assert download.unreachable(server.url, timeout=2.0) is None


def test_a_host_that_does_not_answer_in_time_is_unreachable():
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so the connection attempt hangs until the timeout.
    why = download.unreachable("http://192.0.2.1:81/", timeout=0.3)
    assert why is not None


@pytest.fixture
def online(monkeypatch):
    """An online policy (the test session runs offline) whose changes are undone afterwards."""
    for name in (download.OFFLINE_ENV, "HF_HUB_OFFLINE", download.MIRROR_ENV, download.HF_ENDPOINT_ENV):
        monkeypatch.setenv(name, "")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    return monkeypatch


def test_an_unreachable_host_turns_the_run_offline_with_one_sentence(online, capsys):
    policy = download.offline_unless_reachable(dead_url(), timeout=2.0)
    assert policy.offline and download.current_policy().offline and download.hf_offline()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1 cannot be reached" in err[0] and "evaluate weights --download" in err[0]


def test_a_reachable_host_leaves_the_run_online_and_quiet(online, tmp_path, capsys):
    with serve(tmp_path) as server:
        policy = download.offline_unless_reachable(server.url, timeout=2.0)
    assert not policy.offline and not download.current_policy().offline
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("setting", [download.OFFLINE_ENV, download.MIRROR_ENV, download.HF_ENDPOINT_ENV])
def test_offline_or_a_named_mirror_or_endpoint_is_not_probed(online, setting, capsys):
    online.setenv(setting, "1" if setting == download.OFFLINE_ENV else "http://mirror.invalid")
    probed = []
    online.setattr(download, "unreachable", lambda *a, **k: probed.append(a) or "refused")
    policy = download.offline_unless_reachable(dead_url())
    assert probed == [] and policy.offline == (setting == download.OFFLINE_ENV)
    assert capsys.readouterr().err == ""
