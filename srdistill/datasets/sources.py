"""Where training images come from: named data sets as their authors publish them, any folder or glob, the sample.

Named data sets live under a data root given by `--data-root` or the SRDISTILL_DATA environment variable.
Each entry of `SOURCES` lists the layouts a set is found in below that root (the release as downloaded and
the common re-packings), tried in order, with the release's image count and where it is published.
A folder, glob or layout may hold image files and parquet files with an image column (Hugging Face's
layout); every image file is one item and every parquet row is one. Items are listed in sorted order with
a stable key derived from the relative path (and row). A layout with an index (Hugging Face's imagefolder
`metadata.jsonl`) lists its items in the release's own order, which is the order a set's `first` N counts in.
Several named sets joined by `+` (``LSDIR+Aesthetic-4K-60k``) are one source: their union, each item named by
its path below the data root, so keys stay unique across the sets.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from srdistill.datasets.images import BadImage
from srdistill.datasets.parquet import PARQUET_EXTENSIONS, ParquetListing, list_parquet
from srdistill.core.errors import UserError

DATA_ROOT_ENV = "SRDISTILL_DATA"
CACHE_ENV = "SRDISTILL_CACHE"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

log = logging.getLogger(__name__)

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
    """One way a named set sits below the data root: a folder, the files inside it and what that tree is."""

    subdir: str
    pattern: str  # glob below subdir
    describe: str
    folder: str | None = None  # regex that the first folder below subdir must match (LSDIR's 7-digit folders)
    index: str | None = None   # a JSON-lines file below subdir naming the items (`file_name`) in the release's order


@dataclass(frozen=True)
class NamedSource:
    """A named training set: its layouts (tried in order), image count, where it is published, a layout line."""

    name: str
    layouts: tuple[SourceLayout, ...]
    images: int | None  # images in the full release (after `first`); None where the release's count is not known
    published: str
    about: str
    first: int | None = None  # keep only the first N items, in the index's order, else sorted order (e.g. FFHQ-10k)

    @property
    def layout(self) -> str:
        return f"{self.about}; found as " + ", or ".join(lay.describe for lay in self.layouts)


_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_FFHQ = "https://github.com/NVlabs/ffhq-dataset"
_SEVEN_DIGITS = r"\d{7}"
_AESTHETIC_4K = ("https://huggingface.co/datasets/zhang0jhon/Aesthetic-4K (e.g. `hf download zhang0jhon/Aesthetic-4K "
                 "--repo-type dataset --include 'train/*' --local-dir DATA_ROOT/Aesthetic-4K`)")
_AESTHETIC_TRAIN = SourceLayout("Aesthetic-4K/train", "*", "Aesthetic-4K/train/metadata.jsonl + the images its "
                                "file_name entries name (the Hugging Face release's train split)", index="metadata.jsonl")

SOURCES: dict[str, NamedSource] = {
    s.name: s
    for s in (
        NamedSource(
            "LSDIR",
            (
                SourceLayout("LSDIR/HR/train", "*/*.png", "LSDIR/HR/train/0001000/0000001.png ... (<7-digit>/*.png: the "
                             "release, as its train.json names the files)", _SEVEN_DIGITS),
                SourceLayout("LSDIR", "*/*.png", "LSDIR/<7-digit>/*.png (the release's archives unpacked in place)",
                             _SEVEN_DIGITS),
                SourceLayout("LSDIR/data", "train-*.parquet", "LSDIR/data/train-NNNNN-of-00195.parquet (the Hugging Face "
                             "copy, read directly)"),
            ),
            84_991, "https://ofsoundof.github.io/lsdir-data/ (and as parquet on Hugging Face)",
            "the LSDIR training HR release, 84,991 PNGs in folders of 1,000",
        ),
        NamedSource(
            "DIV2K-train",
            (SourceLayout("DIV2K/DIV2K_train_HR", "*.png", "DIV2K/DIV2K_train_HR/0001.png ... 0800.png"),
             SourceLayout("DIV2K_train_HR", "*.png", "DIV2K_train_HR/*.png (the zip unpacked at the data root)")),
            800, _DIV2K, "the 800 DIV2K training HR images",
        ),
        NamedSource(
            "DIV2K-valid",
            (SourceLayout("DIV2K/DIV2K_valid_HR", "*.png", "DIV2K/DIV2K_valid_HR/0801.png ... 0900.png"),
             SourceLayout("DIV2K_valid_HR", "*.png", "DIV2K_valid_HR/*.png (the zip unpacked at the data root)")),
            100, _DIV2K, "the 100 DIV2K validation HR images",
        ),
        NamedSource(
            "Flickr2K",
            (SourceLayout("Flickr2K/Flickr2K_HR", "*.png", "Flickr2K/Flickr2K_HR/000001.png ... 002650.png"),),
            2_650, "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", "the 2,650 Flickr2K HR images",
        ),
        NamedSource(
            "FFHQ",
            (SourceLayout("FFHQ/images1024x1024", "*/*.png", "FFHQ/images1024x1024/00000/00000.png ... 69000/69999.png"),),
            70_000, _FFHQ, "the 70,000 aligned 1024x1024 FFHQ faces",
        ),
        NamedSource(
            "FFHQ-10k",
            (SourceLayout("FFHQ/images1024x1024", "*/*.png", "FFHQ/images1024x1024/00000/00000.png ... 09000/09999.png"),),
            10_000, _FFHQ, "the first 10,000 FFHQ faces, as D3SR uses", first=10_000,
        ),
        NamedSource("Aesthetic-4K", (_AESTHETIC_TRAIN,), None, _AESTHETIC_4K,
                    "the Aesthetic-4K train split (4K photos with GPT-4o captions, Diffusion-4K, CVPR 2025)"),
        NamedSource("Aesthetic-4K-60k", (_AESTHETIC_TRAIN,), 60_000, _AESTHETIC_4K,
                    "the first 60,000 Aesthetic-4K train images in metadata.jsonl's line order, as StrSR uses",
                    first=60_000),
    )
}


@dataclass(frozen=True)
class SourceItem:
    """One source image. `key` is stable and dot-free; `rel` names it relative to the source root (a parquet
    row as `FILE#ROW`); `path` is the file that holds it; `row`/`column` locate it inside a parquet file."""

    key: str
    source: str
    path: str
    rel: str = ""
    row: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class Skip:
    """A source file that yields no sample, with the reason recorded in the manifest."""

    source_path: str
    reason: str


@dataclass
class Source:
    """A resolved source: a name, a root folder and the image (and parquet) files below it."""

    name: str
    root: Path
    files: list[str]  # relative POSIX paths, sorted
    ignored: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said once at resolve time and kept in the manifest
    tables: dict[str, ParquetListing] = field(default_factory=dict)  # the parquet files among `files`

    def items(self) -> list[SourceItem]:
        entries = [(rel, row) for rel in self.files
                   for row in (range(self.tables[rel].rows) if rel in self.tables else (None,))]
        keys = _unique([_base_key(rel, row) for rel, row in entries], [_item_id(rel, row) for rel, row in entries])
        return [SourceItem(key, self.name, str(self.root / rel), _item_id(rel, row), row,
                           self.tables[rel].column if rel in self.tables else None)
                for key, (rel, row) in zip(keys, entries)]

    def skipped(self) -> list[Skip]:
        """Files under the root that are not listed as items (wrong extension, unreadable folders, repeated folders)."""
        return list(self.ignored)


def source_names() -> list[str]:
    return [*SOURCES, "sample"]


def is_named(spec: str) -> bool:
    """A named set, "sample", or named sets joined by `+` (found under the data root rather than at a path)."""
    names = {name.lower() for name in SOURCES}
    return spec.lower() == "sample" or all(part.lower() in names for part in spec.split("+"))


def describe_sources() -> str:
    """One line per named source, for --help texts."""
    lines = [f"{name}: {s.layout}" for name, s in SOURCES.items()]
    lines.append("sample: " + ", ".join(SAMPLE_PHOTOS) + " (scikit-image's bundled photos, always available)")
    lines.append("A+B: named sets joined by + are one source, their union (e.g. LSDIR+Aesthetic-4K-60k, StrSR's data)")
    return "\n".join(lines)


def resolve_source(spec: str, data_root: str | os.PathLike | None = None) -> Source:
    """A named data set, "sample", a folder or a glob -> Source; UserError with where it looked when nothing is there."""
    by_lower = {name.lower(): named for name, named in SOURCES.items()}
    if spec.lower() in by_lower:
        source = _named_source(by_lower[spec.lower()], data_root)
    elif spec.lower() == "sample":
        source = _folder_source("sample", sample_dir())
    elif is_named(spec):
        source = _union_source([by_lower[part.lower()] for part in spec.split("+")], data_root)
    elif any(c in spec for c in "*?["):
        source = _glob_source(spec)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            source = _folder_source(path.resolve().name or spec, path)
        elif path.is_file():
            source = _make_source(spec, path.parent, [path.name], [])
        else:
            raise UserError(f"source {spec!r} is not a known data set ({', '.join(source_names())}), an existing folder "
                            "or a glob pattern.")
    for note in source.notes:
        log.warning(note)
    return source


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
    return _unique([_sanitize(rel) for rel in rels], rels)


def _unique(base: list[str], ids: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for k in base:
        counts[k] = counts.get(k, 0) + 1
    return [k if counts[k] == 1 else f"{k}-{hashlib.sha1(i.encode()).hexdigest()[:8]}" for k, i in zip(base, ids)]


def _item_id(rel: str, row: int | None) -> str:
    return rel if row is None else f"{rel}#{row}"


def _base_key(rel: str, row: int | None) -> str:
    # zero-padded rows keep a file's rows in order when jobs are sorted by key
    return _sanitize(rel) if row is None else f"{_sanitize(rel)}_{row:06d}"


def _sanitize(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "_"


def _is_source_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS + PARQUET_EXTENSIONS)


def _make_source(name: str, root: Path, rels: list[str], ignored: list[Skip]) -> Source:
    """Source over sorted `rels`; a parquet file with no usable image column is skipped with its reason."""
    files, tables = [], {}
    for rel in sorted(rels):
        if rel.lower().endswith(PARQUET_EXTENSIONS):
            try:
                tables[rel] = list_parquet(root / rel)
            except BadImage as exc:
                ignored.append(Skip(rel, str(exc)))
                continue
        files.append(rel)
    return Source(name, root, files, sorted(ignored, key=lambda s: s.source_path), tables=tables)


def _data_root(data_root: str | os.PathLike | None, named: NamedSource) -> Path:
    root = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise UserError(
            f"source {named.name} needs a data root: pass --data-root DIR or set {DATA_ROOT_ENV} to the folder that holds "
            f"it in one of its layouts ({'; '.join(lay.describe for lay in named.layouts)}); {named.name} is published at "
            f"{named.published}."
        )
    return Path(root).expanduser()


def _layout_files(folder: Path, layout: SourceLayout) -> list[str]:
    rels = sorted(p.relative_to(folder).as_posix() for p in folder.glob(layout.pattern)
                  if p.is_file() and unusable_file(p, p.relative_to(folder).as_posix()) is None)
    if layout.folder:
        rels = [r for r in rels if re.fullmatch(layout.folder, r.split("/", 1)[0])]
    return rels


def _named_source(named: NamedSource, data_root: str | os.PathLike | None) -> Source:
    root = _data_root(data_root, named)
    tried = []
    for layout in named.layouts:
        folder = root / layout.subdir
        if not folder.is_dir():
            tried.append(f"{layout.describe}: no folder {folder}")
            continue
        if layout.index is not None:
            if not (folder / layout.index).is_file():
                tried.append(f"{layout.describe}: {folder} holds no {layout.index}")
                continue
            source = _indexed_source(named, folder, layout.index)
        else:
            files = _layout_files(folder, layout)
            if not files:
                tried.append(f"{layout.describe}: {folder} holds no {layout.pattern} files")
                continue
            source = _make_source(named.name, folder, files, [])
            if named.first is not None:
                _keep_first(source, named.first)
        found = len(source.items())
        if named.images is not None and found != named.images:
            source.notes.append(f"{named.name}: {named.images:,} images expected, found {found:,} in {folder} "
                                f"(a partial or different copy? the release is {named.about}).")
        if not source.files:
            raise UserError(f"source {named.name} in {folder} holds no readable images: "
                            f"{'; '.join(s.source_path + ': ' + s.reason for s in source.ignored[:3])}.")
        return source
    raise UserError(f"source {named.name} not found under {root}: tried {'; '.join(tried)}. {named.name} is "
                    f"{named.about}, published at {named.published}; unpack it below {root} in one of these layouts.")


def _keep_first(source: Source, n: int) -> None:
    """Keep the first `n` items in sorted order: whole files, and the first rows of the parquet file where n ends."""
    kept, left = [], n
    for rel in source.files:
        if left <= 0:
            break
        rows = source.tables[rel].rows if rel in source.tables else 1
        if rel in source.tables and rows > left:
            source.tables[rel] = dataclasses.replace(source.tables[rel], rows=left)
        kept.append(rel)
        left -= min(rows, left)
    source.tables = {rel: t for rel, t in source.tables.items() if rel in kept}
    source.files = kept


def read_index(path: Path) -> list[str]:
    """The `file_name` of every line of a Hugging Face imagefolder `metadata.jsonl`, in line order; UserError naming
    the line when one is not a JSON object with a relative file_name inside the folder."""
    names = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc}); it is the list that fixes the release's image order.") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path} line {number} is not a JSON object with a relative file_name inside its folder "
                            f"(the release's metadata.jsonl has one per image); re-download the file.")
        names.append(Path(name).as_posix())
    return names


def _indexed_source(named: NamedSource, folder: Path, index: str) -> Source:
    """The items `index` names, in its order; `first` counts listed entries, so a missing file never moves the cut."""
    listed = read_index(folder / index)
    chosen = listed[: named.first] if named.first is not None else listed
    present, ignored = [], []
    for rel in dict.fromkeys(chosen):
        if not _is_source_file(rel):
            ignored.append(Skip(rel, f"listed in {index} but not an image file name"))
        elif not (folder / rel).is_file():
            ignored.append(Skip(rel, f"listed in {index} but not found in {folder}"))
        else:
            present.append(rel)
    source = _make_source(named.name, folder, present, ignored)
    source.notes.append(f"{named.name}: {'the first ' if named.first is not None else ''}{len(chosen):,} of the "
                        f"{len(listed):,} entries of {folder / index}, in its line order"
                        + (f"; {len(ignored):,} of them not usable (listed in manifest.json)" if ignored else ""))
    return source


def _union_source(named: list[NamedSource], data_root: str | os.PathLike | None) -> Source:
    """Named sets as one source rooted at the data root: item paths are relative to it, so keys stay unique."""
    if len({n.name for n in named}) != len(named):
        raise UserError(f"source {'+'.join(n.name for n in named)} names the same data set twice; name each once.")
    parts = [_named_source(n, data_root) for n in named]
    root = Path(os.path.commonpath([str(p.root) for p in parts]))
    files, tables, ignored, notes = [], {}, [], []
    for part in parts:
        prefix = part.root.relative_to(root).as_posix()
        files += [f"{prefix}/{rel}" for rel in part.files]
        tables |= {f"{prefix}/{rel}": t for rel, t in part.tables.items()}
        ignored += [Skip(f"{prefix}/{s.source_path}", s.reason) for s in part.ignored]
        notes += part.notes
    if len(set(files)) != len(files):
        raise UserError(f"sources {' and '.join(n.name for n in named)} hold the same files under {root}; "
                        f"join sets that do not overlap.")
    return Source("+".join(n.name for n in named), root, sorted(files), sorted(ignored, key=lambda s: s.source_path),
                  notes, tables)


def shown_name(rel: str) -> str:
    """`rel` as text that can be printed and stored: bytes that are not UTF-8 shown as \\xNN escapes."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unusable_file(path: Path, rel: str) -> str | None:
    """Why a listed name cannot be a source file, else None: a name that is not UTF-8 (shards, manifests and
    scores store names as UTF-8 text), a broken link, or anything but a regular file (a FIFO would block the read
    forever, a device would never end)."""
    import stat

    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8 (rename the file)"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return (f"a broken link (its target {shown_name(os.readlink(path))} does not exist)" if os.path.islink(path)
                else "vanished")
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    return next((f"{kind}, not a regular file" for test, kind in kinds.items() if test(mode)), "not a regular file")


def _folder_source(name: str, folder: Path) -> Source:
    files: list[str] = []
    ignored: list[Skip] = []

    def on_error(exc: OSError) -> None:
        rel = Path(exc.filename).relative_to(folder).as_posix() if exc.filename else "."
        ignored.append(Skip(rel, f"unreadable folder ({exc.strerror or type(exc).__name__})"))

    # Each real folder is walked once. A link to a folder inside the tree is not followed (the folder is listed
    # under its own path), so `d/up -> ..` cannot list the tree again or forever; a link leading out of the tree
    # is followed once per real folder.
    real_root = os.path.realpath(folder)
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=True):
        dirnames.sort()
        for d in list(dirnames):
            full = Path(dirpath) / d
            rel = full.relative_to(folder).as_posix()
            try:
                st = os.stat(full)
            except OSError as exc:
                ignored.append(Skip(rel, f"unreadable folder ({exc.strerror or type(exc).__name__})"))
                dirnames.remove(d)
                continue
            real = os.path.realpath(full)
            inside = os.path.commonpath([real, real_root]) == real_root
            if (st.st_dev, st.st_ino) in seen or (full.is_symlink() and inside):
                where = Path(os.path.relpath(real, real_root)).as_posix() if inside else real
                ignored.append(Skip(rel, f"a link to a folder already listed ({where}); its files are taken once"))
                dirnames.remove(d)
            else:
                seen.add((st.st_dev, st.st_ino))
        for fname in filenames:
            rel = (Path(dirpath) / fname).relative_to(folder).as_posix()
            problem = unusable_file(Path(dirpath) / fname, rel)
            if problem:
                ignored.append(Skip(shown_name(rel), problem))
            elif _is_source_file(fname):
                files.append(rel)
            else:
                ignored.append(Skip(rel, "not an image file name (extension not one of "
                                    + " ".join(IMAGE_EXTENSIONS + PARQUET_EXTENSIONS) + ")"))
    source = _make_source(name, folder, files, ignored)
    if not source.files:
        tables = [s for s in source.ignored if s.source_path.lower().endswith(PARQUET_EXTENSIONS)]
        why = f" ({tables[0].source_path} was skipped: {tables[0].reason})" if tables else ""
        raise UserError(f"source {name!r} holds no images: no {'/'.join(IMAGE_EXTENSIONS + PARQUET_EXTENSIONS)} files "
                        f"with images under {folder}{why}.")
    return source


def _glob_source(pattern: str) -> Source:
    expanded = os.path.expanduser(pattern)
    matches = sorted(p for p in glob.glob(expanded, recursive=True) if not os.path.isdir(p))
    prefix = re.split(r"[*?\[]", expanded, maxsplit=1)[0]
    root = Path(prefix if prefix.endswith(os.sep) else os.path.dirname(prefix) or ".")
    if not matches:
        raise UserError(f"source {pattern!r} holds no images: the glob matches no file (searched from {root}).")

    def rel(p: str) -> str:
        return Path(os.path.relpath(p, root)).as_posix()

    # `**` follows links to folders, so a link back up the tree matches the same files again under longer paths:
    # each real file is taken once, under its shortest path.
    first: dict[str, str] = {}
    ignored = []
    for p in sorted(matches, key=lambda p: (p.count(os.sep), p)):
        real = os.path.realpath(p)
        if real in first:
            ignored.append(Skip(rel(p), f"the same file as {rel(first[real])} (reached through a link); taken once"))
        else:
            first[real] = p
    usable = []
    for p in first.values():
        problem = unusable_file(Path(p), rel(p))
        if problem:
            ignored.append(Skip(shown_name(rel(p)), problem))
        else:
            usable.append(rel(p))
    source = _make_source(pattern, root, usable, ignored)
    if not source.files:
        raise UserError(f"source {pattern!r} holds no images: the files it matches are parquet files without images "
                        f"({source.ignored[0].reason}).")
    return source
