"""`degrade regen`: same keys and HR bytes as the parent, new LR/params/spec hash, resumable, parent named."""

import json

import pytest

from srdistill.degrade.build.builder import build
from srdistill.datasets.shards.manifest import read_manifest
from srdistill.degrade.build.regen import regen
from srdistill.degrade.cli import main
from srdistill.datasets.shards.format import read_samples
from srdistill.degrade.spec.schema import load_spec, spec_hash
from srdistill.degrade.inspect.verify import replay, verify
from srdistill.core.errors import UserError

pytestmark = pytest.mark.slow

# No final sinc: a parent sample keeps its LR only if it drew none (p = 0.2), so 8 samples almost surely touch one.
NEW_SPEC = "base: realesrgan\nname: realesrgan-nosinc\nfinal: {sinc_prob: 0.0}\n"


def _samples(folder):
    out = {}
    for entry in read_manifest(str(folder))["shards"]:
        with open(folder / entry["name"], "rb") as fh:
            for key, hr, lr, meta in read_samples(fh):
                out[key] = (entry["name"], hr, lr, meta)
    return out


def test_regen_keeps_keys_and_hr_and_changes_only_what_the_spec_changes(tmp_path, ray_cluster):
    parent, child = tmp_path / "parent", tmp_path / "child"
    spec_file = tmp_path / "nosinc.yaml"
    spec_file.write_text(NEW_SPEC)
    build("sample", str(parent), "realesrgan", crop=64, crops_per_image=2, limit=4, shard_samples=3,
          progress=False, command="test")
    summary = regen(str(parent), str(child), str(spec_file), progress=False, command="test")
    assert summary.shards_built == summary.shards == 3

    old, new = _samples(parent), _samples(child)
    assert list(old) == list(new) and len(new) == 8
    touched = 0
    for key in old:
        o_shard, o_hr, o_lr, o_meta = old[key]
        n_shard, n_hr, n_lr, n_meta = new[key]
        assert n_shard == o_shard and n_hr == o_hr
        assert n_meta["spec_hash"] == spec_hash(load_spec(spec_file)) != o_meta["spec_hash"]
        same = {k: v for k, v in o_meta.items() if k not in ("spec_hash", "params")}
        assert {k: v for k, v in n_meta.items() if k not in ("spec_hash", "params")} == same
        # The spec changed only the final sinc probability: every other draw is the same, in the same order.
        o_ops, n_ops = o_meta["params"]["ops"], n_meta["params"]["ops"]
        o_sinc = [o for o in o_ops if o["op"] == "sinc"]
        assert [o for o in n_ops if o["op"] == "sinc"] == []
        assert [o for o in o_ops if o["op"] != "sinc"] == n_ops
        if o_sinc:
            touched += 1
            assert n_lr != o_lr
        else:
            assert n_lr == o_lr
    assert touched >= 1

    manifest = read_manifest(str(child))
    assert manifest["parent"]["build_id"] == read_manifest(str(parent))["build_id"]
    assert manifest["parent"]["build"] == str(parent)
    final = manifest["spec"]["pipeline"][-1]["steps"][0]["one_of"]  # the version-1 file, converted
    assert [s["p"] for o in final for s in o["steps"] if s["op"] == "sinc"] == [0.0, 0.0]
    # The regen is an ordinary build for the other tools: shards match the manifest, LRs replay bit-exactly.
    assert verify(str(child), progress=False).ok
    assert replay(str(child), samples=0).mismatches == []

    # Resumable: a lost shard is rebuilt byte-identically, the others are kept.
    before = (child / "train-000001.tar").read_bytes()
    (child / "train-000001.tar").unlink()
    again = regen(str(parent), str(child), str(spec_file), progress=False, command="test")
    assert (again.shards_built, again.shards_reused) == (1, 2)
    assert (child / "train-000001.tar").read_bytes() == before
    assert json.loads((child / "manifest.json").read_text())["shards"] == manifest["shards"]


def test_regen_mistakes_are_user_errors(tmp_path, ray_cluster):
    with pytest.raises(UserError, match="manifest.json"):
        regen(str(tmp_path / "nothing"), str(tmp_path / "out"), "bicubic", progress=False)
    parent = tmp_path / "p"
    build("sample", str(parent), "bicubic", crop=32, limit=1, progress=False, command="test")
    with pytest.raises(UserError, match="--out must differ"):
        regen(str(parent), str(parent), "realesrgan", progress=False)
    spec2 = tmp_path / "x2.yaml"
    spec2.write_text("base: bicubic\nname: bicubic-x3\nscale: 3\n")
    with pytest.raises(UserError, match="scale"):
        regen(str(parent), str(tmp_path / "o"), str(spec2), progress=False)


def test_regen_subcommand_parses_and_runs(tmp_path, ray_cluster, capsys):
    parent = tmp_path / "p"
    build("sample", str(parent), "bicubic", crop=32, limit=2, progress=False, command="test")
    assert main(["regen", "--from", str(parent), "--preset", "realesrgan", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 samples in 1 shards" in out and spec_hash(load_spec("realesrgan")) in out
