"""The degradation pipeline: draw every random choice into a JSON record, then apply the record to an HR image.

`sample_params` walks the spec's pipeline and does no image work (cheap, so its statistics can be tested on
many draws): per step it draws the gate (if `p` is given), then the one_of option or the shuffle permutation,
or the op's parameters in declared order (or the op's own draw), then `seed` for a seeded op. Its record
(PARAMS_VERSION 3) lists the ops that ran, in order, each with every parameter value and `at` (its stage):

    {"version": 3, "hr_shape": [h, w], "scale": 4, "ops": [{"op": "blur", "at": "stage1", "kernel": {...}}, ...]}

`apply_record` is a pure function of (hr, record): a sample's json re-derives its LR bit-exactly with no spec.
Values stay float and unclamped between ops except where an op clamps; the end is rounded to uint8.
"""

from __future__ import annotations

import hashlib

import numpy as np
import srdistill.degrade.ops.library  # noqa: F401  (registers every op, also in a fresh Ray worker)
from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.ops.opdef import REGISTRY, OpContext, choose, draw, draw_seed
from srdistill.degrade.spec.schema import DegradationSpec, Draw, OneOf, OpStep, Sequence, Shuffle, Stage, Step
from srdistill.core.errors import UserError

PARAMS_VERSION = 3  # 3: the op record of schema-2 specs; 1/2: the fixed Real-ESRGAN structure (degrade/spec/v1.py)
NOT_VALUES = ("op", "at", "id")  # keys of a recorded op that are not its values


class WrongLRSize(ValueError):
    """The ops of a record do not end at exactly HR/scale."""


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (global seed, sample key) only: independent of process, worker and order."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    digest = hashlib.sha256(f"srdistill.degrade\0{int(seed)}\0{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "little"))))


def _check_shape(hr_shape: tuple[int, int], scale: int) -> tuple[int, int]:
    h, w = int(hr_shape[0]), int(hr_shape[1])
    if h < scale or w < scale or h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} must be a positive multiple of the scale {scale}")
    return h, w


def shuffle_order(rng: np.random.Generator, s: Shuffle) -> list[int]:
    """The order a shuffle runs its steps in: one permutation draw, then for each keep_order pair (a, b) the two
    swap places when a came after b (BSRGAN's rule for its two downsamples)."""
    order = [int(i) for i in rng.permutation(len(s.steps))]
    ids = [c.name if isinstance(c, Stage) else getattr(c, "id", None) for c in s.steps]
    for a, b in s.keep_order:
        ia, ib = order.index(ids.index(a)), order.index(ids.index(b))
        if ia > ib:
            order[ia], order[ib] = order[ib], order[ia]
    return order


def _run(step: Step, rng: np.random.Generator, env: dict, at: str | None, out: list) -> None:
    if getattr(step, "p", None) is not None and not rng.random() < step.p:
        return
    if isinstance(step, OpStep):
        op = REGISTRY[step.op]
        given = {k: env[v["var"]] if isinstance(v, dict) and "var" in v else v for k, v in step.params.items()}
        values = op.draw(rng, given) if op.draw is not None else {p.name: draw(rng, given[p.name]) for p in op.params}
        if op.seeded:
            values["seed"] = draw_seed(rng)
        out.append({"op": step.op, "at": at, **({"id": step.id} if step.id else {}), **values})
    elif isinstance(step, Stage):
        for s in step.steps:
            _run(s, rng, env, step.name, out)
    elif isinstance(step, Sequence):
        for s in step.steps:
            _run(s, rng, env, at, out)
    elif isinstance(step, OneOf):
        _run(step.options[choose(rng, range(len(step.options)), step.probs)], rng, env, at, out)
    elif isinstance(step, Shuffle):
        for i in shuffle_order(rng, step):
            _run(step.steps[i], rng, env, at, out)
    elif isinstance(step, Draw):
        for name, value in step.values:
            env[name] = draw(rng, value)


def sample_params(spec: DegradationSpec, rng: np.random.Generator, hr_shape: tuple[int, int]) -> dict:
    """Every random draw of one sample: the record of the ops that will run (JSON-serialisable, no image work)."""
    h, w = _check_shape(hr_shape, spec.scale)
    ops_run: list[dict] = []
    env: dict = {}
    for step in spec.pipeline:
        _run(step, rng, env, None, ops_run)
    return {"version": PARAMS_VERSION, "hr_shape": [h, w], "scale": spec.scale, "ops": ops_run}


def op_values(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in NOT_VALUES}


def apply_record(hr: np.ndarray, record: dict, *, stages: bool = False):
    """Degrade an HR (uint8 HxWx3 RGB) with a version-3 record -> uint8 LR of (H/scale, W/scale, 3).
    With `stages`, returns (lr, [(stage name, uint8 image after its last op), ...]) for preview."""
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"HR must be a uint8 HxWx3 array, got {hr.dtype} {hr.shape}")
    if not isinstance(record, dict) or record.get("version") != PARAMS_VERSION:
        raise ValueError(f"params version {record.get('version') if isinstance(record, dict) else None!r} is not "
                         f"{PARAMS_VERSION}; version-1 params need their spec (degrade/spec_v1.record_from_v1)")
    scale = int(record["scale"])
    h, w = _check_shape(hr.shape[:2], scale)
    if list(record.get("hr_shape", ())) != [h, w]:
        raise ValueError(f"params were drawn for a {record.get('hr_shape')} HR, not for this {h}x{w} image")
    ctx = OpContext(scale=scale, hr_shape=(h, w))
    img = ops.to_float(hr)
    shown: list[tuple[str, np.ndarray]] = []
    entries = record["ops"]
    for i, entry in enumerate(entries):
        if entry["op"] not in REGISTRY:
            raise UserError(f"the recorded op {entry['op']!r} is not known to this srdistill (known ops: "
                            f"{', '.join(sorted(REGISTRY))}).")
        img = REGISTRY[entry["op"]].apply(img, op_values(entry), ctx)
        at = entry.get("at")
        if stages and at is not None and (i + 1 == len(entries) or entries[i + 1].get("at") != at):
            shown.append((at, ops.quantize(img)))
    if img.shape != (h // scale, w // scale, 3):
        raise WrongLRSize(f"the ops end with a {img.shape[0]}x{img.shape[1]} image, not HR/{scale} = "
                         f"{h // scale}x{w // scale}")
    lr = ops.quantize(img)
    return (lr, shown) if stages else lr


def apply_params(hr: np.ndarray, params: dict, spec: DegradationSpec) -> np.ndarray:
    """apply_record for params drawn from `spec` (its scale must be the record's)."""
    if params.get("scale") != spec.scale:
        raise ValueError(f"params were drawn at scale {params.get('scale')}, not at this spec's {spec.scale}")
    return apply_record(hr, params)


def degrade_image(hr: np.ndarray, spec: DegradationSpec, seed: int, key: str) -> tuple[np.ndarray, dict]:
    """Draw params for (seed, key) and apply them: returns (lr, params). A spec whose ops do not end at exactly
    HR/scale is a UserError naming it."""
    params = sample_params(spec, sample_rng(seed, key), hr.shape[:2])
    try:
        return apply_params(hr, params, spec), params
    except WrongLRSize as exc:
        raise UserError(f"spec {spec.name!r} does not end at HR/scale: {exc} (the last resize must be "
                        f"relative_to: lr with scale 1, or a downsample by the scale).") from None
