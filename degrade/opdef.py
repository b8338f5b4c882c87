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
  {bernoulli: p}                 bool(rng.random() < p)
Anything else is a fixed value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

REQUIRED: Any = object()  # a Param default meaning "the spec must give it"

DISTRIBUTIONS = ("uniform", "log_uniform", "randint", "choice", "bernoulli")


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


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


def is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in DISTRIBUTIONS)


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
    return bool(rng.random() < value["bernoulli"])


def draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32, dtype=np.uint64))
