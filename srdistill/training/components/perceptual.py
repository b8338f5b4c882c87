"""pyiqa's LPIPS and DISTS arch classes as losses, built offline (torchvision backbones with random weights, then
the weight files of a components folder loaded into them)."""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from srdistill.training.components.roles import MissingWeights, frozen, is_folder, need


def _random_features_only(fn):
    """A torchvision VGG/AlexNet builder with random conv weights; the unused classifier stays on the
    meta device (pyiqa keeps only ``.features``), which saves initialising ~100M parameters."""

    def build(*args, **kwargs):
        with torch.device("meta"):
            model = fn(weights=None)
        model.features.to_empty(device="cpu")
        for layer in model.features.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        return model

    return build


@contextlib.contextmanager
def _torchvision_backbones_without_download():
    """pyiqa's LPIPS/DISTS always ask torchvision for ImageNet weights (a download offline);
    build the same architectures with random weights instead, and load files afterwards."""
    saved = {name: getattr(torchvision.models, name) for name in ("vgg16", "alexnet")}
    try:
        for name, fn in saved.items():
            setattr(torchvision.models, name, _random_features_only(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torchvision.models, name, fn)


def _load_torchvision_features(model: nn.Module, path: Path) -> None:
    """Copy torchvision ``features.{i}.*`` weights into pyiqa's ``slice*/stage*`` copies of those layers."""
    tv = torch.load(path, map_location="cpu", weights_only=True)
    sd = model.state_dict()
    for key in sd:
        m = re.search(r"(?:slice|stage)\d+\.(\d+)\.(weight|bias)$", key)
        if m and f"features.{m.group(1)}.{m.group(2)}" in tv:
            sd[key] = tv[f"features.{m.group(1)}.{m.group(2)}"]
    model.load_state_dict(sd)


def _one(folder: Path, pattern: str, what: str, components: str) -> Path:
    hits = sorted(folder.glob(pattern))
    if not hits:
        raise MissingWeights(f"components folder {components} is missing {what} (looked for {folder / pattern}); "
                             f"put the file there or run with --components tiny")
    return hits[0]


def build_lpips(components: str, net: str = "vgg") -> nn.Module:
    """pyiqa LPIPS arch in loss mode: forward(x, y) on [0,1] images -> per-image distance [B]."""
    from pyiqa.archs.arch_util import load_pretrained_network
    from pyiqa.archs.lpips_arch import LPIPS

    with _torchvision_backbones_without_download():
        model = LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, use_dropout=False)
    if is_folder(components):
        folder = need(components, "pyiqa", "pyiqa's weight files")
        backbone = "vgg16" if net == "vgg" else "alexnet"
        tv_file = _one(folder, f"{backbone}-*.pth", f"torchvision {backbone} weights", components)
        _load_torchvision_features(model.net, tv_file)
        load_pretrained_network(model, str(_one(folder, f"LPIPS_v0.1_{net}-*.pth", "LPIPS weights", components)), False)
    return frozen(model)


def build_dists(components: str) -> nn.Module:
    """pyiqa DISTS arch in loss mode: forward(x, y) on [0,1] images -> per-image distance [B]."""
    from pyiqa.archs.arch_util import load_pretrained_network
    from pyiqa.archs.dists_arch import DISTS

    with _torchvision_backbones_without_download():
        model = DISTS(pretrained=False)
    if is_folder(components):
        folder = need(components, "pyiqa", "pyiqa's weight files")
        _load_torchvision_features(model, _one(folder, "vgg16-*.pth", "torchvision vgg16 weights", components))
        load_pretrained_network(model, str(_one(folder, "DISTS_weights-*.pth", "DISTS weights", components)), False)
    return frozen(model)


def lpips_features(lpips: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The five backbone feature maps LPIPS compares (used as FDL's Phi)."""
    return list(lpips.net(lpips.scaling_layer(x * 2 - 1)))
