"""Downloaded weights are data: a real mirror on 127.0.0.1 serves a torch.save payload whose unpickling would create
a file, random bytes and a good file, under pyiqa's real paths; only the good file enters the cache, nothing runs,
each refusal is one sentence, and a hostile or damaged file already in the cache is named with its path and fix."""

from __future__ import annotations

import builtins
import hashlib
import os
import random

import pytest
import torch
from helpers.mirror import MirrorHandler, serve, upstream_path

from srdistill.core.fetch import download

from srdistill.core.iqa import weights
from srdistill.core.iqa.metrics import MetricUnavailable, Scorer
from srdistill.evaluate import cli

# pyiqa's names: MUSIQ's carries a SHA-256 prefix, BRISQUE's SVM weights carry none.
HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
MUSIQ = HF + "musiq_koniq_ckpt-e95806b9.pth"
UNHASHED = HF + "brisque_svm_weights.pth"


class Payload:
    """Unpickled without weights_only, this creates the file `canary` (any code could run instead)."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return builtins.open, (self.canary, "w")


def _payload(path, canary):
    torch.save({"params": {"w": torch.zeros(2)}, "extra": Payload(canary)}, path)


@pytest.fixture
def mirror(tmp_path, offline_weights, monkeypatch):
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with serve(tmp_path / "mirror") as server:
        monkeypatch.setenv("SRDISTILL_MIRROR", server.url)
        yield server


def _serve(server, url, data: bytes):
    target = server.root / upstream_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _cache():
    folder = weights.hub_dir() / "pyiqa"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _fetch(url):
    from pyiqa.utils.download_util import load_file_from_url

    with weights.weight_downloads():
        return load_file_from_url(url)


def test_a_payload_under_musiqs_real_path_fails_its_published_hash_and_runs_nothing(mirror, tmp_path, capsys):
    canary = tmp_path / "pwned"
    blob = tmp_path / "blob.pth"
    _payload(blob, canary)
    _serve(mirror, MUSIQ, blob.read_bytes())
    assert cli.main(["weights", "--download", "--metrics", "musiq", "--mirror", mirror.url]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "does not start with the published e95806b9" in failed[0]
    assert not canary.exists() and "musiq_koniq_ckpt-e95806b9.pth" not in _cache()


@pytest.mark.parametrize("case", ["payload", "random bytes"])
def test_a_file_without_a_published_hash_is_kept_only_if_it_loads_as_plain_tensors(case, mirror, tmp_path):
    canary = tmp_path / "pwned"
    blob = tmp_path / "blob.pth"
    if case == "payload":
        _payload(blob, canary)
    else:
        blob.write_bytes(random.Random(0).randbytes(4096))
    _serve(mirror, UNHASHED, blob.read_bytes())
    with pytest.raises(download.DownloadFailed) as err:
        _fetch(UNHASHED)
    msg = str(err.value)
    why = {"payload": "it is a pickle that calls io.open, not plain tensors, and would run code when loaded without "
                      "weights_only", "random bytes": "it cannot be read as a .pth file ("}[case]
    assert msg.startswith(f"could not download brisque_svm_weights.pth from {mirror.url}/") and why in msg
    assert msg.endswith(f"nothing was written to {weights.hub_dir() / 'pyiqa'}.") and "\n" not in msg
    assert not canary.exists() and _cache() == []  # no temporary file left either


def test_a_good_file_without_a_published_hash_is_placed(mirror, tmp_path):
    blob = tmp_path / "blob.pth"
    torch.save({"w": torch.arange(3.0)}, blob)
    _serve(mirror, UNHASHED, blob.read_bytes())
    placed = _fetch(UNHASHED)
    assert _cache() == ["brisque_svm_weights.pth"]
    assert torch.equal(torch.load(placed, weights_only=True)["w"], torch.arange(3.0))


class EtagHandler(MirrorHandler):
    """Answers like Hugging Face for an LFS file: the SHA-256 the server states, in X-Linked-Etag."""

    def end_headers(self):
        self.send_header("X-Linked-Etag", f'"{self.server.etag}"')
        super().end_headers()


def test_the_sha256_the_server_states_is_checked(tmp_path, offline_weights, monkeypatch):
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    blob = tmp_path / "blob.pth"
    torch.save({"w": torch.ones(2)}, blob)
    with serve(tmp_path / "mirror", handler=EtagHandler) as server:
        monkeypatch.setenv("SRDISTILL_MIRROR", server.url)
        _serve(server, UNHASHED, blob.read_bytes())
        server.etag = hashlib.sha256(b"another file").hexdigest()
        with pytest.raises(download.DownloadFailed, match=f"does not start with the published {server.etag}"):
            _fetch(UNHASHED)
        assert _cache() == []
        server.etag = hashlib.sha256(blob.read_bytes()).hexdigest()
        _fetch(UNHASHED)
    assert _cache() == ["brisque_svm_weights.pth"]


@pytest.mark.parametrize("case", ["payload", "random bytes"])
def test_a_hostile_or_damaged_cached_file_is_named_with_its_path_and_fix(case, tmp_path, offline_weights):
    from pyiqa.archs.cnniqa_arch import default_model_urls

    canary = tmp_path / "pwned"
    cached = weights.hub_dir() / "pyiqa" / os.path.basename(default_model_urls["koniq10k"])
    cached.parent.mkdir(parents=True, exist_ok=True)
    if case == "payload":
        _payload(cached, canary)
    else:
        cached.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(MetricUnavailable) as err:
        Scorer("cnniqa")
    msg = str(err.value)
    assert msg.startswith(f"the cached weights file {cached} cannot be loaded (") and "\n" not in msg
    assert msg.endswith("delete it and fetch it again with `evaluate weights --download`, or bring a good copy with "
                        "`evaluate weights --import DIR`")
    assert not canary.exists()
