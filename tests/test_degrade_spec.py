"""Degradation spec: shipped presets hold the Real-ESRGAN numbers, files load, bad files name the bad field.

The preset numbers are read through the version-1 view (v1_view.from_v2), which exists only when the v2
pipeline has exactly the structure the version-1 conversion gives; version-1 files keep their meaning and
their error messages. The version-2 syntax itself is tested in test_degrade_spec_v2.py.
"""

import dataclasses
import json
import math
from dataclasses import replace

import pytest
import yaml
from srdistill.degrade.spec.schema import (
    PRESETS,
    DegradationSpec,
    load_spec,
    spec_from_dict,
    spec_hash,
    spec_to_dict,
)

from srdistill.degrade.spec import v1 as spec_v1
from srdistill.degrade.spec.v1_view import from_v2
from srdistill.core.errors import UserError


def v1(name: str) -> spec_v1.SpecV1:
    view = from_v2(load_spec(name))
    assert view is not None
    return view


def v1_dict(name: str) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(v1(name))))


def test_presets_are_listed():
    assert set(PRESETS) >= {"realesrgan", "bicubic"}
    for name in PRESETS:
        assert isinstance(load_spec(name), DegradationSpec)


def test_realesrgan_preset_holds_the_x4plus_numbers():
    s = v1("realesrgan")
    assert (s.name, s.scale, s.kind) == ("realesrgan", 4, "second_order")
    assert (s.usm.radius, s.usm.sigma, s.usm.weight, s.usm.threshold) == (50, 0.0, 0.5, 10.0)
    for st, sigma in ((s.stage1, (0.2, 3.0)), (s.stage2, (0.2, 1.5))):
        k = st.kernel
        assert k.sizes == (7, 9, 11, 13, 15, 17, 19, 21)
        assert k.sinc_prob == 0.1 and k.sinc_size_threshold == 13
        assert k.sinc_omega_small == pytest.approx((math.pi / 3, math.pi))
        assert k.sinc_omega_large == pytest.approx((math.pi / 5, math.pi))
        assert k.types == ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
        assert k.type_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
        assert k.sigma_range == sigma
        assert k.rotation_range == pytest.approx((-math.pi, math.pi))
        assert (k.betag_range, k.betap_range) == ((0.5, 4.0), (1.0, 2.0))
        assert st.jpeg_quality == (30, 95) and st.jpeg_codec == "diffjpeg"  # the reference's DiffJPEG
        assert st.resize.modes == ("area", "bilinear", "bicubic")
        assert st.resize.mode_probs == pytest.approx((1 / 3, 1 / 3, 1 / 3))
        assert st.noise.gaussian_prob == 0.5 and st.noise.gray_prob == 0.4
    assert s.stage1.blur_prob == 1.0 and s.stage2.blur_prob == 0.8
    assert (s.stage1.resize.probs, s.stage1.resize.range) == ((0.2, 0.7, 0.1), (0.15, 1.5))
    assert (s.stage2.resize.probs, s.stage2.resize.range) == ((0.3, 0.4, 0.3), (0.3, 1.2))
    # stage 1 resizes with F.interpolate(scale_factor=s), stage 2 with F.interpolate(size=...)
    assert (s.stage1.resize.coords, s.stage2.resize.coords) == ("scale_factor", "size")
    assert (s.stage1.noise.sigma_range, s.stage1.noise.poisson_scale_range) == ((1.0, 30.0), (0.05, 3.0))
    assert (s.stage2.noise.sigma_range, s.stage2.noise.poisson_scale_range) == ((1.0, 25.0), (0.05, 2.5))
    f = s.final
    assert (f.jpeg_first_prob, f.sinc_prob) == (0.5, 0.8)
    assert f.sinc_sizes == (7, 9, 11, 13, 15, 17, 19, 21)
    assert f.sinc_omega == pytest.approx((math.pi / 3, math.pi))


def test_libjpeg_preset_differs_only_in_the_codec():
    s, ref = v1("realesrgan-libjpeg"), v1("realesrgan")
    assert (s.stage1.jpeg_codec, s.stage2.jpeg_codec) == ("libjpeg", "libjpeg")
    same = {"name": ref.name, "stage1": replace(s.stage1, jpeg_codec="diffjpeg"),
            "stage2": replace(s.stage2, jpeg_codec="diffjpeg")}
    assert replace(s, **same) == ref
    assert spec_hash(load_spec("realesrgan-libjpeg")) != spec_hash(load_spec("realesrgan"))


def test_a_spec_from_before_the_parity_fields_keeps_its_behaviour():
    """A manifest written before `resize.coords` and `jpeg_codec` existed replays as it was built."""
    d = v1_dict("realesrgan")
    for st in ("stage1", "stage2"):
        del d[st]["resize"]["coords"], d[st]["jpeg_codec"]
        d[st]["jpeg_quality"] = [30, 95]
    new = spec_from_dict(d)
    old = from_v2(new)
    assert (old.stage1.jpeg_codec, old.stage2.jpeg_codec) == ("libjpeg", "libjpeg")
    assert (old.stage1.resize.coords, old.stage2.resize.coords) == ("size", "size")
    assert spec_hash(new) != spec_hash(load_spec("realesrgan"))  # the preset's change shows in its hash


def test_bicubic_preset():
    s = load_spec("bicubic")
    assert s.scale == 4 and [step.op for step in s.pipeline] == ["bicubic_downsample"]
    assert v1("bicubic").kind == "resize"


def test_dict_round_trip_and_hash():
    s = load_spec("realesrgan")
    d = spec_to_dict(s)
    json.dumps(d)
    assert spec_from_dict(d) == s
    h = spec_hash(s)
    assert len(h) == 16 and int(h, 16) >= 0
    assert spec_hash(spec_from_dict({**d, "name": "renamed"})) == h  # the label is not part of the content
    for field in ("description", "source"):
        assert spec_hash(spec_from_dict({**d, field: "other words"})) == h
    d2 = json.loads(json.dumps(d))
    blur2 = d2["pipeline"][2]["steps"][0]
    assert blur2["id"] == "blur2" and blur2["p"] == 0.8
    blur2["p"] = 0.7
    assert spec_hash(spec_from_dict(d2)) != h
    assert spec_hash(load_spec("bicubic")) != h
    b = load_spec("bicubic")
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(b)))) == b


def test_user_yaml_and_json_files(tmp_path):
    d = spec_to_dict(load_spec("realesrgan"))
    d["name"] = "mine"
    y = tmp_path / "mine.yaml"
    y.write_text(yaml.safe_dump(d))
    j = tmp_path / "mine.json"
    j.write_text(json.dumps(d))
    assert load_spec(y) == load_spec(str(j))
    assert spec_hash(load_spec(y)) == spec_hash(load_spec("realesrgan"))


def test_user_file_can_override_a_preset(tmp_path):
    f = tmp_path / "light.yaml"
    f.write_text("base: realesrgan\nname: light\nstage2: {blur_prob: 0.5, noise: {sigma_range: [1, 5]}}\n")
    s = from_v2(load_spec(f))
    ref = v1("realesrgan")
    assert s.name == "light" and s.stage2.blur_prob == 0.5 and s.stage2.noise.sigma_range == (1.0, 5.0)
    assert s.stage2.noise.gray_prob == ref.stage2.noise.gray_prob and s.stage1 == ref.stage1
    f.write_text("base: realesrgan\nname: no-usm\nusm: null\n")
    assert from_v2(load_spec(f)).usm is None
    assert [step.op for step in load_spec(f).pipeline if hasattr(step, "op")] == []


BAD = [
    ("stage1: {blur_prob: 2}", "spec.stage1.blur_prob"),
    ("stage1: {kernel: {sizes: [7, 8]}}", "spec.stage1.kernel.sizes"),
    ("stage1: {kernel: {type_probs: [0.5, 0.5, 0, 0, 0, 0.1]}}", "spec.stage1.kernel.type_probs"),
    ("stage1: {kernel: {types: [iso, aniso, generalized_iso, generalized_aniso, plateau_iso, box]}}",
     "spec.stage1.kernel.types"),
    ("stage2: {resize: {modes: [area, nearest, bicubic]}}", "spec.stage2.resize.modes"),
    ("stage2: {resize: {range: [1.5, 0.3]}}", "spec.stage2.resize.range"),
    ("stage2: {noise: {sigma_range: [1, oops]}}", "spec.stage2.noise.sigma_range[1]"),
    ("stage2: {noise: {sigma_bogus: 3}}", "spec.stage2.noise.sigma_bogus"),
    ("stage2: {jpeg_quality: [30, 101]}", "spec.stage2.jpeg_quality"),
    ("stage2: {jpeg_quality: [30, 100]}", "spec.stage2.jpeg_quality"),  # DiffJPEG's factor is 0 at 100
    ("stage1: {jpeg_codec: libjpeg, jpeg_quality: [30.5, 95]}", "spec.stage1.jpeg_quality"),
    ("stage2: {jpeg_codec: mozjpeg}", "spec.stage2.jpeg_codec"),
    ("stage1: {resize: {coords: pixels}}", "spec.stage1.resize.coords"),
    ("stage2: {resize: {coords: scale_factor}}", "spec.stage2.resize.coords"),
    ("final: {sinc_omega: [1, 4]}", "spec.final.sinc_omega"),
    ("scale: 0", "spec.scale"),
    ("scale: 2.5", "spec.scale"),
    ("kind: third_order", "spec.kind"),
    ("usm: {radius: -1}", "spec.usm.radius"),
    ("usm: {weight: true}", "spec.usm.weight"),
]


@pytest.mark.parametrize("override,field", BAD)
def test_bad_fields_are_named(tmp_path, override, field):
    f = tmp_path / "bad.yaml"
    f.write_text(f"base: realesrgan\n{override}\n")
    with pytest.raises(UserError) as e:
        load_spec(f)
    msg = str(e.value)
    assert field in msg and "\n" not in msg and msg.endswith(".")


@pytest.mark.parametrize("text,needle", [
    ("name: x\nscale: 4\nkind: resize\n", "spec.resize_mode"),
    ("name: x\nscale: 4\nkind: second_order\n", "spec.stage1"),
    ("- just\n- a list\n", "mapping"),
    ("name: [unclosed\n", "not valid YAML"),
    ("base: nosuchpreset\n", "spec.base"),
    ("name: x\nscale: 4\nkind: resize\nresize_mode: bicubic\nstage1: {}\n", "spec.stage1"),
])
def test_bad_documents(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_spec(f)
    assert needle in str(e.value)


def test_missing_field_is_named():
    d = v1_dict("realesrgan")
    del d["stage1"]["noise"]["gray_prob"]
    with pytest.raises(UserError, match=r"spec\.stage1\.noise\.gray_prob is missing"):
        spec_from_dict(d)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="neither a preset"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="neither a preset"):
        load_spec("realesrgan_typo")
    f = tmp_path / "bad.json"
    f.write_text("{\"name\": ")
    with pytest.raises(UserError, match="not valid JSON at line 1"):
        load_spec(f)
