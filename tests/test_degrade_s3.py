"""`--out s3://...` against moto's S3 server on loopback: same bytes as a local build, resume, verify, preview."""

from __future__ import annotations

import pytest

from helpers.images import good_folder
from helpers.shards import shard_bytes
from srdistill.degrade.build.builder import build
from srdistill.datasets.shards.manifest import read_manifest
from srdistill.degrade.inspect.preview import preview
from srdistill.degrade.inspect.verify import verify

pytestmark = pytest.mark.slow

OPTS = dict(crop=64, crops_per_image=2, shard_samples=3, seed=2, progress=False)


def test_s3_build_matches_local_and_resumes(s3, ray_cluster, tmp_path):
    src = good_folder(tmp_path / "src", n=4, size=96)
    local = build(str(src), str(tmp_path / "local"), "bicubic", workers=2, **OPTS)
    url = f"s3://{s3.bucket}/run1"
    # The Ray workers were started before the server: the credentials reach them in the storage options.
    summary = build(str(src), url, "bicubic", workers=2, storage_options=s3.options, **OPTS)
    assert (summary.samples, summary.shards) == (local.samples, local.shards) == (8, 3)
    keys = sorted(o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="run1/")["Contents"])
    assert keys == ["run1/manifest.json"] + [f"run1/train-00000{i}.tar" for i in range(3)]
    remote = {k.split("/")[-1]: s3.client.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys if k.endswith(".tar")}
    assert remote == shard_bytes(tmp_path / "local")
    assert read_manifest(url)["shards"] == local.manifest["shards"]
    assert verify(url).ok
    again = build(str(src), url, "bicubic", workers=2, storage_options=s3.options, **OPTS)
    assert (again.shards_reused, again.shards_built) == (3, 0)
    assert preview(url, tmp_path / "grid.png", samples=2) == 2 and (tmp_path / "grid.png").stat().st_size > 0
