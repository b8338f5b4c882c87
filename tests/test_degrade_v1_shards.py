"""Version-1 builds (shard schema 1, params version 2) stay readable: verify, replay, regen and diff work on
the fixture tests/data/v1_shards, built with the engine from before the schema-2 refactor."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from srdistill.datasets.images import decode_png
from srdistill.degrade.inspect.diff import diff_builds
from srdistill.datasets.shards.manifest import read_manifest
from srdistill.degrade.pipeline import degrade_image
from srdistill.datasets.shards.format import read_samples
from srdistill.degrade.spec.schema import load_spec
from srdistill.degrade.spec.v1 import record_from_v1
from srdistill.degrade.inspect.verify import replay, verify

FIXTURE = Path(__file__).parent / "data" / "v1_shards"


@pytest.fixture
def v1_build(tmp_path) -> Path:
    out = tmp_path / "v1"
    shutil.copytree(FIXTURE, out)
    return out


def _samples(build: Path):
    manifest = read_manifest(str(build))
    for entry in manifest["shards"]:
        with open(build / entry["name"], "rb") as fh:
            yield from read_samples(io.BytesIO(fh.read()))


def test_the_fixture_is_a_version1_build(v1_build):
    manifest = read_manifest(str(v1_build))
    assert manifest["schema_version"] == 1 and manifest["spec"]["kind"] == "second_order"
    assert {meta["params"]["version"] for *_, meta in _samples(v1_build)} == {2}


def test_verify_and_replay_a_version1_build(v1_build):
    report = verify(str(v1_build), sources=False)
    assert report.ok and (report.shards, report.samples) == (2, 3), report.problems
    rep = replay(str(v1_build), samples=0)
    assert rep.checked == 3 and rep.mismatches == []


def test_version1_params_convert_to_the_record_the_v2_preset_draws(v1_build):
    """The version-1 params, converted with their manifest's spec, are exactly the op record the v2 realesrgan
    preset draws for the same seed and key, and give the stored LR."""
    manifest = read_manifest(str(v1_build))
    spec = load_spec("realesrgan")
    for key, hr_png, lr_png, meta in _samples(v1_build):
        lr, record = degrade_image(decode_png(hr_png), spec, manifest["seed"], key)
        assert record_from_v1(meta["params"], manifest["spec"]) == json.loads(json.dumps(record))
        assert np.array_equal(lr, decode_png(lr_png))


@pytest.mark.slow
def test_regen_and_diff_from_a_version1_parent(v1_build, tmp_path, ray_cluster):
    """Regenerating a v1 build under the v2 realesrgan preset gives the same LRs, and `diff` sees no spec step and
    no parameter that differs."""
    from srdistill.degrade.build.regen import regen

    out = tmp_path / "v2"
    summary = regen(str(v1_build), str(out), "realesrgan", progress=False, command="test")
    assert summary.manifest["schema_version"] == 2 and summary.samples == 3
    assert verify(str(out), sources=False).ok
    # The same pixels; the PNG bytes differ since shards are encoded with another zlib setting (image_encoding).
    old = {k: decode_png(lr) for k, _, lr, _ in _samples(v1_build)}
    new = {k: decode_png(lr) for k, _, lr, _ in _samples(out)}
    assert old.keys() == new.keys() and all(np.array_equal(old[k], new[k]) for k in old)
    d = diff_builds(str(v1_build), str(out), tmp_path / "d", limit=3)
    assert d.spec_fields == 0 and d.moved == []
    assert "None: both builds use the same degradation spec." in d.report.read_text()
