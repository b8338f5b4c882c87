"""The transcribed paper tables: every value re-read from the papers' text, shapes, canonical ids and protocols."""

import csv
import re
from importlib import resources
from pathlib import Path

import pytest
from srdistill.evaluate.protocol import PRESETS, load_protocol
from srdistill.evaluate.reported import COLUMNS, canonical_method, counterparts, load_reported

ROOT = Path(__file__).resolve().parents[1]
# The papers sit in ../shared/papers beside the main checkout (two levels up from a worktree under wt/).
PAPERS = next((p for p in (ROOT / "shared" / "papers", ROOT.parent / "shared" / "papers", ROOT.parent.parent / "shared" / "papers")
               if (p / "d3sr.txt").is_file()), None)

# Per table: paper file, the text span holding it (start marker, occurrence, end marker), its value columns in
# printed order (None = not a quality metric), and its datasets: "rows" = one block of rows per dataset in this
# order, "cols" = datasets side by side on each line.
TABLES = {
    ("D3SR", "Table 1"): ("d3sr.txt", "Table 1: Quantitative", 1, "Table 2:",
                          ["psnry", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa"], "rows", ["RealSR", "DIV2K-val"]),
    ("D3SR", "Table 2"): ("d3sr.txt", "Table 2: Quantitative", 1, "4.1 Experimental", ["niqe", "musiq", "maniqa"], "rows", ["RealSet65"]),
    ("D3SR", "Table 3"): ("d3sr.txt", "Table 3: Quantitative", 1, "Quantitative Results.",
                          ["psnry", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa"], "rows", ["RealSR", "DIV2K-val"]),
    ("CTSR", "Table 2"): ("ctsr.txt", "Datasets\tMethod", 1, "Table 2. Quantitative",
                          ["psnr", "ssim", "lpips-vgg", "dists", "fid", "niqe", "musiq", "maniqa-pipal", "clipiqa"], "rows",
                          ["DRealSR", "RealSR", "DIV2K-val"]),
    ("CTSR", "Table 3"): ("ctsr.txt", "Table 2. Quantitative", 1, "Table 3. Quantitative",
                          ["psnr", "ssim", "lpips-vgg", "dists", "fid", "niqe", "musiq", "maniqa-pipal", "clipiqa"], "rows",
                          ["DRealSR", "RealSR", "DIV2K-val"]),
    ("StrSR", "Table 1"): ("strsr.txt", "Type Methods PSNR", 1, "Table 1: Quantitative",
                           ["psnr", "ssim", "lpips", "dists", "niqe", "maniqa", "musiq", "qalign", "qualiclip"], "rows", ["DIV2K-val"]),
    ("StrSR", "Table 2"): ("strsr.txt", "Type Methods PSNR", 2, "Table 2: Quantitative",
                           ["psnr", "ssim", "lpips", "dists", "niqe", "maniqa", "musiq", "qalign", "qualiclip"], "rows", ["RealSR"]),
    ("StrSR", "Table 3"): ("strsr.txt", "Type Methods NIQE", 1, "Table 3: Comparison", ["niqe", "maniqa", "musiq", "qalign"], "rows", ["RealLQ250"]),
    ("VPD-SR", "Table I"): ("vpdsr.txt", "TABLE I\n", 1, "mathcal{L}_{adv}", ["lpips", "clipiqa", "musiq", None, None], "rows", ["ImageNet-Test"]),
    ("VPD-SR", "Table II"): ("vpdsr.txt", "TABLE II\n", 1, "TABLE III", ["clipiqa", "musiq"], "cols", ["RealSR", "RealSet65"]),
    ("VPD-SR", "Table III"): ("vpdsr.txt", "TABLE III\n", 1, "the best CLIPIQA", ["clipiqa", "musiq", "maniqa", "niqe"], "cols",
                              ["StableSR-RealSR", "StableSR-DRealSR"]),
}

# Methods printed in only some of a table's dataset blocks: the blocks they appear in, in order.
PARTIAL = {("CTSR", "Table 2", "CTSR (t=0.8)"): ["DRealSR"], ("CTSR", "Table 2", "CTSR (t=0.2)"): ["RealSR", "DIV2K-val"]}


def normalized(paper: str) -> str:
    """The paper text with extraction artefacts undone: D3SR's footnote mark, LaTeX dollars, bold/underline marks."""
    text = (PAPERS / paper).read_text()
    text = text.replace("222Trained on public datasets.", "²").replace("22footnotemark: 2", "²").replace("$", "")
    return re.sub(r"</?u>|\*\*", "", text)


def table_text(paper: str, start: str, nth: int, end: str) -> str:
    text = normalized(paper)
    at = -1
    for _ in range(nth):
        at = text.index(start, at + 1)
    return text[at:text.index(end, at + 1)]


def printed_rows() -> list[dict]:
    with resources.files("srdistill.evaluate").joinpath("data/reported.csv").open("r") as f:
        return list(csv.DictReader(f))


def method_lines(block: str, method: str) -> list[list[str]]:
    """The numbers after `method` on each line of the block that prints that method (citation/(ours) skipped)."""
    found = []
    pattern = re.compile(r"(?:^|\s)" + re.escape(method) + r"(?:\s*\[[^\]]+\])?(?:\s*\(ours\))?\s+(?=\d)")
    for line in block.splitlines():
        match = pattern.search(line)
        if match:
            found.append(re.findall(r"\d+\.\d+", line[match.end():]))
    return found


@pytest.mark.skipif(PAPERS is None, reason="the papers' text (../shared/papers) is not beside this checkout")
def test_every_reported_value_is_printed_at_its_place_in_the_paper():
    rows = printed_rows()
    assert rows and {(r["paper"], r["table"]) for r in rows} == set(TABLES)
    checked = 0
    for (paper, table), (file, start, nth, end, columns, layout, datasets) in TABLES.items():
        block = table_text(file, start, nth, end)
        mine = [r for r in rows if (r["paper"], r["table"]) == (paper, table)]
        for row in mine:
            lines = method_lines(block, row["method_printed"])
            assert lines, f"{paper} {table}: no line prints {row['method_printed']!r}"
            d = datasets.index(row["dataset"])
            if layout == "rows":
                blocks = PARTIAL.get((paper, table, row["method_printed"]), datasets)
                assert len(lines) == len(blocks), f"{paper} {table}: {row['method_printed']!r} printed {len(lines)} times"
                line = lines[blocks.index(row["dataset"])]
                position = columns.index(row["metric"])
            else:
                line = lines[0]
                position = d * len(columns) + columns.index(row["metric"])
            assert line[position] == row["value"], f"{paper} {table} {row['dataset']} {row['method_printed']} {row['metric']}"
            checked += 1
    assert checked == len(rows) == 974


def test_ctsr_one_row_per_dataset_block_sits_in_the_right_dataset():
    # CTSR Table 2 prints t=0.8 on DRealSR and t=0.2 on RealSR and DIV2K-Val: the dataset comes from the block
    rep = load_reported()
    ctsr2 = rep[(rep["paper"] == "CTSR") & (rep["table"] == "Table 2") & rep["method"].str.startswith("CTSR")]
    assert sorted(set(zip(ctsr2["dataset"], ctsr2["method"]))) == [
        ("DIV2K-val", "CTSR (t=0.2)"), ("DRealSR", "CTSR (t=0.8)"), ("RealSR", "CTSR (t=0.2)")]
    key = rep.set_index(["paper", "table", "dataset", "method", "metric"])["value"]
    assert key[("CTSR", "Table 2", "DIV2K-val", "CTSR (t=0.2)", "fid")] == 24.75
    assert key[("CTSR", "Table 2", "DRealSR", "CTSR (t=0.8)", "psnr")] == 28.47


def test_shape_ids_and_protocols_are_consistent():
    rep = load_reported()
    assert list(rep.columns) == COLUMNS and rep["value"].notna().all()
    assert not rep.duplicated(["paper", "table", "dataset", "method_printed", "metric"]).any()
    assert (rep["method"] == rep["method_printed"].map(canonical_method)).all()
    for name, rows in rep.groupby("protocol"):
        assert name in PRESETS
        proto = load_protocol(name)
        assert set(rows["dataset"]) <= set(proto.datasets)
        for metric, options in set(zip(rows["metric"], rows["metric_options"])):
            assert options == proto.metrics[metric].options_text()
    assert set(zip(rep["paper"], rep["protocol"])) == {("D3SR", "d3sr"), ("CTSR", "ctsr"), ("StrSR", "strsr"), ("VPD-SR", "vpdsr")}


def test_ctsr_rows_carry_the_metrics_ctsr_states_and_no_colour_space():
    rep = load_reported()
    ctsr = rep[rep["paper"] == "CTSR"]
    assert set(ctsr["table"]) == {"Table 2", "Table 3"}
    assert set(ctsr["metric"]) == {"psnr", "ssim", "lpips-vgg", "dists", "fid", "niqe", "musiq", "maniqa-pipal", "clipiqa"}
    psnr = ctsr[ctsr["metric"] == "psnr"]["metric_options"].unique()
    assert list(psnr) == ["crop_border=unspecified;test_y_channel=unspecified"]


@pytest.mark.parametrize("printed, canonical", [("OSDiff", "OSEDiff"), ("OSEDiff-s1", "OSEDiff"), ("OSEDiff-1", "OSEDiff"),
                                                ("OSEDiff [wu2024osediff]", "OSEDiff"), ("RealESRGAN [55]", "Real-ESRGAN"),
                                                ("ADDSR-s4", "ADDSR-s4"), ("ADDSR-s1", "ADDSR-s1"), ("CTSR (t=0.0) (ours)", "CTSR (t=0.0)")])
def test_aliases_join_one_model_and_keep_step_variants_apart(printed, canonical):
    assert canonical_method(printed) == canonical


def test_one_model_under_two_protocols_stays_two_rows():
    rep = load_reported()
    ose = rep[(rep["method"] == "OSEDiff") & (rep["dataset"] == "DIV2K-val") & rep["metric"].str.startswith("lpips")]
    assert sorted(zip(ose["protocol"], ose["metric"], ose["value"])) == [
        ("ctsr", "lpips-vgg", 0.3058), ("d3sr", "lpips", 0.3447), ("strsr", "lpips", 0.3972)]


@pytest.mark.parametrize("recipe, name, expected", [
    ("ctsr", "mine@t=0.2", ["CTSR (t=0.2)"]), ("ctsr", "mine", ["CTSR (t=0.0)", "CTSR (t=0.2)", "CTSR (t=0.8)"]),
    ("d3sr", "mine", ["D3SR", "D3SR (public data)"]), ("vpdsr", "mine", ["VPD-SR"]), ("strsr", "mine", ["StrSR-Z", "StrSR-F"])])
def test_a_trained_student_reproduces_its_recipes_paper_method(tmp_path, recipe, name, expected):
    import json

    from srdistill.evaluate.methods.registry import TrainedStudent, builtin_method

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "student.json").write_text(json.dumps({"recipe": recipe}))
    assert counterparts(TrainedStudent(name, tmp_path)) == expected
    assert set(expected) <= set(load_reported()["method"])  # every id names transcribed rows
    assert counterparts(builtin_method("bicubic", "cpu", 0)) == []
    assert counterparts(builtin_method("realesrgan-x4plus", "cpu", 0)) == ["Real-ESRGAN"]
