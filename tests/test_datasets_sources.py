"""Sources (named layouts, folders, globs, the embedded sample) and image reading (conversion policy, bad files)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers.images import bad_folder, png16, save, smooth_image
from srdistill.datasets import sources
from srdistill.datasets.images import FILE_PNG, SHARD_PNG, BadImage, decode_png, encode_png, image_size, read_rgb
from srdistill.datasets.sources import DATA_ROOT_ENV, SAMPLE_PHOTOS, SOURCES, resolve_source, sample_dir, unique_keys
from srdistill.core.errors import UserError

LAYOUT_FILES = {
    "LSDIR": ["LSDIR/HR/train/0001000/0000001.png", "LSDIR/HR/train/0001000/0000002.png", "LSDIR/HR/train/0002000/0001001.png"],
    "DIV2K-train": ["DIV2K/DIV2K_train_HR/0001.png", "DIV2K/DIV2K_train_HR/0002.png"],
    "DIV2K-valid": ["DIV2K/DIV2K_valid_HR/0801.png"],
    "Flickr2K": ["Flickr2K/Flickr2K_HR/000001.png", "Flickr2K/Flickr2K_HR/000002.png"],
    "FFHQ": ["FFHQ/images1024x1024/00000/00000.png", "FFHQ/images1024x1024/01000/01000.png"],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    img = smooth_image(16, 16)
    for files in LAYOUT_FILES.values():
        for rel in files:
            save(root / rel, img)
    return root


@pytest.mark.parametrize("name", sorted(LAYOUT_FILES))
def test_named_sources_follow_their_documented_layout(data_root, name):
    src = resolve_source(name, data_root)
    prefix = SOURCES[name].layouts[0].subdir + "/"
    expected = sorted(rel.removeprefix(prefix) for rel in LAYOUT_FILES[name])
    assert [i.rel for i in src.items()] == expected
    assert all("." not in i.key and i.source == name for i in src.items())
    assert all(i.path == str(data_root / SOURCES[name].layouts[0].subdir / i.rel) for i in src.items())
    assert src.notes == [(f"{name}: {SOURCES[name].images:,} images expected, found {len(expected)} in "
                          f"{data_root / SOURCES[name].layouts[0].subdir} (a partial or different copy? the release is "
                          f"{SOURCES[name].about}).")]


def test_lsdir_keys_keep_the_folder(data_root):
    keys = [i.key for i in resolve_source("lsdir", data_root).items()]
    assert keys == ["0001000_0000001", "0001000_0000002", "0002000_0001001"]


def test_ffhq_10k_keeps_the_first_items_in_sorted_order(data_root, monkeypatch):
    assert SOURCES["FFHQ-10k"].first == 10_000
    monkeypatch.setitem(SOURCES, "FFHQ-10k", dataclasses.replace(SOURCES["FFHQ-10k"], first=1))
    assert [i.rel for i in resolve_source("FFHQ-10k", data_root).items()] == ["00000/00000.png"]


def test_data_root_from_environment(data_root, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    assert len(resolve_source("DIV2K-train").items()) == 2


def test_missing_data_set_names_source_path_and_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(UserError) as err:
        resolve_source("LSDIR", tmp_path)
    msg = str(err.value)
    assert "LSDIR" in msg and str(tmp_path / "LSDIR/HR/train") in msg and "0001000/0000001.png" in msg
    assert all(str(tmp_path / lay.subdir) in msg for lay in SOURCES["LSDIR"].layouts)
    with pytest.raises(UserError, match=DATA_ROOT_ENV):
        resolve_source("Flickr2K")


def test_empty_named_source_and_empty_folder(tmp_path):
    (tmp_path / "DIV2K/DIV2K_valid_HR").mkdir(parents=True)
    with pytest.raises(UserError, match=r"DIV2K-valid not found .*DIV2K_valid_HR holds no \*\.png files"):
        resolve_source("DIV2K-valid", tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        resolve_source(str(tmp_path / "nothing"))


def test_unknown_source_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="not a known data set"):
        resolve_source(str(tmp_path / "absent"))


def test_sample_is_the_bundled_rgb_photos():
    src = resolve_source("sample")
    assert [i.rel for i in src.items()] == sorted(SAMPLE_PHOTOS)
    assert src.root == sample_dir()
    for item in src.items():
        img = read_rgb(item.path)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


def test_folder_lists_images_recursively_and_records_other_files(tmp_path):
    save(tmp_path / "b/z.jpg", smooth_image(8, 8))
    save(tmp_path / "a.png", smooth_image(8, 8))
    (tmp_path / "notes.txt").write_text("x")
    src = resolve_source(str(tmp_path))
    assert [i.rel for i in src.items()] == ["a.png", "b/z.jpg"]
    assert [i.key for i in src.items()] == ["a", "b_z"]
    assert [(s.source_path, "extension" in s.reason) for s in src.skipped()] == [("notes.txt", True)]


def test_glob_source_is_relative_to_its_fixed_prefix(tmp_path):
    save(tmp_path / "x/one.png", smooth_image(8, 8))
    save(tmp_path / "x/y/two.png", smooth_image(8, 8))
    save(tmp_path / "x/y/three.jpg", smooth_image(8, 8))
    src = resolve_source(str(tmp_path / "x/**/*.png"))
    assert src.root == tmp_path / "x"
    assert [i.rel for i in src.items()] == ["one.png", "y/two.png"]
    with pytest.raises(UserError, match="matches no file"):
        resolve_source(str(tmp_path / "x/*.webp"))


def test_keys_are_dot_free_unique_and_stable():
    rels = ["a.b.png", "a_b.png", "dir/a b.jpg", "c.png"]
    keys = unique_keys(rels)
    assert all("." not in k and " " not in k for k in keys)
    assert len(set(keys)) == len(keys)
    assert keys == unique_keys(rels)
    assert keys[3] == "c" and keys[2] == "dir_a_b"
    assert keys[0].startswith("a_b-") and keys[1].startswith("a_b-")


def test_registry_describes_every_source():
    text = sources.describe_sources()
    for name in [*SOURCES, "sample"]:
        assert name + ":" in text


# ---- image reading ----

def test_conversion_policy(tmp_path):
    rgb = smooth_image(12, 10, 3)
    gray = rgb[:, :, 0]
    assert np.array_equal(read_rgb(save(tmp_path / "rgb.png", rgb)), rgb)
    assert np.array_equal(read_rgb(save(tmp_path / "g.png", Image.fromarray(gray, "L"))), np.dstack([gray] * 3))
    rgba = np.dstack([rgb, np.full(gray.shape, 3, np.uint8)])
    assert np.array_equal(read_rgb(save(tmp_path / "a.png", Image.fromarray(rgba, "RGBA"))), rgb)
    pal = Image.fromarray(rgb).convert("P")
    assert np.array_equal(read_rgb(save(tmp_path / "p.png", pal)), np.asarray(pal.convert("RGB")))
    g16 = read_rgb(png16(4, 5, 1))
    expected = (np.arange(20, dtype=np.uint32).reshape(4, 5) * 997 % 65536) >> 8
    assert np.array_equal(g16, np.dstack([expected.astype(np.uint8)] * 3))
    c16 = read_rgb(png16(4, 5, 3))
    raw = (np.arange(60, dtype=np.uint32).reshape(4, 5, 3) * 997 % 65536) >> 8
    assert np.array_equal(c16, raw[:, :, ::-1].astype(np.uint8))  # written as BGR by OpenCV


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(smooth_image(10, 20, 1))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert read_rgb(tmp_path / "o.jpg").shape == (20, 10, 3)


def test_bad_files_raise_with_a_reason(tmp_path):
    expected = bad_folder(tmp_path)
    for rel, word in expected.items():
        if rel in ("readme.txt", "dangling.png"):  # skipped when a folder is listed, before any read
            continue
        with pytest.raises(BadImage, match=word):
            read_rgb(tmp_path / rel, max_pixels=100 * 100)
    for ok in sorted(p for p in tmp_path.iterdir() if p.name.startswith("ok_")):
        assert read_rgb(ok).dtype == np.uint8


def test_pixel_limit_reads_only_the_header(tmp_path):
    path = save(tmp_path / "big.png", smooth_image(64, 64))
    assert image_size(path.read_bytes()) == (64, 64)
    with pytest.raises(BadImage, match="64x64 pixels is over the limit of 4095"):
        read_rgb(path, max_pixels=4095)


def test_png_codec_roundtrip_and_deterministic_bytes():
    img = smooth_image(33, 17, 4)
    data = encode_png(img)
    assert data == encode_png(img.copy())
    assert np.array_equal(decode_png(data), img)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
    with pytest.raises(BadImage):
        decode_png(b"nope")


def _row_filters(data: bytes) -> set[int]:
    """The filter-type byte of every row of an 8-bit RGB PNG, read from its IDAT stream (PNG spec 9.2)."""
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", body[:4])[0]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    return {raw[i] for i in range(0, len(raw), stride)}


def test_shard_png_is_lossless_deterministic_and_up_filtered():
    img = smooth_image(40, 24, 2)
    data = encode_png(img, SHARD_PNG)
    assert data == encode_png(img.copy(), SHARD_PNG)
    assert np.array_equal(decode_png(data), img)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
    assert _row_filters(data) == {2}  # 2 = Up on every row
    assert SHARD_PNG.record() == {"format": "png", "deflate": f"isal {importlib.metadata.version('isal')}",
                                  "deflate_level": 1, "row_filter": "up"}
    # files outside shards keep libpng's per-row choice (several filter types on a photo-like image)
    assert len(_row_filters(encode_png(img, FILE_PNG))) > 1
