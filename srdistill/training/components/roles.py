"""Where each role's weights come from: a preset (srdistill.training.components.presets), a Hugging Face model id
(``org/name[@revision]``, resolved by srdistill.core.fetch.hub into the hub's cache), or a folder of pretrained weights
laid out as::

    FOLDER/vae/ unet/ scheduler/ text_encoder/ tokenizer/   diffusers / transformers from_pretrained (SD 2.1-base)
    FOLDER/osediff.pkl                                       OSEDiff's released LoRA checkpoint (CTSR)
    FOLDER/transformer/ (+ FOLDER/transformer_vae/)          StrSR's DiT (Z-Image, FLUX.2 [klein] or SD3) and its VAE
    FOLDER/text_condition.safetensors                        StrSR's "w/o VLM" text embedding (prompt_embeds, pooled_prompt_embeds)
    FOLDER/disc_unet/                                        SDXL 1.0-base UNet for D3SR's discriminator
    FOLDER/vlm/                                              Qwen3-VL-4B-Instruct with its processor files (StrSR's E_VLM)
    FOLDER/resshift/  resshift_realsrx4_s15_v1.pth, autoencoder_vq_f4.pth    ResShift's released files, as named there
    FOLDER/clip_convnext/  FOLDER/clip/                      open_clip ``local-dir:`` folders
    FOLDER/pyiqa/   LPIPS_v0.1_{alex,vgg}-*.pth, DISTS_weights-*.pth, torchvision vgg16-*.pth / alexnet-*.pth

All base weights are frozen (``frozen``); recipes add LoRA (peft) or new heads and train only those.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from srdistill.core.errors import UserError
from srdistill.training.components.presets import PRESETS, is_preset


class MissingWeights(UserError):
    """A pretrained folder lacks a file or sub-folder a recipe needs."""


def is_folder(components: str) -> bool:
    return not is_preset(components)


def has_role(components: str, role: str, sub: str) -> bool:
    """Whether a preset defines ``role`` or a folder (or model snapshot) holds ``sub``."""
    from srdistill.core.fetch.hub import role_dir

    return role in PRESETS[components] if is_preset(components) else role_dir(components, sub).exists()


def need(components: str, sub: str, what: str) -> Path:
    from srdistill.core.fetch.hub import role_dir

    path = role_dir(components, sub)  # a folder, or a Hugging Face model id resolved into the hub's cache
    if not path.exists():
        raise MissingWeights(
            f"components folder {components} is missing {what} (looked for {path}); "
            f"put the weights there or run with --components tiny")
    return path


def frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module
