"""Every named set, built in miniature as its release (and the common re-packings) lays it out, loaded by name.

Trees keep the real folder names, nesting, file names and counts; the images are tiny (hard links to one file),
except StableSR's crop sets, whose 512x512 HR / 128x128 LR sizes are part of what identifies them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.images import save, smooth_image
from srdistill.datasets.benchmarks import LAYOUTS, Benchmark, MissingBenchmark
from srdistill.evaluate.benchmarks import load_benchmark, resolve_benchmarks
from srdistill.datasets.images import encode_png, read_rgb
from srdistill.datasets.parquet import read_parquet_image
from srdistill.datasets.sources import SOURCES, resolve_source
from srdistill.core.errors import UserError

HR, LR = smooth_image(16, 16, 1), smooth_image(4, 4, 2)
CROP_HR, CROP_LR = smooth_image(512, 512, 3), smooth_image(128, 128, 4)


def put(root: Path, rels: list[str], img: np.ndarray) -> None:
    """Write `img` at the first path and hard-link the others to it (thousands of files in milliseconds)."""
    first = None
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if first is None:
            first = save(path, img)
        else:
            os.link(first, path)


def pairs(root: Path, folder: str, stems: list[str], hr_img=HR, lr_img=LR, hr_fmt="{}.png", lr_fmt="{}.png",
          hr_dir="test_HR", lr_dir="test_LR") -> None:
    put(root, [f"{folder}/{hr_dir}/{hr_fmt.format(s)}" for s in stems], hr_img)
    put(root, [f"{folder}/{lr_dir}/{lr_fmt.format(s)}" for s in stems], lr_img)


def load(name: str, root: Path, tmp_path: Path) -> Benchmark | MissingBenchmark:
    return load_benchmark(name, data_root=root, cache=tmp_path / "cache")


DREALSR_STEMS = [f"DSC_{1000 + i}" for i in range(93)]


# ---- benchmark sets ----

def test_drealsr_release_nesting_x4_test_x4(tmp_path):
    pairs(tmp_path, "DRealSR/x4/Test_x4", DREALSR_STEMS, hr_fmt="{}_x1.png", lr_fmt="{}_x4.png")
    bench = load("DRealSR", tmp_path, tmp_path)
    assert len(bench.items) == 93 and bench.has_hr and not bench.notes
    assert all(i.hr.name == f"{i.stem}_x1.png" and i.lr.name == f"{i.stem}_x4.png" for i in bench.items)
    assert all(i.hr.parent == tmp_path / "DRealSR/x4/Test_x4/test_HR" for i in bench.items)


def test_drealsr_repacked_test_x4_twice_with_swapped_suffixes_pairs_by_folder_and_says_so(tmp_path, caplog):
    pairs(tmp_path, "DRealSR/Test_x4/Test_x4", DREALSR_STEMS, hr_fmt="{}_x4.png", lr_fmt="{}_x1.png")
    with caplog.at_level(logging.WARNING):
        bench = load("drealsr", tmp_path, tmp_path)
    assert bench.name == "DRealSR" and len(bench.items) == 93
    assert all(i.hr.parent.name == "test_HR" and i.hr.name == f"{i.stem}_x4.png" for i in bench.items)
    assert all(i.lr.parent.name == "test_LR" and i.lr.name == f"{i.stem}_x1.png" for i in bench.items)
    assert "93 of 93 HR files end _x4" in caplog.text and "paired by folder" in caplog.text
    assert bench.notes and "reverse" in bench.notes[0]


def test_stablesr_drealsr_crops_renamed_as_drealsr_are_refused_with_the_sentence(tmp_path):
    pairs(tmp_path, "DRealSR/Test_x4", DREALSR_STEMS, CROP_HR, CROP_LR)
    missing = load("DRealSR", tmp_path, tmp_path)
    assert isinstance(missing, MissingBenchmark)
    assert "StableSR 128-px crop set" in missing.sentence() and "StableSR-DRealSR" in missing.sentence()
    with pytest.raises(UserError, match="is this the StableSR 128-px crop set"):
        resolve_benchmarks("DRealSR", data_root=tmp_path, cache=tmp_path / "cache")


def test_a_crop_set_of_another_size_under_drealsr_gives_the_count_sentence(tmp_path):
    pairs(tmp_path, "DRealSR/Test_x4", [f"img{i:03d}" for i in range(100)], CROP_HR, CROP_LR)
    sentence = load("DRealSR", tmp_path, tmp_path).sentence()
    assert sentence.startswith("DRealSR: 93 pairs expected, found 100 in ")
    assert sentence.endswith("is this the StableSR 128-px crop set? load it as StableSR-DRealSR.")


def test_partial_drealsr_names_the_count_and_the_hr_without_lr(tmp_path):
    pairs(tmp_path, "DRealSR/x4/Test_x4", DREALSR_STEMS[:92], hr_fmt="{}_x1.png", lr_fmt="{}_x4.png")
    put(tmp_path, [f"DRealSR/x4/Test_x4/test_HR/{DREALSR_STEMS[92]}_x1.png"], HR)
    sentence = load("DRealSR", tmp_path, tmp_path).sentence()
    assert sentence.startswith(f"DRealSR: 93 pairs expected, found 92 (and 1 HR without LR, first {DREALSR_STEMS[92]}_x1.png)")
    assert "partial or different copy" in sentence and "github.com/xiezw5" in sentence


def test_misnamed_drealsr_tree_lists_every_layout_tried_and_where_it_is_published(tmp_path):
    pairs(tmp_path, "DRealSR/Test_x4", DREALSR_STEMS, hr_dir="HR", lr_dir="LR")
    sentence = load("DRealSR", tmp_path, tmp_path).sentence()
    assert sentence.startswith("benchmark DRealSR not found (tried ")
    for sub in LAYOUTS["DRealSR"].roots:
        assert str(tmp_path / sub) in sentence
    assert f"{tmp_path / 'DRealSR/Test_x4'} (holds 0 test_HR/*.png and 0 test_LR/*.png)" in sentence
    assert "published at https://github.com/xiezw5" in sentence


def test_realsr_v3_release(tmp_path):
    for cam in ("Canon", "Nikon"):
        stems = [f"{cam}_{i:03d}" for i in range(1, 51)]
        put(tmp_path, [f"RealSR(V3)/{cam}/Test/4/{s}_HR.png" for s in stems], HR)
        put(tmp_path, [f"RealSR(V3)/{cam}/Test/4/{s}_LR4.png" for s in stems], LR)
    bench = load("realsr", tmp_path, tmp_path)
    assert bench.name == "RealSR" and len(bench.items) == 100
    assert [i.stem for i in bench.items[:2]] == ["Canon_001", "Canon_002"] and bench.items[-1].stem == "Nikon_050"


@pytest.mark.parametrize("nesting", ["StableSR_testsets/RealSRVal_crop128",
                                     "StableSR_testsets/StableSR_testsets/RealSRVal_crop128",
                                     "StableSR-TestSets/StableSR_testsets/RealSRVal_crop128"])
def test_stablesr_realsr_crops_load_by_name_however_the_archive_was_unpacked(tmp_path, nesting):
    stems = [f"{cam}_{i:03d}" for cam in ("Canon", "Nikon") for i in range(1, 51)]
    pairs(tmp_path, nesting, stems, CROP_HR, CROP_LR)
    bench = load("StableSR-RealSR", tmp_path, tmp_path)
    assert len(bench.items) == 100 and bench.items[0].lr.parent == tmp_path / nesting / "test_LR"
    assert read_rgb(bench.items[0].lr).shape == (128, 128, 3) and read_rgb(bench.items[0].hr).shape == (512, 512, 3)
    assert isinstance(load("RealSR", tmp_path, tmp_path), MissingBenchmark)  # the crops are not RealSR


def test_full_size_pairs_in_a_stablesr_folder_are_refused(tmp_path):
    pairs(tmp_path, "StableSR_testsets/DrealSRVal_crop128", DREALSR_STEMS)
    sentence = load("StableSR-DRealSR", tmp_path, tmp_path).sentence()
    assert "StableSR's crops are LR 128x128 and HR 512x512" in sentence and "LR 4x4 and HR 16x16" in sentence
    assert sentence.endswith("is this the full DRealSR test set? load it as DRealSR.")


def test_stablesr_drealsr_crops_load_by_name(tmp_path):
    pairs(tmp_path, "StableSR_testsets/DrealSRVal_crop128", DREALSR_STEMS, CROP_HR, CROP_LR)
    bench = load("stablesr-drealsr", tmp_path, tmp_path)
    assert bench.name == "StableSR-DRealSR" and len(bench.items) == 93


@pytest.mark.slow
def test_stablesr_div2k_3000_pairs_and_a_partial_copy(tmp_path):
    stems = [f"{i:04d}" for i in range(3000)]
    pairs(tmp_path, "StableSR_testsets/DIV2K_V2_val", stems, CROP_HR, CROP_LR)
    bench = load("StableSR-DIV2K", tmp_path, tmp_path)
    assert len(bench.items) == 3000 and bench.meta["kind"] == "pairs"  # released LR, not synthesized
    (tmp_path / "StableSR_testsets/DIV2K_V2_val/test_LR/2999.png").unlink()
    (tmp_path / "StableSR_testsets/DIV2K_V2_val/test_HR/2999.png").unlink()
    assert load("StableSR-DIV2K", tmp_path, tmp_path).sentence().startswith("StableSR-DIV2K: 3000 pairs expected, found 2999")


def test_div2k_val_synthesizes_from_the_100_hr_images(tmp_path):
    put(tmp_path, [f"DIV2K/DIV2K_valid_HR/{i:04d}.png" for i in range(801, 901)], HR)
    bench = load("div2k-val", tmp_path, tmp_path)
    assert bench.name == "DIV2K-val" and len(bench.items) == 100 and bench.meta["kind"] == "synthesized"
    (tmp_path / "DIV2K/DIV2K_valid_HR/0900.png").unlink()
    assert load("DIV2K-val", tmp_path, tmp_path).sentence().startswith("DIV2K-val: 100 HR images expected, found 99")


def test_reallq250_release_lq_beside_npz(tmp_path):
    put(tmp_path, [f"RealLQ250/lq/{i:03d}.png" for i in range(1, 251)], LR)
    put(tmp_path, ["RealLQ250/npz/001.png"], LR)  # the release's other folder is never taken for LR images
    bench = load("RealLQ250", tmp_path, tmp_path)
    assert len(bench.items) == 250 and not bench.has_hr
    assert all(i.lr.parent == tmp_path / "RealLQ250/lq" for i in bench.items)


def test_realset65_and_imagenet_test(tmp_path):
    put(tmp_path, [f"RealSet65/{i:02d}.png" for i in range(65)], LR)
    assert len(load("realset65", tmp_path, tmp_path).items) == 65
    stems = [f"ILSVRC2012_val_{i:08d}" for i in range(3000)]
    pairs(tmp_path, "ImageNet-Test", stems, hr_dir="gt", lr_dir="lq")
    assert len(load("imagenet-test", tmp_path, tmp_path).items) == 3000


def test_every_missing_set_names_its_layouts_and_where_it_is_published(tmp_path):
    for name, layout in LAYOUTS.items():
        sentence = load(name, tmp_path, tmp_path).sentence()
        assert f"benchmark {name} not found" in sentence and layout.published in sentence
        assert all(str(tmp_path / sub) in sentence for sub in layout.roots)


# ---- training sources ----

def lsdir_rels(prefix: str) -> list[str]:
    return [f"{prefix}0001000/0000001.png", f"{prefix}0001000/0000002.png", f"{prefix}0002000/0001001.png"]


def test_lsdir_release_and_unpacked_layouts_give_the_same_keys(tmp_path, caplog):
    put(tmp_path / "a", lsdir_rels("LSDIR/HR/train/"), HR)
    put(tmp_path / "b", lsdir_rels("LSDIR/"), HR)
    put(tmp_path / "b", ["LSDIR/val/0000001.png"], HR)  # not a 7-digit training folder
    with caplog.at_level(logging.WARNING):
        release, unpacked = resolve_source("LSDIR", tmp_path / "a"), resolve_source("lsdir", tmp_path / "b")
    assert [i.key for i in release.items()] == [i.key for i in unpacked.items()] == [
        "0001000_0000001", "0001000_0000002", "0002000_0001001"]
    assert release.root == tmp_path / "a/LSDIR/HR/train" and unpacked.root == tmp_path / "b/LSDIR"
    assert "LSDIR: 84,991 images expected, found 3" in caplog.text and release.notes


def write_parquet(path: Path, images: list[np.ndarray], row_group_size: int = 2) -> None:
    """A Hugging Face `datasets` image parquet: a struct column `image` of {bytes, path}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [{"bytes": encode_png(img), "path": f"{i:07d}.png"} for i, img in enumerate(images)]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array(cells, type=kind), "label": list(range(len(images)))}), path,
                   row_group_size=row_group_size)


def test_lsdir_hugging_face_parquet_is_read_directly_row_by_row(tmp_path):
    imgs = [smooth_image(16, 16, seed=10 + i) for i in range(5)]
    write_parquet(tmp_path / "LSDIR/data/train-00000-of-00195.parquet", imgs[:3])
    write_parquet(tmp_path / "LSDIR/data/train-00001-of-00195.parquet", imgs[3:])
    items = resolve_source("LSDIR", tmp_path).items()
    assert [i.rel for i in items] == ["train-00000-of-00195.parquet#0", "train-00000-of-00195.parquet#1",
                                      "train-00000-of-00195.parquet#2", "train-00001-of-00195.parquet#0",
                                      "train-00001-of-00195.parquet#1"]
    assert [i.key for i in items][:2] == ["train-00000-of-00195_000000", "train-00000-of-00195_000001"]
    assert all(i.column == "image" for i in items)
    for item, img in zip(items, imgs):  # rows 2 and 1 sit in the second row group of their file
        assert np.array_equal(read_rgb(read_parquet_image(item.path, item.row, item.column)), img)


def test_parquet_without_images_is_skipped_with_its_reason(tmp_path):
    pq.write_table(pa.table({"caption": ["a", "b"]}), tmp_path / "meta.parquet")
    save(tmp_path / "one.png", HR)
    src = resolve_source(str(tmp_path))
    assert [i.rel for i in src.items()] == ["one.png"]
    assert src.skipped()[0].source_path == "meta.parquet" and "without an image column" in src.skipped()[0].reason


def test_div2k_zip_unpacked_at_the_data_root(tmp_path):
    put(tmp_path, [f"DIV2K_train_HR/{i:04d}.png" for i in range(1, 801)], HR)
    src = resolve_source("DIV2K-train", tmp_path)
    assert len(src.items()) == 800 and not src.notes and src.root == tmp_path / "DIV2K_train_HR"


def test_missing_source_names_every_layout_tried_and_where_it_is_published(tmp_path):
    (tmp_path / "LSDIR/HR/train").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        resolve_source("LSDIR", tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"source LSDIR not found under {tmp_path}: tried ")
    assert f"{tmp_path / 'LSDIR/HR/train'} holds no */*.png files" in msg
    assert f"no folder {tmp_path / 'LSDIR/data'}" in msg and "parquet" in msg
    assert "https://ofsoundof.github.io/lsdir-data/" in msg


# ---- Aesthetic-4K (StrSR's second source) and joined sources ----

# The release's train split as `hf download zhang0jhon/Aesthetic-4K --repo-type dataset` lays it out: an imagefolder
# whose metadata.jsonl names each image (file_name, with its GPT-4o caption as text); eval/ is beside it.
A4K_LISTED = ["e.jpg", "b.jpg", "d.jpg", "a.jpg", "c.jpg"]   # the line order is not the sorted order


def aesthetic_4k(root: Path, names: list[str] = A4K_LISTED, present: list[str] | None = None) -> Path:
    train = root / "Aesthetic-4K/train"
    put(root, [f"Aesthetic-4K/train/{n}" for n in (names if present is None else present)], HR)
    put(root, ["Aesthetic-4K/eval/size_2048/x.jpg"], HR)
    lines = [json.dumps({"file_name": n, "text": f"caption of {n}"}) for n in names]
    (train / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return train


def test_aesthetic_4k_lists_the_release_in_metadata_order(tmp_path):
    train = aesthetic_4k(tmp_path)
    src = resolve_source("Aesthetic-4K", tmp_path)
    assert src.root == train and sorted(i.rel for i in src.items()) == sorted(A4K_LISTED)   # eval/ is not train
    assert src.notes == [f"Aesthetic-4K: 5 of the 5 entries of {train / 'metadata.jsonl'}, in its line order"]


def test_aesthetic_4k_60k_takes_the_first_entries_of_metadata_jsonl_not_of_the_sorted_names(tmp_path, monkeypatch):
    assert SOURCES["Aesthetic-4K-60k"].first == 60_000 and SOURCES["Aesthetic-4K-60k"].images == 60_000
    aesthetic_4k(tmp_path)
    monkeypatch.setitem(SOURCES, "Aesthetic-4K-60k", dataclasses.replace(SOURCES["Aesthetic-4K-60k"], first=3, images=3))
    src = resolve_source("aesthetic-4k-60k", tmp_path)
    assert [i.rel for i in src.items()] == ["b.jpg", "d.jpg", "e.jpg"]   # lines 1-3, listed sorted; sorted would be a-c
    assert src.notes[0].startswith("Aesthetic-4K-60k: the first 3 of the 5 entries of ")


def test_aesthetic_4k_60k_on_a_smaller_copy_says_the_count(tmp_path, caplog):
    aesthetic_4k(tmp_path)
    with caplog.at_level(logging.WARNING):
        src = resolve_source("Aesthetic-4K-60k", tmp_path)
    assert len(src.items()) == 5 and "Aesthetic-4K-60k: 60,000 images expected, found 5" in caplog.text


def test_a_listed_image_that_is_missing_is_recorded_and_does_not_move_the_cut(tmp_path, monkeypatch):
    aesthetic_4k(tmp_path, present=["e.jpg", "d.jpg", "a.jpg", "c.jpg"])   # b.jpg (line 2) absent
    monkeypatch.setitem(SOURCES, "Aesthetic-4K-60k", dataclasses.replace(SOURCES["Aesthetic-4K-60k"], first=3, images=3))
    src = resolve_source("Aesthetic-4K-60k", tmp_path)
    assert [i.rel for i in src.items()] == ["d.jpg", "e.jpg"]
    assert [(s.source_path, "not found" in s.reason) for s in src.skipped()] == [("b.jpg", True)]
    assert "1 of them not usable" in src.notes[0]


def test_aesthetic_4k_without_its_metadata_jsonl_is_one_sentence_with_how_to_get_it(tmp_path):
    put(tmp_path, ["Aesthetic-4K/train/a.jpg"], HR)
    with pytest.raises(UserError) as err:
        resolve_source("Aesthetic-4K-60k", tmp_path)
    msg = str(err.value)
    assert f"{tmp_path / 'Aesthetic-4K/train'} holds no metadata.jsonl" in msg
    assert "hf download zhang0jhon/Aesthetic-4K --repo-type dataset" in msg and msg.count(". ") <= 2
    with pytest.raises(UserError, match=r"no folder .*Aesthetic-4K/train"):
        resolve_source("Aesthetic-4K", tmp_path / "elsewhere")


def test_a_bad_metadata_line_names_the_file_and_line(tmp_path):
    train = aesthetic_4k(tmp_path)
    (train / "metadata.jsonl").write_text('{"file_name": "a.jpg"}\n{"text": "no file"}\n')
    with pytest.raises(UserError, match=r"metadata.jsonl line 2 is not a JSON object with a relative file_name"):
        resolve_source("Aesthetic-4K", tmp_path)
    (train / "metadata.jsonl").write_text('{"file_name": "../../LSDIR/x.png"}\n')
    with pytest.raises(UserError, match="line 1"):
        resolve_source("Aesthetic-4K", tmp_path)


def test_joined_sources_are_one_source_with_keys_unique_across_the_sets(tmp_path, monkeypatch):
    put(tmp_path, lsdir_rels("LSDIR/HR/train/"), HR)
    aesthetic_4k(tmp_path)
    monkeypatch.setitem(SOURCES, "Aesthetic-4K-60k", dataclasses.replace(SOURCES["Aesthetic-4K-60k"], first=2, images=2))
    src = resolve_source("LSDIR+Aesthetic-4K-60k", tmp_path)
    assert src.name == "LSDIR+Aesthetic-4K-60k" and src.root == tmp_path
    assert [i.rel for i in src.items()] == ["Aesthetic-4K/train/b.jpg", "Aesthetic-4K/train/e.jpg",
                                            "LSDIR/HR/train/0001000/0000001.png", "LSDIR/HR/train/0001000/0000002.png",
                                            "LSDIR/HR/train/0002000/0001001.png"]
    assert all(Path(i.path).is_file() and i.path == str(tmp_path / i.rel) for i in src.items())
    assert len({i.key for i in src.items()}) == 5
    assert any(n.startswith("LSDIR: 84,991 images expected") for n in src.notes)
    assert any(n.startswith("Aesthetic-4K-60k: the first 2") for n in src.notes)
    with pytest.raises(UserError, match="names the same data set twice"):
        resolve_source("LSDIR+lsdir", tmp_path)


def test_a_joined_build_plan_records_both_sets_and_how_to_list_them_again(tmp_path, monkeypatch):
    from srdistill.degrade.build.plan import make_plan
    from srdistill.degrade.spec.schema import load_spec

    put(tmp_path / "data", lsdir_rels("LSDIR/HR/train/"), HR)
    aesthetic_4k(tmp_path / "data")
    plan = make_plan("LSDIR+Aesthetic-4K-60k", load_spec("bicubic"), crop=16, crops_per_image=1, shard_samples=4,
                     seed=0, limit=None, data_root=str(tmp_path / "data"), split="train", max_pixels=2**26)
    assert plan.identity["source"] == "LSDIR+Aesthetic-4K-60k" and plan.images == 8
    assert plan.source_resolve == {"src": "LSDIR+Aesthetic-4K-60k", "data_root": str(tmp_path / "data"), "limit": None}
    assert any("in its line order" in n for n in plan.source_notes)


def test_first_n_of_a_parquet_layout_counts_rows(tmp_path, monkeypatch):
    imgs = [smooth_image(16, 16, seed=20 + i) for i in range(5)]
    write_parquet(tmp_path / "LSDIR/data/train-00000-of-00195.parquet", imgs[:3])
    write_parquet(tmp_path / "LSDIR/data/train-00001-of-00195.parquet", imgs[3:])
    monkeypatch.setitem(SOURCES, "LSDIR", dataclasses.replace(SOURCES["LSDIR"], first=4))
    items = resolve_source("LSDIR", tmp_path).items()
    assert [i.rel for i in items] == ["train-00000-of-00195.parquet#0", "train-00000-of-00195.parquet#1",
                                      "train-00000-of-00195.parquet#2", "train-00001-of-00195.parquet#0"]
