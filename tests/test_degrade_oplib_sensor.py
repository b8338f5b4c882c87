"""sensor_noise: in linear light the noise is unbiased with variance read + shot * x, and the levels are drawn as
Brooks et al. 2019 draw them (log-uniform shot, log-normal read around 2.18 log(shot) + 1.20)."""

import math

import numpy as np
import pytest
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.opdef import REGISTRY, OpContext

CTX = OpContext(scale=4, hr_shape=(64, 64))
OP = REGISTRY["sensor_noise"]


def _linear(s: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding, written out here independently of the op."""
    s = s.astype(np.float64)
    return np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)


def _encode(x: float) -> float:
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055


@pytest.mark.parametrize("x", [0.05, 0.2, 0.6])
def test_noise_in_linear_light_is_unbiased_with_variance_read_plus_shot_times_signal(x):
    shot, read = 0.004, 2e-4
    flat = np.full((256, 256, 3), _encode(x), np.float32)
    out = _linear(OP.apply(flat, {"shot": shot, "read": read, "seed": 11}, CTX))
    var = read + shot * x
    n = out.size
    assert abs(out.mean() - x) < 4 * math.sqrt(var / n)
    assert out.var() == pytest.approx(var, rel=0.02)  # ~0.3 % standard error over 196 608 samples
    # per channel too: independent noise in R, G and B
    corr = np.corrcoef(out[..., 0].ravel(), out[..., 1].ravel())[0, 1]
    assert abs(corr) < 0.02


def test_the_default_levels_follow_brooks_et_al():
    spec = {p.name: p.default for p in OP.params}
    rng = np.random.Generator(np.random.PCG64(5))
    draws = [OP.draw(rng, spec) for _ in range(4000)]
    shot = np.log([d["shot"] for d in draws])
    read = np.log([d["read"] for d in draws])
    lo, hi = math.log(1e-4), math.log(0.012)
    assert shot.min() >= lo and shot.max() <= hi
    assert shot.mean() == pytest.approx((lo + hi) / 2, abs=0.06)  # log-uniform: uniform in log, sd 1.38
    assert shot.std() == pytest.approx((hi - lo) / math.sqrt(12), rel=0.03)
    resid = read - (2.18 * shot + 1.20)
    assert resid.mean() == pytest.approx(0.0, abs=0.015) and resid.std() == pytest.approx(0.26, rel=0.04)


def test_a_fixed_read_level_in_the_spec_replaces_brooks_relation():
    spec = {"shot": {"log_uniform": [1e-4, 0.012]}, "read": 3e-4}
    a = OP.draw(np.random.Generator(np.random.PCG64(1)), spec)
    b = OP.draw(np.random.Generator(np.random.PCG64(1)), dict(spec, read="from_shot"))
    assert a["read"] == 3e-4 and b["shot"] == a["shot"] and b["read"] != a["read"]


def test_sensor_noise_replays_from_its_seed_and_differs_between_seeds():
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    v = {"shot": 0.01, "read": 1e-3, "seed": 1234}
    a = OP.apply(img, v, CTX)
    assert a.tobytes() == OP.apply(img.copy(), dict(v), CTX).tobytes()
    assert not np.array_equal(a, OP.apply(img, dict(v, seed=1235), CTX))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_a_distribution_for_read_is_refused_naming_the_path():
    from srdistill.degrade.spec.schema import spec_from_dict
    from srdistill.core.errors import UserError

    doc = {"version": 2, "name": "x", "scale": 4,
           "pipeline": [{"op": "sensor_noise", "read": {"uniform": [0, 0.1]}}, {"op": "bicubic_downsample"}]}
    with pytest.raises(UserError, match=r"spec\.pipeline\[0\]\.read takes a fixed value here, not a distribution"):
        spec_from_dict(doc)
