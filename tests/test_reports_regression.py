"""Regression detector on constructed results: planted changes are flagged, noise is not, direction is respected."""

import numpy as np
import pandas as pd
import pytest

from srdistill.reports.history import Night
from srdistill.reports.regression import (
    BROKEN, IMPROVEMENT, NEW, REGRESSION, SLOWER, TOO_FEW, UNCHANGED, VANISHED,
    Thresholds, compare_nights, compare_results, compare_throughput, environment_changes,
    membership_changes, paired_interval,
)


def _frame(values, method="m", metric="psnr", lower_better=False, dataset="d", status="ok", fp="f1"):
    return pd.DataFrame(dict(
        method=method, dataset=dataset, image=[f"img{i:02d}" for i in range(len(values))], metric=metric,
        value=np.asarray(values, dtype=float), lower_better=lower_better, method_fingerprint=fp,
        dataset_fingerprint="ds", status=status, seconds=0.0,
    ))


RNG = np.random.default_rng(7)
# Per-image scores vary a lot between images; the paired design must see through that.
BASE = RNG.normal(28.0, 3.0, size=24)


def test_paired_t_interval_matches_hand_computation():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    cur = ref + np.array([0.1, 0.3, 0.2, 0.4])
    delta, lo, hi = paired_interval(ref, cur, Thresholds())
    d = np.array([0.1, 0.3, 0.2, 0.4])
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t(0.975, df=3) * s / sqrt(4)
    assert delta == pytest.approx(0.25)
    assert (lo, hi) == pytest.approx((0.25 - half, 0.25 + half))


def test_constant_shift_has_zero_width_interval():
    delta, lo, hi = paired_interval(BASE, BASE + 0.5, Thresholds())
    assert delta == lo == hi == pytest.approx(0.5)


def test_planted_drop_is_a_regression_and_noise_is_not():
    noise = RNG.normal(0.0, 0.2, size=BASE.size)
    planted = compare_results(_frame(BASE - 0.4 + noise), _frame(BASE), Thresholds())
    assert planted["verdict"].tolist() == [REGRESSION]
    assert planted["ci_high"].iloc[0] < 0
    # Zero-mean noise of the same size: the interval covers 0, nothing is flagged.
    jitter = np.tile([0.2, -0.2], BASE.size // 2)
    quiet = compare_results(_frame(BASE + jitter), _frame(BASE), Thresholds())
    assert quiet["verdict"].tolist() == [UNCHANGED]
    assert quiet["ci_low"].iloc[0] < 0 < quiet["ci_high"].iloc[0]


def test_random_noise_across_many_seeds_is_rarely_flagged():
    flagged = 0
    for seed in range(40):
        noise = np.random.default_rng(seed).normal(0.0, 0.2, size=BASE.size)
        out = compare_results(_frame(BASE + noise), _frame(BASE), Thresholds())
        flagged += out["verdict"].iloc[0] != UNCHANGED
    # A 95% interval plus a minimum effect: at most a few of 40 pure-noise nights may be flagged.
    assert flagged <= 4


def test_significant_but_tiny_change_is_below_min_effect():
    out = compare_results(_frame(BASE + 0.01), _frame(BASE), Thresholds())
    assert out["verdict"].tolist() == [UNCHANGED]
    out = compare_results(_frame(BASE + 0.01), _frame(BASE), Thresholds(min_effect={"psnr": 0.001}))
    assert out["verdict"].tolist() == [IMPROVEMENT]


def test_direction_of_better_is_respected():
    lp = RNG.uniform(0.1, 0.4, size=20)
    worse = compare_results(_frame(lp + 0.05, metric="lpips", lower_better=True),
                            _frame(lp, metric="lpips", lower_better=True), Thresholds())
    better = compare_results(_frame(lp - 0.05, metric="lpips", lower_better=True),
                             _frame(lp, metric="lpips", lower_better=True), Thresholds())
    assert worse["verdict"].tolist() == [REGRESSION]
    assert better["verdict"].tolist() == [IMPROVEMENT]
    up = compare_results(_frame(BASE + 0.5), _frame(BASE), Thresholds())
    assert up["verdict"].tolist() == [IMPROVEMENT]


def test_bootstrap_interval_is_seeded_and_flags_planted_change():
    th = Thresholds(ci="bootstrap", seed=3)
    noise = RNG.normal(0.0, 0.2, size=BASE.size)
    a = compare_results(_frame(BASE - 0.4 + noise), _frame(BASE), th)
    b = compare_results(_frame(BASE - 0.4 + noise), _frame(BASE), th)
    assert a.equals(b)
    assert a["verdict"].tolist() == [REGRESSION]


def test_pairs_only_shared_images_and_needs_two():
    cur = _frame(BASE[:5] + 1.0)
    ref = _frame(BASE[:5]).iloc[[0]]
    out = compare_results(cur, ref, Thresholds())
    assert out["verdict"].tolist() == [TOO_FEW] and out["n"].tolist() == [1]
    out = compare_results(cur, _frame(BASE[:3]), Thresholds())
    assert out["n"].tolist() == [3]


def test_failed_rows_are_ignored_and_fingerprint_change_noted():
    cur = pd.concat([_frame(BASE + 1.0, fp="f2"), _frame([np.nan], status="CUDA OOM").assign(image="x")])
    out = compare_results(cur, _frame(BASE), Thresholds())
    assert out["n"].tolist() == [BASE.size]
    assert out["fingerprint_changed"].tolist() == [True]


def test_membership_new_vanished_broken():
    ref = pd.concat([_frame(BASE, method="a"), _frame(BASE, method="b"), _frame(BASE, method="c")])
    cur = pd.concat([
        _frame(BASE, method="a"),
        _frame([np.nan] * 3, method="c", status="weights missing"),
        _frame(BASE, method="new1"),
    ])
    m = membership_changes(cur, ref)
    got = {(r.method, r.change) for r in m.itertuples()}
    assert got == {("new1", NEW), ("b", VANISHED), ("c", BROKEN)}
    assert m[m["change"] == BROKEN]["detail"].iloc[0] == "weights missing"


def test_throughput_threshold_and_exit_relevance():
    ref = pd.DataFrame(dict(name=["deg", "sr", "io"], value=[10.0, 5.0, 8.0], unit="images/s", items=4, seconds=1.0))
    cur = pd.DataFrame(dict(name=["deg", "sr", "io"], value=[6.0, 5.5, 12.0], unit="images/s", items=4, seconds=1.0))
    t = compare_throughput(cur, ref, Thresholds(throughput_rel=0.25))
    assert dict(zip(t["name"], t["verdict"])) == {"deg": SLOWER, "sr": UNCHANGED, "io": "faster"}
    assert t.set_index("name")["rel_change"]["deg"] == pytest.approx(-0.4)
    run = dict(commit="a", versions={"torch": "2.5"}, spec_hashes={"x": "1"})
    cur_n = Night("2026-01-02", dict(run, commit="b", versions={"torch": "2.6"}), _frame(BASE), cur)
    ref_n = Night("2026-01-01", run, _frame(BASE), ref)
    c = compare_nights("previous night", cur_n, ref_n, Thresholds())
    assert not c.has_regression(Thresholds())
    assert c.has_regression(Thresholds(fail_on_throughput=True))
    env = environment_changes(cur_n.run, ref_n.run)
    assert set(env["what"]) == {"commit", "versions.torch"}


def test_set_level_scores_compare_by_minimum_effect():
    from srdistill.core.iqa.metrics import DATASET_IMAGE
    from srdistill.reports.regression import SET_LEVEL_IMAGE

    assert SET_LEVEL_IMAGE == DATASET_IMAGE

    def fid(v):
        return _frame([v], metric="fid", lower_better=True).assign(image=DATASET_IMAGE)

    assert compare_results(fid(30.0), fid(25.0), Thresholds())["verdict"].tolist() == [REGRESSION]
    assert compare_results(fid(25.05), fid(25.0), Thresholds())["verdict"].tolist() == [UNCHANGED]
    assert compare_results(fid(20.0), fid(25.0), Thresholds())["verdict"].tolist() == [IMPROVEMENT]


def test_rows_under_another_protocol_are_never_compared():
    from srdistill.reports.regression import PROTOCOL_CHANGED

    before = _frame(BASE).assign(protocol="d3sr", protocol_hash="aaaa")
    after = _frame(BASE - 2.0).assign(protocol="ctsr", protocol_hash="bbbb")
    verdicts = compare_results(after, before, Thresholds())
    assert verdicts["verdict"].tolist() == [PROTOCOL_CHANGED] and np.isnan(verdicts["delta"].iloc[0])
    same = compare_results(after.assign(protocol_hash="aaaa"), before, Thresholds())
    assert same["verdict"].tolist() == [REGRESSION]
    # A night recorded before protocols existed compares with a night that has none either.
    legacy = compare_results(_frame(BASE - 2.0), _frame(BASE), Thresholds())
    assert legacy["verdict"].tolist() == [REGRESSION]
