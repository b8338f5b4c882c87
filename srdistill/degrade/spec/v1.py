"""Version-1 degradation specs and params (srdistill before issue 15), read and converted to version 2.

A version-1 spec is Real-ESRGAN's fixed structure with ranges (`kind: second_order`) or a plain bicubic
resize (`kind: resize`). `to_v2_document` writes the same degradation as a version-2 pipeline whose draws
come in the same order from the same generator, so it gives the same bytes; `record_from_v1` turns the
params of a version-1 shard (params version 1 or 2) into the version-3 op record that replays them.

Fields added after the version-1 format was in use (`resize.coords`, `jpeg_codec`) default to the behaviour
from before they existed, so the spec stored in an older manifest still replays its LRs bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from srdistill.core import typed
from srdistill.degrade.ops.kernels import KernelSpec, kernel_spec
from srdistill.core.errors import UserError

RESIZE_MODES = ("area", "bilinear", "bicubic")
RESIZE_COORDS = ("size", "scale_factor")
JPEG_CODECS = ("diffjpeg", "libjpeg")
KINDS = ("second_order", "resize")


@dataclass(frozen=True)
class USMSpec:
    radius: int
    sigma: float
    weight: float
    threshold: float


@dataclass(frozen=True)
class ResizeSpec:
    probs: tuple[float, float, float]  # up, down, keep
    range: tuple[float, float]  # down draws from [lo, 1], up from [1, hi]
    modes: tuple[str, ...]
    mode_probs: tuple[float, ...]
    coords: str = "size"


@dataclass(frozen=True)
class NoiseSpec:
    gaussian_prob: float
    sigma_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_prob: float


@dataclass(frozen=True)
class StageSpec:
    blur_prob: float
    kernel: KernelSpec
    resize: ResizeSpec
    noise: NoiseSpec
    jpeg_quality: tuple[float, float]
    jpeg_codec: str = "libjpeg"


@dataclass(frozen=True)
class FinalSpec:
    jpeg_first_prob: float
    modes: tuple[str, ...]
    mode_probs: tuple[float, ...]
    sinc_prob: float
    sinc_sizes: tuple[int, ...]
    sinc_omega: tuple[float, float]


@dataclass(frozen=True)
class SpecV1:
    name: str
    scale: int
    kind: str
    resize_mode: str | None = None
    usm: USMSpec | None = None
    stage1: StageSpec | None = None
    stage2: StageSpec | None = None
    final: FinalSpec | None = None


def spec_from_dict(d: dict) -> SpecV1:
    """A version-1 spec, checked as srdistill checked it then; UserError naming the bad field."""
    spec = typed.build(SpecV1, {k: v for k, v in d.items() if k != "version"}, "spec")
    _validate(spec)
    return spec


def _validate(spec: SpecV1) -> None:
    check = typed.check
    check(spec.scale >= 1, f"spec.scale must be an integer >= 1, got {spec.scale}.")
    check(spec.kind in KINDS, f"spec.kind must be one of {', '.join(KINDS)}, got {spec.kind!r}.")
    if spec.kind == "resize":
        check(spec.resize_mode == "bicubic", f"spec.resize_mode must be 'bicubic', got {spec.resize_mode!r}.")
        for f in ("usm", "stage1", "stage2", "final"):
            check(getattr(spec, f) is None, f"spec.{f} must be left out when spec.kind is 'resize'.")
        return
    check(spec.resize_mode is None, "spec.resize_mode must be left out when spec.kind is 'second_order'.")
    for f in ("stage1", "stage2", "final"):
        check(getattr(spec, f) is not None, f"spec.{f} is missing (required when spec.kind is 'second_order').")
    if spec.usm is not None:
        check(spec.usm.radius >= 1, f"spec.usm.radius must be >= 1, got {spec.usm.radius}.")
        check(spec.usm.sigma >= 0, f"spec.usm.sigma must be >= 0, got {spec.usm.sigma}.")
        check(spec.usm.threshold >= 0, f"spec.usm.threshold must be >= 0, got {spec.usm.threshold}.")
    for sname in ("stage1", "stage2"):
        st: StageSpec = getattr(spec, sname)
        p = f"spec.{sname}"
        typed.prob(st.blur_prob, f"{p}.blur_prob")
        kernel_spec(dataclasses.asdict(st.kernel), f"{p}.kernel")
        r = st.resize
        typed.probs(r.probs, 3, f"{p}.resize.probs")
        typed.span(r.range, f"{p}.resize.range", 1e-3)
        check(r.range[0] <= 1.0 <= r.range[1], f"{p}.resize.range must contain 1, got {list(r.range)}.")
        typed.choices(r.modes, RESIZE_MODES, f"{p}.resize.modes")
        typed.probs(r.mode_probs, len(r.modes), f"{p}.resize.mode_probs")
        n = st.noise
        typed.prob(n.gaussian_prob, f"{p}.noise.gaussian_prob")
        typed.span(n.sigma_range, f"{p}.noise.sigma_range", 0.0)
        typed.span(n.poisson_scale_range, f"{p}.noise.poisson_scale_range", 0.0)
        typed.prob(n.gray_prob, f"{p}.noise.gray_prob")
        check(r.coords in RESIZE_COORDS, f"{p}.resize.coords must be one of {', '.join(RESIZE_COORDS)}, "
                                         f"got {r.coords!r}.")
        check(sname == "stage1" or r.coords == "size",
              f"{p}.resize.coords must be 'size' (stage 2 resizes relative to HR/scale), got {r.coords!r}.")
        typed.span(st.jpeg_quality, f"{p}.jpeg_quality", 1, 100)
        check(st.jpeg_codec in JPEG_CODECS,
              f"{p}.jpeg_codec must be one of {', '.join(JPEG_CODECS)}, got {st.jpeg_codec!r}.")
        check(st.jpeg_codec != "diffjpeg" or st.jpeg_quality[1] < 100,
              f"{p}.jpeg_quality must stay below 100 with jpeg_codec diffjpeg (its table factor is 0 at 100), "
              f"got {list(st.jpeg_quality)}.")
        check(st.jpeg_codec != "libjpeg" or all(q == int(q) for q in st.jpeg_quality),
              f"{p}.jpeg_quality must hold whole numbers with jpeg_codec libjpeg, got {list(st.jpeg_quality)}.")
    fin = spec.final
    typed.prob(fin.jpeg_first_prob, "spec.final.jpeg_first_prob")
    typed.choices(fin.modes, RESIZE_MODES, "spec.final.modes")
    typed.probs(fin.mode_probs, len(fin.modes), "spec.final.mode_probs")
    typed.prob(fin.sinc_prob, "spec.final.sinc_prob")
    typed.odd_sizes(fin.sinc_sizes, "spec.final.sinc_sizes")
    typed.span(fin.sinc_omega, "spec.final.sinc_omega", 1e-6, math.pi)


# ---------------------------------------------------------------- to version 2


def _plain(x):
    return json.loads(json.dumps(dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x))


def _quality(st: StageSpec) -> dict:
    lo, hi = st.jpeg_quality
    # libjpeg drew a uniform integer, diffjpeg a uniform real quality
    return {"randint": [int(lo), int(hi)]} if st.jpeg_codec == "libjpeg" else {"uniform": [lo, hi]}


def _stage(n: int, st: StageSpec, relative_to: str) -> dict:
    r, nz = st.resize, st.noise
    mode = {"choice": list(r.modes), "probs": list(r.mode_probs)}
    resize = {"op": "resize", "mode": mode, "relative_to": relative_to, "coords": r.coords}
    noise = [
        {"op": "gaussian_noise", "sigma": {"uniform": list(nz.sigma_range)}, "gray": {"bernoulli": nz.gray_prob}},
        {"op": "poisson_noise", "scale": {"uniform": list(nz.poisson_scale_range)},
         "gray": {"bernoulli": nz.gray_prob}},
    ]
    steps = [
        {"op": "blur", "id": f"blur{n}", "p": st.blur_prob, "kernel": _plain(st.kernel)},
        {"id": f"resize{n}", "one_of": [
            {"weight": r.probs[0], **resize, "scale": {"uniform": [1.0, r.range[1]]}},
            {"weight": r.probs[1], **resize, "scale": {"uniform": [r.range[0], 1.0]}},
            {"weight": r.probs[2], **resize, "scale": 1.0},
        ]},
        {"id": f"noise{n}", "one_of": [{"weight": nz.gaussian_prob, **noise[0]},
                                       {"weight": 1.0 - nz.gaussian_prob, **noise[1]}]},
    ]
    if n == 1:
        steps.append({"op": "jpeg", "id": "jpeg1", "quality": _quality(st), "codec": st.jpeg_codec})
    else:  # drawn here, used by the final stage's JPEG (the draw order of srdistill's version-1 sampler)
        steps.append({"draw": {"q2": _quality(st)}, "id": "q2"})
    return {"stage": f"stage{n}", "steps": steps}


def to_v2_document(spec: SpecV1) -> dict:
    """The version-2 document of a version-1 spec: same draws in the same order, same bytes."""
    doc = {"version": 2, "name": spec.name, "scale": spec.scale,
           "description": f"converted from the version-1 spec {spec.name!r}", "source": "version-1 spec"}
    if spec.kind == "resize":
        return {**doc, "pipeline": [{"op": "bicubic_downsample"}]}
    pipeline = []
    if spec.usm is not None:
        pipeline.append({"op": "usm", "id": "usm", **_plain(spec.usm)})
    pipeline += [_stage(1, spec.stage1, "input"), _stage(2, spec.stage2, "lr")]
    fin = spec.final
    codec = spec.stage2.jpeg_codec
    resize = {"op": "resize", "id": "resize_lr", "scale": 1.0, "relative_to": "lr", "coords": "size",
              "mode": {"choice": list(fin.modes), "probs": list(fin.mode_probs)}}
    sinc = {"op": "sinc", "p": fin.sinc_prob, "size": {"pick": list(fin.sinc_sizes)},
            "omega": {"uniform": list(fin.sinc_omega)}}

    def jpeg(ident):
        return {"op": "jpeg", "id": ident, "quality": {"var": "q2"}, "codec": codec}

    pipeline.append({"stage": "final", "steps": [{"id": "final_order", "one_of": [
        {"weight": fin.jpeg_first_prob, "steps": [jpeg("jpeg2_first"), {**resize, "id": "resize_lr_a"},
                                                  {**sinc, "id": "sinc_a"}]},
        {"weight": 1.0 - fin.jpeg_first_prob, "steps": [{**resize, "id": "resize_lr_b"}, {**sinc, "id": "sinc_b"},
                                                        jpeg("jpeg2_last")]},
    ]}]})
    return {**doc, "pipeline": pipeline}


# ---------------------------------------------------------------- params version 1/2 -> op record


def record_from_v1(params: dict, spec_doc: dict) -> dict:
    """The version-3 op record of a version-1 shard's params, with the manifest's version-1 spec document."""
    if not isinstance(params, dict) or params.get("version") not in (1, 2):
        raise UserError(f"params version {params.get('version') if isinstance(params, dict) else params!r} is not "
                        f"a version-1 record (1 or 2).")
    spec = spec_from_dict(spec_doc)
    h, w = params["hr_shape"]
    out = {"version": 3, "hr_shape": [h, w], "scale": spec.scale, "ops": []}
    ops = out["ops"]
    if spec.kind == "resize":
        ops.append({"op": "bicubic_downsample", "at": None})
        return out
    if spec.usm is not None:
        ops.append({"op": "usm", "at": None, "id": "usm", **_plain(spec.usm)})
    for n, rel in ((1, "input"), (2, "lr")):
        at, p, st = f"stage{n}", params[f"stage{n}"], getattr(spec, f"stage{n}")
        if p["kernel"] is not None:
            ops.append({"op": "blur", "at": at, "id": f"blur{n}", "kernel": p["kernel"]})
        r = p["resize"]
        ops.append({"op": "resize", "at": at, "scale": r["scale"], "mode": r["mode"], "relative_to": rel,
                    "coords": st.resize.coords})
        nz = p["noise"]
        if nz["type"] == "gaussian":
            ops.append({"op": "gaussian_noise", "at": at, "sigma": nz["sigma"], "gray": nz["gray"], "seed": nz["seed"]})
        else:
            ops.append({"op": "poisson_noise", "at": at, "scale": nz["scale"], "gray": nz["gray"], "seed": nz["seed"]})
        if n == 1:
            ops.append({"op": "jpeg", "at": at, "id": "jpeg1", "quality": p["jpeg_quality"], "codec": st.jpeg_codec})
    fin = params["final"]
    q2 = params["stage2"]["jpeg_quality"]
    jpeg = {"op": "jpeg", "at": "final", "quality": q2, "codec": spec.stage2.jpeg_codec}
    resize = {"op": "resize", "at": "final", "scale": 1.0, "mode": fin["mode"], "relative_to": "lr", "coords": "size"}
    sinc = [] if fin["sinc"] is None else [
        {"op": "sinc", "at": "final", "size": fin["sinc"]["size"], "omega": fin["sinc"]["omega"]}]
    if fin["order"] == "jpeg_first":
        ops += [{**jpeg, "id": "jpeg2_first"}, {**resize, "id": "resize_lr_a"}, *[{**s, "id": "sinc_a"} for s in sinc]]
    else:
        ops += [{**resize, "id": "resize_lr_b"}, *[{**s, "id": "sinc_b"} for s in sinc], {**jpeg, "id": "jpeg2_last"}]
    return out
