"""leaderboard.tex: the leaderboard as the papers print it, one booktabs table per protocol.

Data sets are row groups, metrics are columns with $\\uparrow$/$\\downarrow$. Per column and data set, the best
measured value is bold and the second underlined, among complete methods only (the leaderboard's `rank`, which
compares methods scored on the same images); a method scored on fewer images is marked with * and not ranked.
Reported rows (published numbers measured under the table's protocol) follow each group, marked with a dagger
and their source table, never ranked. Decimals per metric are the papers' (DECIMALS); a reported value is
printed at its paper table's own precision (D3SR's NIQE with 3), so no precision is invented or dropped.
"""

from __future__ import annotations

import math
import re

import pandas as pd
from srdistill.core.iqa.metrics import metric_info
from srdistill.evaluate.render.leaderboard_md import DISPLAY, _metric_order, reported_for

# As the four papers print them: PSNR, FID and MUSIQ 2 (StrSR prints MUSIQ with 4; D3SR NIQE with 3), the rest 4.
DECIMALS = {"psnry": 2, "psnr": 2, "fid": 2, "musiq": 2}
DEFAULT_DECIMALS = 4
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "|": r"\textbar{}"}
_UNICODE = {"²": r"$^2$", "−": "-", "–": "--", "Δ": r"$\Delta$"}


def escape(text: str) -> str:
    """Plain text -> LaTeX source that prints it (pdflatex's default input has no Unicode beyond Latin-1)."""
    out = "".join(_SPECIAL.get(ch, ch) for ch in str(text))
    for ch, tex in _UNICODE.items():
        out = out.replace(ch, tex)
    return out


def decimals(metric: str) -> int:
    return DECIMALS.get(metric, DEFAULT_DECIMALS)


def format_tex(metric: str, value: float, places: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    return f"{value:.{decimals(metric) if places is None else places}f}"


def _places(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else DEFAULT_DECIMALS


def printed_places(metric: str, values: pd.Series) -> int:
    """The decimals a paper table prints a metric with: the most any of its values needs (a table of 24 values
    has a non-zero last digit somewhere; 26.20 comes back as 26.2), and at least 2, as every paper prints."""
    needed = max((_places(v) for v in values if not pd.isna(v)), default=decimals(metric))
    return max(needed, min(2, decimals(metric)))


def column_header(metric: str) -> str:
    arrow = r"$\downarrow$" if metric_info(metric).lower_better else r"$\uparrow$"
    return escape(DISPLAY.get(metric, metric)) + arrow


def _measured_cell(metric: str, row) -> str:
    text = format_tex(metric, float(row["mean"]))
    if text == "--":
        return text
    if not bool(row["complete"]):
        return text + "$^{*}$"
    if pd.isna(row["rank"]):
        return text
    if int(row["rank"]) == 1:
        return rf"\textbf{{{text}}}"
    if int(row["rank"]) == 2:
        return rf"\underline{{{text}}}"
    return text


def _paper_tables(reported: pd.DataFrame | None, rep: pd.DataFrame):
    """(paper, table, metric) -> all its values in `reported`, for the tables `rep` draws on."""
    if rep.empty:
        return []
    keys = set(zip(rep["paper"], rep["table"], rep["metric"]))
    return [(key, group) for key, group in reported.groupby(["paper", "table", "metric"]) if key in keys]


def render_table(board: pd.DataFrame, protocol: str, reported: pd.DataFrame | None = None, *,
                 protocols: dict | None = None, label: str | None = None) -> str:
    """One `table` environment for one protocol: every data set of `board` under it as a row group."""
    part = board[board["protocol"] == protocol]
    proto = (protocols or {}).get(protocol)
    metrics = _metric_order(list(part["metric"].unique()), list(proto.metrics) if proto is not None else None)
    hashes = sorted(h for h in part["protocol_hash"].unique() if h)
    ncols = len(metrics) + 1
    body = []
    marks = {"dagger": False, "star": False}
    for dataset in sorted(part["dataset"].unique()):
        rows = part[part["dataset"] == dataset]
        if body:
            body.append(r"\midrule")
        body.append(rf"\multicolumn{{{ncols}}}{{l}}{{\textit{{{escape(dataset)}}}}} \\")
        for method in sorted(rows["method"].unique()):
            mine = rows[rows["method"] == method].set_index("metric")
            cells = [_measured_cell(m, mine.loc[m]) if m in mine.index else "--" for m in metrics]
            marks["star"] |= any(c.endswith("$^{*}$") for c in cells)
            body.append(escape(method) + " & " + " & ".join(cells) + r" \\")
        rep = reported_for(reported, dataset, protocol, metrics)
        places = {key: printed_places(key[2], group["value"]) for key, group in _paper_tables(reported, rep)}
        if not rep.empty:
            body.append(r"\addlinespace")
        for (paper, table, method), group in rep.groupby(["paper", "table", "method"], sort=True):
            values = group.set_index("metric")["value"]
            cells = [format_tex(m, float(values[m]), places[(paper, table, m)]) if m in values.index else "--"
                     for m in metrics]
            source = escape(f"{paper} {table}".replace("Table ", "Tab. "))
            body.append(rf"{escape(method)}$^\dagger$ {{\scriptsize({source})}} & " + " & ".join(cells) + r" \\")
            marks["dagger"] = True
    hash_text = ", ".join(r"\texttt{" + escape(h) + "}" for h in hashes)
    caption = (r"Protocol \texttt{" + escape(protocol) + "}" + (f" (hash {hash_text})" if hashes else "")
               + (f": {escape(proto.title)}" if proto is not None else "") + ". "
               + r"Best measured value per column and data set in \textbf{bold}, second \underline{underlined}, "
               "among methods scored on the same images.")
    if marks["star"]:
        caption += r" $^{*}$Scored on fewer images than the others, not ranked."
    if marks["dagger"]:
        caption += r" $^\dagger$Reported in the named paper table under this protocol, not ranked."
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}"]
    if label:
        lines.append(rf"\label{{{label}}}")
    wide = len(metrics) > 6
    if wide:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines += [rf"\begin{{tabular}}{{l{'r' * len(metrics)}}}", r"\toprule",
              "Method & " + " & ".join(column_header(m) for m in metrics) + r" \\", r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}" + ("}" if wide else ""), r"\end{table}"]
    return "\n".join(lines)


def render_leaderboard_tex(board: pd.DataFrame, reported: pd.DataFrame | None = None, *,
                           protocols: dict | None = None) -> str:
    """A complete document (pdflatex, booktabs, graphicx) with one table per protocol; each `table` environment
    can be pasted into a paper as is."""
    if "protocol" not in board.columns:
        board = board.assign(protocol="unrecorded", protocol_hash="")
    tables = [render_table(board, protocol, reported, protocols=protocols,
                           label="tab:" + re.sub(r"[^A-Za-z0-9]+", "-", str(protocol)))
              for protocol in sorted(board["protocol"].unique())]
    if not tables:
        tables = [r"No leaderboard rows."]
    return "\n".join([r"\documentclass{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
                      r"\usepackage{graphicx}", r"\begin{document}", "", "\n\n".join(tables), "", r"\end{document}", ""])
