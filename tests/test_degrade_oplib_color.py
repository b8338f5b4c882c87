"""chroma_subsample and color_quantize: grey and luma untouched, chroma blurred the way libjpeg does it, dithers
that keep the local mean, and Floyd-Steinberg against the plain sequential algorithm."""

import cv2
import numpy as np
import pytest
from helpers.images import real_photo
from srdistill.degrade.ops import library  # noqa: F401  (registers the ops)
from srdistill.degrade.ops.library import color
from srdistill.degrade.ops.opdef import REGISTRY, OpContext
from srdistill.degrade.ops.primitives import quantize, to_float

CTX = OpContext(scale=4, hr_shape=(64, 64))
BT601 = (0.299, 0.587, 0.114)
SETTINGS = [(lay, s, u, m) for lay in ("4:2:0", "4:2:2") for s in ("centre", "left")
            for u in ("nearest", "fancy") for m in ("bt601", "bt709")]


def _cs(img, layout="4:2:0", siting="centre", upsampling="fancy", matrix="bt601"):
    values = {"layout": layout, "siting": siting, "upsampling": upsampling, "matrix": matrix}
    return REGISTRY["chroma_subsample"].apply(img, values, CTX)


def _cq(img, bits, dither):
    return REGISTRY["color_quantize"].apply(img, {"bits": bits, "dither": dither}, CTX)


@pytest.fixture(scope="module")
def photo_f() -> np.ndarray:
    return to_float(real_photo("coffee", 95, 127, 150, 200))  # odd sides: the edge pairs are replicated


@pytest.mark.parametrize("setting", SETTINGS)
def test_chroma_subsampling_leaves_grey_unchanged_and_luma_untouched(photo_f, setting):
    grey = np.repeat(photo_f.mean(axis=2, keepdims=True), 3, axis=2)
    assert np.abs(_cs(grey, *setting) - grey).max() < 1e-6
    out = _cs(photo_f, *setting).astype(np.float64)
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[setting[3]]
    def luma(x):
        return kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2]

    assert np.abs(luma(out) - luma(photo_f.astype(np.float64))).max() < 1e-6
    assert np.abs(out - photo_f).max() > 0.05  # while the colours did change


def test_a_colour_edge_blurs_across_the_subsampled_directions_only():
    img = np.zeros((16, 16, 3), np.float32)
    img[:, :, 0] = 0.8
    img[:, 7:, :] = (0.1, 0.2, 0.9)  # vertical red|blue edge between columns 6 and 7 (inside a chroma pair)
    for layout in ("4:2:0", "4:2:2"):
        out = _cs(img, layout, "centre", "nearest")
        assert np.abs(out[:, 6] - img[:, 6]).max() > 0.1 and np.abs(out[:, 7] - img[:, 7]).max() > 0.1
        assert np.abs(out[:, :4] - img[:, :4]).max() < 1e-6 and np.abs(out[:, 10:] - img[:, 10:]).max() < 1e-6
    turned = np.ascontiguousarray(img.transpose(1, 0, 2))  # the same edge between rows 6 and 7
    assert np.abs(_cs(turned, "4:2:0", "centre", "nearest") - turned).max() > 0.1
    assert np.abs(_cs(turned, "4:2:2", "centre", "nearest") - turned).max() < 1e-6  # full vertical resolution


def test_box_and_nearest_420_is_the_two_by_two_chroma_mean_repeated(photo_f):
    img = photo_f[:94, :126]
    kr, kb = 0.299, 0.114
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    def block(c):
        return np.repeat(np.repeat(c.reshape(47, 2, 63, 2).mean(axis=(1, 3)), 2, 0), 2, 1)

    cb, cr = block(cb), block(cr)
    expect = np.stack([y + 2 * (1 - kr) * cr, y - (2 * kr * (1 - kr) * cr + 2 * kb * (1 - kb) * cb) / (1 - kr - kb),
                       y + 2 * (1 - kb) * cb], axis=-1)
    assert np.abs(_cs(img, "4:2:0", "centre", "nearest") - expect).max() < 1e-6


@pytest.mark.parametrize("layout,flag", [("4:2:0", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
                                         ("4:2:2", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422)])
def test_box_and_fancy_reproduce_libjpeg_turbo_at_quality_100(photo_f, layout, flag):
    """libjpeg-turbo subsamples by box averaging and upsamples with its triangle filter; at quality 100 its only
    other losses are 8-bit rounding and unit quantisation steps, so the op is within those of the real codec,
    and nearer than the other filters."""
    src = quantize(photo_f)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(src, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, flag])
    assert ok
    dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(float)
    err = {}
    for s in ("centre", "left"):
        for u in ("nearest", "fancy"):
            err[s, u] = np.abs(quantize(_cs(to_float(src), layout, s, u)).astype(float) - dec)
    assert err["centre", "fancy"].mean() < 0.65 and err["centre", "fancy"][2:-2, 2:-2].max() <= 4
    assert all(err["centre", "fancy"].mean() < e.mean() for k, e in err.items() if k != ("centre", "fancy"))


@pytest.mark.parametrize("siting", ["centre", "left"])
def test_each_sitings_down_and_up_filters_keep_a_chroma_ramp_in_place(siting):
    """A linear chroma ramp survives matched down/up filters away from the edges; a half-pixel shift would not."""
    w = 32
    ramp = np.linspace(0.2, 0.8, w)
    img = np.zeros((4, w, 3), np.float32)
    img[..., 0] = ramp
    img[..., 1] = 0.5
    img[..., 2] = 1.0 - ramp
    out = _cs(img, "4:2:2", siting, "fancy")
    assert np.abs(out[:, 2:-2] - img[:, 2:-2]).max() < 1e-6


def test_chroma_subsample_replays_to_the_same_bytes(photo_f):
    for setting in SETTINGS:
        assert _cs(photo_f, *setting).tobytes() == _cs(photo_f.copy(), *setting).tobytes()


def test_bayer_matrix_is_bayers():
    assert color.bayer_matrix(4).tolist() == [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    assert sorted(color.bayer_matrix(8).ravel().tolist()) == list(range(64))


@pytest.mark.parametrize("dither", ["none", "ordered", "floyd_steinberg"])
@pytest.mark.parametrize("bits", [1, 3, 5])
def test_every_output_value_is_one_of_the_levels(photo_f, bits, dither):
    out = _cq(photo_f, bits, dither).astype(np.float64)
    n = 2**bits
    k = out * (n - 1)
    assert np.abs(k - np.rint(k)).max() < 1e-5 and k.min() > -0.5 and k.max() < n - 0.5
    assert len(np.unique(np.rint(k))) <= n


def test_plain_quantisation_is_the_nearest_level():
    x = np.linspace(0, 1, 3 * 97, dtype=np.float32).reshape(1, 97, 3)
    n = 8
    out = _cq(x, 3, "none")
    expect = np.rint(x.astype(np.float64) * (n - 1)) / (n - 1)
    assert np.abs(out - expect).max() < 1e-7


def test_dithering_keeps_the_local_mean_where_plain_quantisation_does_not():
    bits, n = 3, 8
    v = (2 + 0.3) / (n - 1)  # 30 % of the way from level 2 to level 3
    flat = np.full((64, 64, 3), v, np.float32)
    step = 1 / (n - 1)
    assert abs(_cq(flat, bits, "none").mean() - v) > 0.29 * step
    tiles = _cq(flat, bits, "ordered").astype(np.float64).reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))
    assert np.abs(tiles - v).max() <= step / 128 + 1e-7  # each 8x8 Bayer tile has v's mean to 1/128 level
    fs = _cq(flat, bits, "floyd_steinberg").astype(np.float64)
    assert abs(fs[8:-8, 8:-8].mean() - v) < 0.02 * step
    assert len(np.unique(fs)) == 2  # only the two neighbouring levels are used


def test_ordered_dither_is_unbiased_at_every_fraction_of_a_level():
    """Bayer's thresholds sit at the centres (i + 0.5) / 64 of the 64 sub-levels, so an 8x8 tile of any flat
    value averages to it within half a sub-level (1/128 of a level), and the error has no sign bias; thresholds
    i / 64 would round every value down by half a sub-level on average."""
    bits, n = 3, 8
    step = 1 / (n - 1)
    fractions = (np.arange(512) + 0.37) / 512
    flat = np.broadcast_to(((2 + fractions) * step).astype(np.float32)[:, None, None, None], (512, 8, 8, 3))
    out = np.stack([_cq(np.ascontiguousarray(f), bits, "ordered") for f in flat]).astype(np.float64)
    err = (out.mean(axis=(1, 2, 3)) - flat[:, 0, 0, 0].astype(np.float64)) / step
    assert np.abs(err).max() <= 1 / 128 + 1e-6
    assert abs(err.mean()) < 1 / 1024


def _fs_sequential(img: np.ndarray, n: int) -> np.ndarray:
    """Floyd & Steinberg's algorithm as published: raster order, one pixel at a time."""
    x = img.astype(np.float64).copy()
    h, w, _ = x.shape
    out = np.zeros_like(x)
    for yy in range(h):
        for xx in range(w):
            old = x[yy, xx].copy()
            new = np.clip(np.rint(old * (n - 1)), 0, n - 1) / (n - 1)
            out[yy, xx] = new
            err = old - new
            if xx + 1 < w:
                x[yy, xx + 1] += err * 7 / 16
            if yy + 1 < h:
                if xx > 0:
                    x[yy + 1, xx - 1] += err * 3 / 16
                x[yy + 1, xx] += err * 5 / 16
                if xx + 1 < w:
                    x[yy + 1, xx + 1] += err * 1 / 16
    return out


@pytest.mark.parametrize("shape", [(9, 13), (13, 9), (1, 7), (6, 1)])
def test_floyd_steinberg_equals_the_sequential_algorithm(photo_f, shape):
    img = photo_f[20:20 + shape[0], 30:30 + shape[1]]
    expect = _fs_sequential(img, 4)
    assert np.array_equal(color.floyd_steinberg(img.astype(np.float64), 4), expect)
    assert np.array_equal(_cq(img, 2, "floyd_steinberg"), expect.astype(np.float32))


def test_color_quantize_replays_to_the_same_bytes(photo_f):
    for dither in ("none", "ordered", "floyd_steinberg"):
        assert _cq(photo_f, 4, dither).tobytes() == _cq(photo_f.copy(), 4, dither).tobytes()
