"""The papers' SD-style latent codec around a diffusers KL VAE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LatentCodec(nn.Module):
    """VAE in/out as the papers do it: bicubic x4 upsampling of the LR before the encoder, [-1, 1]
    pixels, latent mean shifted and scaled by the VAE's shift/scaling factors; decoding back to [0, 1]."""

    def __init__(self, vae: nn.Module, scale: int = 4):
        super().__init__()
        self.vae = vae
        self.scale = scale
        self.sf = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        return (self.vae.encode(x01 * 2 - 1).latent_dist.mode() - self.shift) * self.sf

    def encode_lr(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.encode(up)

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        x = self.vae.decode(z / self.sf + self.shift).sample
        return ((x.clamp(-1, 1) if clamp else x) + 1) / 2
