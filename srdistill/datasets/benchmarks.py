"""Benchmark sets for evaluation: named sets as their authors publish them, folder pairs, LR-only folders, the sample.

Named sets live under the data root (`--data-root` or $SRDISTILL_DATA, as for `degrade`). Each entry of `LAYOUTS`
lists the folders a set is found in below that root (the release as downloaded and the common re-packings, tried
in order), where its HR and LR images sit inside, how many pairs the release holds and where it is published.
A folder whose pairs differ in number from the release, or whose sizes show it to be another set (StableSR's
128-px crops under the name of the full set, or the reverse), is refused with a sentence saying so: a named set
never loads something else under its name. Names are case-insensitive.

Sets without released LR images (DIV2K-val, the embedded `sample`) are found as their HR images (`ToSynthesize`):
evaluation synthesizes their LR with `degrade` (srdistill.evaluate.synthesis), a layer above this one. StableSR's
test sets (`StableSR-DIV2K`, `StableSR-RealSR`, `StableSR-DRealSR`) are separate sets with their released LR, so a
paper's rows measured on them sit beside the set they were measured on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from srdistill.datasets.sources import DATA_ROOT_ENV, IMAGE_EXTENSIONS, sample_dir

from srdistill.core.errors import UserError

SCALE = 4
SAMPLE_MAX_SIDE = 512  # the sample's HR is center-cropped to at most this, so the demo stays quick on a CPU
CROP_LR, CROP_HR = (128, 128), (512, 512)  # StableSR's test crops: LR 128x128, HR 512x512 (width, height)

log = logging.getLogger(__name__)


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
    notes: list[str] = field(default_factory=list)  # said once when loaded (e.g. how pairs were matched)
    left_out: list[Path] = field(default_factory=list)  # HR images with no LR of the same name

    @property
    def has_hr(self) -> bool:
        return self.hr_dir is not None


@dataclass(frozen=True)
class BenchmarkLayout:
    """A named set: candidate folders below the data root, where HR/LR sit inside, its size and its origin."""

    name: str
    roots: tuple[str, ...]  # tried in order
    hr_glob: str | None  # None: LR-only set
    lr_glob: str | None  # None: LR synthesized from HR with `degrade`
    layout: str
    count: int  # pairs (or images of an LR-only / synthesized set) in the release
    published: str
    hr_suffix: str | None = None  # the suffix the release's text gives HR file stems (DRealSR: _x1)
    lr_suffix: str | None = None
    crops: bool = False  # StableSR's test sets: every LR is 128x128 and every HR 512x512
    crops_of: str | None = None  # a StableSR crop set: the full set it was cropped from
    cropped_as: str | None = None  # a full set: the StableSR crop set made from it


_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_RESSHIFT = "https://github.com/zsyOAOA/ResShift (testdata/)"
_STABLESR = "https://huggingface.co/datasets/Iceclear/StableSR-TestSets (StableSR_testsets.zip)"


def _stablesr_roots(folder: str) -> tuple[str, ...]:
    """Where StableSR's archive lands below the data root: unpacked once, twice (zip in a same-named folder),
    inside a clone of the Hugging Face repository, or moved to the root."""
    return (f"StableSR_testsets/{folder}", f"StableSR_testsets/StableSR_testsets/{folder}",
            f"StableSR-TestSets/StableSR_testsets/{folder}", f"StableSR-TestSets/{folder}", folder)


LAYOUTS: dict[str, BenchmarkLayout] = {
    b.name: b
    for b in (
        BenchmarkLayout("DIV2K-val", ("DIV2K/DIV2K_valid_HR", "DIV2K_valid_HR"), "*.png", None,
                        "DIV2K/DIV2K_valid_HR/0801.png ... 0900.png (100 HR images; LR synthesized with the realesrgan "
                        "preset)", 100, _DIV2K),
        BenchmarkLayout("RealSR", ("RealSR(V3)", "RealSR_V3", "RealSR"), "*/Test/4/*_HR.png", "*/Test/4/*_LR4.png",
                        "RealSR(V3)/{Canon,Nikon}/Test/4/<Camera>_NNN_HR.png and <Camera>_NNN_LR4.png (100 x4 test pairs)",
                        100, "https://github.com/csjcai/RealSR", cropped_as="StableSR-RealSR"),
        BenchmarkLayout("DRealSR", ("DRealSR/x4/Test_x4", "DRealSR/Test_x4/Test_x4", "DRealSR/Test_x4", "DRealSR"),
                        "test_HR/*.png", "test_LR/*.png",
                        "DRealSR/x4/Test_x4/test_HR/<name>_x1.png and test_LR/<name>_x4.png (93 x4 test pairs; copies "
                        "with Test_x4/Test_x4 or the suffixes swapped are accepted)", 93,
                        "https://github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-Super-Resolution",
                        hr_suffix="_x1", lr_suffix="_x4", cropped_as="StableSR-DRealSR"),
        BenchmarkLayout("RealSet65", ("RealSet65", "testdata/RealSet65"), None, "*.*",
                        "RealSet65/*.png|jpg (65 real LR images, no HR)", 65, _RESSHIFT),
        BenchmarkLayout("RealLQ250", ("RealLQ250/lq", "RealLQ250"), None, "*.*",
                        "RealLQ250/lq/*.png beside RealLQ250/npz/ (250 real LR images, no HR)", 250,
                        "https://github.com/shallowdream204/DreamClear"),
        BenchmarkLayout("ImageNet-Test", ("ImageNet-Test", "imagenet256"), "gt/*.*", "lq/*.*",
                        "ImageNet-Test/gt/*.png (256x256 HR) and ImageNet-Test/lq/*.png (64x64 LR), ResShift's 3000 "
                        "test pairs", 3000, _RESSHIFT),
        BenchmarkLayout("StableSR-DIV2K", _stablesr_roots("DIV2K_V2_val"), "test_HR/*.png", "test_LR/*.png",
                        "StableSR_testsets/DIV2K_V2_val/test_HR/*.png (512x512) and test_LR/*.png (128x128): 3000 "
                        "synthetic pairs from the DIV2K validation images", 3000, _STABLESR, crops=True),
        BenchmarkLayout("StableSR-RealSR", _stablesr_roots("RealSRVal_crop128"), "test_HR/*.png", "test_LR/*.png",
                        "StableSR_testsets/RealSRVal_crop128/test_HR/*.png (512x512) and test_LR/*.png (128x128): "
                        "100 centre crops of the RealSR (V3) test pairs", 100, _STABLESR, crops=True, crops_of="RealSR"),
        BenchmarkLayout("StableSR-DRealSR", _stablesr_roots("DrealSRVal_crop128"), "test_HR/*.png", "test_LR/*.png",
                        "StableSR_testsets/DrealSRVal_crop128/test_HR/*.png (512x512) and test_LR/*.png (128x128): "
                        "93 centre crops of the DRealSR test pairs", 93, _STABLESR, crops=True, crops_of="DRealSR"),
    )
}
BENCHMARK_NAMES = (*LAYOUTS, "sample")


@dataclass(frozen=True)
class MissingBenchmark:
    """A named set that cannot be loaded: what was searched, what is expected there, and why."""

    name: str
    searched: str
    expected: str
    published: str = ""
    reason: str = ""  # set when a folder was found but holds something else; the whole sentence

    def sentence(self) -> str:
        if self.reason:
            return self.reason
        where = f"tried {self.searched}" if self.searched else f"no data root: pass --data-root or set {DATA_ROOT_ENV}"
        origin = f"; {self.name} is published at {self.published}" if self.published else ""
        return f"benchmark {self.name} not found ({where}); expected {self.expected}{origin}."


def canonical_name(name: str) -> str:
    """The registered spelling of a benchmark name given in any case; UserError for an unknown one."""
    by_lower = {n.lower(): n for n in BENCHMARK_NAMES}
    if name.lower() not in by_lower:
        raise UserError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARK_NAMES)} or pass --hr/--lr folders.")
    return by_lower[name.lower()]


def pairing_stem(path: Path) -> str:
    """The stem shared by an HR/LR pair: suffixes such as _HR, _LR4, _x1, _x4, _gt, _lq removed."""
    return re.sub(r"(_(HR|LR\d*|x\d+|gt|lq|GT|LQ))$", "", path.stem)


def _images(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def fingerprint(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def file_token(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}"


def pair_folders(name: str, hr_files: list[Path], lr_files: list[Path], hr_dir: Path | None) -> Benchmark:
    """Match LR to HR by pairing stem; UserError when an LR has no HR or a stem repeats; an HR with no LR is left
    out and noted."""
    lr_by = unique_by_stem(name, lr_files, "LR")
    notes = []
    if hr_files:
        hr_by = unique_by_stem(name, hr_files, "HR")
        unmatched = sorted(set(lr_by) - set(hr_by))
        if unmatched:
            raise UserError(f"benchmark {name}: {len(unmatched)} LR images have no HR with the same name (first: {lr_by[unmatched[0]]}).")
        orphans = sorted(set(hr_by) - set(lr_by))
        if orphans:
            notes.append(f"benchmark {name}: {len(orphans)} HR images have no LR with the same name and are left out "
                         f"(first: {hr_by[orphans[0]]}).")
        items = [BenchmarkItem(stem, lr_by[stem], hr_by[stem]) for stem in sorted(lr_by)]
    else:
        items = [BenchmarkItem(stem, lr_by[stem], None) for stem in sorted(lr_by)]
    if not items:
        raise UserError(f"benchmark {name} holds no LR images.")
    tokens = [f"{i.stem}|{file_token(i.lr)}|{file_token(i.hr) if i.hr else ''}" for i in items]
    return Benchmark(name, items, hr_dir if hr_files else None, fingerprint(tokens),
                     {"kind": "pairs" if hr_files else "lr-only"}, notes, [hr_by[s] for s in orphans] if hr_files else [])


def unique_by_stem(name: str, files: list[Path], what: str) -> dict[str, Path]:
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
    bench = pair_folders(name or lr_dir.resolve().name, hr_files, lr_files, hr_dir)
    _say(bench.notes)
    return bench


@dataclass(frozen=True)
class _Found:
    root: Path
    hr: list[Path]
    lr: list[Path]


def locate(name: str, data_root: str | os.PathLike | None) -> _Found | MissingBenchmark:
    """The first candidate folder of a named set holding its HR and LR images, or what was tried."""
    layout = LAYOUTS[name]
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        return MissingBenchmark(name, "", layout.layout, layout.published)
    tried = []
    for sub in layout.roots:
        folder = Path(root).expanduser() / sub
        if not folder.is_dir():
            tried.append(str(folder))
            continue
        hr = _images(folder, layout.hr_glob) if layout.hr_glob else []
        lr = _images(folder, layout.lr_glob) if layout.lr_glob else []
        if (layout.hr_glob is None or hr) and (layout.lr_glob is None or lr):
            return _Found(folder, hr, lr)
        held = [f"{len(files)} {glob}" for glob, files in ((layout.hr_glob, hr), (layout.lr_glob, lr)) if glob]
        tried.append(f"{folder} (holds {' and '.join(held)})")
    return MissingBenchmark(name, " or ".join(tried), layout.layout, layout.published)


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return (0, 0)


def _sizes_look_like_crops(bench: Benchmark) -> bool:
    return all(_size(i.lr) == CROP_LR for i in bench.items) and all(_size(i.hr) == CROP_HR for i in bench.items if i.hr)


def _refusal(layout: BenchmarkLayout, bench: Benchmark, root: Path, partial: bool = False) -> str | None:
    """Why this folder is not the set it is named as (count or sizes differ from the release), or None.

    `partial` accepts a copy whose count differs (noted on the set), never one whose image sizes say it is another set."""
    unit = "pairs" if bench.has_hr else "images"
    found = len(bench.items)
    orphans = f" (and {len(bench.left_out)} HR without LR, first {bench.left_out[0].name})" if bench.left_out else ""
    head = f"{layout.name}: {layout.count} {unit} expected, found {found}{orphans} in {root}"
    if layout.cropped_as and bench.has_hr and _sizes_look_like_crops(bench):
        crops = f"LR 128x128 and HR 512x512 as in StableSR's crops: is this the StableSR 128-px crop set? load it as {layout.cropped_as}"
        return f"{head}: {crops}." if found != layout.count else f"{layout.name}: the {found} pairs in {root} are {crops}."
    if layout.crops:
        odd = next((i for i in bench.items if _size(i.lr) != CROP_LR or (i.hr and _size(i.hr) != CROP_HR)), None)
        if odd is not None:
            lw, lh = _size(odd.lr)
            hw, hh = _size(odd.hr) if odd.hr else (0, 0)
            guess = (f"is this the full {layout.crops_of} test set? load it as {layout.crops_of}" if layout.crops_of
                     else f"this is not StableSR's release ({layout.published})")
            return (f"{layout.name}: StableSR's crops are LR 128x128 and HR 512x512, but {odd.stem} is LR {lw}x{lh} and "
                    f"HR {hw}x{hh} in {root}: {guess}.")
    if found != layout.count and partial:
        bench.notes.append(f"{head}: evaluated as a partial copy (--partial-sets); its numbers are not the published set's.")
    elif found != layout.count:
        return (f"{head}: a partial or different copy? {layout.name} is {layout.layout}, published at "
                f"{layout.published}; for another folder use --hr/--lr, or --partial-sets to evaluate it anyway.")
    return None


def _suffix_note(layout: BenchmarkLayout, bench: Benchmark) -> str | None:
    """Say so when HR/LR file names carry each other's documented suffix (copies of DRealSR swap _x1 and _x4)."""
    if not (layout.hr_suffix and layout.lr_suffix and bench.has_hr):
        return None
    swapped = [i for i in bench.items if i.hr.stem.endswith(layout.lr_suffix) and i.lr.stem.endswith(layout.hr_suffix)]
    if not swapped:
        return None
    return (f"benchmark {layout.name}: {len(swapped)} of {len(bench.items)} HR files end {layout.lr_suffix} and their LR "
            f"files {layout.hr_suffix}, the reverse of the release's layout text (first: {swapped[0].hr.name}); "
            "paired by folder (test_HR/test_LR) and stem, whatever the suffix.")


def _say(notes: list[str]) -> None:
    for note in notes:
        log.warning(note)


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


@dataclass(frozen=True)
class ToSynthesize:
    """A set found as HR images only, whose LR evaluation synthesizes: HR cut to a multiple of the scale after a
    centre crop to at most `max_side`."""

    name: str
    hr: list[Path]
    max_side: int | None = None


def find_benchmark(name: str, *, data_root: str | os.PathLike | None, cache: Path,
                   partial: bool = False) -> Benchmark | ToSynthesize | MissingBenchmark:
    """A named set (any case, or `sample`): its pairs, its HR images when its LR is to be synthesized, or why it
    cannot be loaded (`partial`: see _refusal)."""
    name = canonical_name(name)
    if name == "sample":
        return ToSynthesize("sample", _images(sample_dir(), "*"), SAMPLE_MAX_SIDE)
    layout = LAYOUTS[name]
    found = locate(name, data_root)
    if isinstance(found, MissingBenchmark):
        return found
    if layout.lr_glob is None:
        if len(found.hr) != layout.count and not partial:
            return MissingBenchmark(name, str(found.root), layout.layout, layout.published,
                                    f"{name}: {layout.count} HR images expected, found {len(found.hr)} in {found.root}: "
                                    f"a partial or different copy? {name} is {layout.layout}, published at "
                                    f"{layout.published}; --partial-sets evaluates it anyway.")
        if len(found.hr) != layout.count:
            _say([f"benchmark {name}: {layout.count} HR images expected, found {len(found.hr)} in {found.root}: "
                  f"evaluated as a partial copy (--partial-sets)."])
        return ToSynthesize(name, found.hr)
    bench = pair_folders(name, found.hr, found.lr, found.root)
    refusal = _refusal(layout, bench, found.root, partial)
    if refusal:
        return MissingBenchmark(name, str(found.root), layout.layout, layout.published, refusal)
    note = _suffix_note(layout, bench)
    bench.notes += [note] if note else []
    _say(bench.notes)
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
