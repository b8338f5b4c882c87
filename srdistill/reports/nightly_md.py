"""The nightly report in markdown: verdict and flagged changes first, then leaderboard, trends, full tables, environment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from srdistill.reports.regression import (
    PROTOCOL_CHANGED,
    BROKEN,
    FASTER,
    IMPROVEMENT,
    NEW,
    REGRESSION,
    SLOWER,
    VANISHED,
    Comparison,
    Thresholds,
)


@dataclass
class NightlyReport:
    """Everything the report shows; paths are relative to the report's folder."""

    date: str
    suite: str
    run: dict
    comparisons: list[Comparison]
    thresholds: Thresholds
    leaderboard_md: str
    trend_plots: list[str] = field(default_factory=list)
    failed_rows: pd.DataFrame | None = None
    nights: list[str] = field(default_factory=list)


def _num(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _signed(x: float) -> str:
    return "—" if not math.isfinite(x) else ("+" if x >= 0 else "") + _num(x)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _change_rows(df: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in df.itertuples(index=False):
        arrow = "↓" if r.lower_better else "↑"
        rows.append([
            r.method, r.dataset, f"{r.metric} {arrow}", _num(r.ref_mean), _num(r.cur_mean), _signed(r.delta),
            f"[{_signed(r.ci_low)}, {_signed(r.ci_high)}]", str(r.n), r.verdict,
            "yes" if r.fingerprint_changed else "",
        ])
    return rows


CHANGE_HEADER = ["method", "dataset", "metric", "before", "now", "Δ", "CI", "images", "verdict", "method changed"]


def verdict_line(report: NightlyReport) -> str:
    th = report.thresholds
    if not report.comparisons:
        return "**First night in this history: nothing to compare against yet.**"
    parts = []
    for c in report.comparisons:
        n_reg, n_imp, n_broken = len(c.regressions()), len(c.improvements()), len(c.broken())
        slow = len(c.slower())
        bad = c.has_regression(th)
        mark = "❌" if bad else "✅"
        bits = [f"{n_reg} regression(s)", f"{n_imp} improvement(s)"]
        if n_broken:
            bits.append(f"{n_broken} broken method/dataset pair(s)")
        if slow:
            bits.append(f"{slow} slower throughput figure(s)")
        parts.append(f"{mark} vs {c.label} ({c.ref_date}): " + ", ".join(bits))
    return "\n".join(f"- {p}" for p in parts)


def render_nightly_md(report: NightlyReport) -> str:
    th = report.thresholds
    run = report.run
    lines = [
        f"# Nightly benchmark — {report.date}",
        "",
        f"Suite `{report.suite}` · commit `{run.get('commit', 'unknown')}`"
        + (" (uncommitted changes)" if run.get("dirty") else "")
        + f" · {len(report.nights)} night(s) in history",
        "",
        verdict_line(report),
        "",
    ]
    flagged = [(c, c.changes[c.changes["verdict"].isin([REGRESSION, IMPROVEMENT])]) for c in report.comparisons]
    if any(len(f) for _, f in flagged):
        lines += ["## Flagged changes", ""]
        for c, f in flagged:
            if len(f):
                f = f.sort_values(["verdict", "method", "dataset", "metric"], ascending=[False, True, True, True])
                lines += [f"### vs {c.label} ({c.ref_date})", ""] + _table(CHANGE_HEADER, _change_rows(f)) + [""]
    lines += [
        f"A change is flagged when its {th.confidence:.0%} paired {'t' if th.ci == 't' else 'bootstrap'} interval "
        "over images excludes 0 and it is at least the metric's minimum effect "
        f"({', '.join(f'{k} {v:g}' for k, v in sorted(th.min_effect.items()))}; "
        f"{th.min_rel_effect:.1%} of the mean for others).",
        "",
    ]
    for c in report.comparisons:
        other = c.changes[c.changes["verdict"] == PROTOCOL_CHANGED]
        if len(other):
            lines += [f"## Not compared: measured under another protocol than {c.label} ({c.ref_date})", ""]
            lines += _table(["method", "dataset", "metric"],
                            [[r.method, r.dataset, r.metric] for r in other.itertuples(index=False)]) + [""]
    for c in report.comparisons:
        m = c.membership
        if len(m):
            lines += [f"## Methods that appeared, vanished or broke (vs {c.label} {c.ref_date})", ""]
            names = {NEW: "new", VANISHED: "vanished", BROKEN: "broken: every row failed"}
            lines += _table(["method", "dataset", "change", "detail"],
                            [[r.method, r.dataset, names[r.change], r.detail] for r in m.itertuples(index=False)])
            lines.append("")
    for c in report.comparisons:
        t = c.throughput
        moved = t[t["verdict"].isin([FASTER, SLOWER])]
        if len(moved):
            lines += [f"## Throughput changes beyond ±{th.throughput_rel:.0%} (vs {c.label} {c.ref_date})", ""]
            lines += _table(["benchmark", "before", "now", "change"],
                            [[r.name, f"{_num(r.ref)} {r.unit}", f"{_num(r.cur)} {r.unit}", f"{r.rel_change:+.1%}"]
                             for r in moved.itertuples(index=False)])
            lines.append("")
    if report.failed_rows is not None and len(report.failed_rows):
        fr = report.failed_rows
        lines += ["## Failed evaluations tonight", ""]
        summary = fr.groupby(["method", "dataset", "status"]).size().reset_index(name="rows")
        lines += _table(["method", "dataset", "error", "rows"],
                        [[r.method, r.dataset, r.status, str(r.rows)] for r in summary.itertuples(index=False)])
        lines.append("")
    lines += [report.leaderboard_md.strip(), ""]
    if report.trend_plots:
        lines += ["## Trends", ""]
        lines += [f"![{p}]({p})" for p in report.trend_plots]
        lines.append("")
    for c in report.comparisons:
        lines += [f"## All changes vs {c.label} ({c.ref_date})", ""]
        if len(c.changes):
            lines += _table(CHANGE_HEADER, _change_rows(c.changes))
        else:
            lines.append("No method × dataset × metric was scored on both nights.")
        lines.append("")
        if len(c.throughput):
            lines += ["Throughput:", ""]
            lines += _table(["benchmark", "before", "now", "change"],
                            [[r.name, f"{_num(r.ref)} {r.unit}", f"{_num(r.cur)} {r.unit}",
                              "—" if not math.isfinite(r.rel_change) else f"{r.rel_change:+.1%}"]
                             for r in c.throughput.itertuples(index=False)])
            lines.append("")
    lines += ["## Environment", ""]
    for c in report.comparisons:
        env = c.environment
        lines += [f"Changes since {c.label} ({c.ref_date}):", ""]
        if len(env):
            lines += _table(["what", "before", "now"],
                            [[f"`{r.what}`", f"`{r.before}`", f"`{r.after}`"] for r in env.itertuples(index=False)])
        else:
            lines.append("None: same commit, package versions, machine, specs and fingerprints.")
        lines.append("")
    lines += ["Tonight:", ""]
    rows = [["commit", f"`{run.get('commit', 'unknown')}`"]]
    rows += [[f"spec `{k}`", f"`{v}`"] for k, v in sorted(run.get("spec_hashes", {}).items())]
    rows += [[f"machine {k}", str(v)] for k, v in sorted(run.get("machine", {}).items())]
    rows += [[f"`{k}`", str(v)] for k, v in sorted(run.get("versions", {}).items())]
    lines += _table(["what", "value"], rows) + [""]
    return "\n".join(lines)
