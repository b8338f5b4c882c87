"""The degradation spec: every range and probability of the pipeline, as a frozen dataclass tree.

Numbers live in the shipped YAML presets (degrade/presets/*.yaml) or in a user YAML/JSON file, never in code.
A user file may start from a preset with `base: realesrgan` and override only some fields.
`spec_hash` names a degradation by its content (the `name` label is left out of the hash, so a renamed
copy of a preset hashes the same as the preset).

Fields added after a spec format was in use (`resize.coords`, `jpeg_codec`) default to the behaviour from
before they existed, so the spec stored in an older manifest still replays its LRs bit for bit; the shipped
presets set them explicitly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from srdistill.errors import UserError

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_COORDS = ("size", "scale_factor")
JPEG_CODECS = ("diffjpeg", "libjpeg")
KINDS = ("second_order", "resize")


@dataclass(frozen=True)
class USMSpec:
    """Unsharp mask applied to the HR before degrading (Real-ESRGAN's USMSharp)."""

    radius: int  # Gaussian window size; an even value is bumped to the next odd one, as the reference does
    sigma: float  # 0 lets OpenCV derive sigma from the window size
    weight: float
    threshold: float  # on the 0..255 scale


@dataclass(frozen=True)
class KernelSpec:
    """How a blur kernel is drawn."""

    sizes: tuple[int, ...]  # odd sizes, drawn uniformly
    sinc_prob: float
    sinc_size_threshold: int  # sizes below it use sinc_omega_small, others sinc_omega_large
    sinc_omega_small: tuple[float, float]
    sinc_omega_large: tuple[float, float]
    types: tuple[str, ...]
    type_probs: tuple[float, ...]
    sigma_range: tuple[float, float]
    rotation_range: tuple[float, float]
    betag_range: tuple[float, float]  # generalized Gaussian shape
    betap_range: tuple[float, float]  # plateau shape
    beta_pivot: float  # beta is drawn from [lo, pivot] with beta_below_prob, else from [pivot, hi]
    beta_below_prob: float


@dataclass(frozen=True)
class ResizeSpec:
    """Random resize: direction up/down/keep, then a scale factor, then an interpolation mode."""

    probs: tuple[float, float, float]  # up, down, keep
    range: tuple[float, float]  # down draws from [lo, 1], up from [1, hi]
    modes: tuple[str, ...]
    mode_probs: tuple[float, ...]
    # How output pixels map to input ones: `size` = by the in/out size ratio (torch's F.interpolate(size=...));
    # `scale_factor` = by 1/scale with the output size floor(in * scale) (F.interpolate(scale_factor=...), the
    # reference's stage 1). Stage 2 resizes relative to HR/scale, so it only takes `size`.
    coords: str = "size"


@dataclass(frozen=True)
class NoiseSpec:
    """Gaussian noise with gaussian_prob, else Poisson; either one gray (same on all channels) with gray_prob."""

    gaussian_prob: float
    sigma_range: tuple[float, float]  # on the 0..255 scale
    poisson_scale_range: tuple[float, float]
    gray_prob: float


@dataclass(frozen=True)
class StageSpec:
    """One blur -> resize -> noise -> JPEG round of the second-order model."""

    blur_prob: float
    kernel: KernelSpec
    resize: ResizeSpec
    noise: NoiseSpec
    jpeg_quality: tuple[float, float]  # stage 2's is used by the final step
    # `diffjpeg`: the reference's DiffJPEG model (degrade/diffjpeg.py), quality uniform in the range (real);
    # `libjpeg`: the real codec through OpenCV, quality a uniform integer in the (whole-number) range.
    jpeg_codec: str = "libjpeg"


@dataclass(frozen=True)
class FinalSpec:
    """Last step: resize to HR/scale + final sinc filter, and stage 2's JPEG (stage2.jpeg_quality), in one of
    two orders."""

    jpeg_first_prob: float  # else [resize, sinc, JPEG]
    modes: tuple[str, ...]
    mode_probs: tuple[float, ...]
    sinc_prob: float
    sinc_sizes: tuple[int, ...]
    sinc_omega: tuple[float, float]


@dataclass(frozen=True)
class DegradationSpec:
    """A whole degradation: `second_order` (Real-ESRGAN) or a plain `resize` (e.g. bicubic)."""

    name: str
    scale: int
    kind: str
    resize_mode: str | None = None  # kind=resize only
    usm: USMSpec | None = None  # kind=second_order; None means no sharpening
    stage1: StageSpec | None = None
    stage2: StageSpec | None = None
    final: FinalSpec | None = None


# ---------------------------------------------------------------- dict <-> dataclass


def spec_to_dict(spec: DegradationSpec) -> dict:
    """Plain JSON-compatible dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def spec_from_dict(d: Any) -> DegradationSpec:
    """Build and validate a spec; a bad field raises UserError naming it by its dotted path."""
    spec = _build(DegradationSpec, d, "spec")
    _validate(spec)
    return spec


def spec_hash(spec: DegradationSpec) -> str:
    """First 16 hex chars of sha256 over the canonical JSON (sorted keys, no whitespace), label excluded."""
    d = spec_to_dict(spec)
    d.pop("name")
    canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _build(tp: Any, value: Any, path: str) -> Any:
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
            kwargs[name] = _build(hints[name], value[name], f"{path}.{name}")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, path)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{path} must be a list, got {value!r}.")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise UserError(f"{path} must not be empty.")
            return tuple(_build(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{path} must have {len(args)} entries, got {len(value)}.")
        return tuple(_build(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{path} must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{path} must be an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path} must be a finite number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{path} must be a non-empty string, got {value!r}.")
        return value
    raise TypeError(f"unsupported spec field type {tp!r} at {path}")


# ---------------------------------------------------------------- semantic checks


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


def _prob(p: float, path: str) -> None:
    _check(0.0 <= p <= 1.0, f"{path} must be a probability in [0, 1], got {p}.")


def _probs(ps: tuple[float, ...], n: int, path: str) -> None:
    _check(len(ps) == n, f"{path} must have {n} entries (one per choice), got {len(ps)}.")
    _check(all(p >= 0 for p in ps), f"{path} must not hold negative probabilities.")
    _check(abs(sum(ps) - 1.0) < 1e-6, f"{path} must sum to 1, got {sum(ps):g}.")


def _range(r: tuple[float, float], path: str, lo: float = -math.inf, hi: float = math.inf) -> None:
    _check(r[0] <= r[1], f"{path} must be [low, high] with low <= high, got {list(r)}.")
    _check(lo <= r[0] and r[1] <= hi, f"{path} must lie within [{lo:g}, {hi:g}], got {list(r)}.")


def _choices(values: tuple[str, ...], allowed: tuple[str, ...], path: str) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UserError(f"{path} holds {bad[0]!r}; allowed values are {', '.join(allowed)}.")
    _check(len(set(values)) == len(values), f"{path} must not repeat a value.")


def _sizes(sizes: tuple[int, ...], path: str) -> None:
    _check(all(s >= 1 and s % 2 == 1 for s in sizes), f"{path} must hold odd sizes >= 1, got {list(sizes)}.")


def _validate(spec: DegradationSpec) -> None:
    _check(spec.scale >= 1, f"spec.scale must be an integer >= 1, got {spec.scale}.")
    _check(spec.kind in KINDS, f"spec.kind must be one of {', '.join(KINDS)}, got {spec.kind!r}.")
    if spec.kind == "resize":
        _check(spec.resize_mode == "bicubic", f"spec.resize_mode must be 'bicubic', got {spec.resize_mode!r}.")
        for f in ("usm", "stage1", "stage2", "final"):
            _check(getattr(spec, f) is None, f"spec.{f} must be left out when spec.kind is 'resize'.")
        return
    _check(spec.resize_mode is None, "spec.resize_mode must be left out when spec.kind is 'second_order'.")
    for f in ("stage1", "stage2", "final"):
        _check(getattr(spec, f) is not None, f"spec.{f} is missing (required when spec.kind is 'second_order').")
    if spec.usm is not None:
        _check(spec.usm.radius >= 1, f"spec.usm.radius must be >= 1, got {spec.usm.radius}.")
        _check(spec.usm.sigma >= 0, f"spec.usm.sigma must be >= 0, got {spec.usm.sigma}.")
        _check(spec.usm.threshold >= 0, f"spec.usm.threshold must be >= 0, got {spec.usm.threshold}.")
    for sname in ("stage1", "stage2"):
        st: StageSpec = getattr(spec, sname)
        p = f"spec.{sname}"
        _prob(st.blur_prob, f"{p}.blur_prob")
        k = st.kernel
        _sizes(k.sizes, f"{p}.kernel.sizes")
        _prob(k.sinc_prob, f"{p}.kernel.sinc_prob")
        _range(k.sinc_omega_small, f"{p}.kernel.sinc_omega_small", 1e-6, math.pi)
        _range(k.sinc_omega_large, f"{p}.kernel.sinc_omega_large", 1e-6, math.pi)
        _choices(k.types, KERNEL_TYPES, f"{p}.kernel.types")
        _probs(k.type_probs, len(k.types), f"{p}.kernel.type_probs")
        _range(k.sigma_range, f"{p}.kernel.sigma_range", 1e-6)
        _range(k.rotation_range, f"{p}.kernel.rotation_range")
        _range(k.betag_range, f"{p}.kernel.betag_range", 1e-6)
        _range(k.betap_range, f"{p}.kernel.betap_range", 1e-6)
        _prob(k.beta_below_prob, f"{p}.kernel.beta_below_prob")
        for bname in ("betag_range", "betap_range"):
            r = getattr(k, bname)
            _check(r[0] <= k.beta_pivot <= r[1],
                   f"{p}.kernel.beta_pivot ({k.beta_pivot:g}) must lie within {p}.kernel.{bname} {list(r)}.")
        r = st.resize
        _probs(r.probs, 3, f"{p}.resize.probs")
        _range(r.range, f"{p}.resize.range", 1e-3)
        _check(r.range[0] <= 1.0 <= r.range[1], f"{p}.resize.range must contain 1, got {list(r.range)}.")
        _choices(r.modes, RESIZE_MODES, f"{p}.resize.modes")
        _probs(r.mode_probs, len(r.modes), f"{p}.resize.mode_probs")
        n = st.noise
        _prob(n.gaussian_prob, f"{p}.noise.gaussian_prob")
        _range(n.sigma_range, f"{p}.noise.sigma_range", 0.0)
        _range(n.poisson_scale_range, f"{p}.noise.poisson_scale_range", 0.0)
        _prob(n.gray_prob, f"{p}.noise.gray_prob")
        _check(r.coords in RESIZE_COORDS, f"{p}.resize.coords must be one of {', '.join(RESIZE_COORDS)}, "
                                          f"got {r.coords!r}.")
        _check(sname == "stage1" or r.coords == "size",
               f"{p}.resize.coords must be 'size' (stage 2 resizes relative to HR/scale), got {r.coords!r}.")
        _range(st.jpeg_quality, f"{p}.jpeg_quality", 1, 100)
        _check(st.jpeg_codec in JPEG_CODECS,
               f"{p}.jpeg_codec must be one of {', '.join(JPEG_CODECS)}, got {st.jpeg_codec!r}.")
        _check(st.jpeg_codec != "diffjpeg" or st.jpeg_quality[1] < 100,
               f"{p}.jpeg_quality must stay below 100 with jpeg_codec diffjpeg (its table factor is 0 at 100), "
               f"got {list(st.jpeg_quality)}.")
        _check(st.jpeg_codec != "libjpeg" or all(q == int(q) for q in st.jpeg_quality),
               f"{p}.jpeg_quality must hold whole numbers with jpeg_codec libjpeg, got {list(st.jpeg_quality)}.")
    fin = spec.final
    _prob(fin.jpeg_first_prob, "spec.final.jpeg_first_prob")
    _choices(fin.modes, RESIZE_MODES, "spec.final.modes")
    _probs(fin.mode_probs, len(fin.modes), "spec.final.mode_probs")
    _prob(fin.sinc_prob, "spec.final.sinc_prob")
    _sizes(fin.sinc_sizes, "spec.final.sinc_sizes")
    _range(fin.sinc_omega, "spec.final.sinc_omega", 1e-6, math.pi)


# ---------------------------------------------------------------- loading


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read degradation spec {path}: {e.strerror or e}.") from None
    except UnicodeDecodeError:
        raise UserError(f"degradation spec {path} is not a UTF-8 text file.") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"degradation spec {path} is not valid JSON at line {e.lineno}.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"degradation spec {path} is not valid YAML{where}.") from None


def _resolve(doc: Any, origin: str, seen: tuple[str, ...] = ()) -> dict:
    if not isinstance(doc, dict):
        raise UserError(f"degradation spec {origin} must be a mapping of fields at the top level.")
    base = doc.get("base")
    if base is None:
        return doc
    if not isinstance(base, str) or base not in PRESETS:
        raise UserError(f"spec.base in {origin} must name a preset ({', '.join(PRESETS)}), got {base!r}.")
    if base in seen:
        raise UserError(f"spec.base in {origin} forms a cycle through preset {base!r}.")
    parent = _resolve(_read_document(PRESET_DIR / f"{base}.yaml"), base, seen + (base,))
    over = {k: v for k, v in doc.items() if k != "base"}
    return _merge(parent, over)


def load_spec(name_or_path: str | Path) -> DegradationSpec:
    """A preset name (see PRESETS) or a YAML/JSON file path; UserError naming the bad field otherwise."""
    s = str(name_or_path)
    if isinstance(name_or_path, str) and s in PRESETS:
        path = PRESET_DIR / f"{s}.yaml"
    else:
        path = Path(s)
        if not path.is_file():
            raise UserError(
                f"degradation spec {s!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML/JSON file.")
    doc = _resolve(_read_document(path), str(path))
    return spec_from_dict(doc)
