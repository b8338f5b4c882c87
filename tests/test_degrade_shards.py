"""The shard format and the per-shard writer (no Ray): fixed headers, key order, readback, crops and skips."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from helpers.images import bad_folder, save, smooth_image
from helpers.shards import tar_members
from srdistill.datasets.images import decode_png
from srdistill.datasets.sources import resolve_source
from srdistill.degrade.build.plan import SampleJob
from srdistill.degrade.build.providers import CropPolicy, SourceImage
from srdistill.degrade.build.writer import write_shard
from srdistill.datasets.shards.manifest import part_name
from srdistill.degrade.pipeline import apply_params, sample_rng
from srdistill.datasets.shards.format import Sample, ShardWriter, iter_shard, meta_bytes, read_samples, shard_name
from srdistill.degrade.spec.schema import load_spec, spec_hash
from srdistill.core.storage import Storage


def _tar(samples) -> bytes:
    buf = io.BytesIO()
    with ShardWriter(buf) as w:
        for s in samples:
            w.write(s)
    return buf.getvalue()


def _samples(n=3):
    return [Sample(f"k{i}", b"hr%d" % i, b"lr%d" % i, {"key": f"k{i}", "x": 0.1 * i}) for i in range(n)]


def test_shard_bytes_depend_only_on_content():
    data = _tar(_samples())
    assert data == _tar(_samples())
    members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
    assert [m.name for m in members] == [f"k{i}.{s}" for i in range(3) for s in ("hr.png", "lr.png", "json")]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_writer_refuses_dots_and_unordered_keys():
    with pytest.raises(ValueError, match="dots"):
        _tar([Sample("a.b", b"", b"", {})])
    with pytest.raises(ValueError, match="increasing key order"):
        _tar([Sample("b", b"", b"", {}), Sample("a", b"", b"", {})])


def test_reader_rejects_incomplete_samples():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("k0.hr.png")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(ValueError, match="lacks k0.lr.png, k0.json"):
        list(iter_shard(buf))


def test_meta_json_is_canonical():
    assert meta_bytes({"b": 1, "a": [1.5, "x"]}) == b'{"a":[1.5,"x"],"b":1}'
    assert shard_name("valid", 12) == "valid-000012.tar"


def _jobs(folder, crop, k=1, scale=4, max_pixels=10**8):
    src = resolve_source(str(folder))
    policy = CropPolicy(crop, k, scale)
    return [SampleJob(key, SourceImage(i.source, i.rel, i.path, policy, max_pixels)) for i in src.items() for key in policy.keys(i.key)]


def _write(tmp_path, jobs, spec="bicubic", seed=3):
    storage = Storage(str(tmp_path / "out"))
    record = write_shard(storage, "train-000000.tar", list(reversed(jobs)), load_spec(spec), seed)
    return storage, record, tmp_path / "out/train-000000.tar"


def test_written_shard_reads_back_with_tarfile_and_webdataset(tmp_path):
    save(tmp_path / "src/a.png", smooth_image(100, 90, 1))
    save(tmp_path / "src/b.jpg", smooth_image(70, 120, 2), quality=95)
    storage, record, path = _write(tmp_path, _jobs(tmp_path / "src", 64, k=2))
    assert record.samples == 4 and record.skipped == []
    assert record.bytes == path.stat().st_size
    assert json.loads(storage.read_bytes(part_name(path.name)))["sha256"] == record.sha256
    with open(path, "rb") as fh:
        ours = list(read_samples(fh))
    assert [k for k, *_ in ours] == ["a_c00", "a_c01", "b_c00", "b_c01"]
    seen = []
    for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
        hr, lr, meta = decode_png(sample["hr.png"]), decode_png(sample["lr.png"]), json.loads(sample["json"])
        assert hr.shape == (64, 64, 3) and lr.shape == (16, 16, 3)
        assert meta["key"] == sample["__key__"] and meta["seed"] == 3 and meta["spec_hash"] == spec_hash(load_spec("bicubic"))
        assert np.array_equal(lr, apply_params(hr, meta["params"], load_spec("bicubic")))
        seen.append(sample["__key__"])
    assert seen == [k for k, *_ in ours]


def test_crop_position_comes_from_the_sample_rng_and_matches_the_source(tmp_path):
    img = smooth_image(100, 90, 1)
    save(tmp_path / "src/a.png", img)
    _, _, path = _write(tmp_path, _jobs(tmp_path / "src", 64, k=3))
    with open(path, "rb") as fh:
        for key, hr_png, _, meta in read_samples(fh):
            rng = sample_rng(3, key + "#crop")
            top, left = int(rng.integers(0, 100 - 64 + 1)), int(rng.integers(0, 90 - 64 + 1))
            assert meta["crop"] == [top, left, 64, 64]
            assert np.array_equal(decode_png(hr_png), img[top : top + 64, left : left + 64])


def test_small_images_are_reflect_padded_to_the_crop(tmp_path):
    img = smooth_image(20, 30, 5)
    save(tmp_path / "src/s.png", img)
    _, _, path = _write(tmp_path, _jobs(tmp_path / "src", 32))
    with open(path, "rb") as fh:
        (_, hr_png, _, meta), = list(read_samples(fh))
    padded = np.pad(img, ((0, 12), (0, 2), (0, 0)), mode="reflect")
    top, left = meta["crop"][:2]
    assert meta["pad"] == [12, 2]
    assert np.array_equal(decode_png(hr_png), padded[top : top + 32, left : left + 32])


def test_crop_zero_keeps_the_full_image_cut_to_the_scale(tmp_path):
    img = smooth_image(50, 43, 6)
    save(tmp_path / "src/f.png", img)
    _, _, path = _write(tmp_path, _jobs(tmp_path / "src", 0))
    with open(path, "rb") as fh:
        (key, hr_png, lr_png, meta), = list(read_samples(fh))
    assert key == "f" and meta["crop"] == [0, 0, 48, 40]
    assert np.array_equal(decode_png(hr_png), img[:48, :40]) and decode_png(lr_png).shape == (12, 10, 3)


def test_bad_sources_are_skipped_with_reasons(tmp_path):
    expected = bad_folder(tmp_path / "src")
    save(tmp_path / "src/tiny.png", smooth_image(3, 3, 1))  # smaller than the scale with --crop 0
    storage, record, path = _write(tmp_path, _jobs(tmp_path / "src", 0, max_pixels=100 * 100))
    reasons = {s["source_path"]: s["reason"] for s in record.skipped}
    # readme.txt and the broken link are skipped when the folder is listed, so they are no items
    file_bad = {k: v for k, v in expected.items() if k not in ("readme.txt", "dangling.png")}
    assert set(reasons) == set(file_bad) | {"tiny.png"}
    for rel, word in file_bad.items():
        assert word in reasons[rel]
    assert "smaller than the scale" in reasons["tiny.png"]
    names = [m.name for m in tar_members(path)]
    assert [n for n in names if n.endswith(".json")] == [
        f"{k}.json" for k in ("ok_gray", "ok_gray16", "ok_palette", "ok_photo", "ok_rgb", "ok_rgb16", "ok_rgba", "ok_small")
    ]
