"""`degrade curate`: score every HR image of a source (and its tiles) into one parquet table, on Ray, resumably.

Rows are keyed by (key, tile): `tile` is "full" for the whole image and "rRcC" for the non-overlapping N x N tile
in row R, column C with `--tile N` (images smaller than N get only their "full" row). Work units are chunks of
the source items still lacking a row; each finished unit's rows become one part file of a PartsStore beside the
output (`NAME.parts/`), so a killed run resumes, and merging sorts by key, so 1 or N workers give the same table.
A row is reused when its file's stamp (size and modification time) and the run's config (tile size, metrics,
score version) are unchanged. The weight-free scores are defined in curate_scores.py; `--metrics` adds pyiqa
no-reference metrics, one column each, built through evaluate's weight handling.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from srdistill.core.cluster import Unit, run_units
from srdistill.datasets.images import DEFAULT_MAX_PIXELS, BadImage, read_rgb
from srdistill.datasets.sources import SourceItem, resolve_source
from srdistill.degrade.curate.scores import jpeg_quality, weight_free_scores
from srdistill.degrade.build.plan import file_stamp
from srdistill.core.errors import UserError
from srdistill.core.lock import output_lock
from srdistill.core.parts import PartsStore, TableSchema

SCORES_VERSION = 1
UNIT_ITEMS = 8  # source images per work unit
FULL = "full"

BASE_COLUMNS: dict[str, str] = {
    "key": "object", "tile": "object", "path": "object", "source_root": "object", "stamp": "object",
    "config": "object", "sha256": "object", "width": "int64", "height": "int64", "top": "int64", "left": "int64",
    "bytes": "int64", "error": "object", "laplacian_var": "float64", "gradient_entropy": "float64",
    "complexity": "float64", "noise_sigma": "float64", "blockiness": "float64", "jpeg_quality": "float64",
    "phash": "object",
}


@dataclass(frozen=True)
class CurateSummary:
    out: str
    images: int
    rows: int
    scored: int
    reused: int
    failed: int

    def text(self) -> str:
        return (f"{self.rows} rows for {self.images} images in {self.out}; {self.scored} images scored, "
                f"{self.reused} reused" + (f"; {self.failed} could not be read (see the error column)" if self.failed else ""))


def schema(metrics: list[str], embed: str | None = None) -> TableSchema:
    extra = {"embedding": "object"} if embed else {}
    return TableSchema({**BASE_COLUMNS, **{m: "float64" for m in metrics}, **extra}, key=("key", "tile"),
                       fingerprint=("stamp", "config"))


def run_config(tile: int, metrics: list[str], embed: str | None = None, embed_pretrained: bool = True) -> str:
    weights = "" if embed_pretrained else ";random-weights"
    return f"v{SCORES_VERSION};tile={tile};metrics={','.join(metrics)}" + (f";embed={embed}{weights}" if embed else "")


def split_out(out: str) -> tuple[str, str]:
    """(folder, table name) of an output `DIR/NAME.parquet`."""
    folder, name = os.path.split(os.path.abspath(os.path.expanduser(out)))
    if not name.endswith(".parquet"):
        raise UserError(f"--out must name a .parquet file, got {out!r}.")
    return folder, name[: -len(".parquet")]


def tiles(h: int, w: int, tile: int) -> list[tuple[str, int, int, int, int]]:
    """(name, top, left, height, width): the whole image, then each full N x N tile of the grid."""
    boxes = [(FULL, 0, 0, h, w)]
    if tile:
        boxes += [(f"r{r}c{c}", r * tile, c * tile, tile, tile) for r in range(h // tile) for c in range(w // tile)]
    return boxes


def item_bytes(item: SourceItem) -> bytes:
    if item.row is None:
        with open(item.path, "rb") as fh:
            return fh.read()
    from srdistill.datasets.parquet import read_parquet_image

    return read_parquet_image(item.path, item.row, item.column or "image")


# The driver's weight settings, handed to every task so a worker finds (or refuses to fetch) the same weights.
WEIGHT_ENV = ("SRDISTILL_WEIGHTS", "TORCH_HOME", "HF_HOME", "SRDISTILL_OFFLINE", "HF_HUB_OFFLINE", "SRDISTILL_MIRROR",
              "HF_ENDPOINT")


def weight_env() -> dict[str, str]:
    return {k: os.environ[k] for k in WEIGHT_ENV if k in os.environ}


def _build_scorers(metrics: list[str], env: dict[str, str] | None = None) -> dict:
    from srdistill.core.iqa import weights
    from srdistill.core.iqa.metrics import MetricUnavailable, Scorer

    if not metrics:
        return {}
    if env is not None:
        os.environ.update(env)
    weights.configure_weights_dir()
    scorers = {}
    for name in metrics:
        try:
            scorers[name] = Scorer(name)
        except MetricUnavailable as exc:
            raise UserError(f"metric {name} cannot be used: {exc}.") from exc
    return scorers


def score_item(item: SourceItem, root: str, stamp: str, config: str, tile: int, scorers: dict,
               max_pixels: int = DEFAULT_MAX_PIXELS, embedder=None) -> list[dict]:
    """The rows of one source image: its whole-image row (with its embedding), then its tiles' rows."""
    base = {"key": item.key, "path": item.rel, "source_root": root, "stamp": stamp, "config": config}
    try:
        data = item_bytes(item)
        img = read_rgb(data, max_pixels=max_pixels)
    except (OSError, BadImage) as exc:
        return [{**base, "tile": FULL, "sha256": "", "width": 0, "height": 0, "top": 0, "left": 0, "bytes": 0,
                 "error": str(exc)[:200], **{m: float("nan") for m in scorers}}]
    extra = {"embedding": None} if embedder is not None else {}
    digest, quality = hashlib.sha256(data).hexdigest(), jpeg_quality(data)
    rows = []
    for name, top, left, th, tw in tiles(img.shape[0], img.shape[1], tile):
        crop = np.ascontiguousarray(img[top : top + th, left : left + tw])
        rows.append({**base, "tile": name, "sha256": digest, "width": tw, "height": th, "top": top, "left": left,
                     "bytes": len(data), "error": "", **weight_free_scores(crop), "jpeg_quality": quality,
                     **{m: s.score(crop) for m, s in scorers.items()}, **extra})
    if embedder is not None:
        rows[0]["embedding"] = embedder.embed(img)
    return rows


def _embedder(embed: str | None, pretrained: bool):
    from srdistill.degrade.curate.embed import Embedder

    return Embedder(embed, pretrained) if embed else None


def _score_unit(root: str, config: str, tile: int, metrics: list[str], env: dict[str, str], max_pixels: int,
                embed: tuple[str | None, bool], items: list[tuple[SourceItem, str]], *, report) -> list[dict]:
    """Ray task: the rows of a chunk of items (metrics and the embedding model built once per task)."""
    scorers = _build_scorers(metrics, env)
    embedder = _embedder(*embed)
    rows = []
    for i, (item, stamp) in enumerate(items):
        rows.extend(score_item(item, root, stamp, config, tile, scorers, max_pixels, embedder))
        report(i + 1)
    return rows


def curate(src: str, out: str, *, tile: int = 0, metrics: list[str] | None = None, workers: int | None = None,
           address: str | None = None, data_root: str | None = None, limit: int | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True, embed: str | None = None,
           embed_pretrained: bool = True) -> CurateSummary:
    """Score every item of `src` into `out` (a .parquet path), reusing rows of an earlier run; see the module docstring.

    `embed` ("timm:MODEL") adds an `embedding` column to whole-image rows (curate_embed.py); `embed_pretrained=False`
    builds the model with seeded random weights."""
    if tile < 0:
        raise UserError(f"--tile must be 0 (whole images only) or a positive size, got {tile}.")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    metrics = list(metrics or [])
    if metrics:
        from srdistill.core.iqa.metrics import metric_info

        for name in metrics:
            if name in BASE_COLUMNS:
                raise UserError(f"metric {name!r} clashes with a score column of the same name; leave it out.")
            if metric_info(name).mode != "NR":
                raise UserError(f"metric {name!r} needs a reference image; curation takes no-reference metrics only.")
        _build_scorers(metrics)  # a missing weight stops here, before anything is written
    _embedder(embed, embed_pretrained)  # so does a missing embedding model
    folder, name = split_out(out)
    source = resolve_source(src, data_root)
    items = source.items()[:limit] if limit else source.items()
    # Absolute, so that a build or verify run from another folder still recognises the source.
    root, config = os.path.abspath(source.root), run_config(tile, metrics, embed, embed_pretrained)
    # One writer per scores file: its lock sits beside it (two runs merging one parts folder would lose rows).
    with output_lock(out, lock=os.path.join(folder, f".{name}.parquet.lock")):
        store = PartsStore(folder, schema(metrics, embed), name=name)
        stamps = {i.key: file_stamp(i.path, "stat") for i in items}
        todo = [(i, stamps[i.key]) for i in items if not store.has((i.key, FULL), (stamps[i.key], config))]
        units = [Unit(f"items-{n:06d}", (todo[n : n + UNIT_ITEMS],), len(todo[n : n + UNIT_ITEMS]))
                 for n in range(0, len(todo), UNIT_ITEMS)]
        if units:
            run_units(_score_unit, units, shared=(root, config, tile, metrics, weight_env(), max_pixels, (embed, embed_pretrained)), workers=workers,
                      address=address, progress=progress, desc="curate", unit="img",
                      on_done=lambda u, rows: store.add(rows))
        # Rows of images no longer listed, of another config or of an older version of a file are left out.
        current = store.frame["key"].map(stamps)
        store.frame = store.frame[(store.frame["stamp"] == current) & (store.frame["config"] == config)]
        frame = store.merge()
        full = frame[frame["tile"] == FULL]
        return CurateSummary(out=out, images=len(items), rows=len(frame), scored=len(todo), reused=len(items) - len(todo),
                             failed=int((full["error"] != "").sum()))
