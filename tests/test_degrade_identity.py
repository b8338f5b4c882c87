"""Source identity: folders walked once, a changed source file redoes exactly its shard (and says so), verify notices."""

from __future__ import annotations

import logging
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.images import good_folder, save, smooth_image
from helpers.shards import shard_bytes
from srdistill.datasets.images import encode_png
from srdistill.datasets.sources import resolve_source
from srdistill.degrade.build.builder import build
from srdistill.datasets.shards.manifest import BUILD_DIR, MANIFEST_NAME, PLAN_NAME, read_manifest
from srdistill.degrade.build.plan import make_plan
from srdistill.degrade.spec.schema import load_spec
from srdistill.degrade.inspect.verify import verify

OPTS = dict(crop=32, crops_per_image=1, shard_samples=2, seed=3, progress=False)
PLAN_OPTS = dict(crop=32, crops_per_image=1, shard_samples=2, seed=3, limit=None, data_root=None, split="train",
                 max_pixels=2**26)


def edit_in_place(path, seed: int) -> None:
    """New pixels under the same name, with a modification time that surely differs."""
    before = os.stat(path)
    save(path, smooth_image(64, 64, seed=seed))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


# ---- walking folders ----

def test_a_symlink_loop_is_walked_once_and_reported(tmp_path):
    good_folder(tmp_path / "src", n=4, size=16)
    save(tmp_path / "src/d/inner.png", smooth_image(16, 16, 9))
    os.symlink("..", tmp_path / "src/d/up")
    os.symlink(tmp_path / "src/d", tmp_path / "src/again")  # a second link to a folder already listed
    src = resolve_source(str(tmp_path / "src"))
    assert [i.rel for i in src.items()] == ["d/inner.png", "img0.png", "img1.png", "img2.png", "img3.png"]
    reasons = {s.source_path: s.reason for s in src.skipped()}
    assert set(reasons) == {"again", "d/up"} and all("already listed" in r for r in reasons.values())


def test_a_link_to_a_folder_outside_the_tree_is_followed(tmp_path):
    good_folder(tmp_path / "elsewhere", n=2, size=16)
    save(tmp_path / "src/a.png", smooth_image(16, 16, 5))
    os.symlink(tmp_path / "elsewhere", tmp_path / "src/linked")
    assert [i.rel for i in resolve_source(str(tmp_path / "src")).items()] == ["a.png", "linked/img0.png", "linked/img1.png"]


# ---- planning ----

def test_shard_digests_change_only_for_the_shard_whose_file_changed(tmp_path):
    good_folder(tmp_path, n=6, size=64)
    spec = load_spec("bicubic")
    before = make_plan(str(tmp_path), spec, **PLAN_OPTS)
    edit_in_place(tmp_path / "img3.png", seed=99)
    after = make_plan(str(tmp_path), spec, **PLAN_OPTS)
    assert after.build_id == before.build_id  # same build, so it resumes ...
    changed = [n for n in before.shard_sources if before.shard_sources[n] != after.shard_sources[n]]
    assert changed == ["train-000001.tar"]  # ... and only img2/img3's shard differs


def test_content_identity_ignores_a_touch_that_stat_identity_sees(tmp_path):
    good_folder(tmp_path, n=4, size=64)
    spec = load_spec("bicubic")
    plans = {mode: make_plan(str(tmp_path), spec, **PLAN_OPTS, source_identity=mode) for mode in ("stat", "content")}
    st = os.stat(tmp_path / "img0.png")
    os.utime(tmp_path / "img0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = {mode: make_plan(str(tmp_path), spec, **PLAN_OPTS, source_identity=mode) for mode in ("stat", "content")}
    assert again["content"].shard_sources == plans["content"].shard_sources
    assert again["stat"].shard_sources["train-000000.tar"] != plans["stat"].shard_sources["train-000000.tar"]
    edit_in_place(tmp_path / "img1.png", seed=7)
    changed = make_plan(str(tmp_path), spec, **PLAN_OPTS, source_identity="content")
    assert changed.shard_sources["train-000000.tar"] != plans["content"].shard_sources["train-000000.tar"]
    assert changed.shard_sources["train-000001.tar"] == plans["content"].shard_sources["train-000001.tar"]


def write_parquet(path, seeds: list[int]) -> None:
    cells = [{"bytes": encode_png(smooth_image(64, 64, seed=s)), "path": f"{s}.png"} for s in seeds]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": pa.array(cells, type=kind)}), path, row_group_size=2)


def test_a_changed_parquet_file_changes_the_shards_holding_its_rows(tmp_path):
    write_parquet(tmp_path / "data/train-00000-of-00002.parquet", [1, 2])
    write_parquet(tmp_path / "data/train-00001-of-00002.parquet", [3, 4])
    spec = load_spec("bicubic")
    before = make_plan(str(tmp_path), spec, **PLAN_OPTS)
    assert [len(jobs) for _, jobs in before.shards] == [2, 2]
    st = os.stat(tmp_path / "data/train-00001-of-00002.parquet")
    write_parquet(tmp_path / "data/train-00001-of-00002.parquet", [3, 5])
    os.utime(tmp_path / "data/train-00001-of-00002.parquet", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = make_plan(str(tmp_path), spec, **PLAN_OPTS)
    assert [n for n in before.shard_sources if before.shard_sources[n] != after.shard_sources[n]] == ["train-000001.tar"]


# ---- building on Ray ----

@pytest.mark.slow
def test_a_changed_source_redoes_its_shard_says_so_and_verify_notices(tmp_path, ray_cluster, caplog):
    src = good_folder(tmp_path / "src", n=6, size=64)
    out = tmp_path / "out"
    first = build(str(src), str(out), "bicubic", workers=2, **OPTS)
    assert first.shards == 3 and all("sources" in s for s in read_manifest(str(out))["shards"])
    assert verify(str(out)).ok
    edit_in_place(src / "img3.png", seed=99)
    report = verify(str(out))
    assert report.problems == [("train-000001.tar: its source files changed since it was written (stat identity); "
                                "re-run the build command to rewrite it.")]
    with caplog.at_level(logging.WARNING):
        again = build(str(src), str(out), "bicubic", workers=2, **OPTS)
    assert (again.shards_built, again.shards_reused, again.sources_changed) == (1, 2, ["train-000001.tar"])
    assert "rewriting 1 of 3 finished shards: their source files changed" in caplog.text
    assert "1 rewritten because their source files changed" in again.text()
    assert read_manifest(str(out))["source"]["changed_shards"] == ["train-000001.tar"]
    fresh = build(str(src), str(tmp_path / "fresh"), "bicubic", workers=2, **OPTS)
    assert shard_bytes(out) == shard_bytes(tmp_path / "fresh") and fresh.shards_built == 3
    assert verify(str(out)).ok and verify(str(out)).notes == []
    shutil.rmtree(src)
    gone = verify(str(out))
    assert gone.ok and gone.notes and gone.notes[0].startswith("sources not checked: source ")


@pytest.mark.slow
def test_an_interrupted_build_whose_source_changed_redoes_that_shard(tmp_path, ray_cluster):
    src = good_folder(tmp_path / "src", n=6, size=64)
    out = tmp_path / "out"

    class Crash(Exception):
        pass

    seen = []

    def crash_after_two(record):
        seen.append(record.name)
        if len(seen) == 2:
            raise Crash

    with pytest.raises(Crash):
        build(str(src), str(out), "bicubic", workers=1, on_shard=crash_after_two, **OPTS)
    assert not (out / MANIFEST_NAME).exists() and (out / PLAN_NAME).exists()
    # Finished = recorded under _build/: the unit queued behind the second may have finished its shard before the
    # stop, and its tar can be in place without its record (the stop came between the two), so it is not reused.
    done = sorted(p.stem + ".tar" for p in (out / BUILD_DIR).glob("train-*.json"))
    assert 2 <= len(done) <= 3
    edit_in_place(src / "img0.png", seed=42)  # its shard (train-000000) is among the finished ones
    resumed = build(str(src), str(out), "bicubic", workers=2, **OPTS)
    assert resumed.sources_changed == ["train-000000.tar"]
    assert (resumed.shards_reused, resumed.shards_built) == (len(done) - 1, 4 - len(done))
    build(str(src), str(tmp_path / "fresh"), "bicubic", workers=2, **OPTS)
    assert shard_bytes(out) == shard_bytes(tmp_path / "fresh")


@pytest.mark.slow
def test_a_parquet_source_builds_on_ray_and_resumes_by_file(tmp_path, ray_cluster):
    write_parquet(tmp_path / "src/data/train-00000-of-00002.parquet", [1, 2, 3])
    write_parquet(tmp_path / "src/data/train-00001-of-00002.parquet", [4, 5])
    out = tmp_path / "out"
    first = build(str(tmp_path / "src"), str(out), "bicubic", workers=2, **OPTS)
    assert (first.samples, first.shards) == (5, 3) and verify(str(out)).ok
    again = build(str(tmp_path / "src"), str(out), "bicubic", workers=2, **OPTS)
    assert (again.shards_built, again.shards_reused) == (0, 3)


def test_a_recursive_glob_through_a_symlink_loop_takes_each_file_once(tmp_path):
    good_folder(tmp_path / "src", n=2, size=16)
    save(tmp_path / "src/d/inner.png", smooth_image(16, 16, 9))
    os.symlink("..", tmp_path / "src/d/up")
    src = resolve_source(str(tmp_path / "src/**/*.png"))
    assert [i.rel for i in src.items()] == ["d/inner.png", "img0.png", "img1.png"]
    assert src.skipped() and all("reached through a link" in s.reason for s in src.skipped())
