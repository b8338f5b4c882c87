"""leaderboard.tex: one booktabs table per protocol, data sets as row groups, best bold and second underlined per
column among methods scored on the same images (checked against means computed here from the raw values),
reported rows daggered with their source, the papers' decimals; it compiles with pdflatex."""

import re
import subprocess

import pandas as pd
import pytest
from helpers.binaries import require_binary
from srdistill.evaluate.cli import main
from srdistill.evaluate.leaderboard import build_leaderboard
from srdistill.evaluate.render.leaderboard_tex import render_leaderboard_tex

# protocol -> dataset -> method -> metric -> per-image values. "partial" has 2 of 3 images and the best mean.
RAW = {
    "p1": {
        "setA": {"alpha": {"psnry": [30.0, 31.0, 32.0], "ssim": [0.80, 0.81, 0.82], "niqe": [5.0, 5.5, 6.0]},
                 "beta": {"psnry": [29.0, 29.5, 30.0], "ssim": [0.85, 0.86, 0.87], "niqe": [4.0, 4.2, 4.4]},
                 "my_net": {"psnry": [28.0, 28.1, 28.2], "ssim": [0.90, 0.91, 0.92], "niqe": [7.0, 7.0, 7.0]},
                 "partial": {"psnry": [40.0, 40.0], "ssim": [0.99, 0.99], "niqe": [1.0, 1.0]}},
        "setB": {"alpha": {"psnry": [20.0, 20.0, 20.0], "ssim": [0.5, 0.5, 0.5], "niqe": [3.0, 3.0, 3.0]},
                 "beta": {"psnry": [22.0, 22.5, 23.0], "ssim": [0.6, 0.6, 0.6], "niqe": [9.0, 9.0, 9.0]},
                 "my_net": {"psnry": [21.0, 21.0, 21.0], "ssim": [0.7, 0.7, 0.7], "niqe": [6.0, 6.0, 6.0]}},
    },
    "p2": {
        "setA": {"alpha": {"psnry": [26.0, 26.0, 26.0], "lpips": [0.30, 0.30, 0.30]},
                 "beta": {"psnry": [27.0, 27.0, 27.0], "lpips": [0.20, 0.25, 0.30]},
                 "my_net": {"psnry": [25.0, 25.0, 25.0], "lpips": [0.10, 0.10, 0.10]}},
    },
}
LOWER = {"psnry": False, "ssim": False, "niqe": True, "lpips": True}
LABELS = {"PSNR": "psnry", "SSIM": "ssim", "NIQE": "niqe", "LPIPS": "lpips"}


def raw_results() -> pd.DataFrame:
    rows = []
    for protocol, sets in RAW.items():
        for dataset, methods in sets.items():
            for method, metrics in methods.items():
                for metric, values in metrics.items():
                    rows += [{"method": method, "dataset": dataset, "image": f"i{k}", "metric": metric, "value": v,
                              "status": "ok", "protocol": protocol, "protocol_hash": f"{protocol}hash",
                              "metric_version": "pyiqa-x", "dataset_meta": "{}"} for k, v in enumerate(values)]
    return pd.DataFrame(rows)


def reported() -> pd.DataFrame:
    # Better than every measured value: a reported row must never take the bold or the underline.
    rows = [("PaperX", "Table 9", "p1", "setA", "Base_Net", m, v) for m, v in
            (("psnry", 50.0), ("ssim", 0.999), ("niqe", 0.123))]
    rows += [("PaperX", "Table 9", "p1", "setA", "Other", "psnry", 45.0)]
    return pd.DataFrame([{"paper": p, "table": t, "protocol": pr, "dataset": d, "method_printed": m, "method": m,
                          "metric": k, "metric_options": "", "value": v} for p, t, pr, d, m, k, v in rows])


def expected_marks() -> dict:
    """(protocol, dataset, method, metric) -> 'bold' | 'underline' | '': by mean over images, among methods that
    have every image of their group, best first in the metric's direction (no ties in RAW)."""
    marks = {}
    for protocol, sets in RAW.items():
        for dataset, methods in sets.items():
            for metric in LOWER:
                full = max((len(m[metric]) for m in methods.values() if metric in m), default=0)
                means = {name: sum(m[metric]) / len(m[metric]) for name, m in methods.items()
                         if metric in m and len(m[metric]) == full}
                order = sorted(means, key=lambda name: means[name], reverse=not LOWER[metric])
                for name, m in methods.items():
                    if metric in m:
                        mark = "bold" if name == order[0] else "underline" if name == order[1] else ""
                        marks[(protocol, dataset, name, metric)] = mark
    return marks


def parse_tables(tex: str) -> dict:
    """protocol -> {caption, columns (metric names), rows: [(dataset, label, [cells])]} from the LaTeX source."""
    tables = {}
    for body in re.findall(r"\\begin\{table\}.*?\\end\{table\}", tex, re.S):
        caption = re.search(r"\\caption\{(.*)\}\n", body).group(1)
        protocol = re.search(r"Protocol \\texttt\{([^}]*)\}", caption).group(1)
        lines = [line.strip() for line in body.splitlines()]
        head = next(line for line in lines if line.startswith("Method &"))
        columns = [LABELS[re.match(r"([A-Z]+)\$", c.strip()).group(1)] for c in head.removesuffix(r"\\").split("&")[1:]]
        rows, dataset = [], None
        for line in lines:
            group = re.match(r"\\multicolumn\{\d+\}\{l\}\{\\textit\{(.*)\}\} \\\\$", line)
            if group:
                dataset = group.group(1)
            elif dataset and line.endswith(r"\\") and "&" in line:
                cells = [c.strip() for c in line.removesuffix(r"\\").split("&")]
                rows.append((dataset, cells[0], cells[1:]))
        tables[protocol] = {"caption": caption, "columns": columns, "rows": rows}
    return tables


def mark_of(cell: str) -> str:
    if cell.startswith(r"\textbf{"):
        return "bold"
    if cell.startswith(r"\underline{"):
        return "underline"
    return ""


def number(cell: str) -> str:
    return re.search(r"-?\d+\.\d+", cell).group(0)


@pytest.fixture
def tex() -> str:
    return render_leaderboard_tex(build_leaderboard(raw_results()), reported())


def test_bold_and_underline_sit_on_the_best_and_second_mean_of_each_column(tex):
    tables = parse_tables(tex)
    assert set(tables) == {"p1", "p2"}
    expected = expected_marks()
    seen = 0
    for protocol, table in tables.items():
        for dataset, label, cells in table["rows"]:
            if "dagger" in label:
                continue
            method = label.replace(r"\_", "_")
            for metric, cell in zip(table["columns"], cells):
                if cell == "--":
                    assert metric not in RAW[protocol][dataset][method]
                    continue
                assert mark_of(cell) == expected[(protocol, dataset, method, metric)], (protocol, dataset, method, metric, cell)
                seen += 1
    assert seen == sum(len(m) for sets in RAW.values() for methods in sets.values() for m in methods.values())


def test_values_have_the_papers_decimals_and_the_partial_method_is_starred_not_ranked(tex):
    table = parse_tables(tex)["p1"]
    rows = {(d, label): dict(zip(table["columns"], cells)) for d, label, cells in table["rows"]}
    alpha = rows[("setA", "alpha")]
    assert number(alpha["psnry"]) == "31.00" and number(alpha["ssim"]) == "0.8100" and number(alpha["niqe"]) == "5.5000"
    partial = rows[("setA", "partial")]
    assert partial["psnry"] == "40.00$^{*}$" and partial["ssim"] == "0.9900$^{*}$"
    assert "Scored on fewer images" in table["caption"]
    assert ("setB", "partial") not in rows


def test_reported_rows_are_daggered_with_their_source_only_under_their_protocol(tex):
    tables = parse_tables(tex)
    p1 = [(d, label, cells) for d, label, cells in tables["p1"]["rows"] if "dagger" in label]
    assert [(d, label) for d, label, _ in p1] == [
        ("setA", r"Base\_Net$^\dagger$ {\scriptsize(PaperX Tab. 9)}"), ("setA", r"Other$^\dagger$ {\scriptsize(PaperX Tab. 9)}")]
    assert p1[0][2] == ["50.00", "0.999", "0.123"]  # printed at the table's own precision, never marked
    assert p1[1][2] == ["45.00", "--", "--"]
    assert not any("dagger" in label for _, label, _ in tables["p2"]["rows"])
    assert "$^\\dagger$Reported in the named paper table" in tables["p1"]["caption"]


def test_caption_names_protocol_and_hash_and_headers_carry_directions(tex):
    tables = parse_tables(tex)
    assert r"Protocol \texttt{p2} (hash \texttt{p2hash})" in tables["p2"]["caption"]
    assert tables["p2"]["columns"] == ["psnry", "lpips"]
    assert r"Method & PSNR$\uparrow$ & LPIPS$\downarrow$ \\" in tex
    assert tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2 and r"\usepackage{booktabs}" in tex


def _pdflatex(tex_path):
    binary = require_binary("pdflatex")
    proc = subprocess.run([binary, "-interaction=nonstopmode", "-halt-on-error", tex_path.name], cwd=tex_path.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    pdf = tex_path.with_suffix(".pdf")
    assert pdf.read_bytes().startswith(b"%PDF")


@pytest.mark.slow
def test_the_paper_presets_tables_with_their_reported_rows_compile(tmp_path):
    from srdistill.evaluate.protocol import load_protocol
    from srdistill.evaluate.reported import load_reported

    results = raw_results()
    results["protocol"] = results["protocol"].map({"p1": "d3sr", "p2": "ctsr"})
    results["dataset"] = results["dataset"].map({"setA": "RealSR", "setB": "DRealSR"})
    results["method"] = results["method"].replace({"my_net": "my_net&co #1 50% {x}~^<y>|\\ café"})  # LaTeX specials
    board = build_leaderboard(results)
    path = tmp_path / "board.tex"
    path.write_text(render_leaderboard_tex(board, load_reported(), protocols={p: load_protocol(p) for p in ("d3sr", "ctsr")}))
    _pdflatex(path)


@pytest.mark.slow
def test_cli_latex_of_two_protocols_compiles(tmp_path, pair_dirs, offline_weights):
    hr, lr = pair_dirs
    crop = tmp_path / "crop4.yaml"
    crop.write_text("name: crop4\ntitle: PSNR with a 4-pixel border crop\nsource: this test\nscale: 4\nopen: true\n"
                    "datasets: {}\nmetrics:\n  psnry: {color_space: ycbcr, crop_border: 4}\n")
    out = tmp_path / "o"
    common = ["leaderboard", "--methods", "bicubic,lanczos", "--hr", str(hr), "--lr", str(lr), "--metrics", "psnry",
              "--out", str(out), "--quiet"]
    assert main(common) == 0
    assert main(common + ["--protocol", str(crop), "--latex", str(tmp_path / "t" / "board.tex")]) == 0
    tables = parse_tables((tmp_path / "t" / "board.tex").read_text())
    assert set(tables) == {"srdistill", "crop4"}
    board = pd.read_parquet(out / "leaderboard.parquet")
    for protocol, table in tables.items():
        means = board[board["protocol"] == protocol].set_index("method")["mean"]
        best = means.idxmax()
        cells = {label: cells[0] for _, label, cells in table["rows"]}
        assert mark_of(cells[best]) == "bold" and mark_of(cells[means.idxmin()]) == "underline"
        assert number(cells[best]) == f"{means[best]:.2f}"
    _pdflatex(tmp_path / "t" / "board.tex")
