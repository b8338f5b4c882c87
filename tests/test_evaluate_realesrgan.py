"""Real-ESRGAN x4plus: the ncnn runtime and our torch RRDBNet (weights converted from the ncnn files) agree."""

import numpy as np
import pytest
import torch
from helpers.images import real_photo
from srdistill.evaluate.methods.registry import RealESRGANNcnn, RealESRGANTorch
from srdistill.evaluate.methods.realesrgan_torch import (
    ncnn_model_files,
    parse_ncnn_convs,
    read_ncnn_conv_blobs,
)
from srdistill.evaluate.methods.tiling import tiled_forward


@pytest.fixture(scope="module")
def crop():
    return real_photo("astronaut", 24, 24, 110, 190)


def test_ncnn_and_torch_outputs_agree_on_a_photo_crop(crop):
    ncnn = RealESRGANNcnn().upscale(crop)
    ours = RealESRGANTorch().upscale(crop)
    assert ncnn.shape == ours.shape == (96, 96, 3)
    diff = np.abs(ncnn.astype(int) - ours.astype(int))
    assert diff.mean() < 0.1 and diff.max() <= 2
    # not trivially equal to an interpolation: the network adds detail
    assert np.abs(ours.astype(int) - np.kron(crop, np.ones((4, 4, 1), np.uint8)).astype(int)).mean() > 2


def test_conversion_reads_every_byte_and_rejects_a_truncated_bin():
    param, binary = ncnn_model_files()
    convs = parse_ncnn_convs(param.read_text())
    assert len(convs) == 351 and convs[0].in_channels == 3 and convs[-1].out_channels == 3
    data = binary.read_bytes()
    with pytest.raises((ValueError, IndexError)):
        read_ncnn_conv_blobs(data[:-8], convs)
    with pytest.raises(ValueError, match="magic"):
        parse_ncnn_convs("not a param file\n")


def test_tiles_with_enough_overlap_equal_the_whole_image():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def net(x):  # receptive field 3x3, then x4 nearest: tiles with >= 1 px of context are exact
        return torch.nn.functional.interpolate(conv(x), scale_factor=4, mode="nearest")

    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        whole = tiled_forward(net, x, 4, tile=0)
        tiled = tiled_forward(net, x, 4, tile=8, overlap=2)
    assert whole.shape == (1, 3, 148, 116)
    assert torch.allclose(whole, tiled, atol=1e-6)


def test_automatic_tiling_bounds_the_input_each_call_sees():
    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    x = torch.rand(1, 3, 8, 1100)
    with torch.no_grad():
        out = tiled_forward(net, x, 4)
    assert len(seen) == 3 and max(w for _, w in seen) <= 512 + 2 * 16 + 10
    assert torch.equal(out, torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest"))
