"""The degradation spec (schema version 2): a pipeline of steps over the ops of degrade/ops/library, as data.

Numbers live in the shipped YAML presets (degrade/spec/presets/*.yaml) or in a user YAML/JSON file, never in code.
A document is

    version: 2
    name: NAME            description: ONE LINE           source: WHERE THE NUMBERS COME FROM
    scale: 4
    pipeline: [STEP, ...]

and a STEP is one of (each may carry `p:` (a gate: one rng.random() < p, drawn only when `p` is given) and
`id:` (a unique name for `replace:` and reports); `weight:` only as an option of `one_of`):

    {op: NAME, PARAM: VALUE, ...}     an op of the library; a VALUE is fixed, a distribution (degrade/ops/opdef.py)
                                      or {var: NAME}; a parameter left out takes the op's default
    {stage: NAME, steps: [...]}       a named group: records and `degrade preview` show the image after it
    {steps: [...]}                    a plain sequence (e.g. one option of a one_of)
    {one_of: [STEP + weight, ...]}    one option, by weight (default 1; one rng.random(), opdef.choose); an
                                      op with its own `weight` parameter is nested in {steps: [...]} there
    {shuffle: [...], keep_order: [[A, B], ...]}   the steps in a random order (one rng.permutation(n)); for
                                      each pair of step ids, A is moved before B (their places are swapped)
    {draw: {NAME: VALUE, ...}}        draws values here (in the order written) for later {var: NAME}

`base: PRESET` starts from a preset's document; `replace: {ID: STEP}` swaps the step with that id (or stage
name) anywhere in it (a one_of option keeps its weight unless the new step gives one); the other top-level
fields of the file override the preset's. Version-1 documents (`kind: second_order | resize`) are converted
on load (degrade/spec/v1.py), to the same pipeline as the shipped presets for the same numbers.

`spec_hash` names a degradation by its canonical form (every parameter explicit, defaults filled in, floats as
floats), without `name`, `description` and `source`: a renamed copy of a preset hashes the same.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from srdistill.degrade.ops import opdef
from srdistill.core import documents
from srdistill.core.documents import preset_names
from srdistill.core.errors import UserError
from srdistill.core.hashing import canonical_hash

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: tuple[str, ...] = preset_names(PRESET_DIR)
VERSION = 2
_LABELS = ("name", "description", "source")  # left out of the hash
_TOP = ("version", "name", "description", "source", "scale", "pipeline", "base", "replace")


@dataclass(frozen=True)
class OpStep:
    """One op with every parameter's value: fixed, a distribution mapping or {"var": NAME}."""

    op: str
    params: dict[str, Any]
    p: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class Stage:
    """A named group of steps; its name is also its id."""

    name: str
    steps: tuple[Step, ...]
    p: float | None = None


@dataclass(frozen=True)
class Sequence:
    """Steps run in order, unnamed (a one_of option or a shuffle member made of several steps)."""

    steps: tuple[Step, ...]
    p: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class OneOf:
    """One of `options`, drawn with `weights` (normalised to sum 1)."""

    options: tuple[Step, ...]
    weights: tuple[float, ...]
    p: float | None = None
    id: str | None = None

    @property
    def probs(self) -> tuple[float, ...]:
        total = sum(self.weights)
        # Weights that already sum to 1 are used as written, so a preset's probabilities keep their exact bits.
        return self.weights if abs(total - 1.0) < 1e-12 else tuple(w / total for w in self.weights)


@dataclass(frozen=True)
class Shuffle:
    """The steps in a random order; each (a, b) of keep_order puts step a before step b."""

    steps: tuple[Step, ...]
    keep_order: tuple[tuple[str, str], ...] = ()
    p: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class Draw:
    """Named values drawn at this point of the stream, in order, for later {var: NAME} parameters."""

    values: tuple[tuple[str, Any], ...]
    id: str | None = None


Step = Union[OpStep, Stage, Sequence, OneOf, Shuffle, Draw]


@dataclass(frozen=True)
class DegradationSpec:
    """A whole degradation: the pipeline that turns an HR into its LR at `scale`."""

    name: str
    scale: int
    pipeline: tuple[Step, ...]
    description: str = ""
    source: str = ""


# ---------------------------------------------------------------- parsing a document


def _library() -> dict[str, opdef.Op]:
    import srdistill.degrade.ops.library  # noqa: F401  (registers every op)

    return opdef.REGISTRY


def _has_own_weight(op: Any) -> bool:
    return isinstance(op, str) and op in _library() and any(p.name == "weight" for p in _library()[op].params)


def _gate(d: dict, path: str) -> float | None:
    if "p" not in d:
        return None
    p = d["p"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise UserError(f"{path}.p must be a probability in [0, 1], got {p!r}.")
    return float(p)


def _ident(d: dict, key: str, path: str) -> str | None:
    if key not in d:
        return None
    v = d[key]
    if not isinstance(v, str) or not v:
        raise UserError(f"{path}.{key} must be a non-empty string, got {v!r}.")
    return v


def _steps(value: Any, path: str) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{path} must be a non-empty list of steps, got {value!r}.")
    return tuple(_step(s, f"{path}[{i}]") for i, s in enumerate(value))


_KINDS = ("op", "stage", "one_of", "shuffle", "draw", "steps")
_EXTRA = {"stage": {"steps", "p"}, "steps": {"p", "id"}, "one_of": {"p", "id"}, "shuffle": {"keep_order", "p", "id"},
          "draw": {"id"}}


def _kind(d: Any, path: str) -> str:
    if not isinstance(d, dict):
        raise UserError(f"{path} must be a step (a mapping with one of: {', '.join(_KINDS)}), got {d!r}.")
    kinds = [k for k in _KINDS if k in d and not (k == "steps" and "stage" in d)]
    if len(kinds) != 1:
        raise UserError(f"{path} must have exactly one of {', '.join(_KINDS)}, got "
                        f"{', '.join(kinds) if kinds else 'none'}.")
    return kinds[0]


def _step(d: Any, path: str, option: bool = False) -> Step:
    """One step; `option`: a one_of option, whose `weight` its one_of has read."""
    kind = _kind(d, path)
    if option:
        d = {k: v for k, v in d.items() if k != "weight"}
    if kind == "op":
        return _op_step(d, path)
    extra = sorted(set(d) - {kind} - _EXTRA[kind])
    if extra:
        raise UserError(f"{path}.{extra[0]} is not a field of a {kind} step.")
    if kind == "stage":
        name = _ident(d, "stage", path)
        return Stage(name, _steps(d.get("steps"), f"{path}.steps"), _gate(d, path))
    if kind == "steps":
        return Sequence(_steps(d["steps"], f"{path}.steps"), _gate(d, path), _ident(d, "id", path))
    if kind == "one_of":
        opts = d["one_of"]
        if not isinstance(opts, list) or not opts:
            raise UserError(f"{path}.one_of must be a non-empty list of options, got {opts!r}.")
        weights = []
        for i, o in enumerate(opts):
            if isinstance(o, dict) and "weight" in o and _has_own_weight(o.get("op")):
                raise UserError(f"{path}.one_of[{i}].weight is ambiguous: op {o['op']} has a weight parameter of its "
                                f"own; give the option's weight beside a nested list, e.g. "
                                f"{{weight: 2, steps: [{{op: {o['op']}, weight: 0.8}}]}}.")
            w = o.get("weight", 1.0) if isinstance(o, dict) else 1.0
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise UserError(f"{path}.one_of[{i}].weight must be a number >= 0, got {w!r}.")
            weights.append(float(w))
        if sum(weights) <= 0:
            raise UserError(f"{path}.one_of has weights that are all zero; give at least one option weight > 0.")
        options = tuple(_step(o, f"{path}.one_of[{i}]", option=True) for i, o in enumerate(opts))
        return OneOf(options, tuple(weights), _gate(d, path), _ident(d, "id", path))
    if kind == "shuffle":
        steps = d["shuffle"]
        if not isinstance(steps, list) or not steps:
            raise UserError(f"{path}.shuffle must be a non-empty list of steps, got {steps!r}.")
        keep = d.get("keep_order", [])
        if not isinstance(keep, list) or not all(
                isinstance(k, list) and len(k) == 2 and all(isinstance(x, str) for x in k) for k in keep):
            raise UserError(f"{path}.keep_order must be a list of [ID, ID] pairs, got {keep!r}.")
        return Shuffle(_steps(steps, f"{path}.shuffle"), tuple((a, b) for a, b in keep), _gate(d, path),
                       _ident(d, "id", path))
    return Draw(_draw_values(d["draw"], f"{path}.draw"), _ident(d, "id", path))


def _draw_values(value: Any, path: str) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(x, dict) and len(x) == 1 for x in value):
        items = [next(iter(x.items())) for x in value]
    else:
        raise UserError(f"{path} must be a mapping of NAME: distribution, got {value!r}.")
    if not items:
        raise UserError(f"{path} must name at least one value to draw.")
    out = []
    for name, v in items:
        if not isinstance(name, str) or not name:
            raise UserError(f"{path} must use non-empty names, got {name!r}.")
        if _is_var(v):
            raise UserError(f"{path}.{name} is {{var: ...}}, which a draw cannot hold: a draw makes new values from a "
                            f"distribution ({', '.join(opdef.DISTRIBUTIONS)}); use the earlier variable where it is "
                            "needed instead.")
        out.append((name, opdef.check_value(_draw_param(name, v), v, f"{path}.{name}")))
    return tuple(out)


def _draw_param(name: str, v: Any) -> opdef.Param:
    """The loosest Param a drawn value can be checked as (its use as a parameter is checked where it is used)."""
    if isinstance(v, dict) and "randint" in v:
        return opdef.Param(name, int)
    if isinstance(v, dict) and ("uniform" in v or "log_uniform" in v):
        return opdef.Param(name, float)
    if isinstance(v, dict) and "bernoulli" in v:
        return opdef.Param(name, bool)
    return opdef.Param(name, object)


def _is_var(v: Any) -> bool:
    return isinstance(v, dict) and "var" in v


def _op_step(d: dict, path: str) -> OpStep:
    lib = _library()
    name = d["op"]
    if name not in lib:
        raise UserError(f"{path}.op names an unknown op {name!r}; known ops: {', '.join(sorted(lib))}.")
    op = lib[name]
    declared = {p.name: p for p in op.params}
    unknown = sorted(set(d) - set(declared) - {"op", "p", "id"})
    if unknown:
        raise UserError(f"{path}.{unknown[0]} is not a parameter of op {name!r} "
                        f"(its parameters: {', '.join(declared) or 'none'}).")
    params = {}
    for p in op.params:
        if p.name not in d:
            if p.default is opdef.REQUIRED:
                raise UserError(f"{path}.{p.name} is missing (op {name!r} has no default for it).")
            params[p.name] = opdef.check_value(p, p.default, f"{path}.{p.name}")
            continue
        v = d[p.name]
        if isinstance(v, dict) and "var" in v:
            if len(v) != 1 or not isinstance(v["var"], str):
                raise UserError(f"{path}.{p.name} must be {{var: NAME}} alone, got {v!r}.")
            params[p.name] = {"var": v["var"]}
        else:
            params[p.name] = opdef.check_value(p, v, f"{path}.{p.name}")
    if op.prepare is not None and not any(_is_var(v) for v in params.values()):
        params = op.prepare(params, path)  # with a var, checked where the var's draw is known (_vars)
    return OpStep(name, params, _gate(d, path), _ident(d, "id", path))


# ---------------------------------------------------------------- whole-pipeline checks


def _ids(steps: tuple[Step, ...], path: str, seen: dict[str, str]) -> None:
    for i, s in enumerate(steps):
        here = f"{path}[{i}]"
        ident = s.name if isinstance(s, Stage) else getattr(s, "id", None)
        if ident is not None:
            if ident in seen:
                raise UserError(f"{here} reuses the id {ident!r} of {seen[ident]}; ids and stage names must be unique.")
            seen[ident] = here
        for sub, children in _children(s, here):
            _ids(children, sub, seen)
        if isinstance(s, Shuffle):
            members = {getattr(c, "id", None) if not isinstance(c, Stage) else c.name for c in s.steps}
            paired: set[str] = set()
            for j, pair in enumerate(s.keep_order):
                for x in pair:
                    if x not in members:
                        raise UserError(f"{here}.keep_order[{j}] names {x!r}, which is not the id of a step of "
                                        f"this shuffle.")
                    # each pair is put in order by swapping its two steps, which can undo another pair's order
                    if x in paired:
                        raise UserError(f"{here}.keep_order[{j}] names {x!r} again; a step may be in one "
                                        f"keep_order pair only.")
                    paired.add(x)


def _children(s: Step, here: str) -> list[tuple[str, tuple[Step, ...]]]:
    if isinstance(s, (Stage, Sequence)):
        return [(f"{here}.steps", s.steps)]
    if isinstance(s, OneOf):
        return [(f"{here}.one_of", s.options)]
    if isinstance(s, Shuffle):
        return [(f"{here}.shuffle", s.steps)]
    return []


def _vars(s: Step, here: str, env: dict[str, Any]) -> None:
    """Each {var: NAME} must follow a `draw` of NAME that surely ran before it: names drawn inside a gated step,
    a one_of option or a shuffle member stay inside it. Adds the names `s` surely draws to `env`."""
    inner = dict(env) if getattr(s, "p", None) is not None else env
    if isinstance(s, Draw):
        inner.update(dict(s.values))
    elif isinstance(s, OpStep):
        op = _library()[s.op]
        for p in op.params:
            v = s.params[p.name]
            if _is_var(v):
                if v["var"] not in inner:
                    raise UserError(f"{here}.{p.name} uses {{var: {v['var']}}} before a draw of {v['var']!r} "
                                    f"that always runs before it.")
                opdef.check_value(p, inner[v["var"]], f"{here}.{p.name}")
        if op.prepare is not None and any(_is_var(v) for v in s.params.values()):
            op.prepare({k: inner[v["var"]] if _is_var(v) else v for k, v in s.params.items()}, here)
    elif isinstance(s, (Stage, Sequence)):
        for j, c in enumerate(s.steps):
            _vars(c, f"{here}.steps[{j}]", inner)
    elif isinstance(s, (OneOf, Shuffle)):
        key, members = ("one_of", s.options) if isinstance(s, OneOf) else ("shuffle", s.steps)
        for j, c in enumerate(members):
            _vars(c, f"{here}.{key}[{j}]", dict(inner))


def spec_from_dict(d: Any) -> DegradationSpec:
    """A spec from a resolved document (no `base:`), version 2 or version 1 (converted); UserError naming the
    bad field by its path otherwise."""
    if not isinstance(d, dict):
        raise UserError("a degradation spec must be a mapping of fields at the top level.")
    check_depth(d, "the degradation spec")
    if _is_v1(d):
        from srdistill.degrade.spec import v1 as spec_v1

        d = spec_v1.to_v2_document(spec_v1.spec_from_dict(d))
    unknown = sorted(set(d) - set(_TOP))
    if unknown:
        raise UserError(f"spec.{unknown[0]} is not a known field (expected one of: {', '.join(_TOP)}).")
    if d.get("version") != VERSION:
        raise UserError(f"spec.version must be {VERSION} for a pipeline spec, got {d.get('version')!r}.")
    for key in ("base", "replace"):
        if key in d:
            raise UserError(f"spec.{key} must be resolved before building a spec (load it with load_spec).")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise UserError(f"spec.name must be a non-empty string, got {name!r}.")
    for key in ("description", "source"):
        if not isinstance(d.get(key, ""), str):
            raise UserError(f"spec.{key} must be a string, got {d[key]!r}.")
    scale = d.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise UserError(f"spec.scale must be an integer >= 1, got {scale!r}.")
    pipeline = _steps(d.get("pipeline"), "spec.pipeline")
    _ids(pipeline, "spec.pipeline", {})
    env: dict[str, Any] = {}
    for i, s in enumerate(pipeline):
        _vars(s, f"spec.pipeline[{i}]", env)
    return DegradationSpec(name, scale, pipeline, d.get("description", ""), d.get("source", ""))


def _is_v1(d: dict) -> bool:
    if "version" in d:
        if d["version"] not in (1, VERSION):
            raise UserError(f"spec.version must be 1 or {VERSION}, got {d['version']!r}.")
        return d["version"] == 1
    return not any(k in d for k in ("pipeline", "replace", "description", "source"))


# ---------------------------------------------------------------- canonical form and hash


def _gated(d: dict, s: Step) -> dict:
    if getattr(s, "p", None) is not None:
        d["p"] = s.p
    if getattr(s, "id", None) is not None:
        d["id"] = s.id
    return d


def step_to_dict(s: Step) -> dict:
    """A step in canonical document form (what spec_from_dict reads back to the same step)."""
    if isinstance(s, OpStep):
        return _gated({"op": s.op, **s.params}, s)
    if isinstance(s, Stage):
        return _gated({"stage": s.name, "steps": [step_to_dict(c) for c in s.steps]}, s)
    if isinstance(s, Sequence):
        return _gated({"steps": [step_to_dict(c) for c in s.steps]}, s)
    if isinstance(s, OneOf):
        return _gated({"one_of": [{**step_to_dict(o), "weight": w} for o, w in zip(s.options, s.weights)]}, s)
    if isinstance(s, Shuffle):
        d = {"shuffle": [step_to_dict(c) for c in s.steps]}
        if s.keep_order:
            d["keep_order"] = [list(k) for k in s.keep_order]
        return _gated(d, s)
    # A list of one-name mappings: JSON with sorted keys keeps the draw order.
    return _gated({"draw": [{k: v} for k, v in s.values]}, s)


def spec_to_dict(spec: DegradationSpec) -> dict:
    """Plain JSON-compatible canonical document."""
    d = {"version": VERSION, "name": spec.name, "description": spec.description, "source": spec.source,
         "scale": spec.scale, "pipeline": [step_to_dict(s) for s in spec.pipeline]}
    return json.loads(json.dumps(d))


def spec_hash(spec: DegradationSpec) -> str:
    """First 16 hex chars of sha256 over the canonical JSON (sorted keys, no whitespace), labels excluded."""
    d = {k: v for k, v in spec_to_dict(spec).items() if k not in _LABELS}
    return canonical_hash(d)


def iter_steps(steps: tuple[Step, ...], stage: str | None = None):
    """Every step, depth first, with the name of the innermost stage around it."""
    for s in steps:
        yield s, stage
        inner = s.name if isinstance(s, Stage) else stage
        for _, children in _children(s, ""):
            yield from iter_steps(children, inner)


# ---------------------------------------------------------------- loading


MAX_DEPTH = 64  # lists and mappings inside one another (the shipped presets use at most 15)


def check_depth(doc: Any, where: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH before anything walks it recursively."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{where} nests lists and mappings more than {MAX_DEPTH} levels deep (the limit); a "
                            "degradation spec needs far fewer.")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def read_document(path: Path) -> Any:
    """A spec file's raw document (YAML, or JSON by its suffix)."""
    return documents.read_document(path, what="degradation spec", max_depth=MAX_DEPTH)


def _replace(steps: list, ident: str, new: dict, options: bool = False) -> bool:
    """Swap the step with id (or stage name) `ident` in a raw document's step list, in place; `options`: the
    list is a one_of's."""
    for i, s in enumerate(steps):
        if not isinstance(s, dict):
            continue
        if s.get("id") == ident or s.get("stage") == ident:
            # the new step keeps the old one's id (a stage has its name instead) and, as a one_of option, its
            # weight, unless it gives its own
            keep = {k: s[k] for k in (("weight", "id") if options else ("id",))
                    if k in s and not (k == "id" and "stage" in new)}
            steps[i] = {**keep, **new}
            return True
        for key in ("steps", "one_of", "shuffle"):
            if isinstance(s.get(key), list) and _replace(s[key], ident, new, key == "one_of"):
                return True
    return False


def resolve(doc: Any, origin: str, seen: tuple[str, ...] = ()) -> dict:
    """The document with `base:` and `replace:` applied (a version-1 document resolves against the version-1
    presets in presets/v1/, so old override files keep their meaning)."""
    if not isinstance(doc, dict):
        raise UserError(f"degradation spec {origin} must be a mapping of fields at the top level.")
    base = doc.get("base")
    if base is None:
        if "replace" in doc:
            raise UserError(f"spec.replace in {origin} needs a `base:` preset whose steps it replaces.")
        return doc
    # A version-1 document on a preset that had a version-1 form merges into that form; any other `base:`
    # (e.g. a file of only `base` and `name` on a newer preset) is read as version 2.
    v1 = _is_v1(doc) and base in tuple(p.stem for p in (PRESET_DIR / "v1").glob("*.yaml"))
    names = PRESETS if not v1 else (base,)
    if not isinstance(base, str) or base not in names:
        raise UserError(f"spec.base in {origin} must name a preset ({', '.join(names)}), got {base!r}.")
    if base in seen:
        raise UserError(f"spec.base in {origin} forms a cycle through preset {base!r}.")
    path = PRESET_DIR / "v1" / f"{base}.yaml" if v1 else PRESET_DIR / f"{base}.yaml"
    parent = copy.deepcopy(resolve(read_document(path), base, seen + (base,)))
    if v1:
        return _merge(parent, {k: v for k, v in doc.items() if k != "base"})
    replace = doc.get("replace", {})
    if not isinstance(replace, dict):
        raise UserError(f"spec.replace in {origin} must be a mapping of STEP_ID: step, got {replace!r}.")
    for ident, new in replace.items():
        if not isinstance(new, dict):
            raise UserError(f"spec.replace.{ident} in {origin} must be a step (a mapping), got {new!r}.")
        if not _replace(parent.get("pipeline", []), ident, copy.deepcopy(new)):
            raise UserError(f"spec.replace.{ident} in {origin} names no step of preset {base!r} "
                            f"(no step has that id or stage name).")
    parent.update({k: v for k, v in doc.items() if k not in ("base", "replace")})
    return parent


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_spec(name_or_path: str | Path) -> DegradationSpec:
    """A preset name (see PRESETS) or a YAML/JSON file path; UserError naming the bad field otherwise."""
    path, _ = documents.find_document(name_or_path, what="degradation spec", folder=PRESET_DIR, formats="YAML/JSON")
    return spec_from_dict(resolve(read_document(path), str(path)))


@dataclass(frozen=True)
class PresetInfo:
    name: str
    description: str
    source: str


def preset_infos() -> list[PresetInfo]:
    """Every shipped preset with its one-line description and source (for `degrade presets`)."""
    out = []
    for name in PRESETS:
        spec = load_spec(name)
        out.append(PresetInfo(name, spec.description, spec.source))
    return out
