"""Builders for every role the recipes need, from real library classes.

``components`` is ``"tiny"`` (tiny configs, random weights: tests and CPU smoke runs), ``"sd21"``
(SD 2.1-shaped UNet/VAE and an SD3-medium-shaped DiT with random weights: benchmarks), a Hugging Face
model id (``org/name[@revision]``, resolved by srdistill.hub into the hub's cache), or a folder of
pretrained weights laid out as::

    FOLDER/vae/ unet/ scheduler/ text_encoder/ tokenizer/   diffusers / transformers from_pretrained
    FOLDER/transformer/ (+ FOLDER/transformer_vae/)          SD3 DiT for StrSR (and its 16-channel VAE)
    FOLDER/disc_unet/                                        optional larger UNet for D3SR's discriminator
    FOLDER/resshift/  resshift_realsrx4_s15_v1.pth, autoencoder_vq_f4.pth    ResShift's released files, as named there
    FOLDER/clip_convnext/  FOLDER/clip/                      open_clip ``local-dir:`` folders
    FOLDER/pyiqa/   LPIPS_v0.1_{alex,vgg}-*.pth, DISTS_weights-*.pth, torchvision vgg16-*.pth / alexnet-*.pth

All base weights are frozen here; recipes add LoRA (peft) or new heads and train only those.

Where each piece comes from: VAE, UNets, DiT and the DDPM schedule are diffusers classes; LoRA is
peft (through diffusers' adapter API); CLIP and CLIP-ConvNeXt are open_clip models (the ConvNeXt
trunk is timm's); LPIPS and DISTS are pyiqa's arch classes; the DWT is ptwt. Written here from the
papers: RaGAN, approximated R1, FDL's sliced Wasserstein on DFT amplitude/phase (fdl-pytorch, the
authors' package, builds torchvision VGG19 with downloaded ImageNet weights and takes no local path),
Sobel/EA-DISTS, the ResShift chain with SinSR's sampler, the discriminator heads and the latent
PatchGAN critic.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

from srdistill.errors import UserError

PRESETS = ("tiny", "sd21")


class MissingWeights(UserError):
    """A pretrained folder lacks a file or sub-folder a recipe needs."""


def _is_folder(components: str) -> bool:
    return components not in PRESETS


def _need(components: str, sub: str, what: str) -> Path:
    from srdistill.hub import role_dir

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


# --------------------------------------------------------------------------------------------
# diffusers: VAE, UNet, DiT, noise schedule; ResShift's network
# --------------------------------------------------------------------------------------------


def build_vae(components: str, latent_channels: int = 4, sub: str = "vae") -> nn.Module:
    """diffusers AutoencoderKL (SD's f8 VAE shape; tiny: f8 with few channels)."""
    from diffusers import AutoencoderKL

    if _is_folder(components):
        return frozen(AutoencoderKL.from_pretrained(_need(components, sub, "the VAE (diffusers AutoencoderKL)")))
    if components == "tiny":
        cfg = {"block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64}
    else:
        cfg = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512}
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.18215 if latent_channels == 4 else 1.5305,
                        shift_factor=None if latent_channels == 4 else 0.0609, **cfg)
    return frozen(vae)


def build_unet(components: str, sub: str = "unet") -> nn.Module:
    """diffusers UNet2DConditionModel (SD 2.1 shape for ``sd21``)."""
    from diffusers import UNet2DConditionModel

    if _is_folder(components):
        return frozen(UNet2DConditionModel.from_pretrained(_need(components, sub, "the diffusion UNet")))
    if components == "tiny":
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    else:
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    return frozen(unet)


def build_dit(components: str) -> nn.Module:
    """diffusers SD3Transformer2DModel (SD3-medium shape for ``sd21``)."""
    from diffusers import SD3Transformer2DModel

    if _is_folder(components):
        path = _need(components, "transformer", "the DiT (SD3Transformer2DModel)")
        return frozen(SD3Transformer2DModel.from_pretrained(path))
    if components == "tiny":
        cfg = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "num_layers": 2, "attention_head_dim": 8,
               "num_attention_heads": 2, "joint_attention_dim": 32, "caption_projection_dim": 16,
               "pooled_projection_dim": 16, "pos_embed_max_size": 32}
    else:
        cfg = {"sample_size": 128, "in_channels": 16, "out_channels": 16, "num_layers": 24, "attention_head_dim": 64,
               "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
               "pooled_projection_dim": 2048, "pos_embed_max_size": 192}
    return frozen(SD3Transformer2DModel(patch_size=2, **cfg))


def alphas_cumprod(components: str) -> torch.Tensor:
    """abar_t of the DDPM noise schedule (SD's scaled-linear schedule unless a folder gives one)."""
    from diffusers import DDPMScheduler

    if _is_folder(components):
        sched = DDPMScheduler.from_pretrained(_need(components, "scheduler", "the noise schedule (scheduler/)"))
    else:
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return sched.alphas_cumprod.clone().float()


def null_prompt_embedding(components: str, unet: nn.Module) -> torch.Tensor:
    """Cross-attention context c of the empty prompt [1, L, D] (all zeros for random-weight presets)."""
    if not _is_folder(components):
        return torch.zeros(1, 8 if components == "tiny" else 77, unet.config.cross_attention_dim)
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(_need(components, "tokenizer", "the tokenizer of the text encoder"))
    enc = CLIPTextModel.from_pretrained(_need(components, "text_encoder", "the text encoder"))
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids)[0].float()


def build_resshift_unet(components: str, latent_channels: int = 4) -> nn.Module:
    """ResShift's Swin-UNet x0-predictor, forward(x, t, lq) (srdistill.training.resshift.build_resshift_net;
    ``build_resshift`` there gives the whole released teacher: network, VQ-f4 codec and schedule)."""
    from srdistill.training.resshift import build_resshift_net

    return build_resshift_net(components, latent_channels)


# --------------------------------------------------------------------------------------------
# peft LoRA
# --------------------------------------------------------------------------------------------

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                     "conv1", "conv2")
DIT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                    "ff.net.0.proj", "ff.net.2")


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...], adapter_name: str = "default") -> None:
    """Attach a peft LoRA adapter (diffusers' PeftAdapterMixin); the base stays frozen."""
    from peft import LoraConfig

    pattern = r".*\.(" + "|".join(re.escape(t) for t in targets) + r")$"
    cfg = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=pattern)
    with warnings.catch_warnings():  # a second adapter (CTSR's stage-1 snapshot) is intended
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        model.add_adapter(cfg, adapter_name=adapter_name)


def lora_parameters(model: nn.Module, adapter_name: str = "default") -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n and f".{adapter_name}." in n + "."]


# --------------------------------------------------------------------------------------------
# open_clip image encoders
# --------------------------------------------------------------------------------------------


def build_open_clip(components: str, kind: str) -> nn.Module:
    """open_clip CLIP model; ``kind`` "convnext" (CLIP-ConvNeXt, timm trunk) or "vit" (CLIP ViT)."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if _is_folder(components):
        sub = "clip_convnext" if kind == "convnext" else "clip"
        path = _need(components, sub, f"the open_clip {kind} checkpoint (open_clip_config.json + weights)")
        return frozen(open_clip.create_model(f"local-dir:{path}"))
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    if components == "tiny":
        if kind == "convnext":
            vision = CLIPVisionCfg(timm_model_name="convnext_atto", timm_model_pretrained=False, timm_pool="",
                                   timm_proj="linear", image_size=64)
        else:
            vision = CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=16, image_size=64)
        return frozen(CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text))
    if kind == "convnext":
        vision = CLIPVisionCfg(timm_model_name="convnext_xxlarge", timm_model_pretrained=False, timm_pool="",
                               timm_proj="linear", image_size=256)
        return frozen(CLIP(embed_dim=1024, vision_cfg=vision, text_cfg=text))
    vision = CLIPVisionCfg(layers=24, width=1024, head_width=64, patch_size=14, image_size=224)
    return frozen(CLIP(embed_dim=768, vision_cfg=vision, text_cfg=text))


def clip_image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def clip_embed_dim(model: nn.Module) -> int:
    """Width of the encoder's image embedding (read from one forward pass: open_clip towers differ in how they say it)."""
    size = clip_image_size(model)
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, size, size, device=next(model.parameters()).device)).shape[-1])


def clip_normalize(model: nn.Module, x: torch.Tensor, resize: bool = True) -> torch.Tensor:
    """[0,1] images -> the encoder's input: normalised with its mean/std and, for encoders with a fixed
    input size (ViT, pooled embeddings), resized to its image size."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    if resize:
        size = clip_image_size(model)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------
# pyiqa perceptual losses
# --------------------------------------------------------------------------------------------


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
    if _is_folder(components):
        folder = _need(components, "pyiqa", "pyiqa's weight files")
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
    if _is_folder(components):
        folder = _need(components, "pyiqa", "pyiqa's weight files")
        _load_torchvision_features(model, _one(folder, "vgg16-*.pth", "torchvision vgg16 weights", components))
        load_pretrained_network(model, str(_one(folder, "DISTS_weights-*.pth", "DISTS weights", components)), False)
    return frozen(model)


def lpips_features(lpips: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The five backbone feature maps LPIPS compares (used as FDL's Phi)."""
    return list(lpips.net(lpips.scaling_layer(x * 2 - 1)))
