"""A frozen dataclass from a plain mapping, checked by the field types: a bad field is a UserError naming its path."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from srdistill.core.errors import UserError


def build(tp: Any, value: Any, path: str) -> Any:
    """`value` (from YAML/JSON) as type `tp`: dataclasses, `X | None`, tuples, bool, int, float and str."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{path} must be a mapping of fields, got {type(value).__name__}.")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise UserError(f"{path}.{unknown[0]} is not a known field (expected one of: {', '.join(fields)}).")
        kwargs = {}
        for name, f in fields.items():
            if name not in value:
                if f.default is dataclasses.MISSING:
                    raise UserError(f"{path}.{name} is missing.")
                continue
            kwargs[name] = build(hints[name], value[name], f"{path}.{name}")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return build(inner, value, path)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{path} must be a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise UserError(f"{path} must not be empty.")
            return tuple(build(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{path} must have {len(args)} entries, got {len(value)}.")
        return tuple(build(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{path} must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{path} must be an integer, got {value!r}{read_as_text(value)}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path} must be a finite number, got {value!r}{read_as_text(value)}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{path} must be a non-empty string, got {value!r}.")
        return value
    raise TypeError(f"unsupported spec field type {tp!r} at {path}")


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


def prob(p: float, path: str) -> None:
    check(0.0 <= p <= 1.0, f"{path} must be a probability in [0, 1], got {p}.")


def probs(ps: tuple[float, ...], n: int, path: str) -> None:
    check(len(ps) == n, f"{path} must have {n} entries (one per choice), got {len(ps)}.")
    check(all(p >= 0 for p in ps), f"{path} must not hold negative probabilities.")
    check(abs(sum(ps) - 1.0) < 1e-6, f"{path} must sum to 1, got {sum(ps):g}.")


def span(r: tuple[float, float], path: str, lo: float = -math.inf, hi: float = math.inf) -> None:
    check(r[0] <= r[1], f"{path} must be [low, high] with low <= high, got {list(r)}.")
    check(lo <= r[0] and r[1] <= hi, f"{path} must lie within [{lo:g}, {hi:g}], got {list(r)}.")


def choices(values: tuple[str, ...], allowed: tuple[str, ...], path: str) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UserError(f"{path} holds {bad[0]!r}; allowed values are {', '.join(allowed)}.")
    check(len(set(values)) == len(values), f"{path} must not repeat a value.")


MAX_KERNEL_SIZE = 101  # 5x Real-ESRGAN's largest (21); a kernel of 100001 would need tens of GiB per worker


def read_as_text(value: Any) -> str:
    """A note for a number that YAML read as text, else "": YAML 1.1 (PyYAML) needs a decimal point in a float, so
    `1e9` is the string '1e9' while `1.0e9` is a number."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    mantissa, e, exponent = value.lower().partition("e")
    written = f"{mantissa}.0e{exponent}" if e and "." not in mantissa else value
    return f" (YAML read {value} as text: write it with a decimal point, e.g. {written}, or in plain digits)"


def odd_sizes(sizes: tuple[int, ...], path: str) -> None:
    check(all(1 <= s <= MAX_KERNEL_SIZE and s % 2 == 1 for s in sizes),
          f"{path} must hold odd sizes from 1 to {MAX_KERNEL_SIZE} (the limit), got {list(sizes)}.")
