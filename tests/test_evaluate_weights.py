"""Metric weights arrive by themselves: fetched through a real mirror on 127.0.0.1, atomically, once; offline fetches nothing."""

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.mirror import dead_url, serve, upstream_path
from srdistill.core.iqa import weights
from srdistill.evaluate import cli
from srdistill.core.iqa.metrics import MetricUnavailable, Scorer

from srdistill.core.fetch import download


@pytest.fixture
def cnniqa_file(tmp_path, monkeypatch):
    """A real CNNIQA state dict (random weights, pyiqa's `params` layout) and the URL pyiqa fetches it from: pyiqa's
    own, with the file's SHA-256 prefix in the name where pyiqa's name has the real file's (the name's hash is
    checked, so a stand-in must carry its own)."""
    from pyiqa.archs import cnniqa_arch

    torch.manual_seed(7)
    state = cnniqa_arch.CNNIQA(pretrained=None).state_dict()
    path = tmp_path / "cnniqa.pth"
    torch.save({"params": state}, path)
    real = cnniqa_arch.default_model_urls["koniq10k"]
    url = real.replace("e6f14c91", hashlib.sha256(path.read_bytes()).hexdigest()[:8])
    monkeypatch.setitem(cnniqa_arch.default_model_urls, "koniq10k", url)
    return url, path, state


@pytest.fixture
def mirror(tmp_path, cnniqa_file, offline_weights, monkeypatch):
    """A mirror tree holding CNNIQA's weights at HOST/PATH of pyiqa's URL, served on 127.0.0.1; downloads on."""
    url, path, _ = cnniqa_file
    root = tmp_path / "mirror"
    (root / upstream_path(url)).parent.mkdir(parents=True)
    (root / upstream_path(url)).write_bytes(path.read_bytes())
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with serve(root) as server:
        monkeypatch.setenv("SRDISTILL_MIRROR", server.url)
        yield server


def pyiqa_cache_files():
    folder = weights.hub_dir() / "pyiqa"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_policy_maps_each_upstream_host_to_a_folder_and_hugging_face_to_its_endpoint():
    url = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/x.pth?raw=1"
    hf = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/y.pth"
    assert download.DownloadPolicy().source(url) == url
    mirrored = download.DownloadPolicy(mirror="http://m.lan/w/")
    assert mirrored.source(url) == "http://m.lan/w/github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/x.pth?raw=1"
    assert mirrored.source(hf) == "http://m.lan/w/huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/y.pth"
    both = download.DownloadPolicy(mirror="http://m.lan/w", hf_endpoint="http://hub.lan")
    assert both.source(hf) == "http://hub.lan/chaofengc/IQA-PyTorch-Weights/resolve/main/y.pth"
    assert both.source(url).startswith("http://m.lan/w/github.com/")
    assert both.source("http://hub.lan/org/x/resolve/main/z.pth") == "http://hub.lan/org/x/resolve/main/z.pth"


def test_missing_weights_are_fetched_from_the_mirror_into_pyiqa_cache_once(mirror, cnniqa_file):
    url, path, state = cnniqa_file
    scorer = Scorer("cnniqa")
    cached = weights.hub_dir() / "pyiqa" / os.path.basename(url)
    assert cached.read_bytes() == path.read_bytes()
    assert pyiqa_cache_files() == [cached.name]  # no temporary file left beside it
    assert torch.equal(scorer.model.net.conv1.weight, state["conv1.weight"])  # the fetched file is what the metric runs
    assert mirror.requests == [("GET", "/" + upstream_path(url))]
    Scorer("cnniqa")
    assert len(mirror.requests) == 1  # a second build finds the file and downloads nothing


def test_offline_fetches_nothing_and_names_file_path_and_url(mirror, cnniqa_file, monkeypatch):
    url = cnniqa_file[0]
    monkeypatch.setenv("SRDISTILL_OFFLINE", "1")
    with pytest.raises(MetricUnavailable) as err:
        Scorer("cnniqa")
    msg = str(err.value)
    expected = weights.hub_dir() / "pyiqa" / os.path.basename(url)
    assert "missing weights" in msg and str(expected) in msg and url in msg and "\n" not in msg
    assert mirror.requests == [] and pyiqa_cache_files() == []


@pytest.mark.parametrize("fault", ["truncated", "404"])
def test_failed_download_leaves_the_cache_clean_and_names_the_url(mirror, cnniqa_file, fault):
    url = cnniqa_file[0]
    served = mirror.root / upstream_path(url)
    if fault == "truncated":
        mirror.truncate.add("/" + upstream_path(url))
    else:
        served.unlink()
    with pytest.raises(MetricUnavailable) as err:
        Scorer("cnniqa")
    msg = str(err.value)
    assert f"{mirror.url}/{upstream_path(url)}" in msg and url in msg and "\n" not in msg
    assert ("bytes" in msg) if fault == "truncated" else ("HTTP 404" in msg)
    assert pyiqa_cache_files() == []


def test_unreachable_mirror_is_one_sentence(offline_weights, monkeypatch):
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.setenv("SRDISTILL_MIRROR", dead_url())
    status = weights.fetch_metric("cnniqa")
    assert not status.ok and status.placed == []
    assert "cannot be reached" in status.note and os.environ["SRDISTILL_MIRROR"] in status.note and "\n" not in status.note
    assert [name for name in pyiqa_cache_files() if "CNNIQA" in name] == []  # (NIQE's shipped file is installed)


def test_torch_hub_hash_check_and_clip_checksums_guard_the_cache(tmp_path, mirror, offline_weights):
    blob = tmp_path / "blob.pt"
    torch.save({"w": torch.arange(5.0)}, blob)
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    good = f"https://download.pytorch.org/models/tiny-{sha[:8]}.pth"
    bad = "https://download.pytorch.org/models/tiny-00000000.pth"
    clip_url = f"https://openaipublic.azureedge.net/clip/models/{sha}/Tiny.pt"
    for url in (good, bad, clip_url):
        (mirror.root / upstream_path(url)).parent.mkdir(parents=True, exist_ok=True)
        (mirror.root / upstream_path(url)).write_bytes(blob.read_bytes())
    import pyiqa.archs.clip_model as clip_model

    with weights.weight_downloads():
        state = torch.hub.load_state_dict_from_url(good, check_hash=True)
        with pytest.raises(download.DownloadFailed, match="SHA-256"):
            torch.hub.load_state_dict_from_url(bad, check_hash=True)
        fetched = clip_model._download(clip_url, str(weights.hub_dir() / "clip"))
    assert torch.equal(state["w"], torch.arange(5.0))
    assert sorted(p.name for p in (weights.hub_dir() / "checkpoints").iterdir()) == [os.path.basename(good)]
    assert Path(fetched).read_bytes() == blob.read_bytes()
    with weights.weight_downloads(offline=True), pytest.raises(weights.MissingWeights):
        clip_model._download(clip_url.replace(sha, "f" * 64), str(weights.hub_dir() / "clip"))


def test_hf_endpoint_serves_hugging_face_files(tmp_path, cnniqa_file, offline_weights, monkeypatch):
    url, path, _ = cnniqa_file
    root = tmp_path / "hub-mirror"
    hf_path = upstream_path(url).split("/", 1)[1]  # HF_ENDPOINT replaces the host, the path stays
    (root / hf_path).parent.mkdir(parents=True)
    (root / hf_path).write_bytes(path.read_bytes())
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.setenv("SRDISTILL_MIRROR", dead_url())  # Hugging Face files must not go there
    with serve(root) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        Scorer("cnniqa")
        assert server.requests == [("GET", "/" + hf_path)]


def test_weights_cli_downloads_then_reports_ready_offline(mirror, cnniqa_file, offline_weights, capsys):
    url = cnniqa_file[0]
    assert cli.main(["weights", "--download", "--metrics", "cnniqa", "--mirror", mirror.url]) == 0
    out = capsys.readouterr().out
    cached = weights.hub_dir() / "pyiqa" / os.path.basename(url)
    assert f"placed {cached}" in out and "1 of 1 metrics ready" in out
    assert cli.main(["weights", "--offline", "--metrics", "cnniqa"]) == 0
    assert "ready    cnniqa" in capsys.readouterr().out
    assert len(mirror.requests) == 1


def test_weights_cli_bad_download_requests_are_one_sentence(offline_weights, monkeypatch, capsys):
    monkeypatch.delenv("SRDISTILL_MIRROR", raising=False)  # the CLI sets it for the processes it starts
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    assert cli.main(["weights", "--download", "--offline", "--metrics", "cnniqa"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    assert cli.main(["weights", "--download", "--metrics", "cnniqa", "--mirror", "ftp:/x"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    mirror = dead_url()
    assert cli.main(["weights", "--download", "--metrics", "cnniqa", "--mirror", mirror]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and mirror in failed[0] and "cannot be reached" in failed[0]


def test_leaderboard_fetches_through_the_mirror_and_an_unreachable_one_loses_no_row(mirror, pair_dirs, tmp_path):
    hr_dir, lr_dir = pair_dirs
    out = tmp_path / "eval"
    base = ["leaderboard", "--methods", "bicubic", "--hr", str(hr_dir), "--lr", str(lr_dir),
            "--metrics", "psnry,cnniqa", "--out", str(out), "--quiet"]
    dead = dead_url()
    assert cli.main(base + ["--mirror", dead]) == 0
    first = pd.read_parquet(out / "results.parquet").set_index(["image", "metric"]).sort_index()
    assert (first.xs("psnry", level="metric")["status"] == "ok").all() and len(first) == 6
    skipped = first.xs("cnniqa", level="metric")["status"]
    assert skipped.str.startswith("skipped: could not download").all() and skipped.str.contains(dead).all()
    assert cli.main(base + ["--mirror", mirror.url]) == 0
    second = pd.read_parquet(out / "results.parquet").set_index(["image", "metric"]).sort_index()
    assert (second["status"] == "ok").all() and len(second) == 6
    pd.testing.assert_frame_equal(second.xs("psnry", level="metric"), first.xs("psnry", level="metric"))
    assert len(mirror.requests) == 1


@pytest.mark.slow  # huggingface_hub retries a refused connection with back-off before giving up
def test_a_hugging_face_file_that_cannot_be_fetched_is_one_sentence_with_its_url(offline_weights, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import hf_hub_download

    for name in ("HF_HUB_OFFLINE", "ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE"):
        monkeypatch.setattr(huggingface_hub.constants, name, getattr(huggingface_hub.constants, name))
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", dead_url())
    download.sync_hub_constants()
    with pytest.raises(Exception) as err:  # what transformers would re-raise from inside a metric's constructor
        hf_hub_download("q-future/one-align", "config.json", cache_dir=str(offline_weights / "hf"))
    note = weights.explain_build_error(err.value)
    assert note.startswith("could not download Hugging Face weights q-future/one-align/config.json from "
                           f"{os.environ['HF_ENDPOINT']}/q-future/one-align/resolve/main/config.json")
    assert "refused" in note and "\n" not in note
    monkeypatch.setenv("SRDISTILL_OFFLINE", "1")
    assert weights.explain_build_error(err.value).startswith("missing Hugging Face weights q-future/one-align/config.json")
