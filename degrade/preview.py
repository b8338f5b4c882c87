"""`degrade preview`: a PNG grid of HR/LR pairs from a build, each captioned with its main degradation parameters."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np

from srdistill.datasets.images import decode_png
from srdistill.degrade.reader import build_samples, open_build
from srdistill.errors import UserError

def caption(params: dict) -> str:
    """One line per stage: blur kernel, resize, noise, JPEG quality (second-order params), else the kind."""
    if "stage1" not in params:
        return f"{params.get('kind', '?')} (no random parameters)"
    lines = []
    for name in ("stage1", "stage2"):
        st = params[name]
        r, n = st["resize"], st["noise"]
        noise = f"gauss σ{n['sigma']:.1f}" if n["type"] == "gaussian" else f"poisson {n['scale']:.2f}"
        lines.append(f"{name}: blur {_kernel(st['kernel'])} | {r['direction']} x{r['scale']:.2f} {r['mode']} | "
                     f"{noise}{' gray' if n['gray'] else ''} | jpeg q{st['jpeg_quality']:.3g}")
    fin = params["final"]
    lines.append(f"final: {fin['order'].replace('_', ' ')}, {fin['mode']}, {_kernel(fin['sinc']) if fin['sinc'] else 'no sinc'}")
    return "\n".join(lines)


def _kernel(k: dict | None) -> str:
    if k is None:
        return "none"
    if k["type"] == "sinc":
        return f"sinc ω{k['omega']:.2f} {k['size']}px"
    sigma = f"σ{k['sigma_x']:.2f}" + (f"/{k['sigma_y']:.2f}" if "sigma_y" in k else "")
    return f"{k['type']} {sigma} {k['size']}px"


def preview(out: str, grid_path: str | Path, *, samples: int = 8, storage_options: dict | None = None) -> int:
    """Write a grid of the first `samples` samples (HR | LR upscaled by nearest neighbour); returns how many."""
    # A Figure without pyplot: no global backend switch in the caller's process.
    from matplotlib.figure import Figure

    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}.")
    storage, manifest = open_build(out, storage_options)
    rows = [(key, decode_png(hr_png), decode_png(lr_png), meta)
            for _, key, hr_png, lr_png, meta in islice(build_samples(storage, manifest), samples)]
    if not rows:
        raise UserError(f"{storage.display()} holds no samples to preview.")
    fig = Figure(figsize=(10, 4.2 * len(rows)))
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (key, hr, lr, meta), (ax_hr, ax_lr) in zip(rows, axes):
        s = hr.shape[0] // lr.shape[0]
        ax_hr.imshow(hr)
        ax_hr.set_title(f"{key}  HR {hr.shape[1]}x{hr.shape[0]}", fontsize=8)
        ax_lr.imshow(np.repeat(np.repeat(lr, s, axis=0), s, axis=1))
        ax_lr.set_title(f"LR {lr.shape[1]}x{lr.shape[0]} (x{s} nearest)", fontsize=8)
        ax_hr.text(0.0, -0.03, caption(meta.get("params", {})), transform=ax_hr.transAxes, fontsize=6.5, va="top")
        for ax in (ax_hr, ax_lr):
            ax.set_xticks([])
            ax.set_yticks([])
    spec_name = manifest["spec"].get("name", "?")
    fig.suptitle(f"{manifest['source']['name']} · spec {spec_name} ({manifest['spec_hash']}) · seed {manifest['seed']}", fontsize=9)
    # Keep ~0.4 inch at the top for the title, which tight_layout would otherwise overlap.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    Path(grid_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(grid_path, dpi=90)
    return len(rows)
