"""diffusers roles: the SD-shaped VAE, the FLUX.2 VAE, UNets (SD 2.1 generator, SDXL discriminator trunk), the flow
DiTs (SD3, Z-Image, FLUX.2 [klein]), the DDPM noise schedule and the empty prompt's text context."""
from __future__ import annotations

import torch
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training.components.presets import preset_config
from srdistill.training.components.roles import frozen, is_folder, need


def build_vae(components: str, latent_channels: int = 4, sub: str = "vae") -> nn.Module:
    """diffusers AutoencoderKL (SD's f8 VAE shape; tiny: f8 with few channels)."""
    from diffusers import AutoencoderKL

    if is_folder(components):
        return frozen(AutoencoderKL.from_pretrained(need(components, sub, "the VAE (diffusers AutoencoderKL)")))
    vae = AutoencoderKL(latent_channels=latent_channels, scaling_factor=0.18215 if latent_channels == 4 else 1.5305,
                        shift_factor=None if latent_channels == 4 else 0.0609, **preset_config(components, "vae"))
    return frozen(vae)


def build_flux2_vae(components: str, sub: str = "transformer_vae") -> nn.Module:
    """diffusers AutoencoderKLFlux2 (FLUX.2's VAE: f8, then 2x2 patches normalised by its batch-norm statistics)."""
    from diffusers import AutoencoderKLFlux2

    if is_folder(components):
        return frozen(AutoencoderKLFlux2.from_pretrained(need(components, sub, "the FLUX.2 VAE (AutoencoderKLFlux2)")))
    return frozen(AutoencoderKLFlux2(**preset_config(components, "vae_flux2")))


def build_unet(components: str, sub: str = "unet", role: str = "unet") -> nn.Module:
    """diffusers UNet2DConditionModel: ``role`` "unet" (SD 2.1 shape) or "disc_unet" (SDXL shape)."""
    from diffusers import UNet2DConditionModel

    if is_folder(components):
        return frozen(UNet2DConditionModel.from_pretrained(need(components, sub, "the diffusion UNet")))
    return frozen(UNet2DConditionModel(**preset_config(components, role)))


def keep_down_and_mid(unet: nn.Module) -> nn.Module:
    """Drop a UNet's decoder half (up blocks, output norm and conv): a discriminator trunk never runs it."""
    unet.up_blocks = nn.ModuleList()
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = None
    return unet


def build_dit(components: str, base: str = "sd3") -> nn.Module:
    """The flow DiT: ``base`` "zimage" (diffusers ZImageTransformer2DModel, Z-Image-Turbo's shape for ``sd21``),
    "flux2" (Flux2Transformer2DModel, FLUX.2 [klein] 4B's shape) or "sd3" (SD3Transformer2DModel, SD3-medium's)."""
    from diffusers import (
        Flux2Transformer2DModel,
        SD3Transformer2DModel,
        ZImageTransformer2DModel,
    )

    cls, role = {"sd3": (SD3Transformer2DModel, "dit"), "zimage": (ZImageTransformer2DModel, "dit_zimage"),
                 "flux2": (Flux2Transformer2DModel, "dit_flux2")}[base]
    if is_folder(components):
        return frozen(cls.from_pretrained(need(components, "transformer", f"the DiT ({cls.__name__})")))
    return frozen(cls(**preset_config(components, role)))


def noise_scheduler(components: str):
    """diffusers DDPMScheduler of the base (SD's scaled-linear schedule for presets); an epsilon-prediction
    schedule is what every recipe's formulas assume, so any other prediction type is refused here."""
    from diffusers import DDPMScheduler

    if is_folder(components):
        path = need(components, "scheduler", "the noise schedule (scheduler/)")
        sched = DDPMScheduler.from_pretrained(path)
    else:
        path = None
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    kind = sched.config.prediction_type
    if kind != "epsilon":
        raise UserError(f"the noise schedule in {path} predicts {kind!r}, but the recipes are written for epsilon "
                        f"prediction (SD 2.1-base, not the 768-px v-prediction SD 2.1); use an epsilon-prediction base")
    return sched


def alphas_cumprod(components: str) -> torch.Tensor:
    """abar_t of the DDPM noise schedule (SD's scaled-linear schedule unless a folder gives one)."""
    return noise_scheduler(components).alphas_cumprod.clone().float()


def null_prompt_embedding(components: str, unet: nn.Module) -> torch.Tensor:
    """Cross-attention context c of the empty prompt [1, L, D] (all zeros for random-weight presets)."""
    if not is_folder(components):
        tokens = preset_config(components, "text_context")["tokens"]
        return torch.zeros(1, tokens, unet.config.cross_attention_dim)
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(need(components, "tokenizer", "the tokenizer of the text encoder"))
    enc = CLIPTextModel.from_pretrained(need(components, "text_encoder", "the text encoder"))
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids)[0].float()
