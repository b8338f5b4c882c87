"""Using curation scores in `degrade build`: which source images are kept, which tile of each, and why others went.

Order of the rules (each image gets the first reason that applies):
1. `unreadable`: the scores row records that the image could not be read.
2. `select: CLAUSE`: the `--select` expression (expression.py's grammar over the whole-image rows) rejects it;
   when the expression is a chain of `and`s, CLAUSE is the first one the image fails, else the whole expression.
3. `duplicate`: with `--dedup phash:D`, among the images that passed 1-2, images whose perceptual hashes are
   within Hamming distance D are linked (with `--dedup embed:T`, images whose embeddings have a cosine
   similarity of at least T; see curate_embed.py) (single linkage: a chain of near pairs forms one group) and each group
   keeps one image: the largest (width x height), then the highest `complexity`, then the first path in
   sorted order. The others are dropped, recorded with the path they duplicate.
With `--best-tile`, each kept image is cropped to its tile (`degrade curate --tile N`) of highest `complexity`
before degrading; an image without tiles is used whole.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from srdistill.datasets.images import DEFAULT_MAX_PIXELS
from srdistill.datasets.sources import Source, SourceItem
from srdistill.degrade.curate.expression import clauses, evaluate
from srdistill.degrade.curate.run import FULL
from srdistill.degrade.build.plan import file_stamp
from srdistill.degrade.build.providers import CropPolicy, SourceImage
from srdistill.core.errors import UserError
from srdistill.degrade.build.identity import CurationMismatch


def parse_dedup(spec: str | None) -> tuple[str, float] | None:
    """`phash:D` -> ("phash", D) (a Hamming distance 0..64), `embed:T` -> ("embed", T) (a cosine similarity in
    [-1, 1]); None -> no de-duplication."""
    if spec is None:
        return None
    kind, _, value = spec.partition(":")
    if kind == "phash" and value.isdigit() and int(value) <= 64:
        return kind, int(value)
    try:
        if kind == "embed" and -1.0 <= float(value) <= 1.0:
            return kind, float(value)
    except ValueError:
        pass
    raise UserError(f"--dedup must be phash:D (D a Hamming distance from 0 to 64) or embed:T (T a cosine similarity "
                    f"from -1 to 1, with scores made by `degrade curate --embed`), got {spec!r}.")


def dedup_groups(full: pd.DataFrame, rule: tuple[str, float]) -> dict[str, str]:
    """{dropped key: kept key} for the near-duplicate groups among the rows of `full` (see the module docstring)."""
    kind, limit = rule
    if kind == "embed" and "embedding" not in full.columns:
        raise UserError("--dedup embed:T needs scores with embeddings; run `degrade curate --embed timm:MODEL`.")
    keys = list(full["key"])
    if kind == "phash":
        hashes = np.array([int(h, 16) for h in full["phash"]], dtype=np.uint64)
    else:
        vectors = np.array([np.asarray(v, np.float64) for v in full["embedding"]]).reshape(len(keys), -1)
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # One vectorised row of the pairwise comparison at a time: O(n^2) work, O(n) memory.
    for i in range(len(keys)):
        if kind == "phash":
            near = np.bitwise_count(hashes[i + 1 :] ^ hashes[i]) <= limit
        else:
            near = vectors[i + 1 :] @ vectors[i] >= limit
        for j in np.nonzero(near)[0]:
            parent[find(i)] = find(i + 1 + int(j))
    order = full.assign(_area=full["width"] * full["height"]).sort_values(
        ["_area", "complexity", "path"], ascending=[False, False, True])
    keeper: dict[int, str] = {}
    dropped: dict[str, str] = {}
    position = {k: n for n, k in enumerate(keys)}
    for key in order["key"]:
        group = find(position[key])
        if group in keeper:
            dropped[key] = keeper[group]
        else:
            keeper[group] = key
    return dropped


@dataclass(frozen=True)
class TileImage(SourceImage):
    """A source image cropped to one box (top, left, height, width) before the crop policy applies."""

    box: tuple[int, int, int, int] = (0, 0, 0, 0)

    def load(self):
        top, left, h, w = self.box
        image = super().load()
        return image[top : top + h, left : left + w].copy()

    def hr(self, image, key: str, seed: int):
        hr, fields = super().hr(image, key, seed)
        return hr, {**fields, "tile": list(self.box)}


@dataclass
class Curation:
    """A scores file and the rules applied to it; `apply` fills `dropped`, `counts` and `boxes`."""

    path: str
    select: str | None = None
    dedup: str | None = None  # phash:D or embed:T
    best_tile: bool = False
    sha256: str = ""
    dropped: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: dict | None) -> Curation | None:
        """The curation a manifest records (None for an uncurated build), to plan the same build again."""
        if not record:
            return None
        return cls(record["file"], select=record["select"], dedup=record["dedup"], best_tile=record["best_tile"])

    def identity(self) -> dict:
        return {"sha256": self.sha256, "select": self.select, "dedup": self.dedup, "best_tile": self.best_tile}

    def record(self) -> dict:
        # Absolute, so that `degrade verify` finds the scores file from any folder.
        return {"file": os.path.abspath(self.path), **self.identity(), "dropped_counts": dict(sorted(self.counts.items())),
                "dropped": self.dropped}

    def apply(self, source: Source, items: list[SourceItem]) -> list[SourceItem]:
        """The items kept; raises UserError for a scores file that does not describe these items."""
        frame = read_scores(self.path)
        self.sha256 = file_sha256(self.path)
        # Compared as resolved paths: the same folder given as `src4` and as /data/src4 is one source.
        roots = set(frame["source_root"])
        if roots and {os.path.realpath(r) for r in roots} != {os.path.realpath(source.root)}:
            raise CurationMismatch(f"{self.path} holds scores of {min(roots)}, not of the source {source.root}; run "
                            "`degrade curate` on this source.")
        full = frame[frame["tile"] == FULL].set_index("key", drop=False)
        missing = [i.rel for i in items if i.key not in full.index]
        if missing:
            raise CurationMismatch(f"{self.path} has no scores for {len(missing)} images of {source.root} ({missing[0]} ...); "
                            "re-run `degrade curate` on this source.")
        changed = [i.rel for i in items if full.at[i.key, "stamp"] != file_stamp(i.path, "stat")]
        if changed:
            raise CurationMismatch(f"{len(changed)} images of {source.root} changed since {self.path} scored them "
                            f"({changed[0]} ...); re-run `degrade curate` to score them again.")
        full = full.loc[[i.key for i in items]]
        reason: dict[str, str] = {k: "unreadable" for k in full.index[full["error"] != ""]}
        if self.select:
            readable = full[full["error"] == ""]
            for clause in clauses(self.select):
                failed = readable.index[~evaluate(readable, clause)]
                for key in failed:
                    reason.setdefault(key, f"select: {clause}")
            # The whole expression decides (e.g. an `or` inside a clause): catch what the clauses missed.
            for key in readable.index[~evaluate(readable, self.select)]:
                reason.setdefault(key, f"select: {self.select}")
        duplicate_of: dict[str, str] = {}
        if self.dedup is not None:
            duplicate_of = dedup_groups(full[~full.index.isin(list(reason))], parse_dedup(self.dedup))
            reason.update({k: "duplicate" for k in duplicate_of})
        for item in items:
            if item.key in reason:
                entry = {"source_path": item.rel, "reason": reason[item.key]}
                if item.key in duplicate_of:
                    entry["duplicate_of"] = full.at[duplicate_of[item.key], "path"]
                self.dropped.append(entry)
                self.counts[reason[item.key]] = self.counts.get(reason[item.key], 0) + 1
        kept = [i for i in items if i.key not in reason]
        if self.best_tile:
            if not (frame["tile"] != FULL).any():
                raise UserError(f"--best-tile needs scores of tiles, but {self.path} holds whole images only; run "
                                "`degrade curate --tile N` to score tiles.")
            tiles = frame[(frame["tile"] != FULL) & frame["key"].isin([i.key for i in kept])]
            best = tiles.sort_values(["complexity", "tile"], ascending=[False, True]).drop_duplicates("key")
            self.boxes = {r.key: (int(r.top), int(r.left), int(r.height), int(r.width)) for r in best.itertuples()}
        return kept

    def provider(self, item: SourceItem, policy: CropPolicy, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
        args = (item.source, item.rel, item.path, policy, max_pixels, item.row, item.column)
        return TileImage(*args, box=self.boxes[item.key]) if item.key in self.boxes else SourceImage(*args)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_scores(path: str) -> pd.DataFrame:
    from srdistill.degrade.curate.run import BASE_COLUMNS

    if not os.path.isfile(path):
        raise UserError(f"no curation scores at {path}; `degrade curate --src SRC --out {path}` writes them.")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as curation scores ({exc}).") from exc
    lacking = [c for c in BASE_COLUMNS if c not in frame.columns]
    if lacking:
        raise UserError(f"{path} is not a `degrade curate` scores file (it lacks {', '.join(lacking[:3])}).")
    return frame
