"""Two degradation specs compared step by step: which steps one has and the other lacks, and per parameter
what changed in the steps both have (for `degrade diff`).

Steps are matched by their label: the stage names and ids around them, then their own id, or their op name
for an op without one (e.g. `stage1/blur1`, `stage1/resize1[0]/resize`, `final/final_order[1]/jpeg2_last`: an option without id
is named by its one_of and its index).
A gate `p` and a one_of option's `weight` are compared as parameters of the step they belong to.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from srdistill.degrade.ops.opdef import is_distribution, show
from srdistill.degrade.spec.schema import DegradationSpec, Draw, OneOf, OpStep, Sequence, Shuffle, Stage, Step

COLUMNS = ["step", "change", "parameter", "A", "B"]


def _flat(params: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not is_distribution(v) and "var" not in v:
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def step_table(spec: DegradationSpec) -> dict[str, dict[str, object]]:
    """{label: {parameter: value}} for every step of the pipeline (containers included, with their own
    settings: a shuffle's keep_order, a stage's or group's gate)."""
    table: dict[str, dict[str, object]] = {}
    seen: Counter = Counter()

    def add(label: str, params: dict) -> str:
        seen[label] += 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        table[label] = params
        return label

    def walk(steps: tuple[Step, ...], prefix: str, weights: tuple[float, ...] | None = None) -> None:
        for i, s in enumerate(steps):
            extra = {} if getattr(s, "p", None) is None else {"p": s.p}
            if weights is not None:
                extra["weight"] = weights[i]
            here = f"{prefix}[{i}]" if weights is not None and not getattr(s, "id", None) else prefix
            if isinstance(s, OpStep):
                add(f"{here}/{s.id or s.op}".lstrip("/"), {**_flat(s.params), **extra})
            elif isinstance(s, Draw):
                add(f"{here}/{s.id or 'draw'}".lstrip("/"), {**dict(s.values), **extra})
            elif isinstance(s, Stage):
                label = add(f"{here}/{s.name}".lstrip("/"), {"steps": len(s.steps), **extra})
                walk(s.steps, label)
            elif isinstance(s, Sequence):  # an unnamed option is its one_of's label and index
                own = here if weights is not None and not s.id else f"{here}/{s.id or 'steps'}"
                label = add(own.lstrip("/"), {"steps": len(s.steps), **extra})
                walk(s.steps, label)
            elif isinstance(s, OneOf):
                label = add(f"{here}/{s.id or 'one_of'}".lstrip("/"), {"options": len(s.options), **extra})
                walk(s.options, label, s.weights)
            elif isinstance(s, Shuffle):
                label = add(f"{here}/{s.id or 'shuffle'}".lstrip("/"),
                            {"steps": len(s.steps), "keep_order": [list(k) for k in s.keep_order], **extra})
                walk(s.steps, label)

    walk(spec.pipeline, "")
    return table


def compare_specs(a: DegradationSpec, b: DegradationSpec) -> pd.DataFrame:
    """One row per step only A or only B has (change `removed` / `added`), and per parameter that differs in a
    step both have (`changed`); the scale too when it differs."""
    rows = []
    if a.scale != b.scale:
        rows.append(["(spec)", "changed", "scale", str(a.scale), str(b.scale)])
    ta, tb = step_table(a), step_table(b)
    for label in list(ta) + [k for k in tb if k not in ta]:
        if label not in tb:
            rows.append([label, "removed", "", "present", "—"])
        elif label not in ta:
            rows.append([label, "added", "", "—", "present"])
        else:
            pa, pb = ta[label], tb[label]
            for key in list(pa) + [k for k in pb if k not in pa]:
                va, vb = pa.get(key, "—"), pb.get(key, "—")
                if va != vb:
                    rows.append([label, "changed", key, show(va), show(vb)])
    return pd.DataFrame(rows, columns=COLUMNS)


def spec_of(manifest_spec: dict) -> DegradationSpec:
    """A manifest's spec (version 1 converted) as a DegradationSpec."""
    from srdistill.degrade.spec.schema import spec_from_dict

    return spec_from_dict(manifest_spec)
