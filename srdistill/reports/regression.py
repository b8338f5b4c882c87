"""Night-to-night comparison: paired confidence intervals over images, so noise is not called a regression.

For each method × dataset × metric the images scored on both nights are paired and the change of the
mean is given with a confidence interval (paired t by default, or a fixed-seed bootstrap). A change is
flagged only when the interval excludes 0 *and* the change is at least the metric's minimum effect;
whether it is a regression or an improvement follows the metric's lower/higher-is-better direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from srdistill.reports.history import Night

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
TOO_FEW = "too few images"
PROTOCOL_CHANGED = "protocol changed"   # measured under another protocol: not comparable, never a regression

# The image name of set-level scores (e.g. FID), one row per dataset: srdistill.core.iqa.metrics.DATASET_IMAGE
# (not imported, so that this module stays free of torch).
SET_LEVEL_IMAGE = "*"

# Defaults in the metric's own unit: below these a change is not worth a researcher's attention.
DEFAULT_MIN_EFFECT = {"psnr": 0.05, "psnry": 0.05, "ssim": 0.002, "ssimc": 0.002, "lpips": 0.002, "dists": 0.002}


@dataclass(frozen=True)
class Thresholds:
    """When a change counts. ``min_rel_effect`` applies to metrics without an entry in ``min_effect``."""

    confidence: float = 0.95
    ci: str = "t"  # "t" (paired t interval) or "bootstrap" (percentile bootstrap of the mean difference)
    bootstrap_samples: int = 2000
    seed: int = 0
    min_effect: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    min_rel_effect: float = 0.005
    throughput_rel: float = 0.25
    fail_on_throughput: bool = False

    def __post_init__(self) -> None:
        if self.ci not in ("t", "bootstrap"):
            raise ValueError(f"ci must be 't' or 'bootstrap', not {self.ci!r}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), not {self.confidence}")


def paired_interval(ref: np.ndarray, cur: np.ndarray, th: Thresholds) -> tuple[float, float, float]:
    """Mean of ``cur - ref`` and its confidence interval ``(delta, low, high)``; needs at least two pairs."""
    d = np.asarray(cur, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    n = d.size
    if n < 2:
        raise ValueError("a paired interval needs at least two images")
    delta = float(d.mean())
    if np.all(d == d[0]):
        # Every image moved by exactly the same amount (deterministic methods): no sampling noise.
        return delta, delta, delta
    if th.ci == "t":
        half = float(stats.t.ppf((1 + th.confidence) / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
        return delta, delta - half, delta + half
    rng = np.random.default_rng(th.seed)
    means = d[rng.integers(0, n, size=(th.bootstrap_samples, n))].mean(axis=1)
    alpha = (1 - th.confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return delta, float(low), float(high)


def min_effect(metric: str, ref_mean: float, th: Thresholds) -> float:
    """The smallest change of ``metric`` worth flagging."""
    if metric.lower() in th.min_effect:
        return float(th.min_effect[metric.lower()])
    return th.min_rel_effect * abs(ref_mean)


def classify(delta: float, low: float, high: float, lower_better: bool, effect: float) -> str:
    """Verdict for one paired change."""
    if low <= 0 <= high or abs(delta) < effect:
        return UNCHANGED
    better = delta < 0 if lower_better else delta > 0
    return IMPROVEMENT if better else REGRESSION


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    keep = (df["status"] == "ok") & np.isfinite(df["value"].astype(float))
    return df[keep]


COMPARISON_COLUMNS = [
    "method", "dataset", "metric", "lower_better", "n", "ref_mean", "cur_mean", "delta",
    "ci_low", "ci_high", "rel_delta", "verdict", "fingerprint_changed",
]


def compare_results(current: pd.DataFrame, reference: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """One row per method × dataset × metric scored on both nights, with the paired change and verdict.

    Rows measured under different protocols (their `protocol_hash`) are listed as PROTOCOL_CHANGED, not compared."""
    cur, ref = _ok(current), _ok(reference)
    keys = ["method", "dataset", "metric"]
    rows = []
    ref_groups = {k: g for k, g in ref.groupby(keys, sort=True)}
    for key, cg in cur.groupby(keys, sort=True):
        rg = ref_groups.get(key)
        if rg is None:
            continue
        pairs = cg.set_index("image")["value"].to_frame("cur").join(
            rg.set_index("image")["value"].to_frame("ref"), how="inner"
        )
        lower_better = bool(cg["lower_better"].iloc[0])
        n = len(pairs)
        row = dict(zip(keys, key), lower_better=lower_better, n=n)
        row["fingerprint_changed"] = set(cg["method_fingerprint"]) != set(rg["method_fingerprint"])
        if _protocols(cg) != _protocols(rg):
            row.update(ref_mean=float(rg["value"].mean()), cur_mean=float(cg["value"].mean()), delta=np.nan,
                       ci_low=np.nan, ci_high=np.nan, rel_delta=np.nan, verdict=PROTOCOL_CHANGED)
        elif n == 1 and pairs.index[0] == SET_LEVEL_IMAGE:
            # A set-level score has no per-image spread: the change itself is compared with the minimum effect.
            ref_mean, cur_mean = float(pairs["ref"].iloc[0]), float(pairs["cur"].iloc[0])
            delta = cur_mean - ref_mean
            row.update(ref_mean=ref_mean, cur_mean=cur_mean, delta=delta, ci_low=delta, ci_high=delta,
                       rel_delta=delta / abs(ref_mean) if ref_mean else np.nan,
                       verdict=classify(delta, delta, delta, lower_better, min_effect(key[2], ref_mean, th)))
        elif n < 2:
            row.update(ref_mean=np.nan, cur_mean=np.nan, delta=np.nan, ci_low=np.nan, ci_high=np.nan,
                       rel_delta=np.nan, verdict=TOO_FEW)
        else:
            delta, low, high = paired_interval(pairs["ref"].to_numpy(), pairs["cur"].to_numpy(), th)
            ref_mean = float(pairs["ref"].mean())
            row.update(
                ref_mean=ref_mean,
                cur_mean=float(pairs["cur"].mean()),
                delta=delta,
                ci_low=low,
                ci_high=high,
                rel_delta=delta / abs(ref_mean) if ref_mean else np.nan,
                verdict=classify(delta, low, high, lower_better, min_effect(key[2], ref_mean, th)),
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _protocols(df: pd.DataFrame) -> set[str]:
    """The protocol hashes of a group; nights recorded before protocols existed read as one unknown protocol."""
    if "protocol_hash" not in df:
        return {""}
    return set(df["protocol_hash"].fillna("").astype(str))


NEW = "new"
VANISHED = "vanished"
BROKEN = "broken"


def membership_changes(current: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Method × dataset pairs that are new, vanished, or broken (every row failed tonight, some passed before)."""
    def pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
        return set(map(tuple, df[["method", "dataset"]].drop_duplicates().itertuples(index=False)))

    cur_all, ref_all = pairs(current), pairs(reference)
    cur_ok, ref_ok = pairs(_ok(current)), pairs(_ok(reference))
    rows = [(m, d, NEW, "") for m, d in sorted(cur_all - ref_all)]
    rows += [(m, d, VANISHED, "") for m, d in sorted(ref_all - cur_all)]
    for m, d in sorted((cur_all & ref_ok) - cur_ok):
        failed = current[(current["method"] == m) & (current["dataset"] == d)]
        rows.append((m, d, BROKEN, str(failed["status"].iloc[0])))
    return pd.DataFrame(rows, columns=["method", "dataset", "change", "detail"])


FASTER = "faster"
SLOWER = "slower"


def compare_throughput(current: pd.DataFrame, reference: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """Relative change of each throughput figure both nights recorded; beyond ``throughput_rel`` it is flagged."""
    joined = current.set_index("name")[["value", "unit"]].join(
        reference.set_index("name")[["value"]].rename(columns={"value": "ref"}), how="inner"
    )
    rows = []
    for name, r in joined.iterrows():
        rel = r["value"] / r["ref"] - 1 if r["ref"] > 0 else np.nan
        verdict = UNCHANGED
        if np.isfinite(rel) and abs(rel) > th.throughput_rel:
            verdict = FASTER if rel > 0 else SLOWER
        rows.append((name, r["unit"], float(r["ref"]), float(r["value"]), rel, verdict))
    return pd.DataFrame(rows, columns=["name", "unit", "ref", "cur", "rel_change", "verdict"])


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


ENV_FIELDS = ("commit", "dirty", "versions", "machine", "spec_hashes", "fingerprints", "suite")


def environment_changes(current: dict, reference: dict) -> pd.DataFrame:
    """What differs between two nights' run records (commit, package versions, machine, specs, fingerprints)."""
    cur = _flatten({k: current.get(k, {}) for k in ENV_FIELDS})
    ref = _flatten({k: reference.get(k, {}) for k in ENV_FIELDS})
    rows = [(k, ref.get(k, "—"), cur.get(k, "—")) for k in sorted(set(cur) | set(ref)) if cur.get(k) != ref.get(k)]
    return pd.DataFrame(rows, columns=["what", "before", "after"])


@dataclass
class Comparison:
    """Tonight against one reference night (the previous night or the pinned baseline)."""

    label: str
    ref_date: str
    changes: pd.DataFrame
    membership: pd.DataFrame
    throughput: pd.DataFrame
    environment: pd.DataFrame

    def regressions(self) -> pd.DataFrame:
        return self.changes[self.changes["verdict"] == REGRESSION]

    def improvements(self) -> pd.DataFrame:
        return self.changes[self.changes["verdict"] == IMPROVEMENT]

    def broken(self) -> pd.DataFrame:
        return self.membership[self.membership["change"] == BROKEN]

    def slower(self) -> pd.DataFrame:
        return self.throughput[self.throughput["verdict"] == SLOWER]

    def has_regression(self, th: Thresholds) -> bool:
        slow = th.fail_on_throughput and len(self.slower()) > 0
        return len(self.regressions()) > 0 or len(self.broken()) > 0 or slow


def compare_nights(label: str, current: Night, reference: Night, th: Thresholds) -> Comparison:
    """All comparisons of tonight against one reference night."""
    return Comparison(
        label=label,
        ref_date=reference.date,
        changes=compare_results(current.results, reference.results, th),
        membership=membership_changes(current.results, reference.results),
        throughput=compare_throughput(current.throughput, reference.throughput, th),
        environment=environment_changes(current.run, reference.run),
    )
