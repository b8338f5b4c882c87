"""Benchmark registry: published layouts, folder pairs, missing sets, and the synthesized sample."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.images import downscale, real_photo, write_png
from srdistill.datasets.benchmarks import (
    BENCHMARK_NAMES,
    LAYOUTS,
    MissingBenchmark,
    canonical_name,
    folder_benchmark,
    pairing_stem,
)
from srdistill.datasets.images import read_rgb
from srdistill.evaluate.benchmarks import load_benchmark, resolve_benchmarks

from srdistill.core.errors import UserError


def make_realsr(root):
    """RealSR (V3)'s 100 x4 test pairs, 50 per camera (hard links to one tiny pair)."""
    hr = real_photo("astronaut", 32, 32)
    first_hr = write_png(root / "RealSR(V3)" / "Canon" / "Test" / "4" / "Canon_001_HR.png", hr)
    first_lr = write_png(root / "RealSR(V3)" / "Canon" / "Test" / "4" / "Canon_001_LR4.png", downscale(hr))
    for cam in ("Canon", "Nikon"):
        for i in range(1, 51):
            folder = root / "RealSR(V3)" / cam / "Test" / "4"
            folder.mkdir(parents=True, exist_ok=True)
            for first, suffix in ((first_hr, "HR"), (first_lr, "LR4")):
                if not (folder / f"{cam}_{i:03d}_{suffix}.png").exists():
                    os.link(first, folder / f"{cam}_{i:03d}_{suffix}.png")


def test_realsr_layout_pairs_canon_and_nikon(tmp_path):
    make_realsr(tmp_path / "data")
    bench = load_benchmark("RealSR", data_root=tmp_path / "data", cache=tmp_path / "cache")
    stems = [i.stem for i in bench.items]
    assert len(stems) == 100 and stems[:2] == ["Canon_001", "Canon_002"] and stems[50:52] == ["Nikon_001", "Nikon_002"]
    assert all(i.hr.name == f"{i.stem}_HR.png" and i.lr.name == f"{i.stem}_LR4.png" for i in bench.items)
    assert sorted(p.name for p in bench.hr_dir.iterdir()) == [f"{i.stem}.png" for i in bench.items]


def test_benchmark_names_are_case_insensitive_like_source_names(tmp_path):
    make_realsr(tmp_path / "data")
    found, _ = resolve_benchmarks("realsr,REALSR", data_root=tmp_path / "data", cache=tmp_path / "cache")
    assert [b.name for b in found] == ["RealSR"]
    assert canonical_name("stablesr-drealsr") == "StableSR-DRealSR" and canonical_name("Sample") == "sample"


def test_stablesr_test_sets_are_named_exactly_as_the_protocols_reference_them():
    assert {"StableSR-DIV2K", "StableSR-RealSR", "StableSR-DRealSR"} <= set(BENCHMARK_NAMES)
    assert (LAYOUTS["StableSR-DIV2K"].count, LAYOUTS["StableSR-RealSR"].count, LAYOUTS["StableSR-DRealSR"].count) == (3000, 100, 93)
    assert LAYOUTS["StableSR-DIV2K"].roots[0] == "StableSR_testsets/DIV2K_V2_val"
    assert LAYOUTS["StableSR-RealSR"].roots[0] == "StableSR_testsets/RealSRVal_crop128"
    assert LAYOUTS["StableSR-DRealSR"].roots[0] == "StableSR_testsets/DrealSRVal_crop128"


def test_folder_pairs_say_so_when_an_hr_has_no_lr(tmp_path, pair_dirs, caplog):
    hr_dir, lr_dir = pair_dirs
    write_png(hr_dir / "lonely.png", real_photo("coffee", 16, 16))
    with caplog.at_level(logging.WARNING):
        bench = folder_benchmark(hr_dir, lr_dir)
    assert len(bench.items) == 3 and [p.name for p in bench.left_out] == ["lonely.png"]
    assert "1 HR images have no LR with the same name and are left out (first: " in caplog.text


def test_pairing_stems_follow_published_names():
    assert pairing_stem(Path("DSC_1454_x1.png")) == pairing_stem(Path("DSC_1454_x4.png")) == "DSC_1454"
    assert pairing_stem(Path("Canon_001_LR4.png")) == "Canon_001"
    assert pairing_stem(Path("0801.png")) == "0801"


def test_missing_sets_are_reported_under_all_and_an_error_when_named(tmp_path):
    make_realsr(tmp_path / "data")
    found, missing = resolve_benchmarks("all", data_root=tmp_path / "data", cache=tmp_path / "cache")
    assert "RealSR" in [b.name for b in found] and "DRealSR" in [m.name for m in missing]
    drealsr = next(m for m in missing if m.name == "DRealSR")
    assert "DRealSR/x4/Test_x4" in drealsr.searched and "test_LR" in drealsr.expected
    with pytest.raises(UserError, match="benchmark DRealSR not found"):
        resolve_benchmarks("DRealSR", data_root=tmp_path / "data", cache=tmp_path / "cache")
    assert isinstance(load_benchmark("RealSet65", data_root=None, cache=tmp_path), MissingBenchmark)
    with pytest.raises(UserError, match="unknown benchmark"):
        resolve_benchmarks("Set5", data_root=tmp_path, cache=tmp_path)


def test_folder_pairs_lr_only_and_bad_folders(tmp_path, pair_dirs):
    hr_dir, lr_dir = pair_dirs
    bench = folder_benchmark(hr_dir, lr_dir)
    assert bench.has_hr and len(bench.items) == 3
    lr_only = folder_benchmark(None, lr_dir)
    assert not lr_only.has_hr and lr_only.items[0].hr is None
    write_png(lr_dir / "stranger.png", real_photo("coffee", 16, 16))
    with pytest.raises(UserError, match="have no HR"):
        folder_benchmark(hr_dir, lr_dir)
    with pytest.raises(UserError, match="does not exist"):
        folder_benchmark(None, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        folder_benchmark(None, tmp_path / "empty")


def test_sample_is_synthesized_deterministically_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SRDISTILL_CACHE", str(tmp_path / "skcache"))
    first = load_benchmark("sample", data_root=None, cache=tmp_path / "a")
    second = load_benchmark("sample", data_root=None, cache=tmp_path / "b")
    assert len(first.items) == 8 and first.meta["preset"] == "realesrgan" and first.meta["seed"] == 0
    assert first.fingerprint == second.fingerprint
    for a, b in zip(first.items, second.items):
        assert a.lr.read_bytes() == b.lr.read_bytes()
        hr, lr = read_rgb(a.hr), read_rgb(a.lr)
        assert hr.shape[0] % 4 == 0 and max(hr.shape[:2]) <= 512 and lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
    mtime = first.items[0].lr.stat().st_mtime_ns
    again = load_benchmark("sample", data_root=None, cache=tmp_path / "a")
    assert again.items[0].lr.stat().st_mtime_ns == mtime and np.array_equal(read_rgb(again.items[0].lr), read_rgb(first.items[0].lr))


def test_evaluate_help_lists_every_benchmark_name():
    from srdistill.evaluate.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    datasets = next(a for a in sub.choices["leaderboard"]._actions if a.dest == "datasets")
    assert all(name in datasets.help for name in BENCHMARK_NAMES)
