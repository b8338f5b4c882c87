"""Faults a user can cause around `degrade`: damaged shards, oversized or all-bad sources, a changed crop on an
existing build, unusable outputs. Each ends in a report of every problem or one sentence, never a traceback."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from helpers.images import good_folder
from srdistill.datasets.images import BadImage, read_rgb
from srdistill.degrade.build.builder import build
from srdistill.degrade.cli import main
from srdistill.degrade.inspect.verify import replay, verify

from srdistill.core.errors import UserError


@pytest.fixture(scope="module")
def built(ray_cluster, tmp_path_factory) -> Path:
    """3 shards of 2 samples (6 photos, 48 px crops, bicubic)."""
    root = tmp_path_factory.mktemp("reliability-degrade")
    out = root / "shards"
    build(str(good_folder(root / "src", n=6, size=64)), str(out), "bicubic", crop=48, shard_samples=2, workers=1,
          progress=False, command="tests")
    assert len(list(out.glob("train-*.tar"))) == 3
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height over no pixel data: what a size is read from, without 400 MB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")


# ---- 6. verify on truncated shards ----------------------------------------------------------------------------

def test_verify_reports_every_truncated_shard_and_exits_1(built, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    for name, keep in (("train-000000.tar", 700), ("train-000002.tar", None)):
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(data[: keep if keep is not None else len(data) // 2])
    report = verify(str(copy))
    unreadable = sorted(p.split()[0] for p in report.problems if "cannot be read as a shard" in p)
    assert unreadable == ["train-000000.tar", "train-000002.tar"]
    assert not any(p.startswith("train-000001.tar") for p in report.problems)   # the intact one is still checked, and fine
    assert main(["verify", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "train-000000.tar cannot be read" in captured.out and "train-000002.tar cannot be read" in captured.out
    assert "Traceback" not in captured.err
    # replay over the damaged build: one sentence pointing at verify, exit 2.
    with pytest.raises(UserError, match=r"cannot be read .*degrade verify"):
        replay(str(copy), samples=0)
    assert main(["replay", str(copy), "--samples", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---- messages: too large, crop mismatch, all skipped ----------------------------------------------------------

@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 8000)])
def test_an_oversized_image_is_too_large_whatever_its_size(width, height):
    with pytest.raises(BadImage, match=r"^too large: "):
        read_rgb(_png_header(width, height))


def test_a_build_where_every_image_was_skipped_exits_2_with_a_sentence(tmp_path, capsys, ray_cluster):
    src = tmp_path / "src"
    src.mkdir()
    (src / "huge.png").write_bytes(_png_header(20000, 20000))
    (src / "wide.png").write_bytes(_png_header(10000, 8000))
    out = tmp_path / "out"
    code = main(["build", "--src", str(src), "--out", str(out), "--preset", "bicubic", "--crop", "48", "--workers", "1",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == (f"degrade: no samples were written: all 2 source files of {src} were skipped "
                            "(reasons above and in manifest.json).\n")
    reasons = [s["reason"] for s in json.loads((out / "manifest.json").read_text())["skipped"]]
    assert len(reasons) == 2 and all(r.startswith("too large: ") for r in reasons), reasons


def test_a_changed_crop_on_an_existing_build_names_the_differing_keys(built, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    src = Path(json.loads((built / "manifest.json").read_text())["source"]["root"])
    code = main(["build", "--src", str(src), "--out", str(copy), "--preset", "bicubic", "--crop", "32",
                 "--shard-samples", "2", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "crop_policy.crop 48 there, 32 now" in err
    assert "{" not in err   # no section printed whole


# ---- 10. unusable outputs -------------------------------------------------------------------------------------

def test_build_and_preview_outputs_that_cannot_be_written_are_one_sentence(built, tmp_path, read_only_dir, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["build", "--src", "sample", "--out", str(afile)], f"--out {afile} is a file, not a folder"),
        (["build", "--src", "sample", "--out", str(afile / "sub")], f"--out {afile / 'sub'} cannot be created: {afile} is a file"),
        (["build", "--src", "sample", "--out", str(read_only_dir / "out")], f"--out {read_only_dir / 'out'} is not writable"),
        (["preview", str(built), "--out", str(tmp_path)], f"--out {tmp_path} is a folder; give a file name"),
        (["preview", str(built), "--out", str(read_only_dir / "g.png")], "is not writable"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("degrade: ") and err.count("\n") == 1 and words in err, (argv, err)
    assert list(read_only_dir.iterdir()) == []
