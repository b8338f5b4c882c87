"""Benchmark sets for evaluation: named sets in their published layouts, folder pairs, LR-only folders, the sample.

Named sets live under the data root (`--data-root` or $SRDISTILL_DATA, as for `degrade`). Sets without released
LR images (DIV2K-val, the embedded `sample`) get their LR synthesized by our `degrade` pipeline with the
`realesrgan` preset and a fixed seed, cached under the evaluation's cache folder and recorded in the results.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from srdistill.datasets.images import BadImage, encode_png, read_rgb
from srdistill.datasets.sources import DATA_ROOT_ENV, IMAGE_EXTENSIONS, sample_dir

from srdistill.errors import UserError

SYNTH_PRESET = "realesrgan"
SYNTH_SEED = 0
SCALE = 4
SAMPLE_MAX_SIDE = 512  # the sample's HR is center-cropped to at most this, so the demo stays quick on a CPU


@dataclass(frozen=True)
class BenchmarkItem:
    """One test image: its stem (the name SR outputs are stored under), LR path and HR path (None if LR-only)."""

    stem: str
    lr: Path
    hr: Path | None


@dataclass
class Benchmark:
    name: str
    items: list[BenchmarkItem]
    hr_dir: Path | None  # folder holding exactly the HR images (for folder-level metrics such as FID)
    fingerprint: str
    meta: dict = field(default_factory=dict)

    @property
    def has_hr(self) -> bool:
        return self.hr_dir is not None


@dataclass(frozen=True)
class BenchmarkLayout:
    """A named set: candidate folders below the data root, where HR/LR sit inside, and a layout sentence."""

    name: str
    roots: tuple[str, ...]
    hr_glob: str | None  # None: LR-only set
    lr_glob: str | None  # None: LR synthesized from HR with `degrade`
    layout: str


LAYOUTS: dict[str, BenchmarkLayout] = {
    b.name: b
    for b in (
        BenchmarkLayout("DIV2K-val", ("DIV2K/DIV2K_valid_HR",), "*.png", None,
                        "DIV2K/DIV2K_valid_HR/0801.png ... 0900.png (100 HR images; LR synthesized with the realesrgan preset)"),
        BenchmarkLayout("RealSR", ("RealSR(V3)", "RealSR_V3", "RealSR"), "*/Test/4/*_HR.png", "*/Test/4/*_LR4.png",
                        "RealSR(V3)/{Canon,Nikon}/Test/4/<Camera>_NNN_HR.png and <Camera>_NNN_LR4.png (x4 test pairs)"),
        BenchmarkLayout("DRealSR", ("DRealSR/Test_x4", "DRealSR"), "test_HR/*.png", "test_LR/*.png",
                        "DRealSR/Test_x4/test_HR/<name>_x1.png and test_LR/<name>_x4.png (x4 test pairs)"),
        BenchmarkLayout("RealSet65", ("RealSet65",), None, "*.*",
                        "RealSet65/*.png|jpg (65 real LR images, no HR)"),
        BenchmarkLayout("RealLQ250", ("RealLQ250",), None, "*.*",
                        "RealLQ250/*.png|jpg (250 real LR images, no HR)"),
        BenchmarkLayout("ImageNet-Test", ("ImageNet-Test", "imagenet256"), "gt/*.*", "lq/*.*",
                        "ImageNet-Test/gt/*.png (256x256 HR) and ImageNet-Test/lq/*.png (64x64 LR), ResShift's test pairs"),
    )
}
BENCHMARK_NAMES = (*LAYOUTS, "sample")


@dataclass(frozen=True)
class MissingBenchmark:
    """A named set that is not on disk: what was searched and what is expected there."""

    name: str
    searched: str
    expected: str

    def sentence(self) -> str:
        where = f"searched {self.searched}" if self.searched else f"no data root: pass --data-root or set {DATA_ROOT_ENV}"
        return f"benchmark {self.name} not found ({where}); expected {self.expected}."


def pairing_stem(path: Path) -> str:
    """The stem shared by an HR/LR pair: suffixes such as _HR, _LR4, _x1, _x4, _gt, _lq removed."""
    return re.sub(r"(_(HR|LR\d*|x\d+|gt|lq|GT|LQ))$", "", path.stem)


def _images(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _file_token(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


def pair_folders(name: str, hr_files: list[Path], lr_files: list[Path], hr_dir: Path | None) -> Benchmark:
    """Match LR to HR by pairing stem; UserError when an LR has no HR or a stem repeats."""
    lr_by = _unique_by_stem(name, lr_files, "LR")
    items = []
    if hr_files:
        hr_by = _unique_by_stem(name, hr_files, "HR")
        unmatched = sorted(set(lr_by) - set(hr_by))
        if unmatched:
            raise UserError(f"benchmark {name}: {len(unmatched)} LR images have no HR with the same name (first: {lr_by[unmatched[0]]}).")
        items = [BenchmarkItem(stem, lr_by[stem], hr_by[stem]) for stem in sorted(lr_by)]
    else:
        items = [BenchmarkItem(stem, lr_by[stem], None) for stem in sorted(lr_by)]
    if not items:
        raise UserError(f"benchmark {name} holds no LR images.")
    tokens = [f"{i.stem}|{_file_token(i.lr)}|{_file_token(i.hr) if i.hr else ''}" for i in items]
    return Benchmark(name, items, hr_dir if hr_files else None, _fingerprint(tokens), {"kind": "pairs" if hr_files else "lr-only"})


def _unique_by_stem(name: str, files: list[Path], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        stem = pairing_stem(path)
        if stem in out:
            raise UserError(f"benchmark {name}: two {what} images share the name {stem!r} ({out[stem]} and {path}).")
        out[stem] = path
    return out


def folder_benchmark(hr: str | os.PathLike | None, lr: str | os.PathLike, name: str | None = None) -> Benchmark:
    """`--hr DIR --lr DIR` (pairs matched by stem) or `--lr DIR` alone (LR-only)."""
    lr_dir = Path(lr).expanduser()
    if not lr_dir.is_dir():
        raise UserError(f"LR folder {lr_dir} does not exist.")
    hr_dir = Path(hr).expanduser() if hr else None
    if hr_dir is not None and not hr_dir.is_dir():
        raise UserError(f"HR folder {hr_dir} does not exist.")
    lr_files = _images(lr_dir, "*")
    if not lr_files:
        raise UserError(f"LR folder {lr_dir} holds no images ({' '.join(IMAGE_EXTENSIONS)}).")
    hr_files = _images(hr_dir, "*") if hr_dir else []
    if hr_dir is not None and not hr_files:
        raise UserError(f"HR folder {hr_dir} holds no images ({' '.join(IMAGE_EXTENSIONS)}).")
    return pair_folders(name or lr_dir.resolve().name, hr_files, lr_files, hr_dir)


def _find_root(layout: BenchmarkLayout, data_root: Path) -> Path | None:
    for sub in layout.roots:
        if (data_root / sub).is_dir():
            return data_root / sub
    return None


def locate(name: str, data_root: str | os.PathLike | None) -> Path | MissingBenchmark:
    """The folder of a named set, or why it is not there."""
    layout = LAYOUTS[name]
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        return MissingBenchmark(name, "", layout.layout)
    found = _find_root(layout, Path(root).expanduser())
    if found is None:
        searched = " or ".join(str(Path(root).expanduser() / sub) for sub in layout.roots)
        return MissingBenchmark(name, searched, layout.layout)
    return found


def synthesize(name: str, hr_files: list[Path], cache: Path, *, max_side: int | None = None,
               preset: str = SYNTH_PRESET, seed: int = SYNTH_SEED) -> Benchmark:
    """HR (cut to a multiple of 4, center-cropped to max_side) and LR by `degrade`, cached; reruns reuse the cache."""
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec import load_spec, spec_hash

    spec = load_spec(preset)
    tag = f"{name}-{preset}-{spec_hash(spec)}-seed{seed}" + (f"-max{max_side}" if max_side else "")
    hr_out, lr_out = cache / tag / "hr", cache / tag / "lr"
    hr_out.mkdir(parents=True, exist_ok=True)
    lr_out.mkdir(parents=True, exist_ok=True)
    items, by_stem = [], _unique_by_stem(name, hr_files, "HR")
    for stem, src in sorted(by_stem.items()):
        hr_path, lr_path = hr_out / f"{stem}.png", lr_out / f"{stem}.png"
        if not (hr_path.is_file() and lr_path.is_file()):
            try:
                hr = crop_for_scale(read_rgb(src), SCALE, max_side)
            except BadImage as exc:
                raise UserError(f"benchmark {name}: cannot read {src}: {exc}") from exc
            lr, _ = degrade_image(hr, spec, seed, stem)
            _write_atomic(hr_path, encode_png(hr))
            _write_atomic(lr_path, encode_png(lr))
        items.append(BenchmarkItem(stem, lr_path, hr_path))
    tokens = [tag] + [f"{i.stem}|{_file_token(Path(by_stem[i.stem]))}" for i in items]
    meta = {"kind": "synthesized", "preset": preset, "spec_hash": spec_hash(spec), "seed": seed, "scale": SCALE}
    if max_side:
        meta["max_side"] = max_side
    return Benchmark(name, items, hr_out, _fingerprint(tokens), meta)


def crop_for_scale(hr: np.ndarray, scale: int, max_side: int | None = None) -> np.ndarray:
    """Center crop to at most max_side per side, then cut bottom/right so both sides are multiples of scale."""
    h, w = hr.shape[:2]
    if max_side:
        top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        hr = hr[top:top + min(h, max_side), left:left + min(w, max_side)]
        h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise UserError(f"image of {w}x{h} is smaller than the scale {scale}.")
    return np.ascontiguousarray(hr[: h - h % scale, : w - w % scale])


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_benchmark(name: str, *, data_root: str | os.PathLike | None, cache: Path) -> Benchmark | MissingBenchmark:
    """A named set (or `sample`), or why it is missing."""
    if name == "sample":
        return synthesize("sample", _images(sample_dir(), "*"), cache, max_side=SAMPLE_MAX_SIDE)
    if name not in LAYOUTS:
        raise UserError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARK_NAMES)} or pass --hr/--lr folders.")
    layout = LAYOUTS[name]
    root = locate(name, data_root)
    if isinstance(root, MissingBenchmark):
        return root
    hr_files = _images(root, layout.hr_glob) if layout.hr_glob else []
    if layout.lr_glob is None:
        if not hr_files:
            return MissingBenchmark(name, str(root), layout.layout)
        return synthesize(name, hr_files, cache)
    lr_files = _images(root, layout.lr_glob)
    if not lr_files or (layout.hr_glob and not hr_files):
        return MissingBenchmark(name, str(root), layout.layout)
    bench = pair_folders(name, hr_files, lr_files, root)
    if bench.has_hr:
        bench.hr_dir = _hr_folder(bench, cache)
    return bench


def _hr_folder(bench: Benchmark, cache: Path) -> Path:
    """A folder holding exactly this set's HR images (links), for folder-level metrics such as FID."""
    folder = cache / f"{bench.name}-hr-{bench.fingerprint}"
    folder.mkdir(parents=True, exist_ok=True)
    for item in bench.items:
        link = folder / f"{item.stem}{item.hr.suffix}"
        if not link.exists():
            os.symlink(item.hr.resolve(), link)
    return folder


def resolve_benchmarks(spec: str, *, data_root: str | os.PathLike | None, cache: Path,
                       hr: str | None = None, lr: str | None = None) -> tuple[list[Benchmark], list[MissingBenchmark]]:
    """`all` -> every set found (missing ones reported); `a,b` -> exactly those (a missing one is a UserError).

    `--hr/--lr` folders are added as one more set named after the LR folder.
    """
    found: list[Benchmark] = []
    missing: list[MissingBenchmark] = []
    names = [] if spec in ("", None) else list(BENCHMARK_NAMES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        result = load_benchmark(name, data_root=data_root, cache=cache)
        if isinstance(result, MissingBenchmark):
            if spec != "all":
                raise UserError(result.sentence())
            missing.append(result)
        else:
            found.append(result)
    if lr:
        found.append(folder_benchmark(hr, lr))
    elif hr:
        raise UserError("--hr needs --lr: give the folder of LR inputs that pair with the HR images.")
    if not found:
        raise UserError("no benchmark to evaluate: " + ("; ".join(m.sentence() for m in missing) or "pass --datasets or --lr."))
    return found, missing
