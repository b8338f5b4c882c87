"""`degrade curate --report DIR`: what a threshold does, before building with it.

For each numeric score of the whole-image rows: `hist_SCORE.png`, the histogram with every threshold that the
`--select` expression sets on that score drawn as a vertical line (from clauses `SCORE OP NUMBER`), and
`sheet_SCORE.png`, a contact sheet with the lowest-scored images on the top row and the highest on the bottom
row, each captioned with its value. `report.md` lists the figures and how many images each clause keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from srdistill.datasets.images import read_rgb
from srdistill.datasets.sources import resolve_source
from srdistill.degrade.curate.run import FULL, item_bytes
from srdistill.degrade.curate.expression import Column, Compare, Constant, clauses, evaluate, parse
from srdistill.degrade.curate.select import read_scores
from srdistill.core.errors import UserError

NOT_SCORES = {"width", "height", "top", "left", "bytes"}
THUMB = 128


def score_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if frame[c].dtype.kind == "f" and c not in NOT_SCORES]


def thresholds(expr: str | None) -> dict[str, list[float]]:
    """{score: [numbers]} for the clauses of `expr` that compare one score with one number (either side)."""
    found: dict[str, list[float]] = {}
    for clause in clauses(expr) if expr else []:
        node = parse(clause)
        if not isinstance(node, Compare) or len(node.ops) != 1:
            continue
        names = [s.name for s in node.operands if isinstance(s, Column)]
        numbers = [s.value for s in node.operands if isinstance(s, Constant) and not isinstance(s.value, str)]
        if len(names) == 1 and len(numbers) == 1:
            found.setdefault(names[0], []).append(float(numbers[0]))
    return found


def _histogram(values: pd.Series, name: str, lines: list[float], path: Path) -> None:
    fig = Figure(figsize=(5, 3.2), dpi=100)
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    ax.hist(finite, bins=min(50, max(5, len(finite))), color="#4c72b0")
    for x in lines:
        ax.axvline(x, color="#c44e52", linestyle="--", label=f"threshold {x:g}")
    if lines:
        ax.legend(fontsize=8)
    ax.set_xlabel(name)
    ax.set_ylabel("images")
    ax.set_title(f"{name} ({len(finite)} images)")
    fig.tight_layout()
    fig.savefig(path, format="png")


def _thumb(img: np.ndarray) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = THUMB / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    canvas = np.full((THUMB, THUMB, 3), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas


def _sheet(rows: list[tuple[str, float, np.ndarray]], low: int, name: str, path: Path) -> None:
    """Top row: the `low` lowest; bottom row: the rest (the highest)."""
    columns = max(low, len(rows) - low, 1)
    fig = Figure(figsize=(1.6 * columns, 3.8), dpi=100)
    for n, (label, value, img) in enumerate(rows):
        ax = fig.add_subplot(2, columns, (n + 1) if n < low else columns + 1 + (n - low))
        ax.imshow(img)
        ax.set_title(f"{label[:18]}\n{value:.3g}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{name}: lowest (top), highest (bottom)", fontsize=9)
    fig.savefig(path, format="png")


def write_report(scores: str, out: str, *, select: str | None = None, n: int = 6) -> list[Path]:
    """Write the histograms, contact sheets and report.md of `scores` into `out`; returns the files written."""
    frame = read_scores(scores)
    full = frame[(frame["tile"] == FULL) & (frame["error"] == "")].reset_index(drop=True)
    if full.empty:
        raise UserError(f"{scores} holds no readable image to report on.")
    kept = {c: int(evaluate(full, c).sum()) for c in clauses(select)} if select else {}
    roots = sorted(set(full["source_root"]))
    items = {i.key: i for root in roots for i in resolve_source(root).items()}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    lines = thresholds(select)
    written, md = [], [f"# Curation report for {scores}", "", f"{len(full)} readable images."]
    if kept:
        md += ["", f"`--select {select}` keeps:", ""] + [f"- `{c}`: {k} of {len(full)}" for c, k in kept.items()]
    for name in score_columns(full):
        if not np.isfinite(full[name]).any():  # e.g. jpeg_quality when no source is a JPEG
            md += ["", f"## {name}", "", "no image has a value."]
            continue
        hist = folder / f"hist_{name}.png"
        _histogram(full[name], name, lines.get(name, []), hist)
        ordered = full[np.isfinite(full[name])].sort_values([name, "path"])
        low = ordered.head(min(n, len(ordered) // 2 or len(ordered)))
        high = ordered.drop(low.index).tail(n)
        rows = [(r.path, float(getattr(r, name)), _thumb(read_rgb(item_bytes(items[r.key]))))
                for part in (low, high) for r in part.itertuples() if r.key in items]
        written.append(hist)
        md += ["", f"## {name}", "", f"![{name} histogram]({hist.name})"]
        if rows:
            sheet = folder / f"sheet_{name}.png"
            _sheet(rows, len(low), name, sheet)
            written.append(sheet)
            md += ["", f"![{name} lowest and highest]({sheet.name})"]
    report = folder / "report.md"
    report.write_text("\n".join(md) + "\n")
    return [*written, report]

