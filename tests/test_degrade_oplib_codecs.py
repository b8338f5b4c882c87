"""WebP, AVIF and video-frame ops: real bitstreams that stock decoders read, sizes and errors that follow quality,
any image size, and the same bytes on every run and in every process."""

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers.images import real_photo
from PIL import Image
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.library import codecs
from srdistill.degrade.ops.opdef import REGISTRY, OpContext
from srdistill.degrade.ops.primitives import quantize, to_float

CTX = OpContext(scale=4, hr_shape=(256, 256))
VIDEO = ["h264", "hevc", "mpeg2"]


@pytest.fixture(scope="module")
def img() -> np.ndarray:
    return to_float(real_photo("coffee", 96, 128, 150, 200))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse))


def _video(codec: str, crf: float = 28.0, qscale: int = 6) -> dict:
    return {"codec": codec, "crf": crf, "qscale": qscale, "preset": "medium"}


def test_webp_is_a_webp_file_that_opencvs_decoder_reads_as_the_op_returns(img):
    data = codecs.webp_bytes(img, 60.0, 4)
    assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8 "  # lossy VP8, not VP8L
    dec = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = REGISTRY["webp"].apply(img, {"quality": 60.0, "method": 4}, CTX)
    assert np.array_equal(quantize(out), dec)


def test_avif_is_an_av1_still_that_ffmpeg_decodes_like_the_op(img):
    data = codecs.avif_bytes(img, 60, 6)
    assert data[4:12] == b"ftypavif"
    with av.open(io.BytesIO(data)) as box:
        stream = box.streams.video[0]
        assert stream.codec_context.name in ("libdav1d", "av1", "libaom-av1")
        frame = next(box.decode(stream))
    # what the op's summary promises: 4:2:0 chroma, full range (AVCOL_RANGE_JPEG = 2)
    assert frame.format.name == "yuv420p" and frame.color_range == 2
    dec = frame.to_ndarray(format="rgb24")
    out = quantize(REGISTRY["avif"].apply(img, {"quality": 60, "speed": 6}, CTX))
    assert dec.shape == out.shape
    # FFmpeg converts YUV -> RGB its own way (swscale), libavif its own: the same picture to rounding
    assert np.abs(dec.astype(int) - out.astype(int)).mean() < 2.0


@pytest.mark.parametrize("codec,marker", [("h264", b"\x00\x00\x00\x01\x67"), ("hevc", b"\x00\x00\x00\x01\x40\x01"),
                                          ("mpeg2", b"\x00\x00\x01\xb3")])
def test_video_frame_is_one_intra_picture_that_ffmpeg_probes_and_decodes(img, codec, marker, tmp_path):
    data, padded = codecs.video_frame_bytes(img, codec, 28.0, 6, "medium")
    assert data.startswith(marker)  # h264 SPS / hevc VPS / mpeg2 sequence header
    path = tmp_path / f"frame.{ {'h264': 'h264', 'hevc': 'hevc', 'mpeg2': 'm2v'}[codec]}"
    path.write_bytes(data)
    with av.open(str(path)) as f:  # the demuxer finds the format from the bytes
        frames = list(f.decode(video=0))
        assert len(frames) == 1 and frames[0].key_frame and frames[0].format.name == "yuv420p"
        # the same picture as the op's own decoder gives, and the op returns it in RGB
        ours = codecs.decode_video_frame(data, codec)
        assert np.array_equal(frames[0].to_ndarray(), ours.to_ndarray())
        out = quantize(REGISTRY["video_frame"].apply(img, _video(codec), CTX))
        assert np.array_equal(codecs.yuv_to_rgb(frames[0])[:96, :128], out)
    assert padded == (96, 128)


def test_encoded_size_and_fidelity_fall_as_quality_falls(img):
    def sizes_and_psnr(encode, op, settings):
        rows = []
        for s in settings:
            rows.append((len(encode(s)), _psnr(op(s), img)))
        return rows

    cases = {
        "webp": (lambda q: codecs.webp_bytes(img, q, 4),
                 lambda q: REGISTRY["webp"].apply(img, {"quality": q, "method": 4}, CTX), [95.0, 70.0, 40.0, 10.0]),
        "avif": (lambda q: codecs.avif_bytes(img, q, 6),
                 lambda q: REGISTRY["avif"].apply(img, {"quality": q, "speed": 6}, CTX), [90, 70, 45, 20]),
        "mpeg2": (lambda q: codecs.video_frame_bytes(img, "mpeg2", 0.0, q, "medium")[0],
                  lambda q: REGISTRY["video_frame"].apply(img, _video("mpeg2", qscale=q), CTX), [2, 5, 12, 31]),
    }
    for codec in ("h264", "hevc"):
        cases[codec] = (lambda c, codec=codec: codecs.video_frame_bytes(img, codec, c, 2, "medium")[0],
                        lambda c, codec=codec: REGISTRY["video_frame"].apply(img, _video(codec, crf=c), CTX),
                        [12.0, 24.0, 36.0, 48.0])
    for name, (encode, op, settings) in cases.items():
        rows = sizes_and_psnr(encode, op, settings)
        sizes, psnrs = [r[0] for r in rows], [r[1] for r in rows]
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), (name, sizes)
        assert psnrs == sorted(psnrs, reverse=True), (name, psnrs)
        assert psnrs[0] > 33.0, (name, psnrs)  # the best setting keeps the picture (colours not swapped, not shifted)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (15, 16), (37, 51)])
def test_every_codec_takes_any_size_and_returns_it(shape):
    small = to_float(real_photo("astronaut", *shape, 100, 150))
    runs = [("webp", {"quality": 80.0, "method": 4}), ("avif", {"quality": 80, "speed": 6})]
    runs += [("video_frame", _video(c, crf=10.0, qscale=2)) for c in VIDEO]
    for name, values in runs:
        out = REGISTRY[name].apply(small, values, CTX)
        assert out.shape == small.shape and out.dtype == np.float32, name
        assert np.abs(out - small).mean() < 0.05, (name, values)  # cropped back at the right place


def test_values_outside_the_unit_range_are_clamped_before_encoding(img):
    over = img * 1.5 - 0.25
    for name, values in [("webp", {"quality": 90.0, "method": 4}), ("video_frame", _video("h264", crf=10.0))]:
        a = REGISTRY[name].apply(over, values, CTX)
        b = REGISTRY[name].apply(np.clip(over, 0, 1), values, CTX)
        assert np.array_equal(a, b)


_HASHES = """
import hashlib, json, sys
import numpy as np
from srdistill.degrade.ops.library import codecs
img = np.load(sys.argv[1])
out = {"webp": codecs.webp_bytes(img, 57.5, 4), "avif": codecs.avif_bytes(img, 55, 6)}
for c in ("h264", "hevc", "mpeg2"):
    out[c] = codecs.video_frame_bytes(img, c, 31.5, 7, "medium")[0]
print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in out.items()}))
"""


def _hashes(img: np.ndarray) -> dict:
    out = {"webp": codecs.webp_bytes(img, 57.5, 4), "avif": codecs.avif_bytes(img, 55, 6)}
    for c in VIDEO:
        out[c] = codecs.video_frame_bytes(img, c, 31.5, 7, "medium")[0]
    return {k: hashlib.sha256(v).hexdigest() for k, v in out.items()}


@pytest.mark.slow
def test_replay_gives_the_same_bytes_in_this_and_another_process(img, tmp_path):
    here = _hashes(img)
    assert _hashes(img) == here
    np.save(tmp_path / "img.npy", img)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    res = subprocess.run([sys.executable, "-c", _HASHES, str(tmp_path / "img.npy")], capture_output=True,
                         text=True, env=env, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == here
    # and the op outputs, value for value
    for name, values in [("webp", {"quality": 57.5, "method": 4}), ("avif", {"quality": 55, "speed": 6})] + [
            ("video_frame", _video(c, 31.5, 7)) for c in VIDEO]:
        a = REGISTRY[name].apply(img, values, CTX)
        assert np.array_equal(a, REGISTRY[name].apply(img.copy(), dict(values), CTX)), name


def test_the_video_codec_decides_the_bitstream(img):
    """Each codec name reaches its own encoder, and the unused rate parameter changes nothing."""
    streams = {c: codecs.video_frame_bytes(img, c, 28.0, 6, "medium")[0] for c in VIDEO}
    assert len({hashlib.sha256(s).digest() for s in streams.values()}) == 3
    for codec in ("h264", "hevc"):
        assert codecs.video_frame_bytes(img, codec, 28.0, 20, "medium")[0] == streams[codec]
    assert codecs.video_frame_bytes(img, "mpeg2", 40.0, 6, "medium")[0] == streams["mpeg2"]


def test_webp_decoded_by_pillow_matches_the_file_pillow_writes(img):
    """The op's output is what `Image.open` shows for the .webp Pillow writes with those settings."""
    out = quantize(REGISTRY["webp"].apply(img, {"quality": 33.0, "method": 4}, CTX))
    buf = io.BytesIO()
    Image.fromarray(quantize(img)).save(buf, "WEBP", quality=33.0, method=4)
    assert np.array_equal(np.asarray(Image.open(buf).convert("RGB")), out)


def test_video_frames_carry_bt601_limited_range_luma():
    """Lossless H.264 (crf 0) returns the encoder's input planes: its luma is 16 + 219 (0.299 R + 0.587 G +
    0.114 B) of the RGB (BT.601, limited range) to a level, computed here from the formula."""
    rgb = quantize(to_float(real_photo("chelsea", 32, 48, 100, 100)))
    data, _ = codecs.video_frame_bytes(to_float(rgb), "h264", 0.0, 2, "medium")
    y = codecs.decode_video_frame(data, "h264").to_ndarray()[:32]  # yuv420p: the Y plane, then U and V
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    expect = 16 + 219 * (0.299 * r + 0.587 * g + 0.114 * b) / 255
    assert np.abs(y - expect).max() <= 1.0
