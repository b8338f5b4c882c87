"""`degrade preview`: a PNG grid of samples from a build: HR, the image after each named stage of the spec
(re-derived from the sample's op record), and the stored LR, each row captioned with the ops that ran."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np

from srdistill.datasets.images import decode_png
from srdistill.datasets.shards.reader import build_samples, open_build
from srdistill.core.errors import UserError

def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):  # a drawn blur kernel
        return v.get("type", "?") + "".join(f" {k}{_short(x)}" for k, x in v.items() if k in ("size", "sigma_x", "omega"))
    return str(v)


def caption(record: dict) -> str:
    """One line per stage (in the order the ops ran): each op with its values, the noise seeds left out."""
    from srdistill.degrade.pipeline import op_values

    lines: list[tuple[str | None, list[str]]] = []
    for o in record.get("ops", []):
        at = o.get("at")
        if not lines or lines[-1][0] != at:
            lines.append((at, []))
        vals = " ".join(f"{k}={_short(v)}" for k, v in op_values(o).items() if k != "seed")
        lines[-1][1].append(f"{o['op']}({vals})" if vals else o["op"])
    return "\n".join(f"{at or '-'}: " + " | ".join(ops) for at, ops in lines) or "(no ops)"


def preview(out: str, grid_path: str | Path, *, samples: int = 8, storage_options: dict | None = None) -> int:
    """Write a grid of the first `samples` samples (HR | LR upscaled by nearest neighbour); returns how many."""
    # A Figure without pyplot: no global backend switch in the caller's process.
    from matplotlib.figure import Figure

    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}.")
    from srdistill.degrade.pipeline import apply_record
    from srdistill.degrade.inspect.verify import sample_record

    storage, manifest = open_build(out, storage_options)
    rows = []
    for _, key, hr_png, lr_png, meta in islice(build_samples(storage, manifest), samples):
        hr, record = decode_png(hr_png), sample_record(meta, manifest["spec"])
        _, stages = apply_record(hr, record, stages=True)
        # the last stage's image is the LR itself when the pipeline ends in it
        rows.append((key, hr, stages[:-1] if stages and record["ops"][-1].get("at") == stages[-1][0] else stages,
                     decode_png(lr_png), record))
    if not rows:
        raise UserError(f"{storage.display()} holds no samples to preview.")
    cols = 2 + max(len(r[2]) for r in rows)
    fig = Figure(figsize=(4.2 * cols, 4.4 * len(rows)))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for (key, hr, stages, lr, record), row in zip(rows, axes):
        panels = [(hr, f"{key}  HR {hr.shape[1]}x{hr.shape[0]}")]
        panels += [(img, f"after {name} {img.shape[1]}x{img.shape[0]}") for name, img in stages]
        panels.append((lr, f"LR {lr.shape[1]}x{lr.shape[0]}"))
        for ax in row:
            ax.set_axis_off()
        for ax, (img, title) in zip(row, panels):
            # nearest-neighbour to the HR's size, so that every panel shows the same field of view
            fy, fx = max(1, round(hr.shape[0] / img.shape[0])), max(1, round(hr.shape[1] / img.shape[1]))
            ax.imshow(np.repeat(np.repeat(img, fy, axis=0), fx, axis=1))
            ax.set_title(title, fontsize=8)
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].text(0.0, -0.03, caption(record), transform=row[0].transAxes, fontsize=6.5, va="top", wrap=True)
    spec_name = manifest["spec"].get("name", "?")
    fig.suptitle(f"{manifest['source']['name']} · spec {spec_name} ({manifest['spec_hash']}) · seed {manifest['seed']}", fontsize=9)
    # ~0.5 inch at the top for the title and room under each row for its caption
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(), wspace=0.05,
                        hspace=0.45)
    Path(grid_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(grid_path, dpi=90)
    return len(rows)
