"""`degrade curate` on Ray and `degrade build --curation`: real photos plus copies made worse in known ways.

The documented selection (README, "Curating the HR side") is SELECT with --dedup phash:16: it keeps exactly
the three originals; the blurred, JPEG-10 and noisy copies fail one clause each, and the resized and cropped
copies are dropped as duplicates of the original (the largest of each group).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from srdistill.degrade.build.builder import build
from srdistill.degrade.cli import main
from srdistill.degrade.curate.run import curate
from srdistill.degrade.curate.scores import hamming
from srdistill.degrade.curate.select import Curation
from srdistill.degrade.inspect.verify import verify
from srdistill.core.errors import UserError

SELECT = "laplacian_var >= 50 and blockiness <= 1.5 and noise_sigma <= 8"
ORIGINALS = ("astronaut.png", "chelsea.png", "coffee.png")
WORSE = {
    "astronaut_blur.png": "select: laplacian_var >= 50",
    "astronaut_jpeg10.png": "select: blockiness <= 1.5",
    "astronaut_noise.png": "select: noise_sigma <= 8",
    "astronaut_resized.png": "duplicate",
    "astronaut_cropped.png": "duplicate",
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("curate") / "src"
    src.mkdir()
    for name in ORIGINALS:
        Image.fromarray(getattr(data, name[:-4])()).save(src / name)
    img = data.astronaut()
    h, w = img.shape[:2]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=10)
    noisy = img + np.random.default_rng(0).normal(0, 20, img.shape)
    worse = {
        "astronaut_blur.png": cv2.GaussianBlur(img, (0, 0), 4),
        "astronaut_jpeg10.png": np.asarray(Image.open(buf).convert("RGB")),
        "astronaut_noise.png": np.clip(noisy, 0, 255).astype(np.uint8),
        "astronaut_resized.png": cv2.resize(img, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA),
        "astronaut_cropped.png": img[h // 25 : h - h // 25, w // 25 : w - w // 25],
    }
    for name, arr in worse.items():
        Image.fromarray(arr).save(src / name)
    return src


@pytest.fixture(scope="module")
def scores(photos, ray_cluster, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    curate(str(photos), str(out), tile=128, workers=2, progress=False)
    return out


def test_one_row_per_image_and_tile_and_the_same_rows_from_one_worker(photos, scores, tmp_path):
    frame = pd.read_parquet(scores)
    full = frame[frame["tile"] == "full"]
    assert sorted(full["path"]) == sorted([*ORIGINALS, *WORSE])
    astronaut = full.set_index("path").loc["astronaut.png"]
    assert (astronaut["width"], astronaut["height"]) == (512, 512)
    assert len(frame[frame["key"] == astronaut["key"]]) == 1 + 16  # whole image + a 4x4 grid of 128-pixel tiles
    one = tmp_path / "one.parquet"
    curate(str(photos), str(one), tile=128, workers=1, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(one), frame)
    assert not (tmp_path / "one.parts").exists() or not list((tmp_path / "one.parts").iterdir())


def test_a_rerun_reuses_rows_and_rescores_a_changed_file(photos, ray_cluster, tmp_path):
    photos = Path(shutil.copytree(photos, tmp_path / "src"))  # its files change below
    out = tmp_path / "s.parquet"
    first = curate(str(photos), str(out), workers=2, progress=False)
    assert (first.scored, first.reused) == (8, 0)
    again = curate(str(photos), str(out), workers=2, progress=False)
    assert (again.scored, again.reused) == (8 - 8, 8)
    target = photos / "chelsea.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = curate(str(photos), str(out), workers=2, progress=False)
    assert (third.scored, third.reused) == (1, 7)
    assert len(pd.read_parquet(out)) == 8


def test_the_documented_selection_keeps_exactly_the_originals(photos, scores, ray_cluster, tmp_path):
    full = pd.read_parquet(scores).query("tile == 'full'").set_index("path")
    # The originals are far apart in pHash, so only the copies can group with them.
    for a in ORIGINALS:
        for b in ORIGINALS:
            if a < b:
                assert hamming(full.at[a, "phash"], full.at[b, "phash"]) > 16
    out = tmp_path / "shards"
    summary = build(str(photos), str(out), "bicubic", crop=64, shard_samples=8, seed=0, workers=2, progress=False,
                    curation=Curation(str(scores), select=SELECT, dedup="phash:16"))
    kept = {json.loads(line)["source_path"] for line in _sample_jsons(out)}
    assert kept == set(ORIGINALS)
    record = summary.manifest["curation"]
    assert record["select"] == SELECT and record["dedup"] == "phash:16"
    assert record["dropped_counts"] == {"duplicate": 2, "select: blockiness <= 1.5": 1,
                                        "select: laplacian_var >= 50": 1, "select: noise_sigma <= 8": 1}
    assert {d["source_path"]: d["reason"] for d in record["dropped"]} == WORSE
    assert {d["duplicate_of"] for d in record["dropped"] if d["reason"] == "duplicate"} == {"astronaut.png"}
    assert verify(str(out), progress=False).ok


def test_verify_notices_a_changed_scores_file(photos, scores, ray_cluster, tmp_path):
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(scores.read_bytes())
    out = tmp_path / "shards"
    build(str(photos), str(out), "bicubic", crop=64, shard_samples=8, seed=0, workers=2, progress=False,
          curation=Curation(str(copy), select="laplacian_var >= 50"))
    assert verify(str(out), progress=False).ok
    pd.read_parquet(copy).iloc[:-1].to_parquet(copy, index=False)
    report = verify(str(out), progress=False)
    assert any("changed since the build" in p for p in report.problems)


def test_best_tile_crops_each_hr_to_its_most_complex_tile(photos, scores, ray_cluster, tmp_path):
    out = tmp_path / "shards"
    build(str(photos), str(out), "bicubic", crop=0, shard_samples=8, seed=0, workers=2, progress=False,
          curation=Curation(str(scores), select="path == 'chelsea.png'", best_tile=True))
    frame = pd.read_parquet(scores)
    tiles = frame[(frame["path"] == "chelsea.png") & (frame["tile"] != "full")]
    best = tiles.loc[tiles["complexity"].idxmax()]
    (meta,) = [json.loads(line) for line in _sample_jsons(out)]
    assert meta["tile"] == [best["top"], best["left"], 128, 128]


@pytest.mark.parametrize("case", ["unknown column", "other source", "missing weights"])
def test_bad_input_is_one_sentence_and_writes_nothing(case, photos, scores, ray_cluster, tmp_path, offline_weights,
                                                       monkeypatch, capsys):
    out = tmp_path / "out"
    if case == "missing weights":
        monkeypatch.setenv("SRDISTILL_OFFLINE", "1")
        argv = ["curate", "--src", str(photos), "--out", str(out / "s.parquet"), "--metrics", "musiq", "--quiet"]
    else:
        src = photos if case == "unknown column" else Path(data.__file__).parent  # skimage's own image folder
        argv = ["build", "--src", str(src), "--out", str(out), "--preset", "bicubic", "--curation", str(scores),
                "--select", "sharpness >= 3" if case == "unknown column" else "laplacian_var >= 50", "--quiet"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert {"unknown column": "names an unknown column", "other source": "holds scores of",
            "missing weights": "metric musiq cannot be used: missing"}[case] in err
    assert not out.exists()


def test_select_flags_need_a_curation_file(photos, capsys):
    assert main(["build", "--src", str(photos), "--out", "x", "--select", "complexity > 0.3"]) != 0
    assert "need --curation" in capsys.readouterr().err
    from srdistill.degrade.curate.select import parse_dedup

    assert parse_dedup("phash:12") == ("phash", 12) and parse_dedup("embed:0.9") == ("embed", 0.9)
    for bad in ("md5:3", "phash:65", "embed:2", "embed:x"):
        with pytest.raises(UserError, match="phash:D"):
            parse_dedup(bad)


def _sample_jsons(out: Path):
    import tarfile

    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    yield tar.extractfile(member).read().decode()


def test_a_named_pyiqa_metric_becomes_a_column(photos, ray_cluster, tmp_path, offline_weights):
    import pyiqa
    import torch

    from srdistill.core.iqa.weights import install_shipped_weights

    if not install_shipped_weights() and not (offline_weights / "torch" / "pyiqa" / "niqe_modelparameters.mat").exists():
        pytest.skip("basicsr (which ships NIQE's parameters) is not installed")
    out = tmp_path / "s.parquet"
    curate(str(photos), str(out), metrics=["niqe"], workers=2, limit=2, progress=False)
    frame = pd.read_parquet(out).set_index("path")
    niqe = pyiqa.create_metric("niqe", device="cpu")
    for path in frame.index:
        img = np.asarray(Image.open(photos / path).convert("RGB"), dtype=np.float32) / 255.0
        expected = float(niqe(torch.from_numpy(img).permute(2, 0, 1)[None]))
        assert frame.at[path, "niqe"] == pytest.approx(expected, rel=1e-4)


def test_report_marks_the_thresholds_and_shows_lowest_and_highest(photos, scores, tmp_path, capsys):
    from srdistill.degrade.curate.report import thresholds, write_report

    assert thresholds(SELECT) == {"laplacian_var": [50.0], "blockiness": [1.5], "noise_sigma": [8.0]}
    assert thresholds("3 < complexity and (a > 1 or b > 2)") == {"complexity": [3.0]}
    files = write_report(str(scores), str(tmp_path / "report"), select=SELECT, n=2)
    names = {f.name for f in files}
    assert {"hist_laplacian_var.png", "sheet_laplacian_var.png", "report.md"} <= names
    assert "hist_jpeg_quality.png" not in names  # every test image is a PNG
    md = (tmp_path / "report" / "report.md").read_text()
    # 8 images: only the blurred copy fails the sharpness clause, only the noisy one the noise clause.
    assert "`laplacian_var >= 50`: 7 of 8" in md and "`noise_sigma <= 8`: 7 of 8" in md
    sheet = np.asarray(Image.open(tmp_path / "report" / "sheet_laplacian_var.png"))
    assert sheet.shape[0] > 2 * 100 and sheet.std() > 10


@pytest.mark.slow
def test_embedding_dedup_through_a_real_timm_model_with_random_weights(photos, scores, ray_cluster, tmp_path):
    plain_scores = scores  # made without --embed
    from srdistill.degrade.curate.embed import cosine

    scores = tmp_path / "emb.parquet"
    curate(str(photos), str(scores), workers=2, progress=False, embed="timm:vit_tiny_patch16_224",
           embed_pretrained=False)
    full = pd.read_parquet(scores).query("tile == 'full'").set_index("path")
    emb = full["embedding"]
    assert len(emb["astronaut.png"]) == 192 and np.linalg.norm(emb["astronaut.png"]) == pytest.approx(1.0)
    # Seeded random weights: the copies stay closer to their original than the originals are to each other.
    between = max(cosine(emb[a], emb[b]) for a in ORIGINALS for b in ORIGINALS if a < b)
    copies = min(cosine(emb["astronaut.png"], emb[c]) for c in ("astronaut_resized.png", "astronaut_cropped.png"))
    assert between < 0.97 <= copies
    summary = build(str(photos), str(tmp_path / "shards"), "bicubic", crop=64, shard_samples=8, seed=0, workers=2,
                    progress=False, curation=Curation(str(scores), select=SELECT, dedup="embed:0.97"))
    assert {json.loads(line)["source_path"] for line in _sample_jsons(tmp_path / "shards")} == set(ORIGINALS)
    assert summary.manifest["curation"]["dropped_counts"]["duplicate"] == 2
    with pytest.raises(UserError, match="needs scores with embeddings"):
        build(str(photos), str(tmp_path / "x"), "bicubic", crop=64, progress=False,
              curation=Curation(str(plain_scores), dedup="embed:0.97"))
    assert not (tmp_path / "x").exists()


def test_dedup_links_chains_and_keeps_the_largest_then_the_most_complex():
    from srdistill.degrade.curate.select import dedup_groups

    frame = pd.DataFrame({
        "key": ["a", "b", "c", "d", "e"],
        "path": ["a.png", "b.png", "c.png", "d.png", "e.png"],
        # a-b differ in 2 bits, b-c in 2 more (a-c: 4), d is 3 bits from a, e is far from all.
        "phash": ["0000000000000000", "0000000000000003", "000000000000000f", "0000000000000700", "ffffffffffff0000"],
        "width": [100, 100, 80, 100, 50], "height": [100, 100, 80, 100, 50],
        "complexity": [0.4, 0.6, 0.9, 0.5, 0.1],
    })
    # D=2: a-b-c form one chain (c is 4 bits from a, linked through b); d (3 bits from a) stays alone.
    assert dedup_groups(frame, ("phash", 2)) == {"a": "b", "c": "b"}
    # D=3: d joins; among the 100x100 images a, b, d the most complex (b) is kept.
    assert dedup_groups(frame, ("phash", 3)) == {"a": "b", "c": "b", "d": "b"}
    assert dedup_groups(frame, ("phash", 0)) == {}
    tie = frame.assign(complexity=0.5)
    assert dedup_groups(tie, ("phash", 3)) == {"b": "a", "c": "a", "d": "a"}  # then the first path


def test_a_killed_run_resumes_from_its_part_files(photos, ray_cluster, tmp_path, monkeypatch):
    from srdistill.core.parts import PartsStore

    out = tmp_path / "s.parquet"
    real_merge = PartsStore.merge

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(PartsStore, "merge", killed)
    with pytest.raises(KeyboardInterrupt):
        curate(str(photos), str(out), workers=2, progress=False)
    assert not out.exists() and len(list((tmp_path / "s.parts").iterdir())) == 1  # 8 images = one unit
    monkeypatch.setattr(PartsStore, "merge", real_merge)
    resumed = curate(str(photos), str(out), workers=2, progress=False)
    assert (resumed.scored, resumed.reused) == (0, 8)
    assert len(pd.read_parquet(out)) == 8 and not list((tmp_path / "s.parts").iterdir())


def test_the_curate_command_lists_the_duplicates_and_writes_a_report(photos, ray_cluster, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    assert main(["curate", "--src", str(photos), "--out", str(out), "--dedup", "phash:16", "--workers", "2",
                 "--report", str(tmp_path / "r"), "--select", SELECT, "--quiet"]) == 0
    printed = capsys.readouterr().out
    # Without a selection first, all six astronauts form one group; four are 512x512 and the noisy copy is the most
    # "complex" of them, so the rule keeps it: why `build` applies --select before --dedup.
    assert "5 near-duplicates would be dropped by --dedup phash:16" in printed
    for name in ["astronaut.png", *WORSE]:
        if name != "astronaut_noise.png":
            assert f"{name} duplicates astronaut_noise.png" in printed
    assert (tmp_path / "r" / "report.md").is_file()


def test_scores_older_than_the_source_or_a_removed_scores_file_are_caught(photos, ray_cluster, tmp_path):
    src = Path(shutil.copytree(photos, tmp_path / "src"))
    scores = tmp_path / "s.parquet"
    curate(str(src), str(scores), workers=2, progress=False)
    out = tmp_path / "shards"
    build(str(src), str(out), "bicubic", crop=64, shard_samples=8, seed=0, workers=2, progress=False,
          curation=Curation(str(scores), select="laplacian_var >= 50"))
    scores.unlink()
    assert any("is missing" in p for p in verify(str(out), progress=False).problems)
    curate(str(src), str(scores), workers=2, progress=False)
    (src / "extra.png").write_bytes((src / "chelsea.png").read_bytes())
    with pytest.raises(UserError, match="has no scores for 1 images"):
        build(str(src), str(tmp_path / "b"), "bicubic", crop=64, progress=False, curation=Curation(str(scores)))
    (src / "extra.png").unlink()
    st = (src / "coffee.png").stat()
    os.utime(src / "coffee.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(UserError, match="changed since"):
        build(str(src), str(tmp_path / "b"), "bicubic", crop=64, progress=False, curation=Curation(str(scores)))
    assert not (tmp_path / "b").exists()


def test_verify_refuses_a_manifest_selection_outside_the_grammar_and_runs_none_of_it(photos, scores, ray_cluster,
                                                                                      tmp_path, capsys):
    out = tmp_path / "shards"
    build(str(photos), str(out), "bicubic", crop=64, shard_samples=8, seed=0, workers=2, progress=False,
          curation=Curation(str(scores), select="laplacian_var >= 50"))
    canary = tmp_path / "pwned"
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["curation"]["select"] = f"@pd.io.common.os.system('touch {canary}') == 0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(out)]) != 0
    printed = capsys.readouterr()
    assert "the curation selection in manifest.json is refused: the --select expression" in printed.out + printed.err
    assert not canary.exists()


@pytest.mark.slow  # three commands in processes of their own, each with its own Ray, in the folder of the source
def test_verify_of_a_build_curated_from_a_relative_src_checks_its_sources_and_never_passes_a_misfit(photos, tmp_path):
    import subprocess
    import sys

    from srdistill.degrade.curate.select import file_sha256

    def degrade(*argv):
        done = subprocess.run([sys.executable, "-m", "srdistill.degrade.cli", *argv, *(["--quiet"] if argv[0] != "verify" else [])],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    shutil.copytree(photos, tmp_path / "src4")
    degrade("curate", "--src", "src4", "--out", "s.parquet", "--workers", "1")
    degrade("build", "--src", "src4", "--out", "out", "--preset", "bicubic", "--crop", "64", "--curation", "s.parquet",
            "--select", "laplacian_var >= 50", "--workers", "1")
    report = verify(str(tmp_path / "out"))
    assert report.ok and report.shards > 0 and report.notes == []  # the sources were checked, not skipped
    # The scores file swapped for one of another source, its sha256 in the manifest updated to match.
    other = tmp_path / "other"
    shutil.copytree(photos, other)
    scores = tmp_path / "s.parquet"
    frame = pd.read_parquet(scores)
    frame.assign(source_root=str(other)).to_parquet(scores, index=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["curation"]["sha256"] = file_sha256(str(scores))
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    report = verify(str(tmp_path / "out"))
    assert report.problems == [f"the build's curation does not fit its source now: {scores} holds scores of {other}, "
                               f"not of the source {tmp_path / 'src4'}; run `degrade curate` on this source."]


def test_best_tile_with_scores_of_whole_images_only_is_one_sentence(photos, ray_cluster, tmp_path):
    whole = tmp_path / "whole.parquet"
    curate(str(photos), str(whole), workers=2, progress=False)
    with pytest.raises(UserError, match=r"--best-tile needs scores of tiles, but .*whole\.parquet holds whole images "
                                        r"only; run `degrade curate --tile N` to score tiles\."):
        build(str(photos), str(tmp_path / "b"), "bicubic", crop=64, progress=False,
              curation=Curation(str(whole), best_tile=True))


def test_a_finished_build_leaves_no_temporary_shard_of_a_retried_task(photos, scores, ray_cluster, tmp_path):
    out = tmp_path / "shards"
    leftover = out / ".train-000000.tar.abcdefgh.tmp"  # what a task killed mid-write leaves

    def killed_attempt(record):
        leftover.write_bytes(b"half a shard")

    build(str(photos), str(out), "bicubic", crop=64, shard_samples=4, seed=0, workers=2, progress=False,
          on_shard=killed_attempt)
    assert not leftover.exists() and not list(out.glob(".*.tmp"))
    assert verify(str(out)).ok
