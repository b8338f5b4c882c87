"""ResShift's x0-predictor: the Swin-UNet (``UNetModelSwin``) on the VQ-f4 latent space.

Written from ResShift's architecture (Yue et al., NeurIPS 2023; zsyOAOA/ResShift ``models/unet.py`` and
``models/swin_transformer.py``) so that the released checkpoints (``resshift_realsrx4_s15_v1.pth``, the
teacher SinSR and VPD-SR distil) load by key: module and buffer names follow the official ones. A
guided-diffusion UNet whose first resolution block of every level (and the middle) carries a Swin layer
(window attention with relative position bias on channel-first maps, GroupNorm32 norms, 1x1-conv MLP).
The low-quality image is concatenated to the state on channels (``lq`` at latent resolution, as in
ResShift's x4 setting where the 64x64 LR pixels sit beside the 64x64 f4 latent of the 256x256 target).

Only the released configuration's options are built: ``resblock_updown=False``, ``conv_resample=True``,
``patch_norm=False``, 2-D, no class labels. Weights are initialised with PyTorch defaults (the official
zero-initialised output convolutions are a from-scratch training detail; the teacher is always loaded or
random in tests, where a zero path would hide wiring mistakes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinUNetConfig:
    """Architecture of ``UNetModelSwin``; ``official()`` is configs/realsr_swinunet_realesrgan256.yaml."""

    image_size: int = 64
    latent_channels: int = 3
    lq_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    num_head_channels: int = 32
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4.0

    @classmethod
    def official(cls) -> SwinUNetConfig:
        return cls()

    @classmethod
    def tiny(cls, latent_channels: int = 3, lq_channels: int = 3) -> SwinUNetConfig:
        """Two levels, 32 channels (GroupNorm32 needs multiples of 32), 2x2 windows (any latent side divisible by 4)."""
        return cls(image_size=8, latent_channels=latent_channels, lq_channels=lq_channels, model_channels=32,
                   out_channels=latent_channels, channel_mult=(1, 2), num_res_blocks=(1, 1),
                   attention_resolutions=(8, 4), num_head_channels=16, swin_depth=2, swin_embed_dim=32,
                   window_size=2, mlp_ratio=2.0)

    @property
    def size_multiple(self) -> int:
        """Latent (= LR) sides must be multiples of this: windows tile the coarsest level."""
        return self.window_size * 2 ** (len(self.channel_mult) - 1)


class GroupNorm32(nn.GroupNorm):
    """32-group norm computed in float32 (guided diffusion's ``normalization``)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of integer step indices (guided diffusion's layout)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM by the time embedding (scale-shift norm), GroupNorm-SiLU-conv, skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None):
        super().__init__()
        out = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out))
        self.out_layers = nn.Sequential(GroupNorm32(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        h = rest(norm(h) * (1 + scale) + shift)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# -- Swin layer on channel-first maps ---------------------------------------------------------


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, C, H, W] -> [B * nW, ws * ws, C], windows in row-major order."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, ws * ws, c)


def _unwindow(win: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``_windows``."""
    c = win.shape[-1]
    b = win.shape[0] // ((h // ws) * (w // ws))
    x = win.view(b, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h, w)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """[nW, ws*ws, ws*ws] additive mask (0 or -100) of shifted-window attention, as the official code computes it.

    The official ``calculate_mask`` indexes a [1, 1, H, W] region map as ``[:, h, w, :]`` and reads the
    windows back through a transposed layout, so the region label of token (r, c) of window (wr, wc) is the
    row region of row ``wr * ws + c``. The released weights were trained with that mask (it is also a
    persistent buffer of their checkpoints), so it is reproduced exactly rather than "fixed".
    """
    rows = torch.arange(h)
    region = torch.where(rows < h - ws, 0, torch.where(rows < h - shift, 1, 2)).float()
    window_row = torch.arange(h // ws).repeat_interleave(w // ws)
    col = torch.arange(ws * ws) % ws
    labels = region[window_row[:, None] * ws + col[None, :]]
    diff = labels[:, None, :] - labels[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0).to(attn.dtype)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]).view(bw, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and MLP, both pre-norm residual, on [B, C, H, W]."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        if resolution <= window:  # one window covers the map: no partition, no shift (as the official code)
            window, shift = resolution, 0
        self.window, self.shift, self.resolution = window, shift, resolution
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # persistent, like the official buffer, so its checkpoints load strictly
        self.register_buffer("attn_mask", shifted_window_mask(resolution, resolution, window, shift) if shift else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(2, 3))
            mask = self.attn_mask if (h, w) == (self.resolution,) * 2 else \
                shifted_window_mask(h, w, self.window, self.shift).to(x.device)
            mask = mask.to(x.dtype)
        else:
            mask = None
        y = _unwindow(self.attn(_windows(y, self.window), mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchProj(nn.Module):
    """The official PatchEmbed/PatchUnEmbed with patch size 1 and no norm: a 1x1 conv under ``proj``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class BasicLayer(nn.Module):
    """1x1 conv into the Swin width, ``depth`` blocks alternating plain and shifted windows, 1x1 conv back."""

    def __init__(self, channels: int, cfg: SwinUNetConfig, resolution: int):
        super().__init__()
        dim, ws = cfg.swin_embed_dim, cfg.window_size
        heads = dim // cfg.num_head_channels
        self.patch_embed = PatchProj(channels, dim)
        self.patch_unembed = PatchProj(dim, channels)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, resolution, heads, ws, 0 if i % 2 == 0 else ws // 2, cfg.mlp_ratio)
            for i in range(cfg.swin_depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to the ResBlocks among its children."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ResShiftUNet(nn.Module):
    """forward(x, t, lq): x0 prediction from the (already normalised) state ``x``, integer step indices
    ``t`` [B] (0 is eta_1) and the low-quality image ``lq`` [B, lq_channels, H, W] at the state's size."""

    def __init__(self, cfg: SwinUNetConfig):
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.latent_channels + cfg.lq_channels, ch, 3, padding=1))])
        skips, ds = [ch], cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, emb, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions and j == 0:
                    layers.append(BasicLayer(ch, cfg, ds))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skips.append(ch)
                ds //= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb), BasicLayer(ch, cfg, ds), ResBlock(ch, emb))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions and i == 0:
                    layers.append(BasicLayer(ch, cfg, ds))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds *= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(mc * cfg.channel_mult[0], cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels))
        h = torch.cat([x, lq.to(x.dtype)], dim=1)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
