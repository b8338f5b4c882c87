"""The version-1 view of a version-2 spec: the version-1 spec (srdistill.degrade.spec.v1) whose conversion is
exactly the given spec, for tools built on Real-ESRGAN's fixed structure (the reference implementation's options).
It reads the version-2 schema, which itself converts version-1 documents on load, so it lives beside both.
"""

from __future__ import annotations

from srdistill.degrade.ops.kernels import KernelSpec
from srdistill.degrade.spec.schema import Draw, OneOf, OpStep, Stage, iter_steps, spec_from_dict, spec_hash
from srdistill.degrade.spec.v1 import FinalSpec, NoiseSpec, ResizeSpec, SpecV1, StageSpec, USMSpec, to_v2_document
from srdistill.core.errors import UserError


def from_v2(spec) -> SpecV1 | None:
    """The version-1 spec whose conversion is exactly `spec` (a degrade.spec.DegradationSpec), or None when
    `spec` does not have that structure. Lets tools built on the fixed Real-ESRGAN structure (the reference
    implementation's options) read a version-2 spec."""
    steps = {}
    for s, _ in iter_steps(spec.pipeline):
        ident = s.name if isinstance(s, Stage) else getattr(s, "id", None)
        if ident is not None:
            steps[ident] = s
    if len(spec.pipeline) == 1 and isinstance(spec.pipeline[0], OpStep) and spec.pipeline[0].op == "bicubic_downsample":
        v1 = SpecV1(spec.name, spec.scale, "resize", resize_mode="bicubic")
    else:
        try:
            def quality(value) -> tuple[tuple[float, float], str]:
                lo, hi = value.get("randint", value.get("uniform"))
                return (lo, hi), "libjpeg" if "randint" in value else "diffjpeg"

            def stage(n: int) -> StageSpec:
                blur, resize, noise = steps[f"blur{n}"], steps[f"resize{n}"], steps[f"noise{n}"]
                _expect(isinstance(blur, OpStep) and isinstance(resize, OneOf) and isinstance(noise, OneOf))
                up, down, _ = (o.params for o in resize.options)
                gauss, poisson = (o.params for o in noise.options)
                q = steps["jpeg1"].params["quality"] if n == 1 else dict(steps["q2"].values)["q2"]
                jq, codec = quality(q)
                return StageSpec(
                    blur_prob=blur.p, kernel=KernelSpec(**{k: tuple(v) if isinstance(v, list) else v
                                                           for k, v in blur.params["kernel"].items()}),
                    resize=ResizeSpec(tuple(resize.weights), (down["scale"]["uniform"][0], up["scale"]["uniform"][1]),
                                      tuple(up["mode"]["choice"]), tuple(up["mode"]["probs"]), up["coords"]),
                    noise=NoiseSpec(noise.weights[0], tuple(gauss["sigma"]["uniform"]),
                                    tuple(poisson["scale"]["uniform"]), gauss["gray"]["bernoulli"]),
                    jpeg_quality=jq, jpeg_codec=codec)

            usm = steps.get("usm")
            order, resize_lr, sinc = steps["final_order"], steps["resize_lr_a"].params, steps["sinc_a"]
            _expect(isinstance(order, OneOf) and isinstance(steps["q2"], Draw))
            v1 = SpecV1(
                spec.name, spec.scale, "second_order",
                usm=USMSpec(**usm.params) if usm is not None else None, stage1=stage(1), stage2=stage(2),
                final=FinalSpec(order.weights[0], tuple(resize_lr["mode"]["choice"]),
                                tuple(resize_lr["mode"]["probs"]), sinc.p, tuple(sinc.params["size"]["pick"]),
                                tuple(sinc.params["omega"]["uniform"])))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
    try:
        same = spec_hash(spec_from_dict(to_v2_document(v1))) == spec_hash(spec)
    except UserError:
        return None
    return v1 if same else None


def _expect(cond: bool) -> None:
    if not cond:
        raise TypeError("not the version-1 structure")
