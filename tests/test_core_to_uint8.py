"""SR tensors become stored uint8 images one way: clamped to [0, 1], times 255, rounded half to even, HxWx3."""

import numpy as np
import torch

from srdistill.core.iqa.metrics import to_uint8


def test_clamps_scales_and_rounds_half_to_even():
    # 0.5 * 255 = 127.5 -> 128 (even); 0.002 * 255 = 0.51 -> 1; out-of-range values clamp to 0 and 255
    values = torch.tensor([-0.1, 0.0, 0.002, 0.5, 1.0, 1.3])
    sr = values.view(1, 1, 2, 3).expand(1, 3, 2, 3)
    out = to_uint8(sr)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[..., 0].tolist() == [[0, 0, 1], [128, 255, 255]]
    assert (out[..., 0] == out[..., 2]).all()


def test_half_precision_input_is_read_in_float32():
    sr = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2).expand(1, 3, 1, 2)  # exact in bfloat16 too
    assert to_uint8(sr.bfloat16()).tolist() == to_uint8(sr).tolist() == [[[64, 64, 64], [191, 191, 191]]]
