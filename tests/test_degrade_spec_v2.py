"""Schema-2 specs: one sentence naming the path for every class of mistake, the documented draw order (computed
here by hand from the same generator), one_of and shuffle frequencies against the spec, draw/var, base +
replace, hashing, and replay of records without the spec."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import yaml
from scipy import stats
from srdistill.degrade.pipeline import apply_record, degrade_image, sample_params, sample_rng
from srdistill.degrade.spec.schema import PRESETS, load_spec, resolve, spec_from_dict, spec_hash, spec_to_dict
from srdistill.core.errors import UserError

P_MIN = 1e-4  # fixed seeds: deterministic; a wrong sampler misses by many orders of magnitude


def spec(pipeline: str, **top) -> object:
    doc = {"version": 2, "name": "t", "scale": 4, "pipeline": yaml.safe_load(pipeline), **top}
    return spec_from_dict(resolve(doc, "t.yaml"))


def records(s, n: int, key: str = "k") -> list[dict]:
    rng = sample_rng(0, key)
    return [sample_params(s, rng, (16, 16)) for _ in range(n)]


# ------------------------------------------------------------------ errors: one sentence naming the path

ERRORS = [
    ("[{op: nope}]", "spec.pipeline[0].op", "unknown op 'nope'; known ops: "),
    ("[{stage: s, steps: [{op: blur, sigma: 1}]}]", "spec.pipeline[0].steps[0].sigma", "not a parameter of op 'blur'"),
    ("[{op: sinc, p: 1.5}]", "spec.pipeline[0].p", "probability in [0, 1]"),
    ("[{op: sinc, p: -0.1}]", "spec.pipeline[0].p", "probability in [0, 1]"),
    ("[{one_of: []}]", "spec.pipeline[0].one_of", "non-empty"),
    ("[{shuffle: []}]", "spec.pipeline[0].shuffle", "non-empty"),
    ("[{stage: s, steps: []}]", "spec.pipeline[0].steps", "non-empty"),
    ("[{one_of: [{op: sinc, weight: -1}, {op: usm}]}]", "spec.pipeline[0].one_of[0].weight", ">= 0"),
    ("[{one_of: [{op: sinc, weight: 0}, {op: defocus, weight: 0}]}]", "spec.pipeline[0].one_of", "all zero"),
    ("[{one_of: [{op: sinc}, {op: usm, weight: 2}]}]", "spec.pipeline[0].one_of[1].weight", "is ambiguous"),
    ("[{op: jpeg, quality: {uniform: [60, 40]}}]", "spec.pipeline[0].quality.uniform", "low <= high"),
    ("[{op: gaussian_noise, sigma: {log_uniform: [0, 3]}}]", "spec.pipeline[0].sigma.log_uniform", "low > 0"),
    ("[{op: resize, mode: {choice: []}}]", "spec.pipeline[0].mode.choice", "non-empty"),
    ("[{op: resize, mode: {choice: [area, bicubic], probs: [1.0]}}]", "spec.pipeline[0].mode.probs",
     "2 probabilities"),
    ("[{op: resize, mode: {choice: [area, bicubic], probs: [0.5, 0.6]}}]", "spec.pipeline[0].mode.probs",
     "sum to 1"),
    ("[{op: gaussian_noise, gray: {bernoulli: 1.2}}]", "spec.pipeline[0].gray.bernoulli", "probability in [0, 1]"),
    ("[{op: jpeg, quality: {randint: [30.5, 90]}}]", "spec.pipeline[0].quality.randint", "whole numbers"),
    ("[{op: jpeg, quality: {uniform: [50, 101]}}]", "spec.pipeline[0].quality.uniform", "within [1, 100]"),
    ("[{op: jpeg, quality: 0}]", "spec.pipeline[0].quality", "within [1, 100]"),
    ("[{op: resize, mode: lanczos}]", "spec.pipeline[0].mode", "one of area, bilinear, bicubic"),
    ("[{op: gaussian_noise, gray: {uniform: [0, 1]}}]", "spec.pipeline[0].gray.uniform", "draws numbers"),
    ("[{op: jpeg, quality: {uniform: [30, 95], bernoulli: 0.5}}]", "spec.pipeline[0].quality", "one distribution"),
    ("[{op: jpeg, quality: {var: q}}, {draw: {q: {uniform: [30, 95]}}}]", "spec.pipeline[0].quality",
     "before a draw of 'q'"),
    ("[{draw: {q: {uniform: [30, 95]}}, p: 0.5}, {op: jpeg, quality: {var: q}}]", "spec.pipeline[0]",
     "not a field of a draw step"),
    ("[{one_of: [{draw: {q: {uniform: [30, 95]}}}, {op: usm}]}, {op: jpeg, quality: {var: q}}]",
     "spec.pipeline[1].quality", "before a draw of 'q'"),
    ("[{draw: {q: {uniform: [30, 120]}}}, {op: jpeg, quality: {var: q}}]", "spec.pipeline[1].quality.uniform",
     "within [1, 100]"),
    ("[{op: sinc, id: a}, {stage: s, steps: [{op: usm, id: a}]}]", "spec.pipeline[1].steps[0]", "reuses the id 'a'"),
    ("[{stage: a, steps: [{op: usm}]}, {op: sinc, id: a}]", "spec.pipeline[1]", "reuses the id 'a'"),
    ("[{shuffle: [{op: sinc, id: a}, {op: usm, id: b}], keep_order: [[a, c]]}]", "spec.pipeline[0].keep_order[0]",
     "'c'"),
    ("[{op: sinc, one_of: [{op: usm}]}]", "spec.pipeline[0]", "exactly one of"),
    ("[{op: jpeg, codec: diffjpeg, quality: {uniform: [90, 100]}}]", "spec.pipeline[0].quality", "below 100"),
    ("[{op: blur, kernel: {sinc_prob: 1.5}}]", "spec.pipeline[0].kernel.sinc_prob", "probability"),
    ("[{op: sinc, size: {pick: [7, 8]}}]", "spec.pipeline[0].size", "odd sizes"),
    ("[{op: resize, relative_to: lr, coords: scale_factor}]", "spec.pipeline[0].coords", "relative_to: input"),
]


@pytest.mark.parametrize("pipeline,path,what", ERRORS, ids=[e[1] + ":" + e[2][:20] for e in ERRORS])
def test_each_mistake_is_one_sentence_naming_its_path(pipeline, path, what):
    with pytest.raises(UserError) as e:
        spec(pipeline)
    msg = str(e.value)
    assert msg.startswith(path) and what in msg, msg
    assert "\n" not in msg and msg.endswith(".")


@pytest.mark.parametrize("doc,what", [
    ({"version": 2, "base": "realesrgan", "replace": {"nope": {"op": "sinc"}}}, "spec.replace.nope"),
    ({"version": 2, "base": "nosuch", "name": "x"}, "spec.base"),
    ({"version": 3, "name": "x", "scale": 4, "pipeline": [{"op": "usm"}]}, "spec.version"),
    ({"version": 2, "name": "x", "scale": 0, "pipeline": [{"op": "usm"}]}, "spec.scale"),
    ({"version": 2, "name": "x", "scale": 4, "pipline": []}, "spec.pipline"),
    ({"version": 2, "name": "x", "scale": 4, "replace": {"a": {"op": "usm"}}}, "spec.replace"),
])
def test_document_level_mistakes(doc, what):
    with pytest.raises(UserError) as e:
        spec_from_dict(resolve(doc, "t.yaml"))
    assert what in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ draw order, computed by hand


def test_draw_order_is_gate_option_params_seed():
    """The stream, drawn here by hand from the same generator in the documented order."""
    s = spec("""
      - {op: sinc, size: 7, omega: 1.0}                       # no p: no gate draw; fixed values: no draws
      - op: gaussian_noise
        p: 0.6
        sigma: {uniform: [1, 5]}
        gray: {bernoulli: 0.3}
      - one_of:
          - {weight: 3, op: jpeg, quality: {randint: [30, 40]}, codec: libjpeg}
          - {weight: 1, op: resize, scale: {log_uniform: [0.5, 2.0]}, mode: {choice: [area, bicubic], probs: [0.25, 0.75]}}
      - draw: {q: {uniform: [0.5, 1.5]}, k: {pick: [3, 5, 7]}}
      - {op: sinc, size: {var: k}, omega: {var: q}, p: 1.0}  # var values are not drawn again; p 1.0 still draws
    """)
    for key in range(40):
        got = sample_params(s, sample_rng(9, f"k{key}"), (16, 16))["ops"]
        rng = sample_rng(9, f"k{key}")
        want = [{"op": "sinc", "at": None, "size": 7, "omega": 1.0}]
        if rng.random() < 0.6:
            sigma = float(rng.uniform(1, 5))
            gray = bool(rng.random() < 0.3)
            want.append({"op": "gaussian_noise", "at": None, "sigma": sigma, "gray": gray,
                         "seed": int(rng.integers(0, 2**32, dtype=np.uint64))})
        if rng.random() < 0.75:
            want.append({"op": "jpeg", "at": None, "quality": int(rng.integers(30, 41)), "codec": "libjpeg"})
        else:
            scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            mode = "area" if rng.random() < 0.25 else "bicubic"
            want.append({"op": "resize", "at": None, "scale": scale, "mode": mode, "relative_to": "input",
                         "coords": "size"})
        q = float(rng.uniform(0.5, 1.5))
        k = [3, 5, 7][int(rng.integers(3))]
        if rng.random() < 1.0:
            want.append({"op": "sinc", "at": None, "size": k, "omega": q})
        assert got == want, key


def test_records_replay_without_the_spec(photo):
    """Every op of every preset (and of a spec with a shuffle and vars) replays bit for bit from its json."""
    shuffled = spec("""
      - stage: mix
        steps:
          - shuffle:
              - {op: blur, id: b}
              - {op: poisson_noise, id: n}
              - {op: jpeg, id: j, codec: libjpeg}
              - {op: usm, id: u}
      - draw: {q: {uniform: [40, 90]}}
      - stage: final
        steps:
          - {op: resize, relative_to: lr, scale: 1.0, mode: bicubic}
          - {op: jpeg, quality: {var: q}}
    """)
    for s in [load_spec(p) for p in PRESETS] + [shuffled]:
        for i in range(6):
            lr, params = degrade_image(photo, s, 1, f"r{i}")
            again = apply_record(photo, json.loads(json.dumps(params)))
            assert again.tobytes() == lr.tobytes() and lr.shape == (24, 32, 3)


def test_a_pipeline_that_does_not_end_at_hr_over_scale_is_a_user_error(photo):
    s = spec("[{op: resize, scale: 0.5, relative_to: input}]", name="halfway")
    with pytest.raises(UserError, match="spec 'halfway' does not end at HR/scale: .*48x64.*24x32"):
        degrade_image(photo, s, 0, "k")


# ------------------------------------------------------------------ one_of, shuffle, draw: against the spec


def test_one_of_frequencies_follow_the_normalised_weights():
    s = spec("""
      - one_of:
          - {weight: 1, op: sinc, id: a}
          - {weight: 2, op: defocus, id: b}
          - {weight: 0, op: jpeg, id: never}
          - {weight: 5, op: blur, id: c}
    """)
    got = Counter(r["ops"][0]["id"] for r in records(s, 8000))
    assert "never" not in got
    obs = [got["a"], got["b"], got["c"]]
    assert stats.chisquare(obs, np.array([1, 2, 5]) / 8 * 8000).pvalue > P_MIN, obs


def test_an_option_whose_op_has_its_own_weight_keeps_both_weights_through_the_canonical_form():
    # usm's sharpening weight 0.8 and the option's weight 3 must not overwrite each other in a manifest's copy.
    s = spec("[{one_of: [{op: sinc}, {weight: 3, steps: [{op: usm, weight: 0.8}]}]}]")
    again = spec_from_dict(spec_to_dict(s))
    assert spec_hash(again) == spec_hash(s)
    option = again.pipeline[0].options[1]
    assert again.pipeline[0].weights == (1.0, 3.0) and option.steps[0].params["weight"] == 0.8


def test_gate_frequency_and_pick_frequencies():
    s = spec("[{op: sinc, p: 0.3, size: {pick: [3, 5, 7, 9]}}]")
    recs = records(s, 8000)
    ran = [r["ops"][0] for r in recs if r["ops"]]
    assert stats.binomtest(len(ran), len(recs), 0.3).pvalue > P_MIN
    sizes = Counter(o["size"] for o in ran)
    assert stats.chisquare([sizes[k] for k in (3, 5, 7, 9)]).pvalue > P_MIN


def test_shuffle_orders_are_uniform_permutations():
    s = spec("[{shuffle: [{op: sinc, id: a}, {op: usm, id: b}, {op: blur, id: c}]}]")
    orders = Counter(tuple(o["id"] for o in r["ops"]) for r in records(s, 6000))
    assert len(orders) == 6
    assert stats.chisquare(list(orders.values())).pvalue > P_MIN, orders


def test_keep_order_swaps_a_reversed_pair():
    """A reversed pair swaps places: the three orders with a before b each take 1/3 (BSRGAN's rule), and the
    order is exactly the generator's permutation with that swap."""
    # ops without draws, so that each sample takes exactly one permutation from the stream
    s = spec("[{shuffle: [{op: sinc, id: a, size: 7, omega: 1.0}, {op: usm, id: b}, {op: bicubic_downsample, id: c}], "
             "keep_order: [[a, b]]}]")
    recs = records(s, 6000, key="keep")
    orders = Counter(tuple(o["id"] for o in r["ops"]) for r in recs)
    assert set(orders) == {("a", "b", "c"), ("a", "c", "b"), ("c", "a", "b")}
    assert stats.chisquare(list(orders.values())).pvalue > P_MIN, orders
    rng = sample_rng(0, "keep")
    for r in recs[:200]:
        perm = list(rng.permutation(3))
        ia, ib = perm.index(0), perm.index(1)
        if ia > ib:
            perm[ia], perm[ib] = perm[ib], perm[ia]
        assert [o["id"] for o in r["ops"]] == [["a", "b", "c"][i] for i in perm]


def test_a_drawn_value_is_shared_by_every_step_that_uses_it():
    s = spec("""
      - draw: {q: {randint: [20, 30]}}
      - {op: jpeg, codec: libjpeg, quality: {var: q}, id: first}
      - {op: jpeg, codec: libjpeg, quality: {var: q}, id: second}
    """)
    qs = [(r["ops"][0]["quality"], r["ops"][1]["quality"]) for r in records(s, 3000)]
    assert all(a == b for a, b in qs)
    counts = Counter(a for a, _ in qs)
    assert set(counts) == set(range(20, 31))
    assert stats.chisquare([counts[q] for q in range(20, 31)]).pvalue > P_MIN


# ------------------------------------------------------------------ base, replace, hash


def test_replace_swaps_a_step_by_id_keeping_its_weight_and_id():
    base = load_spec("realesrgan")
    s = spec_from_dict(resolve({"version": 2, "base": "realesrgan", "name": "mine", "description": "d",
                                "replace": {"noise1": {"one_of": [{"op": "gaussian_noise"}]},
                                            "stage2": {"stage": "stage2", "steps": [
                                                {"op": "sinc"}, {"draw": {"q2": 50.0}, "id": "q2"}]},
                                            "jpeg2_last": {"op": "jpeg", "quality": 50.0}}}, "f"))
    d, b = spec_to_dict(s), spec_to_dict(base)
    assert d["name"] == "mine" and d["description"] == "d" and d["source"] == b["source"]
    assert d["pipeline"][1]["steps"][2] == {"one_of": [{"op": "gaussian_noise", "sigma": {"uniform": [1.0, 30.0]},
                                                         "gray": {"bernoulli": 0.4}, "weight": 1.0}],
                                            "id": "noise1"}
    assert d["pipeline"][2] == {"stage": "stage2", "steps": [
        {"op": "sinc", "size": {"pick": [7, 9, 11, 13, 15, 17, 19, 21]},
         "omega": {"uniform": [1.0471975511965976, 3.141592653589793]}}, {"draw": [{"q2": 50.0}], "id": "q2"}]}
    last = d["pipeline"][3]["steps"][0]["one_of"][1]
    assert last["weight"] == 0.5 and last["steps"][2] == {"op": "jpeg", "id": "jpeg2_last", "quality": 50.0,
                                                          "codec": "diffjpeg"}
    # everything else is the base's
    assert d["pipeline"][0] == b["pipeline"][0] and d["pipeline"][1]["steps"][:2] == b["pipeline"][1]["steps"][:2]


@pytest.mark.parametrize("pairs", [[["a", "b"], ["b", "c"]], [["a", "b"], ["a", "c"]], [["a", "a"]]])
def test_a_step_in_two_keep_order_pairs_is_refused(pairs):
    """The swap rule orders one pair at a time: with [a, b], [b, c] the order c b a becomes c a b, then b a c,
    which breaks a before b again, so chained pairs cannot be kept and are one sentence naming the path."""
    doc = {"version": 2, "name": "x", "scale": 4, "pipeline": [
        {"shuffle": [{"op": "sinc", "id": "a"}, {"op": "usm", "id": "b"}, {"op": "defocus", "id": "c"}],
         "keep_order": pairs}, {"op": "bicubic_downsample"}]}
    with pytest.raises(UserError, match=r"spec\.pipeline\[0\]\.keep_order\[\d\] names '\w' again"):
        spec_from_dict(doc)


def test_replacing_a_stage_that_is_a_one_of_option_keeps_the_options_weight():
    """bsrgan's x4 block is the stage shuffle_x4, the 0.75 option of x2_or_x4 (the reference's downsample1 runs with
    probability 0.25): a new shuffle_x4 stage keeps 0.75 unless it gives its own weight."""
    def weights(new):
        doc = {"version": 2, "base": "bsrgan", "name": "mine", "replace": {"shuffle_x4": new}}
        return spec_from_dict(resolve(doc, "f")).pipeline[0].weights

    stage = {"stage": "shuffle_x4", "steps": [{"op": "bsrgan_resize_lr"}]}
    assert weights(stage) == (0.25, 0.75)
    assert weights({**stage, "weight": 3.0}) == (0.25, 3.0)
    assert weights({"steps": [{"op": "bsrgan_resize_lr"}]}) == (0.25, 0.75)


def test_version1_override_equals_the_version2_replace(tmp_path):
    v1 = tmp_path / "v1.yaml"
    v1.write_text("base: realesrgan\nname: lowq\nstage2: {jpeg_quality: [10, 20]}\n")
    v2 = tmp_path / "v2.yaml"
    v2.write_text("version: 2\nbase: realesrgan\nname: lowq\nreplace: {q2: {draw: {q2: {uniform: [10, 20]}}}}\n")
    assert spec_hash(load_spec(v1)) == spec_hash(load_spec(v2)) != spec_hash(load_spec("realesrgan"))


def test_hash_covers_the_pipeline_not_the_labels():
    s = load_spec("realesrgan")
    d = spec_to_dict(s)
    assert spec_from_dict(d) == s and spec_hash(spec_from_dict(json.loads(json.dumps(d)))) == spec_hash(s)
    relabelled = {**d, "name": "other", "description": "x", "source": "y"}
    assert spec_hash(spec_from_dict(relabelled)) == spec_hash(s)
    a = spec("[{draw: {q: {uniform: [30, 40]}, r: {uniform: [50, 60]}}}]")
    b = spec("[{draw: {r: {uniform: [50, 60]}, q: {uniform: [30, 40]}}}]")
    assert spec_hash(a) != spec_hash(b)  # the draw order is part of the stream, so of the canonical form
    assert spec_hash(spec_from_dict(spec_to_dict(a))) == spec_hash(a)
    # defaults are filled in: naming a default changes nothing
    assert spec_hash(spec("[{op: sinc}]")) == spec_hash(spec("[{op: sinc, omega: {uniform: [1.0471975511965976, "
                                                             "3.141592653589793]}}]"))


def test_stage_images_for_preview(photo):
    """apply_record(stages=True) gives the image after each stage: in order, at the sizes the recorded resizes
    give, the last one the LR itself."""
    s = load_spec("realesrgan")
    for i in range(4):
        lr, params = degrade_image(photo, s, 2, f"st{i}")
        again, shown = apply_record(photo, params, stages=True)
        assert again.tobytes() == lr.tobytes()
        assert [name for name, _ in shown] == ["stage1", "stage2", "final"]
        (r1,) = [o for o in params["ops"] if o["op"] == "resize" and o["at"] == "stage1"]
        (r2,) = [o for o in params["ops"] if o["op"] == "resize" and o["at"] == "stage2"]
        assert shown[0][1].shape == (math.floor(96 * r1["scale"]), math.floor(128 * r1["scale"]), 3)
        assert shown[1][1].shape == (int(96 / 4 * r2["scale"]), int(128 / 4 * r2["scale"]), 3)
        assert shown[2][1].tobytes() == lr.tobytes()
