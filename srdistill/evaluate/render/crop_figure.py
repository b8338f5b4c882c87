"""A paper's zoomed-crop figure: the same box cut from HR, LR (nearest-upsampled) and every method's SR output,
beside an overview of the HR image with the box drawn; as one PNG and as a LaTeX `figure` of subfigures.

`auto_box` picks the box where the methods differ most: the window with the largest sum of per-pixel variance
across the methods' outputs (luma, 0-255). With a single method it is that method's squared error against HR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from srdistill.core.errors import UserError
from srdistill.datasets.images import encode_png

OVERVIEW_HEIGHT = 256
BOX_COLOR = (255, 0, 0)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def cut(self, img: np.ndarray) -> np.ndarray:
        return img[self.y:self.y + self.h, self.x:self.x + self.w]

    def text(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


def parse_box(text: str) -> Box | None:
    """`x,y,w,h` (HR pixels) -> Box; `auto` -> None (chosen by auto_box)."""
    if text.strip().lower() == "auto":
        return None
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"--box {text!r} is not x,y,w,h in HR pixels (four non-negative integers) or 'auto'.")
    box = Box(*(int(p) for p in parts))
    if box.w < 1 or box.h < 1:
        raise UserError(f"--box {text!r} has an empty width or height.")
    return box


def check_box(box: Box, shape: tuple[int, ...], image: str) -> None:
    h, w = shape[:2]
    if box.x + box.w > w or box.y + box.h > h:
        raise UserError(f"--box {box.text()} reaches outside {image}, which is {w}x{h} (width x height) in HR pixels.")


def _luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma, unrounded."""
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def difference_map(hr: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    """Per-pixel variance across the outputs' luma (squared error against HR for a single output)."""
    stack = np.stack([_luma(o) for o in outputs])
    if len(outputs) == 1:
        return (stack[0] - _luma(hr)) ** 2
    return stack.var(axis=0)


def auto_box(hr: np.ndarray, outputs: list[np.ndarray], size: int) -> Box:
    """The size x size window (clipped to the image) with the largest summed difference_map; the first (top, then
    left) on ties, so the choice is deterministic."""
    diff = difference_map(hr, outputs)
    h, w = diff.shape
    bh, bw = min(size, h), min(size, w)
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Box(int(x), int(y), bw, bh)


def upsample_nearest(lr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.resize(lr, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    band = np.full((20, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text[:40], (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], 0)


def overview(hr: np.ndarray, box: Box) -> np.ndarray:
    """The HR image scaled to OVERVIEW_HEIGHT with the box outlined."""
    scale = OVERVIEW_HEIGHT / hr.shape[0]
    img = cv2.resize(hr, (max(1, round(hr.shape[1] * scale)), OVERVIEW_HEIGHT), interpolation=cv2.INTER_AREA)
    p0 = (int(box.x * scale), int(box.y * scale))
    p1 = (int((box.x + box.w) * scale) - 1, int((box.y + box.h) * scale) - 1)
    cv2.rectangle(img, p0, p1, BOX_COLOR, 2)
    return img


def crops(panels: dict[str, np.ndarray], box: Box) -> dict[str, np.ndarray]:
    """The box cut from every panel, zoomed by an integer factor (nearest) to about OVERVIEW_HEIGHT."""
    zoom = max(1, OVERVIEW_HEIGHT // max(box.w, box.h))
    return {name: cv2.resize(box.cut(img), (box.w * zoom, box.h * zoom), interpolation=cv2.INTER_NEAREST)
            for name, img in panels.items()}


def compose(over: np.ndarray, cut: dict[str, np.ndarray], title: str) -> np.ndarray:
    """Overview labelled `title`, then every labelled crop, side by side on white with 4-px gaps, tops aligned."""
    tiles = [_label(over, title)] + [_label(c, name) for name, c in cut.items()]
    height = max(t.shape[0] for t in tiles)
    row = []
    for tile in tiles:
        row += [np.pad(tile, ((0, height - tile.shape[0]), (0, 0), (0, 0)), constant_values=255),
                np.full((height, 4, 3), 255, np.uint8)]
    return np.concatenate(row[:-1], 1)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "x"


def figure_tex(overview_file: str, crop_files: dict[str, str], caption: str, label: str) -> str:
    """A `figure` with one subfigure per panel (subcaption package); file names relative to the .tex."""
    from srdistill.evaluate.render.leaderboard_tex import escape

    width = 0.96 / (len(crop_files) + 1.5)
    lines = [r"\begin{figure}[t]", r"\centering",
             rf"\begin{{subfigure}}[b]{{{1.5 * width:.3f}\linewidth}}\includegraphics[width=\linewidth]{{{overview_file}}}"
             r"\caption*{Overview}\end{subfigure}\hfill"]
    for name, path in crop_files.items():
        lines.append(rf"\begin{{subfigure}}[b]{{{width:.3f}\linewidth}}\includegraphics[width=\linewidth]{{{path}}}"
                     rf"\caption*{{{escape(name)}}}\end{{subfigure}}\hfill")
    lines[-1] = lines[-1].removesuffix(r"\hfill")
    lines += [rf"\caption{{{escape(caption)}}}", rf"\label{{{label}}}", r"\end{figure}"]
    return "\n".join(lines) + "\n"


def write_crop_figure(dest: Path, dataset: str, image: str, hr: np.ndarray, lr: np.ndarray,
                      outputs: dict[str, np.ndarray], box: Box) -> list[Path]:
    """DEST/figure.png (overview + crops), DEST/overview.png and DEST/crop-<i>-<panel>.png, DEST/figure.tex (a
    standalone document holding the `figure`). Panels: HR, LR (nearest), then each method in the given order."""
    check_box(box, hr.shape, image)
    for name, img in outputs.items():
        if img.shape != hr.shape:
            raise UserError(f"{name}'s output for {image} is {img.shape[1]}x{img.shape[0]}, the HR is "
                            f"{hr.shape[1]}x{hr.shape[0]}: a crop would not show the same area.")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    panels = {"HR": hr, "LR (nearest)": upsample_nearest(lr, hr.shape), **outputs}
    over = overview(hr, box)
    cut = crops(panels, box)
    files = {}
    written = [dest / "figure.png", dest / "overview.png"]
    written[0].write_bytes(encode_png(compose(over, cut, f"{image} [{box.text()}]")))
    written[1].write_bytes(encode_png(over))
    for i, (name, img) in enumerate(cut.items()):
        path = dest / f"crop-{i}-{_safe(name)}.png"
        path.write_bytes(encode_png(img))
        files[name] = path.name
        written.append(path)
    caption = f"{dataset}, image {image}: crop x,y,w,h = {box.text()} (HR pixels), zoomed with nearest neighbour."
    body = figure_tex("overview.png", files, caption, f"fig:{_safe(dataset)}-{_safe(image)}")
    tex = dest / "figure.tex"
    tex.write_text("\n".join([r"\documentclass{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{graphicx}",
                              r"\usepackage{subcaption}", r"\begin{document}", body, r"\end{document}", ""]))
    written.append(tex)
    return written
