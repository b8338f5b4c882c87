"""The op contract, for every registered op (no list of names: a new op is covered the moment it registers).

sample -> apply: float32 HxWx3 in, float32 HxWx3 out, finite, of the input's shape unless the op declares
`resizes` (then 3 channels at some size), in [0, 1] for an input in [0, 1] unless it declares `overshoots`;
the drawn values (the op's part of a sample's record) survive a JSON round trip and replay to the same bytes;
the same seed gives the same values and bytes, and an op with any drawn value draws differently across seeds;
and every op has its row in the page that holds the generated op table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.docs import OP_TABLE_PAGE
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.opdef import REGISTRY, OpContext, draw, draw_seed, is_distribution
from srdistill.degrade.ops.table import END, START

OPS = sorted(REGISTRY)
# a float32 convex combination of values in [0, 1] may round a few ulps past the ends
ROUNDING = 1e-6


def _sample(name: str, seed: int) -> dict:
    """What the pipeline's sampler draws for one op with its defaults: its own draw or the generic one, then
    `seed` for a seeded op."""
    op = REGISTRY[name]
    rng = np.random.Generator(np.random.PCG64(seed))
    spec = {p.name: p.default for p in op.params}
    values = op.draw(rng, spec) if op.draw else {k: draw(rng, v) for k, v in spec.items()}
    if op.seeded:
        values["seed"] = draw_seed(rng)
    return values


def _images() -> list[np.ndarray]:
    noise = np.random.default_rng(5).random((16, 24, 3)).astype(np.float32)
    checker = np.repeat((np.indices((16, 24)).sum(0) % 2).astype(np.float32)[..., None], 3, axis=2)
    return [noise, checker]


CTX = OpContext(scale=4, hr_shape=(16, 24))


@pytest.mark.parametrize("name", OPS)
def test_apply_maps_float32_rgb_to_float32_rgb_of_the_declared_shape_and_range(name):
    op = REGISTRY[name]
    for img in _images():
        for seed in range(4):
            values = _sample(name, seed)
            out = op.apply(img.copy(), values, CTX)
            assert out.dtype == np.float32 and out.ndim == 3 and out.shape[2] == 3, (name, values)
            assert np.isfinite(out).all(), (name, values)
            if not op.resizes:
                assert out.shape == img.shape, (name, values)
            if not op.overshoots:
                assert out.min() >= -ROUNDING and out.max() <= 1 + ROUNDING, (name, values, out.min(), out.max())


@pytest.mark.parametrize("name", OPS)
def test_apply_leaves_its_input_untouched(name):
    img = _images()[0]
    before = img.copy()
    REGISTRY[name].apply(img, _sample(name, 0), CTX)
    assert np.array_equal(img, before)


@pytest.mark.parametrize("name", OPS)
def test_drawn_values_survive_json_and_replay_to_the_same_bytes(name):
    op, img = REGISTRY[name], _images()[0]
    values = _sample(name, 1)
    replayed = json.loads(json.dumps(values))
    assert replayed == values
    assert op.apply(img, replayed, CTX).tobytes() == op.apply(img, values, CTX).tobytes()


@pytest.mark.parametrize("name", OPS)
def test_the_same_seed_gives_the_same_values_and_bytes_and_draws_vary_across_seeds(name):
    op, img = REGISTRY[name], _images()[0]
    assert _sample(name, 7) == _sample(name, 7)
    assert op.apply(img, _sample(name, 7), CTX).tobytes() == op.apply(img, _sample(name, 7), CTX).tobytes()
    drawn = op.seeded or op.draw is not None or any(is_distribution(p.default) for p in op.params)
    distinct = {json.dumps(_sample(name, s), sort_keys=True) for s in range(8)}
    assert (len(distinct) > 1) == drawn, (name, distinct)


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_its_row_in_the_generated_op_table_page(name):
    text = OP_TABLE_PAGE.read_text()
    assert START in text and END in text, f"{OP_TABLE_PAGE} holds no op table"
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert f"\n| `{name}` |" in table, f"op {name} has no row in {OP_TABLE_PAGE}'s op table"


@pytest.mark.parametrize("name", [n for n in OPS if REGISTRY[n].resizes or REGISTRY[n].overshoots])
def test_a_declared_exception_says_why(name):
    op = REGISTRY[name]
    for reason in (op.resizes, op.overshoots):
        assert isinstance(reason, str) and (not reason or len(reason.split()) >= 3), (name, reason)
