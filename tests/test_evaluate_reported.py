"""The transcribed paper tables: every value re-read from the papers' text, shapes, canonical ids and protocols."""

import csv
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml
from srdistill.evaluate.protocol import PRESETS, load_protocol
from srdistill.evaluate.reported import (COLUMNS, NO_SETTING, canonical_method, counterparts, load_reported, parse_setting,
                                        row_method, setting_holds)

ROOT = Path(__file__).resolve().parents[1]
# The papers sit in ../shared/papers beside the main checkout (two levels up from a worktree under wt/).
PAPERS = next((p for p in (ROOT / "shared" / "papers", ROOT.parent / "shared" / "papers", ROOT.parent.parent / "shared" / "papers")
               if (p / "d3sr.txt").is_file()), None)

ALL9 = ["psnr", "ssim", "lpips-vgg", "dists", "fid", "niqe", "musiq", "maniqa-pipal", "clipiqa"]

# Per table: paper file, the text span holding it (start marker, occurrence, end marker), its value columns in
# printed order (None = not a quality metric), the layout and its datasets:
# - "rows": one block of rows per dataset in this order, each row found by its printed method name;
# - "cols": datasets side by side on each line;
# - "groups": rows labelled by a number under a header (method_printed `HEADER=LABEL`, e.g. `t=0.4` under
#   "Timestep t", `λ_{rn}=0.6`), possibly several (label, values...) groups side by side on each line: a value is
#   found by position (its group, the line whose label in that group is LABEL, its column), since in CTSR Table 6
#   the three full-model rows print the same numbers and only their place tells them apart;
# - "ticks": rows marked by ticks under the loss terms (VPD-SR Table V): the row with n ticks is
#   method_printed's n terms ("L_distill + L_HFP"); columns are (dataset, metric) in printed order.
TABLES = {
    ("D3SR", "Table 1"): ("d3sr.txt", "Table 1: Quantitative", 1, "Table 2:",
                          ["psnry", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa"], "rows", ["RealSR", "DIV2K-val"]),
    ("D3SR", "Table 2"): ("d3sr.txt", "Table 2: Quantitative", 1, "4.1 Experimental", ["niqe", "musiq", "maniqa"], "rows", ["RealSet65"]),
    ("D3SR", "Table 3"): ("d3sr.txt", "Table 3: Quantitative", 1, "Quantitative Results.",
                          ["psnry", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa"], "rows", ["RealSR", "DIV2K-val"]),
    ("D3SR", "Table 5"): ("d3sr.txt", "Table 5: Impact", 1, "Table 6: Performance", ["lpips", "niqe", "musiq", "maniqa"], "rows", ["RealSR"]),
    ("D3SR", "Table 6"): ("d3sr.txt", "Table 6: Performance", 1, "Diffusion Discriminator. We", ["lpips", "niqe", "musiq", "maniqa"],
                          "rows", ["RealSR"]),
    ("CTSR", "Table 2"): ("ctsr.txt", "Datasets\tMethod", 1, "Table 2. Quantitative", ALL9, "rows", ["DRealSR", "RealSR", "DIV2K-val"]),
    ("CTSR", "Table 3"): ("ctsr.txt", "Table 2. Quantitative", 1, "Table 3. Quantitative", ALL9, "rows", ["DRealSR", "RealSR", "DIV2K-val"]),
    ("CTSR", "Table 4"): ("ctsr.txt", "Loss type\tPSNR", 1, "Table 4. Ablation", ["psnr", "ssim", "lpips-vgg", "clipiqa", "maniqa-pipal"],
                          "rows", ["RealSR"]),
    ("CTSR", "Table 5"): ("ctsr.txt", "Teacher \\mathcal{T}_{fl}\tPSNR", 1, "Table 5. Results",
                          ["psnr", "ssim", "lpips-vgg", "clipiqa", "maniqa-pipal"], "rows", ["RealSR"]),
    ("CTSR", "Table 6"): ("ctsr.txt", "λ_{rn}\tPSNR", 1, "Table 6. Ablation", ["psnr", "lpips-vgg"], "groups", ["RealSR"]),
    ("CTSR", "Table 7"): ("ctsr.txt", "Timestep t\tPSNR \\uparrow\tLPIPS", 1, "Table 7. Results", ["psnr", "lpips-vgg", "niqe", "musiq"],
                          "groups", ["DIV2K-val"]),
    ("CTSR", "Table 10"): ("ctsr.txt", "Timestep t\tPSNR \\uparrow\tSSIM", 1, "Table 10. More", ALL9, "groups", ["DIV2K-val"]),
    ("CTSR", "Table 11"): ("ctsr.txt", "Timestep t\tPSNR \\uparrow\tSSIM", 2, "Table 11. More", ALL9, "groups", ["RealSR"]),
    ("CTSR", "Table 12"): ("ctsr.txt", "Timestep t\tPSNR \\uparrow\tSSIM", 3, "Table 12. More", ALL9, "groups", ["DRealSR"]),
    ("StrSR", "Table 1"): ("strsr.txt", "Type Methods PSNR", 1, "Table 1: Quantitative",
                           ["psnr", "ssim", "lpips", "dists", "niqe", "maniqa", "musiq", "qalign", "qualiclip"], "rows", ["DIV2K-val"]),
    ("StrSR", "Table 2"): ("strsr.txt", "Type Methods PSNR", 2, "Table 2: Quantitative",
                           ["psnr", "ssim", "lpips", "dists", "niqe", "maniqa", "musiq", "qalign", "qualiclip"], "rows", ["RealSR"]),
    ("StrSR", "Table 3"): ("strsr.txt", "Type Methods NIQE", 1, "Table 3: Comparison", ["niqe", "maniqa", "musiq", "qalign"], "rows", ["RealLQ250"]),
    ("StrSR", "Table 4"): ("strsr.txt", "Methods MAN. MUS. QAli.", 1, "Table 4: Ablation", ["maniqa", "musiq", "qalign"], "rows", ["DIV2K-val"]),
    ("VPD-SR", "Table I"): ("vpdsr.txt", "TABLE I\n", 1, "mathcal{L}_{adv}", ["lpips", "clipiqa", "musiq", None, None], "rows", ["ImageNet-Test"]),
    ("VPD-SR", "Table II"): ("vpdsr.txt", "TABLE II\n", 1, "TABLE III", ["clipiqa", "musiq"], "cols", ["RealSR", "RealSet65"]),
    ("VPD-SR", "Table III"): ("vpdsr.txt", "TABLE III\n", 1, "the best CLIPIQA", ["clipiqa", "musiq", "maniqa", "niqe"], "cols",
                              ["StableSR-RealSR", "StableSR-DRealSR"]),
    ("VPD-SR", "Table V"): ("vpdsr.txt", "TABLE V\n", 1, "parameters of different SR methods",
                            [("ImageNet-Test", "lpips"), ("ImageNet-Test", "clipiqa"), ("ImageNet-Test", "musiq"), ("RealSR", "clipiqa"),
                             ("RealSR", "musiq"), ("RealSet65", "clipiqa"), ("RealSet65", "musiq")], "ticks", ["ImageNet-Test", "RealSR", "RealSet65"]),
}
TICK = re.compile(r"√|✓|\\checkmark")

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


def grouped_value(block: str, columns: list, row: dict) -> str:
    """A "groups" table's value: the group under HEADER, the line whose label there is LABEL, the metric's column."""
    header, label = row["method_printed"].split("=")
    head, *lines = [line.split("\t") for line in block.splitlines() if line.strip()]
    width = 1 + len(columns)
    group = next(g for g in range(len(head) // width) if head[g * width] == header or head[g * width].endswith(" " + header))
    mine = [line for line in lines if len(line) == len(head) and line[group * width] == label]
    assert len(mine) == 1, f"{row['table']}: {len(mine)} lines label {header}={label}"
    return mine[0][group * width + 1 + columns.index(row["metric"])].strip()


def ticked_value(block: str, columns: list, row: dict) -> str:
    """A "ticks" table's value: the line with one tick per loss term of the row, the (dataset, metric) column."""
    terms = row["method_printed"].split(" + ")
    for term in terms:
        assert "\\mathcal{L}_{" + term.split("_", 1)[1] + "}" in block, f"no loss column {term}"
    lines = [line for line in block.splitlines() if TICK.search(line) and re.search(r"\d+\.\d+", line)]
    mine = [line for line in lines if len(TICK.findall(line)) == len(terms)]
    assert len(mine) == 1, f"{row['table']}: {len(mine)} lines tick {len(terms)} terms"
    return re.findall(r"\d+\.\d+", mine[0])[columns.index((row["dataset"], row["metric"]))]


@pytest.mark.skipif(PAPERS is None, reason="the papers' text (../shared/papers) is not beside this checkout")
def test_every_reported_value_is_printed_at_its_place_in_the_paper():
    rows = printed_rows()
    assert rows and {(r["paper"], r["table"]) for r in rows} == set(TABLES)
    checked = 0
    for (paper, table), (file, start, nth, end, columns, layout, datasets) in TABLES.items():
        block = table_text(file, start, nth, end)
        mine = [r for r in rows if (r["paper"], r["table"]) == (paper, table)]
        for row in mine:
            assert row["dataset"] in datasets, f"{paper} {table}: dataset {row['dataset']}"
            if layout == "groups":
                value = grouped_value(block, columns, row)
            elif layout == "ticks":
                value = ticked_value(block, columns, row)
            else:
                lines = method_lines(block, row["method_printed"])
                assert lines, f"{paper} {table}: no line prints {row['method_printed']!r}"
                if layout == "rows":
                    blocks = PARTIAL.get((paper, table, row["method_printed"]), datasets)
                    assert len(lines) == len(blocks), f"{paper} {table}: {row['method_printed']!r} printed {len(lines)} times"
                    line = lines[blocks.index(row["dataset"])]
                    position = columns.index(row["metric"])
                else:
                    line = lines[0]
                    position = datasets.index(row["dataset"]) * len(columns) + columns.index(row["metric"])
                value = line[position]
            assert value == row["value"], f"{paper} {table} {row['dataset']} {row['method_printed']} {row['metric']}"
            checked += 1
    assert checked == len(rows) == 1293


@pytest.mark.parametrize("paper, table, count", [
    ("D3SR", "Table 5", 20), ("D3SR", "Table 6", 20), ("StrSR", "Table 4", 15), ("VPD-SR", "Table V", 28),
    ("CTSR", "Table 4", 10), ("CTSR", "Table 5", 10), ("CTSR", "Table 6", 30), ("CTSR", "Table 7", 24),
    ("CTSR", "Table 10", 54), ("CTSR", "Table 11", 54), ("CTSR", "Table 12", 54)])
def test_each_ablation_and_sweep_table_is_whole(paper, table, count):
    # rows x value columns as printed: e.g. D3SR Table 5 is 5 losses x 4 metrics, CTSR Table 10 six t x nine metrics
    rep = load_reported()
    assert ((rep["paper"] == paper) & (rep["table"] == table)).sum() == count


def test_ablation_values_at_known_places():
    # read by eye from the papers' tables
    key = load_reported().set_index(["paper", "table", "dataset", "method", "metric"])["value"]
    assert key[("D3SR", "Table 6", "RealSR", "D3SR (discriminator: SD 2.1)", "lpips")] == 0.3166
    assert key[("D3SR", "Table 5", "RealSR", "D3SR (loss: MSE)", "maniqa")] == 0.5457
    assert key[("StrSR", "Table 4", "DIV2K-val", "StrSR (w/o VLM)", "musiq")] == 62.093
    assert key[("VPD-SR", "Table V", "RealSet65", "VPD-SR (L_distill + L_HFP)", "musiq")] == 64.5043
    assert key[("VPD-SR", "Table V", "ImageNet-Test", "VPD-SR (L_distill)", "lpips")] == 0.2321
    assert key[("CTSR", "Table 6", "RealSR", "CTSR (γ_time=6.5)", "psnr")] == 27.07
    assert key[("CTSR", "Table 6", "RealSR", "CTSR (λ_fl=1.6)", "lpips-vgg")] == 0.3377
    assert key[("CTSR", "Table 11", "RealSR", "CTSR (t=0.4)", "fid")] == 134.38
    assert key[("CTSR", "Table 12", "DRealSR", "CTSR (t=0.2)", "dists")] == 0.1402
    assert key[("CTSR", "Table 7", "DIV2K-val", "CTSR (t=1.0)", "musiq")] == 67.96


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
    assert not rep.duplicated(["paper", "table", "dataset", "method", "metric"]).any()  # one reported row per id in a table
    assert all(m == row_method(p, t, printed) for p, t, printed, m in zip(rep["paper"], rep["table"], rep["method_printed"], rep["method"]))
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
    assert set(ctsr["table"]) == {"Table 2", "Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Table 10", "Table 11", "Table 12"}
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


def test_unstated_metric_variants_are_unspecified_in_rows_and_protocols():
    # CTSR and VPD-SR print CLIPIQA, StrSR QualiCLIP, without saying whether the "+" variant was run
    rep = load_reported()
    for paper, metric in (("CTSR", "clipiqa"), ("VPD-SR", "clipiqa"), ("StrSR", "qualiclip")):
        rows = rep[(rep["paper"] == paper) & (rep["metric"] == metric)]
        assert len(rows) and set(rows["metric_options"]) == {"model_type=unspecified"}
    assert "clipiqa.model_type" in load_protocol("ctsr").unspecified() and "clipiqa.model_type" in load_protocol("vpdsr").unspecified()
    assert "qualiclip.model_type" in load_protocol("strsr").unspecified()
    assert load_protocol("ctsr").metrics["clipiqa"].create_options == {}  # runs pyiqa's clipiqa, not clipiqa+
    vpdsr = load_protocol("vpdsr")
    for dataset in ("RealSR", "RealSet65"):
        assert vpdsr.datasets[dataset].images == "full" and "ResShift" in vpdsr.datasets[dataset].note
        assert "arXiv:2307.12348" in vpdsr.datasets[dataset].note


RECIPE_OF = {"D3SR": "d3sr", "CTSR": "ctsr", "StrSR": "strsr", "VPD-SR": "vpdsr"}
# String-valued recipe settings and the values the recipes accept (d3sr.py, strsr.py).
CHOICES = {"discriminator": {"sdxl", "sd21"}, "condition": {"vlm", "text", "none"}, "base": {"zimage", "flux2"},
           "semantic_encoder": {"qwen3vl"}}


def packaged(recipe: str) -> dict:
    from srdistill.training.config import packaged_config

    return yaml.safe_load(packaged_config(recipe).read_text())["recipe"]


def test_settings_name_the_recipes_real_settings_and_knobs():
    rep = load_reported()
    linked = rep[~rep["setting"].isin(["", NO_SETTING])]
    assert set(linked["paper"]) == set(RECIPE_OF)
    for paper, setting in set(zip(linked["paper"], linked["setting"])):
        shipped = packaged(RECIPE_OF[paper])
        for key, value in parse_setting(setting).items():
            if key.startswith("recipe."):
                name = key[len("recipe."):]
                assert name in shipped, f"{paper}: {key} is no setting of the recipe"
                if isinstance(shipped[name], str):
                    assert value in CHOICES[name], f"{paper}: {key}={value}"
                else:
                    float(value)
            else:
                assert paper == "CTSR" and key == "t" and 0.0 <= float(value) <= 1.0, f"{paper}: knob {key}"
    # a row of another paper's method never carries a setting; rows no setting reproduces say so
    assert set(rep[rep["setting"] == ""]["method"]).isdisjoint({"D3SR", "D3SR (public data)", "VPD-SR", "StrSR-Z", "StrSR-F"})
    unreproduced = rep[rep["setting"] == NO_SETTING]
    assert set(unreproduced["method"]) == {"CTSR (T_fl: SinSR)", "D3SR (loss: DISTS)", "D3SR (loss: EA-LPIPS)", "D3SR (loss: LPIPS)",
                                           "D3SR (discriminator: CNN)", "D3SR (discriminator: Diffusion-GAN)", "StrSR (w/o Ra)"}


def test_one_id_one_setting():
    # pairing goes by id, so every row of one id must be reproduced by the same setting
    rep = load_reported()
    assert (rep.groupby(["paper", "method"])["setting"].nunique() == 1).all()


def test_the_packaged_recipe_reproduces_the_papers_full_model_rows():
    # the recipe YAMLs are the papers' main settings: their rows (and the ablations' full-model rows) hold for them
    rep = load_reported()
    full = {"D3SR": ["D3SR", "D3SR (public data)", "D3SR (loss: EA-DISTS)", "D3SR (discriminator: SDXL)"],
            "VPD-SR": ["VPD-SR", "VPD-SR (L_distill + L_HFP + L_SD + L_adv)"], "StrSR": ["StrSR-Z", "StrSR (w/ All)"],
            "CTSR": ["CTSR (t=0.0)", "CTSR (w/ distill)", "CTSR (T_fl: ResShift)", "CTSR (λ_rn=1.0)", "CTSR (λ_fl=2.0)", "CTSR (γ_time=5.5)"]}
    for paper, ids in full.items():
        cfg = packaged(RECIPE_OF[paper])
        holding = {m for m, s in set(zip(rep[rep["paper"] == paper]["method"], rep[rep["paper"] == paper]["setting"]))
                   if setting_holds(s, cfg, {"t": 0.0})}
        assert holding == set(ids), paper
    flux = {**packaged("strsr"), "base": "flux2"}
    assert setting_holds(rep[rep["method"] == "StrSR-F"]["setting"].iloc[0], flux, {})
    assert not setting_holds(rep[rep["method"] == "StrSR-F"]["setting"].iloc[0], packaged("strsr"), {})


def test_setting_conditions_compare_numbers_as_numbers():
    assert parse_setting("recipe.discriminator=sd21;t=0.4") == {"recipe.discriminator": "sd21", "t": "0.4"}
    assert parse_setting("") == {} and parse_setting(NO_SETTING) == {}
    assert setting_holds("t=0.4;recipe.lambda_rn=1.0", {"lambda_rn": 1}, {"t": 0.4})
    assert not setting_holds("t=0.4;recipe.lambda_rn=1.0", {"lambda_rn": 1}, {"t": 0.2})
    assert not setting_holds("recipe.lambda_adv=0", {}, {})  # a setting the run does not record never holds
    assert not setting_holds(NO_SETTING, {}, {}) and not setting_holds("", {}, {})
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_setting("recipe.discriminator")


def trained(tmp_path, name: str, recipe: str, cfg: dict | None = None, knobs: dict | None = None, substitutions=None):
    """A run folder as training leaves it: export/student.json (recipe, its settings, the student's knob defaults)."""
    import json

    from srdistill.evaluate.methods.registry import TrainedStudent

    run = tmp_path / name.replace("@", "_")
    (run / "export").mkdir(parents=True)
    record = {"recipe": recipe, "export_config": {"recipe": recipe, "cfg": {**packaged(recipe), **(cfg or {})}}}
    if knobs is not None:
        record["knobs"] = knobs
    (run / "export" / "student.json").write_text(json.dumps(record))
    if substitutions is not None:
        (run / "config.json").write_text(json.dumps({"substitutions": substitutions}))
    return TrainedStudent(name, run)


CTSR_FULL_T0 = ["CTSR (T_fl: ResShift)", "CTSR (t=0.0)", "CTSR (w/ distill)", "CTSR (γ_time=5.5)", "CTSR (λ_fl=2.0)", "CTSR (λ_rn=1.0)"]


@pytest.mark.parametrize("recipe, name, cfg, expected", [
    ("d3sr", "mine", {}, ["D3SR", "D3SR (discriminator: SDXL)", "D3SR (loss: EA-DISTS)", "D3SR (public data)"]),
    ("d3sr", "mine", {"discriminator": "sd21"}, ["D3SR (discriminator: SD 2.1)"]),
    ("d3sr", "mine", {"lambda_adv": 0.0}, ["D3SR (discriminator: None)"]),
    ("d3sr", "mine", {"lambda_ea_dists": 0}, ["D3SR (loss: MSE)"]),
    ("d3sr", "mine", {"lambda_adv": 0.2}, []),
    ("strsr", "mine", {}, ["StrSR (w/ All)", "StrSR-Z"]),
    ("strsr", "mine", {"base": "flux2"}, ["StrSR (w/ All)", "StrSR-F"]),
    ("strsr", "mine", {"condition": "text"}, ["StrSR (w/o VLM)"]),
    ("strsr", "mine", {"condition": "none"}, ["StrSR (w/o emb)"]),
    ("strsr", "mine", {"lambda_gan": 0.0}, ["StrSR (w/o GAN)"]),
    ("strsr", "mine", {"semantic_encoder": "clip"}, []),
    ("vpdsr", "mine", {}, ["VPD-SR", "VPD-SR (L_distill + L_HFP + L_SD + L_adv)"]),
    ("vpdsr", "mine", {"lambda_hfp": 0, "lambda_sd": 0, "lambda_adv": 0}, ["VPD-SR (L_distill)"]),
    ("vpdsr", "mine", {"lambda_sd": 0, "lambda_adv": 0}, ["VPD-SR (L_distill + L_HFP)"]),
    ("vpdsr", "mine", {"lambda_adv": 0}, ["VPD-SR (L_distill + L_HFP + L_SD)"]),
    ("ctsr", "mine", {}, CTSR_FULL_T0),
    ("ctsr", "mine@t=0.4", {}, ["CTSR (t=0.4)"]),
    ("ctsr", "mine@t=0.8", {}, ["CTSR (t=0.8)"]),
    ("ctsr", "mine@t=0.3", {}, []),
    ("ctsr", "mine", {"lambda_rn": 0.6}, ["CTSR (λ_rn=0.6)"]),
    ("ctsr", "mine", {"gamma_time": 6.5}, ["CTSR (γ_time=6.5)"]),
    ("ctsr", "mine", {"lambda_rn": 0, "lambda_fl": 0}, ["CTSR (w/o distill)"]),
    ("ctsr", "mine@t=0.4", {"lambda_rn": 0.6}, []),
])
def test_a_trained_student_is_paired_with_the_rows_its_setting_reproduces(tmp_path, recipe, name, cfg, expected):
    knobs = {"t": 0.0} if recipe == "ctsr" else {}
    assert counterparts(trained(tmp_path, name, recipe, cfg, knobs)) == expected
    assert set(expected) <= set(load_reported()["method"])  # every id names transcribed rows


def test_an_export_without_settings_stands_for_the_packaged_recipe_and_builtins_keep_theirs(tmp_path):
    import json

    from srdistill.evaluate.methods.registry import TrainedStudent, builtin_method

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "student.json").write_text(json.dumps({"recipe": "d3sr"}))
    assert counterparts(TrainedStudent("mine", tmp_path)) == ["D3SR", "D3SR (discriminator: SDXL)", "D3SR (loss: EA-DISTS)",
                                                               "D3SR (public data)"]
    assert counterparts(builtin_method("bicubic", "cpu", 0)) == []
    assert counterparts(builtin_method("realesrgan-x4plus", "cpu", 0)) == ["Real-ESRGAN"]


def test_a_d3sr_run_that_fell_back_to_sd21_is_the_sd21_ablation(tmp_path):
    from srdistill.training.recipes.d3sr import SD21_FALLBACK

    run = trained(tmp_path, "mine", "d3sr", {"discriminator": "sdxl"}, substitutions=[SD21_FALLBACK])
    assert counterparts(run) == ["D3SR (discriminator: SD 2.1)"]


def measured(rows):
    return pd.DataFrame([{"dataset": d, "protocol": p, "metric": k, "method": m, "mean": v, "n": 10, "complete": True}
                         for m, d, p, k, v in rows])


def test_reproduction_pairs_a_ctsr_knob_run_with_the_t_sweep(tmp_path):
    from srdistill.evaluate.render.reproduction import reproduction_table

    method = trained(tmp_path, "ctsr@t=0.4", "ctsr", knobs={"t": 0.0})
    board = measured([("ctsr@t=0.4", "DIV2K-val", "ctsr", "psnr", 24.0), ("ctsr@t=0.4", "RealSR", "ctsr", "fid", 130.0),
                      ("ctsr@t=0.4", "DRealSR", "ctsr", "psnr", 28.0), ("ctsr@t=0.4", "RealSR", "srdistill", "psnr", 20.0)])
    table = reproduction_table(board, load_reported(), {method.name: counterparts(method)})
    # Tables 7 and 10 (DIV2K-val), 11 (RealSR) and 12 (DRealSR) at t = 0.4; nothing under another protocol
    assert sorted(zip(table["dataset"], table["table"], table["metric"], table["reported"], table["gap"].round(4))) == [
        ("DIV2K-val", "Table 10", "psnr", 24.58, -0.58), ("DIV2K-val", "Table 7", "psnr", 24.58, -0.58),
        ("DRealSR", "Table 12", "psnr", 27.99, 0.01), ("RealSR", "Table 11", "fid", 134.38, -4.38)]
    assert set(table["reported_method"]) == {"CTSR (t=0.4)"}


def test_reproduction_pairs_an_ablation_run_with_its_row_only(tmp_path):
    from srdistill.evaluate.render.reproduction import reproduction_table

    sd21 = trained(tmp_path, "d3sr-sd21", "d3sr", {"discriminator": "sd21"})
    full = trained(tmp_path, "d3sr-full", "d3sr")
    board = measured([("d3sr-sd21", "RealSR", "d3sr", "lpips", 0.33), ("d3sr-full", "RealSR", "d3sr", "lpips", 0.33)])
    table = reproduction_table(board, load_reported(), {m.name: counterparts(m) for m in (sd21, full)})
    assert sorted(zip(table["method"], table["table"], table["reported_method"], table["reported"])) == [
        ("d3sr-full", "Table 1", "D3SR", 0.3150), ("d3sr-full", "Table 1", "D3SR (public data)", 0.2961),
        ("d3sr-full", "Table 3", "D3SR", 0.3150), ("d3sr-full", "Table 3", "D3SR (public data)", 0.2961),
        ("d3sr-full", "Table 5", "D3SR (loss: EA-DISTS)", 0.3150), ("d3sr-full", "Table 6", "D3SR (discriminator: SDXL)", 0.3150),
        ("d3sr-sd21", "Table 6", "D3SR (discriminator: SD 2.1)", 0.3166)]
