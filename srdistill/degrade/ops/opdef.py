"""What a degradation op is: its parameters (fixed values or distributions) and a pure apply function.

Every op of a schema-2 spec is an `Op` in `REGISTRY`. A spec gives each parameter either a fixed value or a
distribution; the sampler draws the distributions in the order the op declares its parameters (so a sample's
draws, and with them its bytes, depend only on the spec and the (seed, key) stream), then a uint32 `seed` if
the op is `seeded` (noise generated at apply time). The recorded values are every parameter, fixed and drawn,
so replaying a sample needs the record and the op's code, not the spec.

Distribution forms (a mapping with one of these keys) and the draws they take from the numpy Generator:
  {uniform: [lo, hi]}            float(rng.uniform(lo, hi))
  {log_uniform: [lo, hi]}        exp(rng.uniform(log lo, log hi)), lo > 0
  {randint: [lo, hi]}            int(rng.integers(lo, hi + 1)), both ends included
  {choice: [a, b, ...], probs: [pa, pb, ...]}   one rng.random() through the inverse CDF; probs default equal
  {pick: [a, b, ...]}            values[rng.integers(len(values))]: equal odds by one integer draw (the draw
                                 Real-ESRGAN's kernel and sinc sizes take)
  {bernoulli: p}                 bool(rng.random() < p)
  {var: name}                    (in a spec only) the value a `draw:` step drew earlier under `name`
Anything else is a fixed value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from srdistill.core.errors import UserError
from srdistill.core import typed

REQUIRED: Any = object()  # a Param default meaning "the spec must give it"

DISTRIBUTIONS = ("uniform", "log_uniform", "randint", "choice", "pick", "bernoulli")
# Keys of a recorded op and of a spec's op step that are not parameters.
# (`weight` is not one: a one_of option's `weight` is the option's, so an op's own `weight` parameter keeps its
# default inside a one_of option.)
RESERVED = ("op", "at", "id", "p", "seed")


@dataclass(frozen=True)
class OpContext:
    """What an op may know besides its own values: the SR scale and the HR size the pipeline started from."""

    scale: int
    hr_shape: tuple[int, int]

    @property
    def lr_shape(self) -> tuple[int, int]:
        return self.hr_shape[0] // self.scale, self.hr_shape[1] // self.scale


@dataclass(frozen=True)
class Param:
    """One parameter of an op, as a spec may set it."""

    name: str
    type: type  # float, int, str or bool: the type of a drawn or fixed value
    default: Any = REQUIRED  # a fixed value or a distribution mapping; REQUIRED when the spec must give it
    range: tuple[float, float] | None = None  # allowed numeric values, both ends included
    choices: tuple[Any, ...] | None = None  # allowed values of a str (or other enumerated) parameter
    doc: str = ""  # one line for the README's op table


@dataclass(frozen=True)
class Op:
    """A degradation op. `apply(img, values, ctx)` takes and returns float32 RGB HxWx3 (values nominally in
    [0, 1], unclamped unless the op clamps) and must be a pure function of its arguments: same inputs, same
    bytes, for any thread count."""

    name: str
    params: tuple[Param, ...]
    apply: Callable[[np.ndarray, dict, OpContext], np.ndarray]
    summary: str  # one line: what it does
    source: str  # where the formula or the encoder comes from
    seeded: bool = False  # draws a uint32 `seed` after its parameters, for randomness made at apply time
    # Parameters whose draws are not independent distributions (e.g. Real-ESRGAN's kernel family): called
    # instead of the generic draw with (rng, the op's spec values) and returns all values.
    draw: Callable[[np.random.Generator, dict], dict] | None = None
    # Checks beyond the generic ones (type, range, choices, distribution) and returns the values in canonical
    # form, e.g. a mapping parameter completed from its default: (the step's values, the step's path in the
    # spec) -> values; raises UserError naming the path.
    prepare: Callable[[dict, str], dict] | None = None
    # Exceptions to the contract the generic op tests hold every op to, each saying why (empty: none):
    # `resizes`, how the output's size follows from the input's (otherwise apply keeps the shape);
    # `overshoots`, why an input in [0, 1] can give values outside it (otherwise the output stays in [0, 1]).
    resizes: str = ""
    overshoots: str = ""


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    clash = [p.name for p in op.params if p.name in RESERVED]
    if clash:
        raise ValueError(f"op {op.name!r} names a parameter {clash[0]!r}, a reserved key of steps and records")
    REGISTRY[op.name] = op
    return op


def _kind(param: Param) -> str:
    """How an error names what a parameter takes."""
    if param.type is object:  # a parameter of mixed forms (e.g. a keyword or a number) is never drawn
        return "a fixed value here, not a distribution"
    return f"a {param.type.__name__}"


def is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in DISTRIBUTIONS)


def show(value) -> str:
    """A value or distribution in one short line: `uniform [30.0, 95.0]`, `choice [a, b] probs [0.5, 0.5]`."""
    if is_distribution(value):
        return " ".join(f"{k} {show(v)}" for k, v in value.items())
    if isinstance(value, dict) and "var" in value and len(value) == 1:
        return f"var {value['var']}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def choose(rng: np.random.Generator, values: tuple | list, probs: tuple | list | None = None) -> Any:
    """One of `values` with probabilities `probs` (equal if None): one uniform draw, inverse CDF."""
    if probs is None:
        probs = [1.0 / len(values)] * len(values)
    u = rng.random()
    acc = 0.0
    for v, p in zip(values, probs):
        acc += p
        if u < acc:
            return v
    return values[-1]  # u beyond a cumulative sum rounded below 1


def draw(rng: np.random.Generator, value: Any) -> Any:
    """A fixed value as it is, or one draw from a distribution mapping (forms in the module docstring)."""
    if not is_distribution(value):
        return value
    if "uniform" in value:
        lo, hi = value["uniform"]
        return float(rng.uniform(lo, hi))
    if "log_uniform" in value:
        lo, hi = value["log_uniform"]
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if "randint" in value:
        lo, hi = value["randint"]
        return int(rng.integers(int(lo), int(hi) + 1))
    if "choice" in value:
        return choose(rng, value["choice"], value.get("probs"))
    if "pick" in value:
        return value["pick"][int(rng.integers(len(value["pick"])))]
    return bool(rng.random() < value["bernoulli"])


def draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32, dtype=np.uint64))


# ---------------------------------------------------------------- checking a spec's values


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fixed(param: Param, value: Any, path: str) -> Any:
    """A fixed value of `param`, checked against its type, range and choices; floats canonical as float."""
    t = param.type
    if t is float:
        if not _number(value):
            raise UserError(f"{path} must be a finite number, got {value!r}{typed.read_as_text(value)}.")
        value = float(value)
    elif t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{path} must be an integer, got {value!r}{typed.read_as_text(value)}.")
    elif t is bool:
        if not isinstance(value, bool):
            raise UserError(f"{path} must be true or false, got {value!r}.")
    elif t is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{path} must be a non-empty string, got {value!r}.")
    elif t is dict:
        if not isinstance(value, dict):
            raise UserError(f"{path} must be a mapping, got {value!r}.")
    if param.range is not None and _number(value) and not param.range[0] <= value <= param.range[1]:
        raise UserError(f"{path} must lie within [{param.range[0]:g}, {param.range[1]:g}], got {value!r}.")
    if param.choices is not None and value not in param.choices:
        raise UserError(f"{path} must be one of {', '.join(map(str, param.choices))}, got {value!r}.")
    return value


def _pair(value: Any, path: str) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_number(v) for v in value):
        raise UserError(f"{path} must be [low, high], two numbers, got {value!r}.")
    lo, hi = value
    if lo > hi:
        raise UserError(f"{path} must be [low, high] with low <= high, got {list(value)}.")
    return lo, hi


def check_value(param: Param, value: Any, path: str) -> Any:
    """A spec's value of `param` (fixed or a distribution) in canonical form; UserError naming `path` when it
    cannot be sampled or can give a value the parameter does not allow."""
    if not is_distribution(value):
        if isinstance(value, dict) and param.type is not dict:
            raise UserError(f"{path} is a mapping with none of the distribution keys "
                            f"({', '.join(DISTRIBUTIONS)}, var).")
        return _fixed(param, value, path)
    kinds = [k for k in DISTRIBUTIONS if k in value]
    allowed = {kinds[0], "probs"} if kinds[0] == "choice" else {kinds[0]}
    extra = sorted(set(value) - allowed)
    if len(kinds) > 1 or extra:
        raise UserError(f"{path} must hold one distribution, got the keys {', '.join(sorted(value))}.")
    kind = kinds[0]
    where = f"{path}.{kind}"
    if kind in ("uniform", "log_uniform", "randint"):
        if param.type is int and kind != "randint":
            raise UserError(f"{where} draws real numbers, but {path} takes an integer (use randint).")
        if param.type not in (float, int):
            raise UserError(f"{where} draws numbers, but {path} takes {_kind(param)}.")
        lo, hi = _pair(value[kind], where)
        if kind == "log_uniform" and lo <= 0:
            raise UserError(f"{where} must have low > 0 (it draws in log space), got {lo}.")
        if kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
            raise UserError(f"{where} must be two whole numbers, got {value[kind]!r}.")
        _fixed(param, lo, where)
        _fixed(param, hi, where)
        cast = int if kind == "randint" else float
        return {kind: [cast(lo), cast(hi)]}
    if kind == "bernoulli":
        p = value[kind]
        if param.type is not bool:
            raise UserError(f"{where} draws true/false, but {path} takes {_kind(param)}.")
        if not _number(p) or not 0 <= p <= 1:
            raise UserError(f"{where} must be a probability in [0, 1], got {p!r}.")
        return {kind: float(p)}
    options = value[kind]
    if not isinstance(options, (list, tuple)) or not options:
        raise UserError(f"{where} must be a non-empty list of values, got {options!r}.")
    out = {kind: [_fixed(param, v, f"{where}[{i}]") for i, v in enumerate(options)]}
    if "probs" in value:
        ps = value["probs"]
        if not isinstance(ps, (list, tuple)) or len(ps) != len(options):
            raise UserError(f"{path}.probs must hold {len(options)} probabilities (one per choice), got {ps!r}.")
        if not all(_number(p) and p >= 0 for p in ps) or abs(sum(ps) - 1.0) > 1e-6:
            raise UserError(f"{path}.probs must be non-negative and sum to 1, got {list(ps)}.")
        out["probs"] = [float(p) for p in ps]
    return out


def value_bounds(value: Any) -> tuple[float, float] | None:
    """The smallest and largest number a fixed value or numeric distribution can give (None if not numeric)."""
    if _number(value):
        return value, value
    if isinstance(value, dict):
        for kind in ("uniform", "log_uniform", "randint"):
            if kind in value:
                return tuple(value[kind])
        for kind in ("choice", "pick"):
            if kind in value and all(_number(v) for v in value[kind]):
                return min(value[kind]), max(value[kind])
    return None
