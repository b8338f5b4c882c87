"""The realesrgan-codecs preset and the library ops inside specs: the preset is realesrgan with its final JPEG
drawn from JPEG / WebP / a video frame at the stated weights, every codec replays bit for bit from its record,
it builds, verifies and replays through the CLI with the same bytes on 1 and 2 workers; a bad value of any
library op is one sentence naming its path."""

import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import yaml
from helpers.images import real_photo
from helpers.shards import shard_bytes
from srdistill.degrade.cli import main
from srdistill.degrade.pipeline import apply_record, degrade_image, sample_params, sample_rng
from srdistill.degrade.spec.schema import load_spec, preset_infos
from srdistill.core.errors import UserError

FINAL_CODECS = ("jpeg", "webp", "video_frame")


def _final_codec(record: dict) -> dict:
    (entry,) = [o for o in record["ops"] if o["at"] == "final" and o["op"] in FINAL_CODECS]
    return entry


def test_the_preset_is_realesrgan_up_to_the_final_compression():
    codecs, base = load_spec("realesrgan-codecs"), load_spec("realesrgan")
    assert codecs.scale == base.scale == 4 and len(codecs.pipeline) == len(base.pipeline)
    assert codecs.pipeline[:-1] == base.pipeline[:-1]  # usm, stage 1, stage 2 (with its q2 draw) unchanged
    info = {p.name: p for p in preset_infos()}["realesrgan-codecs"]
    assert "WebP" in info.description and "libwebp" in info.source
    # before the final compression, the draws and ops are realesrgan's
    rec_c = sample_params(codecs, sample_rng(3, "k"), (64, 64))
    rec_b = sample_params(base, sample_rng(3, "k"), (64, 64))
    assert [o for o in rec_c["ops"] if o["at"] != "final"] == [o for o in rec_b["ops"] if o["at"] != "final"]


def test_the_three_codecs_occur_at_their_weights_with_the_stage2_quality():
    spec, base = load_spec("realesrgan-codecs"), load_spec("realesrgan")
    n = 4000
    counts, video = Counter(), Counter()
    for i in range(n):
        rec = sample_params(spec, sample_rng(0, f"s{i}"), (64, 64))
        entry = _final_codec(rec)
        q2 = _final_codec(sample_params(base, sample_rng(0, f"s{i}"), (64, 64)))["quality"]  # realesrgan's q2
        counts[entry["op"]] += 1
        if entry["op"] == "video_frame":
            video[entry["codec"]] += 1
            assert 18.0 <= entry["crf"] <= 40.0 and 2 <= entry["qscale"] <= 16
        else:
            assert entry["quality"] == q2  # JPEG and WebP both use stage 2's quality draw
            if entry["op"] == "jpeg":
                assert entry["codec"] == "diffjpeg"
    for op, w in zip(FINAL_CODECS, (0.5, 0.25, 0.25)):
        assert abs(counts[op] / n - w) < 4 * np.sqrt(w * (1 - w) / n), (op, counts)
    nv = sum(video.values())
    for c in ("h264", "hevc", "mpeg2"):
        assert abs(video[c] / nv - 1 / 3) < 4 * np.sqrt(2 / 9 / nv), video


def test_every_codec_of_the_preset_replays_bit_for_bit_from_its_json_record():
    spec = load_spec("realesrgan-codecs")
    hr = real_photo("astronaut", 64, 64, 100, 150)
    want = {"jpeg", "webp", "h264", "hevc", "mpeg2"}
    for i in range(200):
        rec = sample_params(spec, sample_rng(1, f"r{i}"), hr.shape[:2])
        entry = _final_codec(rec)
        name = entry["codec"] if entry["op"] == "video_frame" else entry["op"]
        if name not in want:
            continue
        want.discard(name)
        lr, params = degrade_image(hr, spec, 1, f"r{i}")
        assert params == rec and lr.shape == (16, 16, 3)
        assert apply_record(hr, json.loads(json.dumps(params))).tobytes() == lr.tobytes()
        if not want:
            break
    assert not want, f"no draw among 200 used {want}"


@pytest.mark.slow
def test_build_verify_replay_and_the_same_bytes_on_one_and_two_workers(tmp_path, capsys, ray_cluster):
    shards = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["build", "--src", "sample", "--out", str(out), "--preset", "realesrgan-codecs", "--crop", "64",
                     "--limit", "6", "--shard-samples", "2", "--workers", str(workers), "--seed", "0", "--quiet"]) == 0
        shards[workers] = shard_bytes(out)
    assert shards[1] == shards[2] and len(shards[1]) == 3
    used = set()
    for path in sorted((tmp_path / "w1").glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    entry = _final_codec(json.loads(tar.extractfile(m).read())["params"])
                    used.add(entry["codec"] if entry["op"] == "video_frame" else entry["op"])
    assert used == {"jpeg", "webp", "h264", "hevc", "mpeg2"}  # seed 0 happens to draw every codec in 6 samples
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "w2")]) == 0
    assert "ok: 3 shards, 6 samples" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "w2"), "--samples", "0"]) == 0
    assert "ok: 6 samples re-derived bit-exactly" in capsys.readouterr().out


BAD = [
    ("webp", {"quality": 120}, "quality must lie within [0, 100]"),
    ("webp", {"method": 7}, "method must lie within [0, 6]"),
    ("avif", {"quality": 55.5}, "quality must be an integer"),
    ("video_frame", {"codec": "vp9"}, "codec must be one of h264, hevc, mpeg2"),
    ("video_frame", {"crf": {"uniform": [10, 60]}}, "crf.uniform must lie within [0, 51]"),
    ("video_frame", {"qscale": 0}, "qscale must lie within [1, 31]"),
    ("chroma_subsample", {"layout": "4:4:4"}, "layout must be one of 4:2:0, 4:2:2"),
    ("chroma_subsample", {"siting": "top"}, "siting must be one of centre, left"),
    ("color_quantize", {"bits": 9}, "bits must lie within [1, 8]"),
    ("color_quantize", {"dither": "atkinson"}, "dither must be one of none, ordered, floyd_steinberg"),
    ("defocus", {"radius": -1}, "radius must lie within [0, 50]"),
    ("motion_blur", {"length": {"uniform": [5, 1]}}, "length.uniform must be [low, high] with low <= high"),
    ("sensor_noise", {"shot": {"log_uniform": [0, 0.01]}}, "shot.log_uniform must have low > 0"),
    ("sensor_noise", {"read": "brooks"}, "read must be from_shot or a fixed read-noise variance"),
    ("sensor_noise", {"read": -0.1}, "read must lie within [0, 1]"),
]


@pytest.mark.parametrize("op,values,words", BAD, ids=[f"{b[0]}-{next(iter(b[1]))}" for b in BAD])
def test_a_bad_value_is_one_sentence_naming_its_path(tmp_path, op, values, words):
    doc = {"version": 2, "name": "t", "scale": 4,
           "pipeline": [{"stage": "s", "steps": [{"op": "defocus"}, {"op": op, **values}]},
                        {"op": "bicubic_downsample"}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as err:
        load_spec(path)
    msg = str(err.value)
    assert msg.startswith("spec.pipeline[0].steps[1].") and words in msg and msg.count(". ") == 0, msg


def test_every_library_op_runs_in_a_spec_with_only_its_defaults(tmp_path):
    """`- op: NAME` alone is a valid step for each op, and the record holds every parameter's value."""
    names = ["webp", "avif", "video_frame", "chroma_subsample", "color_quantize", "defocus", "motion_blur",
             "sensor_noise"]
    doc = {"version": 2, "name": "all", "scale": 4,
           "pipeline": [{"stage": "lib", "steps": [{"op": n} for n in names]}, {"op": "bicubic_downsample"}]}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = load_spec(path)
    hr = real_photo("coffee", 48, 64, 150, 200)
    lr, rec = degrade_image(hr, spec, 0, "x")
    assert [o["op"] for o in rec["ops"]] == names + ["bicubic_downsample"]
    assert rec["ops"][-2]["read"] > 0 and "seed" in rec["ops"][-2]
    assert lr.shape == (12, 16, 3)
    assert apply_record(hr, json.loads(json.dumps(rec))).tobytes() == lr.tobytes()
