"""Lossy codecs beside JPEG: WebP and AVIF stills (Pillow's libwebp / libavif) and one frame of H.264, HEVC or
MPEG-2 video (PyAV's FFmpeg encoders and decoders).

Each op quantises to uint8 (ops.quantize: clip, round half to even), encodes with the real encoder, decodes with
the stock decoder of the same library and returns ops.to_float of the result. Every encoder runs on one thread,
so its bytes do not depend on the machine's core count (tests/test_degrade_oplib_codecs.py checks bytes across
runs and processes).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
from av.video.reformatter import Interpolation
import numpy as np
from PIL import Image, features

from srdistill.degrade.ops import primitives as ops
from srdistill.degrade.ops.opdef import Op, OpContext, Param, register

_WEBP = features.version("webp")
_AVIF = features.version("avif")
_FFMPEG = ".".join(str(v) for v in av.library_versions["libavcodec"])


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(ops.quantize(img), mode="RGB")


def _decode_pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return ops.to_float(np.asarray(im.convert("RGB")))


def webp_bytes(img: np.ndarray, quality: float, method: int) -> bytes:
    """Lossy WebP of the quantised image: libwebp's default YUV 4:2:0 conversion, its loop filter on."""
    buf = io.BytesIO()
    _pil(img).save(buf, "WEBP", quality=float(quality), method=int(method))
    return buf.getvalue()


def webp(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return _decode_pil(webp_bytes(img, values["quality"], values["method"]))


def avif_bytes(img: np.ndarray, quality: int, speed: int) -> bytes:
    """AVIF (AV1 intra) of the quantised image with libaom on one thread, YUV 4:2:0, full range."""
    buf = io.BytesIO()
    _pil(img).save(buf, "AVIF", quality=int(quality), speed=int(speed), subsampling="4:2:0", codec="aom",
                   max_threads=1, range="full")
    return buf.getvalue()


def avif(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    return _decode_pil(avif_bytes(img, values["quality"], values["speed"]))


# codec name in the spec -> (FFmpeg encoder, FFmpeg decoder)
VIDEO_CODECS = {"h264": ("libx264", "h264"), "hevc": ("libx265", "hevc"), "mpeg2": ("mpeg2video", "mpeg2video")}
_MIN_SIDE = 16  # libx265 refuses pictures under 16 pixels a side; yuv420p needs even sides


def _encoder_options(codec: str, crf: float, qscale: int, preset: str) -> dict[str, str]:
    if codec == "h264":
        return {"crf": f"{crf:.6g}", "preset": preset}
    if codec == "hevc":
        # pools=none + frame-threads=1: x265 without its thread pool, so one thread whatever the core count
        return {"crf": f"{crf:.6g}", "preset": preset, "x265-params": "log-level=none:pools=none:frame-threads=1"}
    # MPEG-2 has no CRF: qmin = qmax pins the rate control's quantiser scale of every macroblock to qscale.
    # Its DCT is not normative: dct=int (the C islow integer DCT) instead of the auto choice, a CPU-specific
    # SIMD one, so the bytes do not depend on the machine.
    return {"qmin": str(int(qscale)), "qmax": str(int(qscale)), "dct": "int", "idct": "simple", "flags": "+bitexact"}


# swscale as the ffmpeg CLI converts (bicubic), with its bit-exact C paths: the same YUV on every CPU
_SWS = dict(interpolation=Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.BITEXACT, threads=1)


def video_frame_bytes(img: np.ndarray, codec: str, crf: float, qscale: int, preset: str) -> tuple[bytes, tuple]:
    """One intra frame of the quantised image, padded (edge-replicated) to even sides of at least 16 pixels;
    RGB -> yuv420p by FFmpeg's swscale (BT.601, limited range). Returns (the bitstream, the padded shape)."""
    h, w = img.shape[:2]
    ph, pw = max(_MIN_SIDE, h + h % 2), max(_MIN_SIDE, w + w % 2)
    rgb = np.pad(ops.quantize(img), ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    enc = av.CodecContext.create(VIDEO_CODECS[codec][0], "w")
    enc.width, enc.height, enc.pix_fmt = pw, ph, "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.thread_count = 1
    enc.options = _encoder_options(codec, crf, qscale, preset)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG", **_SWS)
    packets = list(enc.encode(frame)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets), (ph, pw)


def decode_video_frame(data: bytes, codec: str) -> av.VideoFrame:
    """The first picture of an elementary stream, decoded by FFmpeg on one thread. MPEG-2's IDCT is not
    normative either: FFmpeg's default simple IDCT, forced to its C code."""
    dec = av.CodecContext.create(VIDEO_CODECS[codec][1], "r")
    dec.thread_count = 1
    if codec == "mpeg2":
        dec.options = {"idct": "simple", "flags": "+bitexact"}
    frames = list(dec.decode(av.Packet(data))) + list(dec.decode(None))
    return frames[0]


def yuv_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """uint8 RGB of a decoded BT.601 limited-range picture, by the same swscale settings as the encoding side."""
    return frame.to_ndarray(format="rgb24", src_colorspace="ITU601", src_color_range="MPEG", **_SWS)


def video_frame(img: np.ndarray, values: dict, ctx: OpContext) -> np.ndarray:
    h, w = img.shape[:2]
    data, _ = video_frame_bytes(img, values["codec"], values["crf"], values["qscale"], values["preset"])
    return ops.to_float(np.ascontiguousarray(yuv_to_rgb(decode_video_frame(data, values["codec"]))[:h, :w]))


register(Op(
    name="webp",
    params=(
        Param("quality", float, {"uniform": [30.0, 95.0]}, range=(0.0, 100.0),
              doc="libwebp quality factor (real-valued, as libwebp takes it)"),
        Param("method", int, 4, range=(0, 6), doc="libwebp speed/effort (0 fast .. 6 slow; 4 is cwebp's default)"),
    ),
    apply=webp,
    summary="lossy WebP round trip (VP8 intra, YUV 4:2:0, in-loop filter) of the uint8 image",
    source=f"libwebp {_WEBP} through Pillow's WebP plugin (encode and decode)",
))

register(Op(
    name="avif",
    params=(
        Param("quality", int, {"randint": [30, 90]}, range=(0, 100), doc="libavif quality (0 worst .. 100 lossless)"),
        Param("speed", int, 6, range=(0, 10), doc="libaom speed preset (0 slowest .. 10 fastest; 6 is Pillow's)"),
    ),
    apply=avif,
    summary="AVIF round trip (AV1 intra, YUV 4:2:0 full range, AV1 in-loop filters) of the uint8 image",
    source=f"libavif {_AVIF} with libaom (encode) and dav1d (decode) through Pillow's AVIF plugin",
))

register(Op(
    name="video_frame",
    params=(
        Param("codec", str, {"choice": ["h264", "hevc", "mpeg2"]}, choices=tuple(VIDEO_CODECS),
              doc="h264 (libx264), hevc (libx265) or mpeg2 (FFmpeg mpeg2video)"),
        Param("crf", float, {"uniform": [18.0, 40.0]}, range=(0.0, 51.0),
              doc="constant rate factor of h264 / hevc (higher = coarser); unused by mpeg2"),
        Param("qscale", int, {"randint": [2, 16]}, range=(1, 31),
              doc="fixed quantiser scale of mpeg2 (higher = coarser); unused by h264 / hevc"),
        Param("preset", str, "medium", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                                                "slow", "slower", "veryslow"),
              doc="x264 / x265 speed preset (medium is their default); unused by mpeg2"),
    ),
    apply=video_frame,
    summary="one frame (an intra picture) through a video codec, yuv420p by bit-exact bicubic swscale (BT.601 "
            "limited range), the codec's own in-loop deblocking (h264 deblock, hevc deblock + SAO; mpeg2 none)",
    source=f"FFmpeg libavcodec {_FFMPEG} (libx264, libx265, mpeg2video encoders and decoders) through PyAV {av.__version__}",
))
