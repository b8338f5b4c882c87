"""Every registered op's declarations: every parameter documented and defaulted to a value or distribution its own
range and choices allow, and the op's summary and source naming what it follows."""

import numpy as np
import pytest
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.opdef import REGISTRY, OpContext, draw, draw_seed, is_distribution

OPS = sorted(REGISTRY)


def _support(value) -> list:
    """Every value a default can take: a fixed value, or a distribution's ends / choices."""
    if not is_distribution(value):
        return [value]
    for key in ("uniform", "log_uniform", "randint"):
        if key in value:
            return list(value[key])
    for key in ("choice", "pick"):
        if key in value:
            return list(value[key])
    return [True, False]


@pytest.mark.parametrize("name", OPS)
def test_every_parameter_has_a_documented_default_its_range_allows(name):
    op = REGISTRY[name]
    assert op.summary and op.source and op.apply
    for p in op.params:
        assert p.doc, (name, p.name)
        for v in _support(p.default):
            if p.type is object and isinstance(v, str):   # a mixed-form parameter's keyword (its op's draw reads it)
                continue
            assert isinstance(v, p.type) or (p.type is float and isinstance(v, int)), (name, p.name, v)
            if p.range is not None:
                assert p.range[0] <= v <= p.range[1], (name, p.name, v)
            if p.choices is not None:
                assert v in p.choices, (name, p.name, v)


@pytest.mark.parametrize("name", OPS)
def test_default_draws_are_of_the_declared_types(name):
    rng = np.random.Generator(np.random.PCG64(0))
    op = REGISTRY[name]
    spec = {p.name: p.default for p in op.params}
    values = op.draw(rng, spec) if op.draw else {k: draw(rng, v) for k, v in spec.items()}
    assert set(values) <= {p.name for p in op.params}, (name, values)
    for p in op.params:
        if p.name in values:   # an op's own draw leaves out what its drawn kind does not use (bsrgan_blur)
            assert isinstance(values[p.name], float if p.type is object else p.type), (name, p.name, values[p.name])


def test_sources_name_the_library_versions_or_papers():
    assert "libwebp 1." in REGISTRY["webp"].source
    assert "libavif 1." in REGISTRY["avif"].source and "libaom" in REGISTRY["avif"].source
    assert "libavcodec" in REGISTRY["video_frame"].source and "PyAV 18" in REGISTRY["video_frame"].source
    assert "Brooks" in REGISTRY["sensor_noise"].source and "BSRGAN" in REGISTRY["sensor_noise"].source
    assert "Floyd" in REGISTRY["color_quantize"].source and "Bayer" in REGISTRY["color_quantize"].source


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 2), (7, 4)])
def test_every_op_not_declared_to_resize_keeps_a_tiny_images_shape_with_its_default_draws(shape):
    img = np.random.default_rng(1).random((*shape, 3)).astype(np.float32)
    rng = np.random.Generator(np.random.PCG64(2))
    for name in [n for n in OPS if not REGISTRY[n].resizes]:
        op = REGISTRY[name]
        spec = {p.name: p.default for p in op.params}
        values = op.draw(rng, spec) if op.draw else {k: draw(rng, v) for k, v in spec.items()}
        if op.seeded:
            values["seed"] = draw_seed(rng)
        out = op.apply(img, values, OpContext(scale=1, hr_shape=shape))
        assert out.shape == img.shape and out.dtype == np.float32 and np.isfinite(out).all(), (name, values)
