"""Published numbers transcribed from the papers' tables (evaluate/data/reported.csv).

One row per printed value: paper, table, the protocol it was measured under (a preset in evaluate/protocols/),
dataset, the method name as printed and its canonical id (so OSDiff and OSEDiff-s1 are both OSEDiff), the recipe
setting that reproduces the row, the pyiqa metric name with the protocol's options for it, and the value exactly
as printed.

Ablation and sweep tables print variants of the paper's own method (a loss left out, another discriminator, CTSR
at t = 0.4): their rows get the id `<paper method> (<variant>)` (VARIANT_TABLES). `setting` links a row to what a
trained student must have been trained and run with to reproduce it: `recipe.KEY=VALUE` conditions on the run's
recipe settings and `KNOB=VALUE` conditions on its inference knobs, joined by `;` (e.g.
`recipe.discriminator=sd21;recipe.lambda_adv=0.1;recipe.lambda_ea_dists=1.0` or `t=0.4;recipe.lambda_rn=1.0;...`);
NO_SETTING where no recipe setting reproduces the row (another teacher, another GAN loss); empty for the methods
srdistill does not train.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

COLUMNS = ["paper", "table", "protocol", "dataset", "method_printed", "method", "setting", "metric", "metric_options",
           "value"]
NO_SETTING = "no recipe setting"

# Printed spellings of one model -> its canonical id. Step counts stay in the id (ADDSR-s4 is not ADDSR-s1); a
# name printed without its step count stays bare, since the paper does not say which variant it ran.
ALIASES = {
    "OSDiff": "OSEDiff", "OSEDiff-s1": "OSEDiff", "OSEDiff-1": "OSEDiff",
    "SinSR-s1": "SinSR", "SinSR-1": "SinSR",
    "RealESRGAN": "Real-ESRGAN",
    "I.R.": "InstructRestore",
    "StrSR - Z": "StrSR-Z", "StrSR - Z-Image": "StrSR-Z", "StrSR - F": "StrSR-F", "StrSR - FLUX": "StrSR-F",
    "D3SR-s1": "D3SR", "D3SR²": "D3SR (public data)", "D3SR-s1²": "D3SR (public data)",
    "VPD-SR-1": "VPD-SR", "TAD-SR-1": "TAD-SR",
    "StableSR-200": "StableSR-s200", "DiffBIR-50": "DiffBIR-s50", "SeeSR-50": "SeeSR-s50", "PASD-20": "PASD-s20",
    "SSP-IR-50": "SSP-IR-s50", "ResShift-15": "ResShift-s15", "LDM-15": "LDM-s15",
}

# Tables whose rows are variants of the paper's own method: the id pattern, filled with the printed row label
# ("(ours)" dropped, LaTeX braces removed: "λ_{rn}=0.6" -> "λ_rn=0.6").
VARIANT_TABLES = {
    ("D3SR", "Table 5"): "D3SR (loss: {})", ("D3SR", "Table 6"): "D3SR (discriminator: {})",
    ("StrSR", "Table 4"): "StrSR ({})",
    ("VPD-SR", "Table V"): "VPD-SR ({})",
    ("CTSR", "Table 4"): "CTSR ({})", ("CTSR", "Table 5"): "CTSR (T_fl: {})", ("CTSR", "Table 6"): "CTSR ({})",
    ("CTSR", "Table 7"): "CTSR ({})", ("CTSR", "Table 10"): "CTSR ({})", ("CTSR", "Table 11"): "CTSR ({})",
    ("CTSR", "Table 12"): "CTSR ({})",
}

# Our runnable methods -> the reported ids they are a reproduction of; trained students go by their recipe's paper
# and the `setting` of its rows.
BUILTIN_COUNTERPARTS = {"realesrgan-x4plus": ["Real-ESRGAN"], "realesrgan-x4plus-torch": ["Real-ESRGAN"]}
RECIPE_PREFIX = "recipe."


def canonical_method(printed: str) -> str:
    """The canonical id of a printed method name (citations and '(ours)' removed, aliases applied)."""
    name = re.sub(r"\s*\[[^\]]*\]", "", printed).replace("(ours)", "").strip()
    return ALIASES.get(name, name)


def row_method(paper: str, table: str, printed: str) -> str:
    """The id of a printed row: a variant id in an ablation or sweep table, the canonical method id elsewhere."""
    pattern = VARIANT_TABLES.get((paper, table))
    if pattern is None:
        return canonical_method(printed)
    label = re.sub(r"\s*\((?:ours|Ours)\)", "", printed).replace("{", "").replace("}", "").strip()
    return pattern.format(label)


def parse_setting(text: str) -> dict[str, str]:
    """`recipe.discriminator=sd21;t=0.4` -> {"recipe.discriminator": "sd21", "t": "0.4"}; {} for an empty setting
    or NO_SETTING."""
    if text in ("", NO_SETTING):
        return {}
    conditions = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"setting {text!r}: {part!r} is not KEY=VALUE")
        conditions[key.strip()] = value.strip()
    return conditions


def _same(wanted: str, actual) -> bool:
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return str(actual) == wanted
    try:
        return float(wanted) == float(actual)
    except ValueError:
        return False


def setting_holds(setting: str, recipe_cfg: dict, knobs: dict) -> bool:
    """Whether a run with these recipe settings and inference knobs reproduces a row with this `setting`
    (never for an empty setting or NO_SETTING)."""
    conditions = parse_setting(setting)
    if not conditions:
        return False
    for key, wanted in conditions.items():
        source, name = (recipe_cfg, key[len(RECIPE_PREFIX):]) if key.startswith(RECIPE_PREFIX) else (knobs, key)
        if name not in source or not _same(wanted, source[name]):
            return False
    return True


def load_reported() -> pd.DataFrame:
    """Every transcribed value, columns COLUMNS (value as float; the printed text is in the CSV)."""
    with resources.files("srdistill.evaluate").joinpath("data/reported.csv").open("r") as f:
        frame = pd.read_csv(f, dtype={c: "string" for c in COLUMNS if c != "value"} | {"value": "float64"},
                            keep_default_na=False)
    return frame[COLUMNS].astype({c: object for c in COLUMNS if c != "value"})


def run_settings(run_dir: Path, knobs: dict | None = None) -> tuple[str, dict, dict] | None:
    """A trained run's recipe, the recipe settings it trained with and the inference knobs it runs with (the
    export's defaults updated by `knobs`), from RUN_DIR/export/student.json; None when there is none.

    An export without its settings (written before they were recorded) stands for the recipe's packaged YAML. A D3SR
    run that fell back to the SD 2.1 discriminator (RUN_DIR/config.json's substitutions) trained with `sd21`."""
    from srdistill.training.config import packaged_config
    from srdistill.training.export import CONFIG_NAME, EXPORT_DIR

    try:
        record = json.loads((Path(run_dir) / EXPORT_DIR / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    recipe = str(record.get("recipe", ""))
    cfg = (record.get("export_config") or {}).get("cfg")
    if cfg is None:
        path = packaged_config(recipe)
        cfg = (yaml.safe_load(path.read_text()) or {}).get("recipe", {}) if path is not None else {}
    cfg = dict(cfg)
    if recipe == "d3sr" and _fell_back_to_sd21(Path(run_dir)):
        cfg["discriminator"] = "sd21"
    return recipe, cfg, {**(record.get("knobs") or {}), **(knobs or {})}


def _fell_back_to_sd21(run_dir: Path) -> bool:
    from srdistill.training.recipes.d3sr import SD21_FALLBACK
    from srdistill.training.trainer import RUN_RECORD

    try:
        substitutions = json.loads((run_dir / RUN_RECORD).read_text()).get("substitutions") or []
    except (OSError, ValueError):
        return False
    return SD21_FALLBACK in substitutions


def counterparts(method) -> list[str]:
    """Reported method ids a measured method reproduces: Real-ESRGAN for the x4plus runners; for a trained student,
    every row of its recipe's paper whose `setting` the run's recipe settings and knobs (CTSR's t from the name, e.g.
    `ctsr@t=0.4`, else the export's default) satisfy; none for the rest."""
    if method.name in BUILTIN_COUNTERPARTS:
        return list(BUILTIN_COUNTERPARTS[method.name])
    run_dir = getattr(method, "run_dir", None)
    run = run_settings(run_dir, getattr(method, "knobs", {})) if run_dir is not None else None
    from srdistill.training.recipes.registry import RECIPES

    if run is None or run[0] not in RECIPES:
        return []
    recipe, cfg, knobs = run
    rep = load_reported()
    rows = rep[rep["paper"] == RECIPES[recipe].PAPER][["method", "setting"]].drop_duplicates()
    return sorted({r.method for r in rows.itertuples(index=False) if setting_holds(r.setting, cfg, knobs)})
