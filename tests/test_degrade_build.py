"""`build` on an embedded Ray session: determinism across worker counts, resume, manifest, verify/replay, bad inputs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import tarfile

import pytest
import webdataset as wds

from helpers.images import bad_folder, good_folder
from helpers.shards import shard_bytes
from srdistill.degrade.build.builder import build
from srdistill.datasets.shards.manifest import BUILD_DIR, MANIFEST_NAME, PLAN_NAME, read_manifest
from srdistill.degrade.spec.schema import spec_hash, load_spec
from srdistill.degrade.inspect.verify import replay, verify
from srdistill.core.errors import UserError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

OPTS = dict(crop=64, crops_per_image=2, shard_samples=3, seed=7, progress=False)


class Stop(Exception):
    """Raised from `on_shard` to stop a build as a kill would, after some shards are finished."""


def stop_after(n: int):
    """An `on_shard` callback that stops the build once `n` shards have finished."""
    seen = []

    def on_shard(record) -> None:
        seen.append(record.name)
        if len(seen) == n:
            raise Stop

    return on_shard


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return good_folder(tmp_path_factory.mktemp("src"), n=5, size=96)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "shards"
    summary = build(str(source), str(out), "bicubic", workers=1, **OPTS)
    return out, summary


def test_one_and_two_workers_give_identical_bytes(source, reference, tmp_path, capsys):
    ref, _ = reference
    summary = build(str(source), str(tmp_path / "two"), "bicubic", workers=2, **{**OPTS, "progress": True})
    assert summary.shards == 4 and summary.samples == 10
    assert "10/10" in capsys.readouterr().err
    assert shard_bytes(tmp_path / "two") == shard_bytes(ref)
    assert sorted(p.name for p in ref.iterdir()) == [MANIFEST_NAME] + [f"train-00000{i}.tar" for i in range(4)]


def test_manifest_describes_the_build(source, reference):
    out, summary = reference
    m = read_manifest(str(out))
    spec = load_spec("bicubic")
    assert m["schema_version"] == 2 and m["spec_hash"] == spec_hash(spec) and m["spec"]["name"] == "bicubic"
    assert (m["seed"], m["scale"], m["split"], m["shard_samples"]) == (7, 4, "train", 3)
    assert m["crop_policy"]["crop"] == 64 and m["crop_policy"]["crops_per_image"] == 2
    assert {k: m["source"][k] for k in ("name", "root", "images")} == {"name": source.name, "root": str(source), "images": 5}
    assert [s["samples"] for s in m["shards"]] == [3, 3, 3, 1]
    assert m["totals"] == {"samples": 10, "shards": 4, "bytes": sum(s["bytes"] for s in m["shards"]), "images": 5, "skipped": 0}
    for s in m["shards"]:
        assert (out / s["name"]).stat().st_size == s["bytes"]
    assert m["timings"]["shards_built"] == 4 and summary.images_per_second > 0
    assert m["image_encoding"] == {"format": "png", "deflate": f"isal {importlib.metadata.version('isal')}",
                                   "deflate_level": 1, "row_filter": "up"}


def test_every_sample_reads_back_with_webdataset_and_tarfile(reference):
    out, _ = reference
    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]
    expected = [f"img{i}_c{c:02d}" for i in range(5) for c in range(2)]
    assert keys == expected
    names = []
    for url in urls:
        with tarfile.open(url) as tar:
            names += [m.name for m in tar.getmembers()]
    assert names == [f"{k}.{s}" for k in expected for s in ("hr.png", "lr.png", "json")]


def test_verify_and_replay_pass_and_verify_catches_damage(reference, tmp_path):
    out, _ = reference
    report = verify(str(out))
    assert report.ok and (report.shards, report.samples) == (4, 10)
    assert replay(str(out), samples=0).checked == 10 and not replay(str(out), samples=0).mismatches
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "train-000001.tar").read_bytes())
    data[700] ^= 0xFF
    (copy / "train-000001.tar").write_bytes(bytes(data))
    (copy / "train-000003.tar").unlink()
    problems = verify(str(copy)).problems
    assert any("train-000001.tar does not match its sha256" in p for p in problems)
    assert any("train-000003.tar is missing" in p for p in problems)


def test_interrupted_build_resumes_to_identical_bytes(source, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "resumed"

    with pytest.raises(Stop):
        build(str(source), str(out), "bicubic", workers=1, on_shard=stop_after(2), **OPTS)
    assert not (out / MANIFEST_NAME).exists() and (out / PLAN_NAME).exists()
    # Finished = recorded under _build/: the unit queued behind the second may have finished its shard before the
    # stop, and its tar can be in place without its record (the stop came between the two), so it is not reused.
    done = sorted(p.stem + ".tar" for p in (out / BUILD_DIR).glob("train-*.json"))
    assert 2 <= len(done) <= 3
    # A half-written shard under its temporary name, and a finished one damaged after the fact.
    (out / ".train-000002.tar.0badc0de.tmp").write_bytes(b"partial")
    (out / done[0]).write_bytes((out / done[0]).read_bytes()[:1000])
    summary = build(str(source), str(out), "bicubic", workers=2, **OPTS)
    assert (summary.shards_reused, summary.shards_built) == (len(done) - 1, 5 - len(done))
    assert shard_bytes(out) == shard_bytes(ref)
    assert not list(out.glob(".*.tmp")) and not (out / BUILD_DIR).exists()
    again = build(str(source), str(out), "bicubic", workers=2, **OPTS)
    assert (again.shards_reused, again.shards_built) == (4, 0)
    assert shard_bytes(out) == shard_bytes(ref)


OLD_ENCODING = {"format": "png", "zlib_level": 1, "zlib_strategy": "rle", "row_filter": "avg"}


def _pixels(out) -> dict[str, bytes]:
    """{member name: decoded pixels} of every image in a build folder: what a change of PNG encoding keeps."""
    import numpy as np

    from srdistill.datasets.images import decode_png

    pixels = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    pixels[f"{path.name}/{m.name}"] = np.ascontiguousarray(decode_png(tar.extractfile(m).read())).tobytes()
    return pixels


def _reencode(out, shards: list[str]) -> None:
    """Rewrite the named shards' PNGs with the encoding shards had before ISA-L (zlib level 1, RLE, Average rows),
    as an older srdistill left them, and fix their records: same pixels, other bytes."""
    import io

    from srdistill.datasets.images import PngEncoding, decode_png, encode_png

    old = PngEncoding(1, "rle", "avg")
    for name in shards:
        buf = io.BytesIO()
        with tarfile.open(out / name) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as dst:
            for m in src.getmembers():
                data = src.extractfile(m).read()
                if m.name.endswith(".png"):
                    data = encode_png(decode_png(data), old)
                m.size = len(data)
                dst.addfile(m, io.BytesIO(data))
        (out / name).write_bytes(buf.getvalue())
        part = out / BUILD_DIR / name.replace(".tar", ".json")
        if part.exists():
            record = json.loads(part.read_text())
            record.update(bytes=len(buf.getvalue()), sha256=hashlib.sha256(buf.getvalue()).hexdigest())
            record.pop("image_encoding")  # records before the encoding was recorded per shard
            part.write_text(json.dumps(record))


def test_shards_written_with_another_png_encoding_are_rewritten(source, reference, tmp_path, caplog):
    """A finished build (manifest) or an unfinished one (records in _build/) whose shards an older srdistill wrote
    with another PNG encoding: resuming rewrites exactly those, so the manifest's one `image_encoding` is true of
    every shard, and the pixels do not change."""
    ref, _ = reference
    out = tmp_path / "finished"
    shutil.copytree(ref, out)
    _reencode(out, ["train-000000.tar", "train-000001.tar", "train-000002.tar", "train-000003.tar"])
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    # The records match the rewritten bytes, so only the encoding tells these shards apart from reusable ones.
    manifest.update(image_encoding=OLD_ENCODING, shards=[
        {**s, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for s in manifest["shards"] for data in [(out / s["name"]).read_bytes()]])
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert _pixels(out) == _pixels(ref) and shard_bytes(out) != shard_bytes(ref)
    with caplog.at_level(logging.WARNING):
        summary = build(str(source), str(out), "bicubic", workers=1, **OPTS)
    assert (summary.shards_reused, summary.shards_built) == (0, 4)
    assert ("rewriting 4 of 4 finished shards: their PNGs were written with zlib level 1, rle strategy, avg rows, "
            f"and shards are now written with isal {importlib.metadata.version('isal')} level 1, up rows; the pixels "
            "stay the same.") in caplog.text
    assert shard_bytes(out) == shard_bytes(ref)

    # Unfinished: the first finished shard recorded under _build/ by an older srdistill, the others by this one.
    out = tmp_path / "unfinished"
    with pytest.raises(Stop):
        build(str(source), str(out), "bicubic", workers=1, on_shard=stop_after(2), **OPTS)
    done = sorted(p.stem + ".tar" for p in (out / BUILD_DIR).glob("train-*.json"))
    _reencode(out, done[:1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = build(str(source), str(out), "bicubic", workers=1, **OPTS)
    assert (summary.shards_reused, summary.shards_built) == (len(done) - 1, 5 - len(done))
    assert (f"rewriting 1 of {len(done)} finished shards: their PNGs were written with an encoding an older "
            "srdistill did not record") in caplog.text
    assert shard_bytes(out) == shard_bytes(ref)
    assert read_manifest(str(out))["image_encoding"] == read_manifest(str(ref))["image_encoding"]


def test_output_holding_a_different_build_is_refused(source, reference, tmp_path):
    ref, _ = reference
    with pytest.raises(UserError, match=r"holds a different build \(seed 7 there, 8 now\)"):
        build(str(source), str(ref), "bicubic", workers=1, **{**OPTS, "seed": 8})
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "train-000000.tar").write_bytes(b"")
    with pytest.raises(UserError, match="already holds shards"):
        build(str(source), str(stray), "bicubic", workers=1, **OPTS)


def test_bad_inputs_are_skipped_and_listed(tmp_path):
    expected = bad_folder(tmp_path / "src")
    summary = build(str(tmp_path / "src"), str(tmp_path / "out"), "bicubic", crop=32, crops_per_image=2,
                    shard_samples=4, seed=0, workers=2, max_pixels=100 * 100, progress=False)
    skipped = {s["source_path"]: s["reason"] for s in summary.manifest["skipped"]}
    assert set(skipped) == set(expected)
    for rel, word in expected.items():
        assert word in skipped[rel]
    assert summary.samples == 2 * 8  # eight readable images, two crops each
    assert verify(str(tmp_path / "out")).ok
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["totals"]["skipped"] == len(expected)


def test_user_mistakes_are_one_sentence(source, tmp_path):
    with pytest.raises(UserError, match="multiple of the scale 4"):
        build(str(source), str(tmp_path / "o"), "bicubic", crop=30, progress=False)
    with pytest.raises(UserError, match="needs --crop > 0"):
        build(str(source), str(tmp_path / "o"), "bicubic", crop=0, crops_per_image=2, progress=False)
    with pytest.raises(UserError, match="not a known data set"):
        build(str(tmp_path / "missing"), str(tmp_path / "o"), "bicubic", progress=False)


def test_realesrgan_build_replays_bit_exactly(source, tmp_path):
    summary = build(str(source), str(tmp_path / "re"), "realesrgan", crop=64, crops_per_image=1, shard_samples=8,
                    seed=1, workers=2, limit=2, progress=False)
    assert summary.samples == 2
    report = replay(str(tmp_path / "re"), samples=0)
    assert report.checked == 2 and report.mismatches == []


def test_killed_build_process_resumes_to_identical_bytes(source, tmp_path):
    """SIGKILL a real `degrade build` (and its Ray processes) after its first shard, then re-run it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    argv = ["--src", str(source), "--preset", "realesrgan", "--crop", "128", "--crops-per-image", "8",
            "--shard-samples", "2", "--seed", "3", "--workers", "1", "--quiet"]
    ref = build(str(source), str(tmp_path / "ref"), "realesrgan", crop=128, crops_per_image=8, shard_samples=2,
                seed=3, workers=1, progress=False)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "srdistill.degrade.cli", "build", *argv, "--out", str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / BUILD_DIR / "train-000000.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for child in family:  # Ray processes that left the process group
        if child.is_running():
            child.kill()
    assert not (out / MANIFEST_NAME).exists(), "the build finished before it could be killed"
    assert len(list(out.glob("*.tar"))) < ref.shards
    summary = build(str(source), str(out), "realesrgan", crop=128, crops_per_image=8, shard_samples=2, seed=3,
                    workers=2, progress=False)
    assert summary.shards_reused >= 1
    assert shard_bytes(out) == shard_bytes(tmp_path / "ref")
