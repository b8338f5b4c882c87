"""Published numbers transcribed from the papers' comparison tables (evaluate/data/reported.csv).

One row per printed value: paper, table, the protocol it was measured under (a preset in evaluate/protocols/),
dataset, the method name as printed and its canonical id (so OSDiff and OSEDiff-s1 are both OSEDiff), the pyiqa
metric name with the protocol's options for it, and the value exactly as printed.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ["paper", "table", "protocol", "dataset", "method_printed", "method", "metric", "metric_options", "value"]

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

# Our runnable methods -> the reported ids they are a reproduction of (students: by the recipe that trained them).
BUILTIN_COUNTERPARTS = {"realesrgan-x4plus": ["Real-ESRGAN"], "realesrgan-x4plus-torch": ["Real-ESRGAN"]}
RECIPE_COUNTERPARTS = {"d3sr": ["D3SR", "D3SR (public data)"], "strsr": ["StrSR-Z", "StrSR-F"], "vpdsr": ["VPD-SR"]}


def canonical_method(printed: str) -> str:
    """The canonical id of a printed method name (citations and '(ours)' removed, aliases applied)."""
    name = re.sub(r"\s*\[[^\]]*\]", "", printed).replace("(ours)", "").strip()
    return ALIASES.get(name, name)


def load_reported() -> pd.DataFrame:
    """Every transcribed value, columns COLUMNS (value as float; the printed text is in the CSV)."""
    with resources.files("srdistill.evaluate").joinpath("data/reported.csv").open("r") as f:
        frame = pd.read_csv(f, dtype={c: "string" for c in COLUMNS if c != "value"} | {"value": "float64"},
                            keep_default_na=False)
    return frame[COLUMNS].astype({c: object for c in COLUMNS if c != "value"})


def counterparts(method) -> list[str]:
    """Reported method ids a measured method reproduces: Real-ESRGAN for the x4plus runners, the recipe's paper
    method for a trained student (CTSR by its t knob when given), none for the rest."""
    if method.name in BUILTIN_COUNTERPARTS:
        return list(BUILTIN_COUNTERPARTS[method.name])
    run_dir = getattr(method, "run_dir", None)
    if run_dir is None:
        return []
    try:
        recipe = json.loads((Path(run_dir) / "export" / "student.json").read_text()).get("recipe", "")
    except (OSError, ValueError):
        return []
    if recipe == "ctsr":
        t = getattr(method, "knobs", {}).get("t")
        return [f"CTSR (t={t:.1f})"] if t is not None else ["CTSR (t=0.0)", "CTSR (t=0.2)", "CTSR (t=0.8)"]
    return list(RECIPE_COUNTERPARTS.get(recipe, []))
