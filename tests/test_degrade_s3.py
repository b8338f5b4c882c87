"""`--out s3://...` against moto's S3 server on loopback: same bytes as a local build, resume, verify, preview."""

from __future__ import annotations

import os
import socket

import pytest

from _helpers_degrade import good_folder, shard_bytes
from srdistill.degrade.build import build
from srdistill.degrade.manifest import read_manifest
from srdistill.degrade.preview import preview
from srdistill.degrade.verify import verify

pytestmark = pytest.mark.slow

OPTS = dict(crop=64, crops_per_image=2, shard_samples=3, seed=2, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    import boto3
    import ray
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # before ray.init, so the workers inherit the credentials
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="shards")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    finally:
        ray.shutdown()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_s3_build_matches_local_and_resumes(s3, tmp_path):
    src = good_folder(tmp_path / "src", n=4, size=96)
    local = build(str(src), str(tmp_path / "local"), "bicubic", workers=2, **OPTS)
    url = "s3://shards/run1"
    summary = build(str(src), url, "bicubic", workers=2, **OPTS)
    assert (summary.samples, summary.shards) == (local.samples, local.shards) == (8, 3)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="shards", Prefix="run1/")["Contents"])
    assert keys == ["run1/manifest.json"] + [f"run1/train-00000{i}.tar" for i in range(3)]
    remote = {k.split("/")[-1]: s3.get_object(Bucket="shards", Key=k)["Body"].read() for k in keys if k.endswith(".tar")}
    assert remote == shard_bytes(tmp_path / "local")
    assert read_manifest(url)["shards"] == local.manifest["shards"]
    assert verify(url).ok
    again = build(str(src), url, "bicubic", workers=2, **OPTS)
    assert (again.shards_reused, again.shards_built) == (3, 0)
    assert preview(url, tmp_path / "grid.png", samples=2) == 2 and (tmp_path / "grid.png").stat().st_size > 0
