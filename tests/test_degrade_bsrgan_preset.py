"""The `bsrgan` preset (degrade/spec/presets/bsrgan.yaml) against degradation_bsrgan of cszn/BSRGAN
utils/utils_blindsr.py @ ea4e5ef: its order statistics over many draws (downsample1 at 0.25, downsample2 always
before downsample3 and every other order uniform, the in-shuffle JPEG at 0.9, a final JPEG always), its
sf-dependent ranges, its JPEG being the reference's cv2 round trip; and that it builds, verifies and replays bit
for bit, with the same shard bytes on 1 and 2 Ray workers."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import cv2
import numpy as np
import pytest
from helpers.images import good_folder
from helpers.shards import shard_bytes
from scipy import stats
from srdistill.degrade.build.builder import build
from srdistill.degrade.cli import main as degrade_main
from srdistill.degrade.ops.opdef import REGISTRY, OpContext
from srdistill.degrade.pipeline import apply_params, sample_params, sample_rng
from srdistill.degrade.spec.schema import PRESETS, load_spec, preset_infos
from srdistill.degrade.inspect.verify import replay, verify

P_MIN = 1e-4  # fixed seeds make these deterministic; a wrong sampler fails them by orders of magnitude
N = 20000
COMMIT = "ea4e5efb5edb630bbcc2501ca2242d94a4c5aeea"
# the shuffled steps, labelled as the record shows them (downsample2 is either of its two ops)
LABEL = {"bsrgan_blur": "blur", "bsrgan_resize": "ds2", "bsrgan_shift_decimate": "ds2", "bsrgan_resize_lr": "ds3",
         "bsrgan_noise": "noise", "jpeg": "jpeg"}


@pytest.fixture(scope="module")
def spec():
    return load_spec("bsrgan")


@pytest.fixture(scope="module")
def records(spec):
    rng = sample_rng(0, "bsrgan-frequency-test")
    return [sample_params(spec, rng, (64, 64)) for _ in range(N)]


def _binom(k, n, p):
    assert stats.binomtest(k, n, p).pvalue > P_MIN, (k / n, p)


def _chi2(values, probs: dict):
    counts = Counter(values)
    assert set(counts) <= set(probs), set(counts) - set(probs)
    cats = sorted(probs)
    obs = np.array([counts[c] for c in cats], dtype=float)
    exp = np.array([probs[c] for c in cats]) * len(values)
    assert stats.chisquare(obs, exp).pvalue > P_MIN, dict(counts)


def _uniform(xs, lo, hi):
    xs = np.asarray(xs)
    assert xs.min() >= lo and xs.max() <= hi
    assert stats.kstest(xs, "uniform", args=(lo, hi - lo)).pvalue > P_MIN


def _shuffled(rec):
    return [o for o in rec["ops"] if o["at"] in ("shuffle_x2", "shuffle_x4")]


def test_preset_is_listed_with_its_source(spec):
    assert "bsrgan" in PRESETS and spec.scale == 4
    info = next(i for i in preset_infos() if i.name == "bsrgan")
    assert COMMIT in info.source and "utils_blindsr.py" in info.source and info.description


def test_downsample1_rate_and_variants(records):
    halved = [r["ops"][0]["at"] == "downsample1" for r in records]
    _binom(sum(halved), N, 0.25)
    for r, h in zip(records, halved):  # downsample1 is one op, and the x2 block runs after it, only then
        assert {o["at"] for o in _shuffled(r)} == ({"shuffle_x2"} if h else {"shuffle_x4"})
    first = [r for r, h in zip(records, halved) if h]
    ops = [r["ops"][0] for r in first]
    assert all(r["ops"][1]["at"] != "downsample1" for r in first)
    _chi2([o["op"] for o in ops], {"bsrgan_resize": 0.5, "bsrgan_imresize": 0.5})
    assert {(o.get("factor"), o["op"]) for o in ops} == {(2.0, "bsrgan_resize"), (2, "bsrgan_imresize")}
    _chi2([o["interp"] for o in ops if o["op"] == "bsrgan_resize"], {"linear": 1 / 3, "cubic": 1 / 3, "area": 1 / 3})


def test_shuffle_order_keeps_downsample2_before_3_and_is_otherwise_uniform(records):
    labels = ["blur", "blur", "ds2", "ds3", "noise", "jpeg"]
    # BSRGAN: a uniform permutation of its 7 steps, then ds2 and ds3 swap places if ds3 came first; the ISP step
    # never runs, so the other 6 are in a uniform order among those with ds2 first. Each label sequence counts
    # the permutations that give it (the two blurs look alike).
    perms = [tuple(labels[i] for i in p) for p in itertools.permutations(range(6))]
    valid = Counter(p for p in perms if p.index("ds2") < p.index("ds3"))
    expected = {seq: c / sum(valid.values()) for seq, c in valid.items()}
    assert len(expected) == 180
    with_jpeg, without = [], []
    for r in records:
        seq = tuple(LABEL[o["op"]] for o in _shuffled(r))
        assert seq.index("ds2") < seq.index("ds3")
        (with_jpeg if "jpeg" in seq else without).append(seq)
    _binom(len(with_jpeg), N, 0.9)
    _chi2(with_jpeg, expected)
    # without its JPEG, the order of the other five is the same rule's
    five = Counter(tuple(x for x in p if x != "jpeg") for p in valid.elements())
    _chi2(without, {s: c / sum(five.values()) for s, c in five.items()})


def test_final_jpeg_always_last_with_the_reference_quality(records):
    finals = [r["ops"][-1] for r in records]
    assert all(o["op"] == "jpeg" and o["at"] is None and o["codec"] == "libjpeg" for o in finals)
    _chi2([o["quality"] for o in finals], {q: 1 / 66 for q in range(30, 96)})
    inner = [o["quality"] for r in records for o in _shuffled(r) if o["op"] == "jpeg"]
    _chi2(inner, {q: 1 / 66 for q in range(30, 96)})
    assert all(o["codec"] == "libjpeg" for r in records for o in _shuffled(r) if o["op"] == "jpeg")


@pytest.mark.parametrize("block, sf", [("shuffle_x2", 2), ("shuffle_x4", 4)])
def test_each_block_draws_with_its_sf(records, block, sf):
    ops = [o for r in records for o in _shuffled(r) if o["at"] == block]
    blurs = [o for o in ops if o["op"] == "bsrgan_blur"]
    _chi2([o["kind"] for o in blurs], {"anisotropic": 0.5, "isotropic": 0.5})
    aniso = [o for o in blurs if o["kind"] == "anisotropic"]
    _uniform([o["l1"] for o in aniso], 0, 4 + sf)  # wd2 = 4 + sf
    _uniform([o["l2"] for o in aniso], 0, 4 + sf)
    _uniform([o["theta"] for o in aniso], 0, math.pi)
    _uniform([o["sigma"] for o in blurs if o["kind"] == "isotropic"], 0, 2 + 0.2 * sf)  # wd = 2 + 0.2 sf
    _chi2([o["ksize"] for o in blurs], {2 * r + 3: 0.1 for r in range(2, 12)})
    ds2 = [o for o in ops if LABEL[o["op"]] == "ds2"]
    _chi2([o["op"] for o in ds2], {"bsrgan_resize": 0.75, "bsrgan_shift_decimate": 0.25})
    _uniform([o["factor"] for o in ds2 if o["op"] == "bsrgan_resize"], 1, 2 * sf)
    shifted = [o for o in ds2 if o["op"] == "bsrgan_shift_decimate"]
    assert {(o["sf"], o["ksize"]) for o in shifted} == {(sf, 25)}
    _uniform([o["sigma"] for o in shifted], 0.1, 0.6 * sf)
    for interp in ([o["interp"] for o in ds2 if o["op"] == "bsrgan_resize"],
                   [o["interp"] for o in ops if o["op"] == "bsrgan_resize_lr"]):
        _chi2(interp, {"linear": 1 / 3, "cubic": 1 / 3, "area": 1 / 3})
    noise = [o for o in ops if o["op"] == "bsrgan_noise"]
    _chi2([o["level"] for o in noise], {n: 1 / 24 for n in range(2, 26)})
    _chi2([o["mode"] for o in noise], {"color": 0.4, "gray": 0.4, "correlated": 0.2})
    assert {o["corr_level"] for o in noise} == {25.0}


def test_jpeg_step_is_the_reference_cv2_round_trip():
    img = np.random.default_rng(3).random((40, 56, 3)).astype(np.float32) * 1.2 - 0.1
    out = REGISTRY["jpeg"].apply(img, {"quality": 57, "codec": "libjpeg"}, OpContext(4, (40, 56)))
    # add_JPEG_noise: single2uint = uint8(round(clip(img) * 255)), RGB -> BGR, imencode with only the quality
    u8 = np.uint8(np.round(np.clip(img, 0, 1) * 255.0))
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), 57])
    ref = cv2.cvtColor(np.float32(cv2.imdecode(enc, 1) / 255.0), cv2.COLOR_BGR2RGB)
    assert ok and np.array_equal(out, ref)


def test_every_sample_ends_at_hr_over_4_and_replays(spec):
    hr = cv2.resize(np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8), (80, 64),
                    interpolation=cv2.INTER_CUBIC)
    for i in range(40):
        params = sample_params(spec, sample_rng(1, f"s{i}"), hr.shape[:2])
        lr = apply_params(hr, params, spec)
        assert lr.shape == (16, 20, 3) and lr.dtype == np.uint8
        assert apply_params(hr, params, spec).tobytes() == lr.tobytes()


OPTS = {"crop": 64, "crops_per_image": 2, "shard_samples": 3, "seed": 11, "progress": False}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_builds_verifies_replays_and_gives_the_same_bytes_on_1_and_2_workers(tmp_path, capsys):
    src = good_folder(tmp_path / "src", n=3, size=96)
    one = build(str(src), str(tmp_path / "one"), "bsrgan", workers=1, **OPTS)
    two = build(str(src), str(tmp_path / "two"), "bsrgan", workers=2, **OPTS)
    assert one.samples == two.samples == 6 and one.shards == 2
    assert shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "one")
    assert verify(str(tmp_path / "one")).ok
    report = replay(str(tmp_path / "one"), samples=0)
    assert report.checked == 6 and not report.mismatches
    assert degrade_main(["verify", str(tmp_path / "two")]) == 0
    assert degrade_main(["replay", str(tmp_path / "two"), "--samples", "0"]) == 0
    capsys.readouterr()
