"""`degrade diff A B`: how two builds differ, before anyone trains on the new one.

Three views, side by side in a markdown summary with PNG plots:
- the spec steps that differ, op by op and per parameter (from the two manifests; degrade/spec/compare.py);
- the distribution of every recorded degradation parameter (from each sample's op record, one column per
  `stage.step.parameter`, plus the order the ops ran in);
- statistics measured on the LR images themselves: strength (PSNR against a plain bicubic downscale of the HR,
  mean absolute deviation from its area downscale), colour (spread of R−G relative to the HR's), high-frequency
  energy (Laplacian variance relative to the bicubic downscale), a noise level estimate (Immerkær 1996) and
  JPEG blockiness (8×8 grid discontinuity), on the luma as degrade/image_stats.py defines them.

`degrade diff BUILD --reference realesrgan` compares a build's LR statistics with those of the Real-ESRGAN
reference implementation (degrade/inspect/reference.py) run on the same HR images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from srdistill.datasets.images import decode_png
from srdistill.datasets.shards.reader import build_samples, open_build
from srdistill.degrade.image_stats import blockiness, laplacian_variance, luma, noise_sigma
from srdistill.degrade.spec.compare import compare_specs, spec_of

DEFAULT_LIMIT = 256
# Lists longer than this in params (e.g. a whole kernel) are summarised by their length only.
_MAX_LIST = 4

LR_STATS = {
    "psnr_vs_bicubic": "LR vs bicubic-downscaled HR, PSNR (dB)",
    "mad_vs_area": "mean |LR − area-downscaled HR| (8-bit units)",
    "colour_ratio": "colour: std(R−G) of LR / of area-downscaled HR",
    "sharpness_ratio": "high frequencies: Laplacian variance of LR / of bicubic (<1 blurrier)",
    "noise_sigma": "noise σ of the LR (Immerkær, 8-bit units)",
    "blockiness": "JPEG 8×8 blockiness (1 = none)",
}


@dataclass
class BuildStats:
    """What `diff` reads from one build."""

    label: str
    manifest: dict
    params: pd.DataFrame  # one row per sample, one column per flattened parameter
    lr: pd.DataFrame  # one row per sample, one column per LR statistic


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested params to {"a.b": scalar}; short lists are indexed, long ones give their length."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, (list, tuple)):
        if len(value) <= _MAX_LIST and all(not isinstance(v, (dict, list, tuple)) for v in value):
            return {f"{prefix}[{i}]": v for i, v in enumerate(value)}
        return {f"{prefix}#len": len(value)}
    return {prefix: value}


def record_columns(record: dict) -> dict[str, object]:
    """A sample's op record (params version 3) as {"stage.step.parameter": value}: a step is its id, else its
    op name (#2, #3... when an op runs again in the same stage); `ops` is the order the ops ran in."""
    from srdistill.degrade.pipeline import op_values

    out: dict[str, object] = {"ops": " > ".join(o["op"] for o in record.get("ops", []))}
    seen: dict[str, int] = {}
    for o in record.get("ops", []):
        label = ".".join(x for x in (o.get("at"), o.get("id") or o["op"]) if x)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        out.update(flatten(op_values(o), label))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * math.log10(255.0**2 / mse))


def colour_spread(img: np.ndarray) -> float:
    """Standard deviation of R − G: how much chroma an image carries."""
    return float(np.std(img[..., 0].astype(np.float64) - img[..., 1].astype(np.float64)))


def lr_statistics(hr: np.ndarray, lr: np.ndarray) -> dict[str, float]:
    """The LR statistics of one sample, against an antialiased bicubic and an area (box) downscale of its HR."""
    size = (lr.shape[1], lr.shape[0])
    ref = np.asarray(Image.fromarray(hr).resize(size, Image.Resampling.BICUBIC))
    area = cv2.resize(hr.astype(np.float64), size, interpolation=cv2.INTER_AREA)
    g, gref = luma(lr), luma(ref)
    ref_var, area_spread = laplacian_variance(gref), colour_spread(area)
    return {
        "psnr_vs_bicubic": psnr(lr, ref),
        "mad_vs_area": float(np.mean(np.abs(lr.astype(np.float64) - area))),
        "colour_ratio": colour_spread(lr) / area_spread if area_spread > 0 else float("nan"),
        "sharpness_ratio": laplacian_variance(g) / ref_var if ref_var > 0 else float("nan"),
        "noise_sigma": noise_sigma(g),
        "blockiness": blockiness(g),
    }


def _square(hr: np.ndarray, scale: int) -> np.ndarray:
    """The centred square of side min(H, W), cut to a multiple of the scale (the reference takes squares)."""
    side = min(hr.shape[:2]) // scale * scale
    top, left = (hr.shape[0] - side) // 2, (hr.shape[1] - side) // 2
    return np.ascontiguousarray(hr[top:top + side, left:left + side])


def collect(build: str, label: str, limit: int = DEFAULT_LIMIT,
            reference: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[BuildStats, pd.DataFrame]:
    """Read up to ``limit`` samples, spread evenly over the build's shards; with ``reference`` (HR -> LR), also
    the LR statistics of the reference degradation of each HR (its centred square), else an empty frame."""
    from srdistill.degrade.inspect.verify import sample_record

    storage, manifest = open_build(str(build))
    per_shard = max(1, math.ceil(limit / max(1, len(manifest.get("shards", [])))))
    params, lrs, refs = [], [], []
    with tqdm(total=min(limit, int(manifest.get("totals", {}).get("samples", limit))), desc=f"reading {label}",
              unit="sample", leave=False) as bar:
        for _, key, hr_png, lr_png, meta in islice(build_samples(storage, manifest, per_shard), limit):
            hr = decode_png(hr_png)
            params.append({"key": key, **record_columns(sample_record(meta, manifest["spec"]))})
            lrs.append({"key": key, **lr_statistics(hr, decode_png(lr_png))})
            if reference is not None:
                sq = _square(hr, int(manifest["scale"]))
                refs.append({"key": key, **lr_statistics(sq, reference(sq))})
            bar.update(1)
    stats = BuildStats(label=label, manifest=manifest,
                       params=pd.DataFrame(params).set_index("key") if params else pd.DataFrame(),
                       lr=pd.DataFrame(lrs).set_index("key") if lrs else pd.DataFrame())
    return stats, pd.DataFrame(refs).set_index("key") if refs else pd.DataFrame()


def _numeric(s: pd.Series) -> np.ndarray | None:
    vals = s.dropna()
    if len(vals) == 0 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return None
    return vals.to_numpy(dtype=np.float64)


def _token(v) -> str:
    return "<absent>" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)


def compare_params(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, categorical) comparison tables of every parameter either build recorded.

    When the builds share sample keys (a regen and its parent), ``paired`` is the fraction of shared samples
    whose value differs: exactly the samples a spec change touched.
    """
    from scipy import stats  # imported here so that `degrade --help` stays quick

    numeric, categorical = [], []
    shared = sorted(set(a.index) & set(b.index))
    for col in sorted(set(a.columns) | set(b.columns)):
        sa = a[col] if col in a else pd.Series(dtype=object)
        sb = b[col] if col in b else pd.Series(dtype=object)
        paired = np.nan
        if shared:
            va = sa.reindex(shared).map(_token)
            vb = sb.reindex(shared).map(_token)
            paired = float((va != vb).mean())
        na, nb = _numeric(sa), _numeric(sb)
        present_a = sa.notna().mean() if len(sa) else 0.0
        present_b = sb.notna().mean() if len(sb) else 0.0
        if (na is not None or len(sa.dropna()) == 0) and (nb is not None or len(sb.dropna()) == 0) \
                and (na is not None or nb is not None):
            ks = stats.ks_2samp(na, nb) if na is not None and nb is not None and len(na) and len(nb) else None
            numeric.append({
                "param": col,
                "A_mean": na.mean() if na is not None else np.nan, "A_std": na.std() if na is not None else np.nan,
                "A_min": na.min() if na is not None else np.nan, "A_max": na.max() if na is not None else np.nan,
                "A_present": present_a,
                "B_mean": nb.mean() if nb is not None else np.nan, "B_std": nb.std() if nb is not None else np.nan,
                "B_min": nb.min() if nb is not None else np.nan, "B_max": nb.max() if nb is not None else np.nan,
                "B_present": present_b,
                "ks": ks.statistic if ks is not None else 1.0,
                "ks_p": ks.pvalue if ks is not None else 0.0,
                "paired": paired,
            })
        else:
            fa = sa.dropna().astype(str).value_counts(normalize=True)
            fb = sb.dropna().astype(str).value_counts(normalize=True)
            tv = 0.5 * sum(abs(fa.get(k, 0.0) - fb.get(k, 0.0)) for k in set(fa.index) | set(fb.index))
            categorical.append({"param": col, "A": _freqs(fa), "B": _freqs(fb), "A_present": present_a,
                                "B_present": present_b, "tv": tv, "paired": paired})
    num = pd.DataFrame(numeric, columns=["param", "A_mean", "A_std", "A_min", "A_max", "A_present",
                                         "B_mean", "B_std", "B_min", "B_max", "B_present", "ks", "ks_p", "paired"])
    cat = pd.DataFrame(categorical, columns=["param", "A", "B", "A_present", "B_present", "tv", "paired"])
    return num, cat


def _freqs(f: pd.Series) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in f.head(4).items()) or "—"


def changed_params(num: pd.DataFrame, cat: pd.DataFrame, alpha: float = 0.01) -> list[str]:
    """Parameters that changed: on shared keys any paired difference; otherwise a KS p-value below ``alpha``,
    a presence rate or categorical frequencies that moved by more than 10 points."""
    num_moved = (num["ks_p"] < alpha) | ((num["A_present"] - num["B_present"]).abs() > 0.1) | (num["paired"] > 0)
    cat_moved = (cat["tv"] > 0.1) | (cat["paired"] > 0)
    return num[num_moved]["param"].tolist() + cat[cat_moved]["param"].tolist()


def _hist_grid(path: Path, title: str, columns: list[str], a: pd.DataFrame, b: pd.DataFrame,
               labels: tuple[str, str]) -> Path:
    from matplotlib.figure import Figure  # imported here so that `degrade --help` stays quick; no pyplot state

    n = len(columns)
    cols = 2 if n == 4 else min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4 * cols, 2.8 * rows), dpi=90)
    for i, col in enumerate(columns):
        ax = fig.add_subplot(rows, cols, i + 1)
        va = a[col].dropna().to_numpy(dtype=float) if col in a else np.array([])
        vb = b[col].dropna().to_numpy(dtype=float) if col in b else np.array([])
        both = np.concatenate([va, vb])
        both = both[np.isfinite(both)]
        if both.size == 0:
            continue
        lo, hi = float(both.min()), float(both.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        for values, label in ((va[np.isfinite(va)], labels[0]), (vb[np.isfinite(vb)], labels[1])):
            if values.size:  # a parameter only one spec has: its other side has no density to draw
                ax.hist(values, bins=bins, alpha=0.55, label=label, density=True)
        ax.set_title(col, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.0%}"


def _fmt(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.4g}"


def _row_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]


def render_diff_md(a: BuildStats, b: BuildStats, spec_diff: pd.DataFrame, num: pd.DataFrame, cat: pd.DataFrame,
                   moved: list[str], plots: list[str]) -> str:
    ma, mb = a.manifest, b.manifest
    lines = [f"# Build diff: {a.label} vs {b.label}", ""]
    info = [
        ["spec", f"`{ma.get('spec', {}).get('name', '?')}` ({ma.get('spec_hash', '?')})",
         f"`{mb.get('spec', {}).get('name', '?')}` ({mb.get('spec_hash', '?')})"],
        ["samples read / in build", f"{len(a.lr)} / {ma.get('totals', {}).get('samples', '?')}",
         f"{len(b.lr)} / {mb.get('totals', {}).get('samples', '?')}"],
        ["scale", str(ma.get("scale", "?")), str(mb.get("scale", "?"))],
        ["seed", str(ma.get("seed", "?")), str(mb.get("seed", "?"))],
    ]
    if ma.get("parent") or mb.get("parent"):
        info.append(["parent build", str((ma.get("parent") or {}).get("build", "—")),
                     str((mb.get("parent") or {}).get("build", "—"))])
    lines += _row_table(["", "A", "B"], info) + [""]
    shared = sorted(set(a.lr.index) & set(b.lr.index))
    if shared:
        lines += [f"{len(shared)} sample key(s) appear in both builds.", ""]
    lines += ["## Spec steps that differ", ""]
    if len(spec_diff):
        lines += _spec_table(spec_diff, ("A", "B"))
    else:
        lines.append("None: both builds use the same degradation spec.")
    lines += ["", "## Parameters whose distribution changed", ""]
    lines.append(", ".join(f"`{p}`" for p in moved) if moved else "None: every parameter is distributed alike.")
    lines += ["", "## LR statistics", ""]
    rows = []
    for stat, about in LR_STATS.items():
        sa = a.lr[stat] if stat in a.lr else pd.Series(dtype=float)
        sb = b.lr[stat] if stat in b.lr else pd.Series(dtype=float)
        rows.append([about, f"{_fmt(sa.mean())} ± {_fmt(sa.std())}", f"{_fmt(sb.mean())} ± {_fmt(sb.std())}"])
    lines += _row_table(["statistic (mean ± std)", a.label, b.label], rows) + [""]
    if plots:
        lines += [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Numeric parameters", "", "Sorted by the share of shared samples that changed, then by how much the distributions differ (KS statistic).", ""]
    rows = []
    for r in num.sort_values(["paired", "ks", "param"], ascending=[False, False, True]).itertuples():
        rows.append([f"`{r.param}`",
                     f"{_fmt(r.A_mean)} ± {_fmt(r.A_std)} [{_fmt(r.A_min)}, {_fmt(r.A_max)}] ({r.A_present:.0%})",
                     f"{_fmt(r.B_mean)} ± {_fmt(r.B_std)} [{_fmt(r.B_min)}, {_fmt(r.B_max)}] ({r.B_present:.0%})",
                     f"{r.ks:.2f}", f"{r.ks_p:.2g}", _pct(r.paired)])
    lines += _row_table(["parameter", f"{a.label}: mean ± std [min, max] (present)",
                         f"{b.label}: mean ± std [min, max] (present)", "KS", "p", "differs on shared keys"],
                        rows) + [""]
    if len(cat):
        lines += ["## Categorical parameters", ""]
        lines += _row_table(["parameter", a.label, b.label, "change (TV distance)", "differs on shared keys"],
                            [[f"`{r.param}`", r.A, r.B, f"{r.tv:.2f}", _pct(r.paired)]
                             for r in cat.sort_values(["tv", "param"], ascending=[False, True]).itertuples()])
        lines.append("")
    return "\n".join(lines)


def _spec_table(spec_diff: pd.DataFrame, labels: tuple[str, str]) -> list[str]:
    return _row_table(["step", "change", "parameter", *labels],
                      [[f"`{r.step}`", r.change, f"`{r.parameter}`" if r.parameter else "", r.A, r.B]
                       for r in spec_diff.itertuples()])


@dataclass
class DiffSummary:
    report: Path
    spec_fields: int
    moved: list[str]
    samples: tuple[int, int]


def diff_builds(a: str, b: str, out: str | Path, limit: int = DEFAULT_LIMIT) -> DiffSummary:
    """Write ``out/diff.md`` and its PNGs comparing build ``a`` with build ``b``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    la, lb = "A", "B"
    (sa, _), (sb, _) = collect(a, la, limit), collect(b, lb, limit)
    spec_diff = compare_specs(spec_of(sa.manifest["spec"]), spec_of(sb.manifest["spec"]))
    num, cat = compare_params(sa.params, sb.params)
    moved = changed_params(num, cat)
    plots = []
    if len(sa.lr) and len(sb.lr):
        plots.append(_hist_grid(out / "lr_stats.png", "LR statistics", list(LR_STATS), sa.lr, sb.lr, (la, lb)).name)
    moved_num = [p for p in num.sort_values("ks", ascending=False)["param"] if p in moved][:9]
    if moved_num:
        plots.append(_hist_grid(out / "params.png", "changed parameters", moved_num, sa.params, sb.params,
                                (la, lb)).name)
    text = render_diff_md(sa, sb, spec_diff, num, cat, moved, plots)
    text = text.replace("# Build diff: A vs B", f"# Build diff\n\n- A: `{a}`\n- B: `{b}`", 1)
    report = out / "diff.md"
    report.write_text(text)
    return DiffSummary(report=report, spec_fields=len(spec_diff), moved=moved, samples=(len(sa.lr), len(sb.lr)))


def compare_lr_stats(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per LR statistic: medians, quartiles and a two-sample KS test of ``a`` against ``b``."""
    from scipy import stats

    rows = []
    for stat in LR_STATS:
        va, vb = (x[stat].to_numpy(dtype=float) for x in (a, b))
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
        ks = stats.ks_2samp(va, vb) if len(va) and len(vb) else None
        rows.append({"stat": stat, "A_median": np.median(va) if len(va) else np.nan,
                     "A_q1": np.quantile(va, 0.25) if len(va) else np.nan,
                     "A_q3": np.quantile(va, 0.75) if len(va) else np.nan,
                     "B_median": np.median(vb) if len(vb) else np.nan,
                     "B_q1": np.quantile(vb, 0.25) if len(vb) else np.nan,
                     "B_q3": np.quantile(vb, 0.75) if len(vb) else np.nan,
                     "ks": ks.statistic if ks is not None else np.nan, "ks_p": ks.pvalue if ks is not None else np.nan})
    return pd.DataFrame(rows)


@dataclass
class ReferenceSummary:
    report: Path
    samples: int
    differs: list[str]  # LR statistics whose distribution differs from the reference's (KS p < alpha)


def diff_reference(build: str, reference: str, out: str | Path, limit: int = DEFAULT_LIMIT, seed: int = 0,
                   alpha: float = 0.01) -> ReferenceSummary:
    """Write ``out/diff.md`` comparing the LR statistics of ``build`` with those of the Real-ESRGAN reference
    implementation run on the same HR images under the spec ``reference`` (a preset name or file)."""
    from srdistill.degrade.inspect.reference import ReferenceDegrader
    from srdistill.degrade.spec.schema import load_spec

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _, manifest = open_build(str(build))
    ref_spec = load_spec(reference)
    if ref_spec.scale != manifest["scale"]:  # the same degradation at the build's scale (x2plus is x4plus at 2)
        import dataclasses

        ref_spec = dataclasses.replace(ref_spec, scale=int(manifest["scale"]))
    degrader = ReferenceDegrader(ref_spec, seed=seed)
    try:
        built, ref_lr = collect(build, "build", limit, reference=degrader)
    finally:
        degrader.close()
    table = compare_lr_stats(built.lr, ref_lr)
    differs = table[table["ks_p"] < alpha]["stat"].tolist()
    spec_diff = compare_specs(ref_spec, spec_of(manifest["spec"]))
    plots = []
    if len(built.lr) and len(ref_lr):
        plots.append(_hist_grid(out / "lr_stats.png", "LR statistics", list(LR_STATS), ref_lr, built.lr,
                                ("reference", "build")).name)
    lines = ["# Build vs the Real-ESRGAN reference", "",
             (f"- build: `{build}` (spec `{manifest.get('spec', {}).get('name', '?')}`, "
              f"{manifest.get('spec_hash', '?')})"),
             (f"- reference: basicsr + realesrgan (RealESRGANDataset kernels + RealESRGANModel.feed_data, CPU) "
              f"under the `{ref_spec.name}` numbers, scale {ref_spec.scale}, seed {seed}, one draw per HR read "
              f"(its centred square where the HR is not square)"),
             f"- samples: {len(built.lr)} of {manifest.get('totals', {}).get('samples', '?')}", "",
             "## LR statistics", "",
             f"Two-sample KS test per statistic; p < {alpha:g} marks a distribution that differs.", ""]
    lines += _row_table(["statistic", "reference: median [q1, q3]", "build: median [q1, q3]", "KS", "p", ""],
                        [[LR_STATS[r.stat], f"{_fmt(r.B_median)} [{_fmt(r.B_q1)}, {_fmt(r.B_q3)}]",
                          f"{_fmt(r.A_median)} [{_fmt(r.A_q1)}, {_fmt(r.A_q3)}]", _fmt(r.ks), f"{r.ks_p:.2g}",
                          "**differs**" if r.ks_p < alpha else "no difference seen"] for r in table.itertuples()]) + [""]
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    lines += ["## Spec steps that differ from the reference's", ""]
    if len(spec_diff):
        lines += _spec_table(spec_diff, ("reference", "build"))
    else:
        lines.append("None.")
    report = out / "diff.md"
    report.write_text("\n".join(lines) + "\n")
    return ReferenceSummary(report=report, samples=len(built.lr), differs=differs)
