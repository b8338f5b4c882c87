"""Where training images come from: named data sets in their documented layouts, any folder or glob, the embedded sample.

Named data sets live under a data root given by `--data-root` or the SRDISTILL_DATA environment variable;
each entry of `SOURCES` says where below that root its images are and what the layout looks like.
Every source lists its items sorted by relative path, with a stable key derived from that path.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from srdistill.errors import UserError

DATA_ROOT_ENV = "SRDISTILL_DATA"
CACHE_ENV = "SRDISTILL_CACHE"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

# scikit-image's bundled real RGB photographs (no synthetic, grayscale or alpha images).
SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)


@dataclass(frozen=True)
class SourceLayout:
    """A named data set: its folder below the data root, the file pattern inside it and a layout sentence."""

    name: str
    subdir: str
    pattern: str
    layout: str
    first: int | None = None  # keep only the first N items in sorted order (e.g. FFHQ-10k)


SOURCES: dict[str, SourceLayout] = {
    s.name: s
    for s in (
        SourceLayout(
            "LSDIR", "LSDIR/HR/train", "*/*.png",
            "LSDIR/HR/train/0001000/0000001.png ... 0085000/0084991.png: the LSDIR training HR release, "
            "84,991 PNGs in folders of 1,000",
        ),
        SourceLayout(
            "DIV2K-train", "DIV2K/DIV2K_train_HR", "*.png",
            "DIV2K/DIV2K_train_HR/0001.png ... 0800.png: the 800 DIV2K training HR images",
        ),
        SourceLayout(
            "DIV2K-valid", "DIV2K/DIV2K_valid_HR", "*.png",
            "DIV2K/DIV2K_valid_HR/0801.png ... 0900.png: the 100 DIV2K validation HR images",
        ),
        SourceLayout(
            "Flickr2K", "Flickr2K/Flickr2K_HR", "*.png",
            "Flickr2K/Flickr2K_HR/000001.png ... 002650.png: the 2,650 Flickr2K HR images",
        ),
        SourceLayout(
            "FFHQ", "FFHQ/images1024x1024", "*/*.png",
            "FFHQ/images1024x1024/00000/00000.png ... 69000/69999.png: the 70,000 aligned 1024x1024 FFHQ faces",
        ),
        SourceLayout(
            "FFHQ-10k", "FFHQ/images1024x1024", "*/*.png",
            "FFHQ/images1024x1024/00000/00000.png ... 09000/09999.png: the first 10,000 FFHQ faces, as D3SR uses",
            first=10_000,
        ),
    )
}


@dataclass(frozen=True)
class SourceItem:
    """One source image. `key` is stable and dot-free; `rel` is the path relative to the source root."""

    key: str
    source: str
    path: str
    rel: str = ""


@dataclass(frozen=True)
class Skip:
    """A source file that yields no sample, with the reason recorded in the manifest."""

    source_path: str
    reason: str


@dataclass
class Source:
    """A resolved source: a name, a root folder and the image files below it."""

    name: str
    root: Path
    files: list[str]  # relative POSIX paths, sorted
    ignored: list[Skip] = field(default_factory=list)

    def items(self) -> list[SourceItem]:
        keys = unique_keys(self.files)
        return [SourceItem(k, self.name, str(self.root / rel), rel) for k, rel in zip(keys, self.files)]

    def skipped(self) -> list[Skip]:
        """Files under the root that are not listed as items (wrong extension, unreadable folders)."""
        return list(self.ignored)


def source_names() -> list[str]:
    return [*SOURCES, "sample"]


def describe_sources() -> str:
    """One line per named source, for --help texts."""
    lines = [f"{name}: {s.layout}" for name, s in SOURCES.items()]
    lines.append("sample: " + ", ".join(SAMPLE_PHOTOS) + " (scikit-image's bundled photos, always available)")
    return "\n".join(lines)


def resolve_source(spec: str, data_root: str | os.PathLike | None = None) -> Source:
    """A named data set, "sample", a folder or a glob -> Source; UserError with where it looked when nothing is there."""
    by_lower = {name.lower(): layout for name, layout in SOURCES.items()}
    if spec.lower() in by_lower:
        return _named_source(by_lower[spec.lower()], data_root)
    if spec.lower() == "sample":
        return _folder_source("sample", sample_dir())
    if any(c in spec for c in "*?["):
        return _glob_source(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_source(path.resolve().name or spec, path)
    if path.is_file():
        return Source(spec, path.parent, [path.name])
    raise UserError(
        f"source {spec!r} is not a known data set ({', '.join(source_names())}), an existing folder or a glob pattern."
    )


def sample_dir() -> Path:
    """A folder holding the embedded sample photos, copied once from scikit-image's data into the user cache."""
    import skimage.data

    origin = Path(skimage.data.__file__).parent
    cache = Path(os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srdistill")
    target = cache / "sample-v1"
    if all((target / name).is_file() for name in SAMPLE_PHOTOS):
        return target
    missing = [name for name in SAMPLE_PHOTOS if not (origin / name).is_file()]
    if missing:
        raise UserError(f"the embedded sample needs scikit-image's bundled photos, but {', '.join(missing)} are not in {origin}.")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=cache))
    for name in SAMPLE_PHOTOS:
        shutil.copyfile(origin / name, staging / name)
    try:
        staging.rename(target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def unique_keys(rels: list[str]) -> list[str]:
    """Keys from relative paths: extension dropped, every character but [A-Za-z0-9_-] turned into '_';
    paths whose keys would collide get an 8-hex suffix from their path so every key stays unique and stable."""
    base = [_sanitize(rel) for rel in rels]
    counts: dict[str, int] = {}
    for k in base:
        counts[k] = counts.get(k, 0) + 1
    return [k if counts[k] == 1 else f"{k}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}" for k, rel in zip(base, rels)]


def _sanitize(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "_"


def _data_root(data_root: str | os.PathLike | None, layout: SourceLayout) -> Path:
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise UserError(
            f"source {layout.name} needs a data root: pass --data-root DIR or set {DATA_ROOT_ENV} to the folder "
            f"that holds {layout.subdir}/ (expected {layout.layout})."
        )
    return Path(root).expanduser()


def _named_source(layout: SourceLayout, data_root: str | os.PathLike | None) -> Source:
    folder = _data_root(data_root, layout) / layout.subdir
    if not folder.is_dir():
        raise UserError(f"source {layout.name} not found: {folder} does not exist; expected {layout.layout}.")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob(layout.pattern) if p.is_file())
    if layout.first is not None:
        files = files[: layout.first]
    if not files:
        raise UserError(f"source {layout.name} is empty: no {layout.pattern} files in {folder}; expected {layout.layout}.")
    return Source(layout.name, folder, files)


def _folder_source(name: str, folder: Path) -> Source:
    files: list[str] = []
    ignored: list[Skip] = []

    def on_error(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(folder).as_posix() if exc.filename else "."
        ignored.append(Skip(rel, f"unreadable folder ({exc.strerror or type(exc).__name__})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=True):
        dirnames.sort()
        for fname in filenames:
            rel = (Path(dirpath) / fname).relative_to(folder).as_posix()
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                files.append(rel)
            else:
                ignored.append(Skip(rel, "not an image file name (extension not one of " + " ".join(IMAGE_EXTENSIONS) + ")"))
    files.sort()
    ignored.sort(key=lambda s: s.source_path)
    if not files:
        raise UserError(f"source {name!r} holds no images: no {'/'.join(IMAGE_EXTENSIONS)} files under {folder}.")
    return Source(name, folder, files, ignored)


def _glob_source(pattern: str) -> Source:
    expanded = os.path.expanduser(pattern)
    matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p) or os.path.islink(p))
    prefix = re.split(r"[*?\[]", expanded, maxsplit=1)[0]
    root = Path(prefix if prefix.endswith(os.sep) else os.path.dirname(prefix) or ".")
    if not matches:
        raise UserError(f"source {pattern!r} holds no images: the glob matches no file (searched from {root}).")
    files = sorted(Path(os.path.relpath(p, root)).as_posix() for p in matches)
    return Source(pattern, root, files)
