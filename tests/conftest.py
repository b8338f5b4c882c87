"""Every fixture the tests share, and the session's settings: offline, headless, quiet Ray, one torch thread.

Built once per session and shared, so no test may change them: `ray_cluster` (an embedded 2-CPU Ray every build
joins), `shards` (the embedded sample built by `degrade build`), `photo` (a real photo crop, read-only) and
`one_torch_thread` (autouse). Per module: `s3` (an S3 server on loopback). Per test: `offline_weights`,
`pair_dirs`. Plain helpers (image folders, shard readers) are the `helpers` package beside this file.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers.images import downscale, real_photo, write_png

# Nothing may reach the network during tests: srdistill and the Hub are offline unless a test points them (with
# monkeypatch) at its own server on 127.0.0.1. Forced, not defaulted: a value already in the environment must
# not let a test reach a hub or open a window.
# RAY_AUTH_MODE=token is what Ray 2.60 gives a local cluster anyway; set before Ray is imported (it caches it),
# so that every cluster of the session, subprocesses' too, authenticates the same way.
_SESSION_ENV = {"SRDISTILL_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "token"}
_session_env = pytest.MonkeyPatch()


def pytest_configure(config):
    # Before collection: huggingface_hub and matplotlib read these once, when first imported.
    for name, value in _SESSION_ENV.items():
        _session_env.setenv(name, value)


def pytest_unconfigure(config):
    _session_env.undo()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is fastest and avoids oversubscription; set
    for the whole session so that no result depends on which tests ran before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """An embedded 2-CPU Ray cluster started the way `degrade build` starts one; every build in the session joins
    it. Yields its GCS address (token authentication on, see _SESSION_ENV)."""
    import ray

    from srdistill.core.cluster import connect

    connect(workers=2, address="local")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def shards(ray_cluster, tmp_path_factory) -> Path:
    """The embedded sample built once by `degrade build`: 16 samples (8 photos x 2 crops of 128), 4 per shard,
    x4 bicubic, seed 0."""
    from srdistill.degrade.build.builder import build

    out = tmp_path_factory.mktemp("sample-shards") / "shards"
    build("sample", str(out), "bicubic", crop=128, crops_per_image=2, shard_samples=4, seed=0, workers=2,
          progress=False, command="tests")
    return out


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 96x128 crop of scikit-image's astronaut photo, read-only so that no test can change it for the next."""
    img = real_photo("astronaut", 96, 128, 100, 150)
    img.flags.writeable = False
    return img


@dataclass(frozen=True)
class S3:
    client: object
    bucket: str
    endpoint: str
    options: dict  # fsspec storage options that reach the server from any process, Ray workers included


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on loopback with one bucket; the AWS_* variables point at it while the module runs."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            env.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="shards")
        try:
            yield S3(client, "shards", endpoint, {"endpoint_url": endpoint, "key": "testing", "secret": "testing"})
        finally:
            server.stop()


@pytest.fixture
def offline_weights(tmp_path, monkeypatch) -> Path:
    """An empty weights folder (plus what registry packages ship), restored after the test."""
    root = tmp_path / "weights"
    for var, value in (("SRDISTILL_WEIGHTS", str(root)), ("TORCH_HOME", str(root / "torch")),
                       ("HF_HOME", str(root / "huggingface")), ("SRDISTILL_CACHE", str(tmp_path / "cache"))):
        monkeypatch.setenv(var, value)
    from srdistill.core.iqa import weights

    weights.configure_weights_dir(root)
    yield root
    monkeypatch.undo()
    import torch.hub
    from pyiqa.utils import download_util

    download_util.DEFAULT_CACHE_DIR = str(Path(torch.hub.get_dir()) / "pyiqa")


@pytest.fixture
def pair_dirs(tmp_path) -> tuple[Path, Path]:
    """HR/LR folders of three small real photos (LR = area downscale x4)."""
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    for stem, (name, top, left) in {"astro": ("astronaut", 40, 150), "cat": ("chelsea", 60, 120),
                                    "cup": ("coffee", 100, 200)}.items():
        hr = real_photo(name, 96, 96, top, left)
        write_png(hr_dir / f"{stem}.png", hr)
        write_png(lr_dir / f"{stem}.png", downscale(hr))
    return hr_dir, lr_dir


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder the test process cannot write in, as a real fault: root ignores permission bits, so it is made
    immutable instead; skipped where neither is possible."""
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
