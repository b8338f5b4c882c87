"""Metrics through pyiqa: PSNR/SSIM against independent computations, offline weights, missing weights, random-weight nets."""

import sys

import cv2
import numpy as np
import pytest
import torch
from helpers.images import downscale, real_photo
from skimage.metrics import structural_similarity
from srdistill.core.iqa import weights
from srdistill.core.iqa.metrics import (
    MetricUnavailable,
    Scorer,
    metric_info,
    metric_version,
    parse_metrics,
)

from srdistill.core.errors import UserError


def y_channel(img: np.ndarray) -> np.ndarray:
    """BT.601 Y in [16, 235] from uint8 RGB, float64."""
    rgb = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def sr_hr_pair(name="astronaut"):
    hr = real_photo(name, 96, 128, 30, 140)
    sr = cv2.resize(downscale(hr), (128, 96), interpolation=cv2.INTER_CUBIC)
    return sr, hr


def test_psnry_equals_numpy_y_channel_psnr(offline_weights):
    sr, hr = sr_hr_pair()
    mse = np.mean((y_channel(sr) - y_channel(hr)) ** 2)
    expected = 10 * np.log10(255.0 ** 2 / mse)
    assert Scorer("psnry").score(sr, hr) == pytest.approx(expected, abs=1e-3)
    assert 20 < expected < 40


def test_ssim_equals_skimage_gaussian_ssim_on_rounded_y(offline_weights):
    for name in ("astronaut", "chelsea"):
        sr, hr = sr_hr_pair(name)
        expected = structural_similarity(np.round(y_channel(sr)), np.round(y_channel(hr)), data_range=255,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert Scorer("ssim").score(sr, hr) == pytest.approx(expected, abs=2e-3)
    assert Scorer("ssim").score(hr, hr) == pytest.approx(1.0, abs=1e-9)


def test_niqe_works_offline_from_basicsr_parameters(offline_weights, monkeypatch):
    import torchvision.transforms.functional as tv_functional

    assert weights.probe_metric("niqe").ready
    img = real_photo("chelsea", 192, 256)
    # basicsr 1.4.2 imports a torchvision module that was renamed; alias it to load basicsr's own NIQE as the reference.
    monkeypatch.setitem(sys.modules, "torchvision.transforms.functional_tensor", tv_functional)
    from basicsr.metrics.niqe import calculate_niqe

    reference = calculate_niqe(img[:, :, ::-1].copy(), 0, input_order="HWC", convert_to="y")
    assert Scorer("niqe").score(img) == pytest.approx(reference, rel=0.01)


def test_missing_weights_are_reported_with_file_path_and_url(offline_weights):
    status = weights.probe_metric("lpips")
    assert not status.ready
    missing = status.missing[0]
    assert missing.expected.startswith(str(offline_weights)) and missing.expected.endswith(".pth")
    assert missing.url.startswith("https://")
    with pytest.raises(MetricUnavailable, match="missing weights"):
        Scorer("lpips")


@pytest.mark.slow
def test_missing_hugging_face_model_names_the_repository(offline_weights):
    # transformers re-raises the hub's cache miss as a bare OSError; the note must still name what to download.
    status = weights.probe_metric("qalign")
    assert not status.ready
    assert "q-future/one-align" in status.note and "evaluate weights --import" in status.note


def test_imported_file_lands_where_the_metric_expects_it(offline_weights, tmp_path):
    expected = weights.probe_metric("musiq").missing[0].expected
    src = tmp_path / "from_connected_machine"
    src.mkdir()
    (src / expected.rsplit("/", 1)[1]).write_bytes(b"weights")
    placed = weights.import_weights(src)
    assert [str(p) for p in placed] == [expected]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no weight files"):
        weights.import_weights(empty)
    with pytest.raises(UserError, match="does not exist"):
        weights.import_weights(tmp_path / "nowhere")


def test_random_weight_lpips_through_pyiqa(offline_weights):
    sr, hr = sr_hr_pair()
    torch.manual_seed(0)
    lpips = Scorer("lpips", opts={"net": "squeeze", "pretrained": False, "pnet_rand": True})
    assert lpips.score(hr, hr) == pytest.approx(0.0, abs=1e-6)
    assert abs(lpips.score(sr, hr)) > 1e-6 and lpips.score(sr, hr) == lpips.score(sr, hr)
    assert metric_info("lpips").mode == "FR" and metric_info("lpips").lower_better


def test_random_weight_musiq_through_pyiqa(offline_weights):
    sr, _ = sr_hr_pair()
    assert np.isfinite(Scorer("musiq", opts={"pretrained": False}).score(sr))
    assert metric_info("musiq").mode == "NR" and not metric_info("musiq").lower_better


def test_metric_names_are_validated_and_versioned():
    assert parse_metrics("all")[:2] == ["psnry", "ssim"]
    assert parse_metrics("niqe, psnry,niqe") == ["niqe", "psnry"]
    with pytest.raises(UserError, match="unknown metric 'psnrr'"):
        parse_metrics("psnrr")
    assert "color_space=ycbcr" in metric_version("psnry")
    assert metric_version("lpips", {"lpips": {"pretrained": False}}) != metric_version("lpips")
