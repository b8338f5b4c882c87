"""The flow DiTs StrSR distils, each behind one call G(z_t, t, c) = dz/dt for z_t = t z_1 + (1 - t) z_0 (StrSR Eq.
2-3): SD3's transformer, Z-Image's (its own time direction, per-image lists) and FLUX.2 [klein]'s (its patchified,
batch-norm-normalised latent packed into tokens with RoPE positions); each says how to build its latent codec, its
LoRA scope and its condition widths. ``FLOW_BASES`` names them (a recipe's ``base:`` setting)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.training.components.diffusers_models import build_flux2_vae, build_vae
from srdistill.training.components.latent_codec import LatentCodec
from srdistill.training.components.lora import (
    DIT_LORA_TARGETS,
    ZIMAGE_LORA_TARGETS,
    flux2_lora_targets,
)
from srdistill.training.components.presets import is_preset


def _sd_codec(components: str, dit: nn.Module, scale: int) -> LatentCodec:
    """The DiT's own KL VAE with its shift/scaling factors (a folder's transformer_vae/; presets: the tiny f8 shape
    with the DiT's channel count)."""
    latent_ch = dit.config.in_channels
    sub = "transformer_vae" if latent_ch != 4 and not is_preset(components) else "vae"
    return LatentCodec(build_vae(components, latent_channels=latent_ch, sub=sub), scale)


class _DiTFlow(nn.Module):
    """A base of FLOW_BASES: the DiT it wraps (its LoRA'd transformer); subclasses say how to call it."""

    make_codec = staticmethod(_sd_codec)

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit


class SD3Flow(_DiTFlow):
    """G(z_t, t, c) = dz/dt through SD3's transformer: it takes the flow time scaled to [0, 1000] and predicts
    noise - data, which is dz/dt for z_t = t z_1 + (1 - t) z_0 (Eq. 2-3)."""

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.joint_attention_dim, dit.config.pooled_projection_dim

    @staticmethod
    def lora_targets(dit: nn.Module):
        return DIT_LORA_TARGETS

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), t * 1000.0, device=z.device)
        return self.dit(hidden_states=z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=tt).sample


class ZImageFlow(_DiTFlow):
    """G through Z-Image's transformer: its time runs the other way (1 - t, 1 = clean), it takes per-image lists
    of [C, 1, H, W] latents and [L, D] caption features, and predicts data - noise, so G is minus its output
    (as diffusers' ZImagePipeline negates it). No pooled vector."""

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.cap_feat_dim, 0

    @staticmethod
    def lora_targets(dit: nn.Module):
        return ZIMAGE_LORA_TARGETS

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), 1.0 - t, device=z.device)
        out = self.dit([zi.unsqueeze(1) for zi in z], tt, list(tokens), return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


# FLUX.2's latent layout, as diffusers' Flux2KleinPipeline builds it (its _patchify_latents, _pack_latents,
# _prepare_latent_ids, _prepare_text_ids and their inverses): pure reshapes, so the flow step can run on the
# [B, 4C, H/2, W/2] latent and only the transformer sees tokens.
def flux2_patchify(z: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] VAE latent -> [B, 4C, H/2, W/2]: each 2x2 patch into channels (channel c, row, column)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def flux2_unpatchify(z: torch.Tensor) -> torch.Tensor:
    b, c4, h, w = z.shape
    return z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


def flux2_pack(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C] tokens, row-major."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def flux2_unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, h, w)


def flux2_image_ids(b: int, h: int, w: int, device) -> torch.Tensor:
    """RoPE coordinates (T, H, W, L) of the image tokens: (0, row, column, 0), [B, h*w, 4]."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return ids.unsqueeze(0).expand(b, -1, -1).to(device)


def flux2_text_ids(b: int, length: int, device) -> torch.Tensor:
    """RoPE coordinates of the context tokens: (0, 0, 0, index), [B, L, 4]."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))
    return ids.unsqueeze(0).expand(b, -1, -1).to(device)


class Flux2Codec(nn.Module):
    """FLUX.2's latent as Flux2KleinPipeline makes it: the VAE posterior's mode of the [-1, 1] image, 2x2-patchified,
    then normalised per channel by the VAE's batch-norm running statistics (mean, sqrt(var + eps)); decoding undoes
    each step. The same bicubic x4 LR upsampling as LatentCodec."""

    def __init__(self, vae: nn.Module, scale: int = 4):
        super().__init__()
        self.vae, self.scale = vae, scale

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(z.device, z.dtype)
        return mean, std

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        z = flux2_patchify(self.vae.encode(x01 * 2 - 1).latent_dist.mode())
        mean, std = self._stats(z)
        return (z - mean) / std

    def encode_lr(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.encode(up)

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        mean, std = self._stats(z)
        x = self.vae.decode(flux2_unpatchify(z * std + mean)).sample
        return ((x.clamp(-1, 1) if clamp else x) + 1) / 2


class Flux2Flow(_DiTFlow):
    """G through FLUX.2's transformer, called as Flux2KleinPipeline calls it: the normalised latent packed into
    tokens with (0, row, column, 0) positions, the context as ``encoder_hidden_states`` (where FLUX.2 reads its
    Qwen3 text features) with (0, 0, 0, index) positions, the flow time in [0, 1] (the sigma of its
    FlowMatchEulerDiscreteScheduler, 1 = noise; the transformer scales it by 1000 itself) and no guidance (klein
    is guidance-distilled). It predicts noise - data, which is dz/dt (Eq. 2-3), so G is its output. No pooled
    vector."""

    @staticmethod
    def make_codec(components: str, dit: nn.Module, scale: int) -> Flux2Codec:
        return Flux2Codec(build_flux2_vae(components), scale)

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.joint_attention_dim, 0

    @staticmethod
    def lora_targets(dit: nn.Module):
        return flux2_lora_targets(dit)

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        tt = torch.full((b,), t, device=z.device, dtype=z.dtype)
        out = self.dit(hidden_states=flux2_pack(z), encoder_hidden_states=tokens, timestep=tt,
                       img_ids=flux2_image_ids(b, h, w, z.device), txt_ids=flux2_text_ids(b, tokens.shape[1], z.device),
                       guidance=None, return_dict=False)[0]
        return flux2_unpack(out, h, w)


FLOW_BASES = {"zimage": ZImageFlow, "flux2": Flux2Flow, "sd3": SD3Flow}
