"""Builders for every role the recipes need, from real library classes.

``components`` is a preset of ``PRESETS`` below (``"tiny"``: tiny configs, random weights, for tests and CPU
smoke runs; ``"sd21"``: paper-shaped roles with random weights, for benchmarks), a Hugging Face model id
(``org/name[@revision]``, resolved by srdistill.core.hub into the hub's cache), or a folder of pretrained weights
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

from srdistill.core.errors import UserError

# --------------------------------------------------------------------------------------------
# Presets: one table of named component sets. A preset maps each role to the configuration of the real
# library class that plays it (random weights); a new base network or a new size is one entry here.
# --------------------------------------------------------------------------------------------

_SD_VAE = {"down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
           "in_channels": 3, "out_channels": 3}

PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "vae": {**_SD_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8,
                "sample_size": 64},
        "unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
                 "block_out_channels": (32, 64), "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
                 "attention_head_dim": 8, "norm_num_groups": 8},
        # SDXL's layout in miniature: micro-conditioning ("text_time") and a wider text context than the generator's.
        "disc_unet": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
                      "block_out_channels": (32, 64), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                      "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "transformer_layers_per_block": (1, 2),
                      "cross_attention_dim": 48, "attention_head_dim": 8, "norm_num_groups": 8,
                      "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                      "projection_class_embeddings_input_dim": 16 + 6 * 8},
        "dit": {"sample_size": 8, "in_channels": 4, "out_channels": 4, "num_layers": 2, "attention_head_dim": 8,
                "num_attention_heads": 2, "joint_attention_dim": 32, "caption_projection_dim": 16,
                "pooled_projection_dim": 16, "pos_embed_max_size": 32, "patch_size": 2},
        "dit_zimage": {"in_channels": 4, "dim": 32, "n_layers": 2, "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 2,
                       "cap_feat_dim": 32, "axes_dims": [4, 6, 6], "axes_lens": [256, 32, 32]},
        # FLUX.2 [klein]'s layout in miniature: 4 latent channels, 2x2-patchified to the DiT's 16 input channels.
        "dit_flux2": {"patch_size": 1, "in_channels": 16, "num_layers": 1, "num_single_layers": 1,
                      "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 32,
                      "timestep_guidance_channels": 16, "axes_dims_rope": (2, 2, 2, 2), "guidance_embeds": False},
        "vae_flux2": {**_SD_VAE, "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 8,
                      "latent_channels": 4, "sample_size": 64, "patch_size": (2, 2)},
        "text_context": {"tokens": 8},
        # Qwen3-VL in miniature: a 2-block vision tower (one deepstack layer) feeding a 2-layer language model with
        # interleaved M-RoPE; special ids inside the tiny vocabulary.
        "vlm": {"vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32,
                           "num_position_embeddings": 16, "deepstack_visual_indexes": [0]},
                "text": {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                             "mrope_interleaved": True}},
                "ids": {"image_token_id": 60, "video_token_id": 61, "vision_start_token_id": 58, "vision_end_token_id": 59},
                "template": {"im_start": 1, "user": 2, "newline": 3, "im_end": 4, "assistant": 5},
                "min_pixels": 32 * 32, "max_pixels": 64 * 64},
        "clip_vit": {"embed_dim": 32, "vision": {"layers": 2, "width": 64, "head_width": 32, "patch_size": 16,
                                                 "image_size": 64}},
        "clip_convnext": {"embed_dim": 32, "vision": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False,
                                                      "timm_pool": "", "timm_proj": "linear", "image_size": 64}},
    },
    "sd21": {
        "vae": {**_SD_VAE, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32,
                "sample_size": 512},
        "unet": {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                 "block_out_channels": (320, 640, 1280, 1280), "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, "cross_attention_dim": 1024,
                 "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True},
        # SDXL 1.0-base's UNet (D3SR's discriminator in the paper's main results).
        "disc_unet": {"sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                      "block_out_channels": (320, 640, 1280),
                      "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                      "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
                      "cross_attention_dim": 2048, "use_linear_projection": True, "addition_embed_type": "text_time",
                      "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816},
        "dit": {"sample_size": 128, "in_channels": 16, "out_channels": 16, "num_layers": 24, "attention_head_dim": 64,
                "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
                "pooled_projection_dim": 2048, "pos_embed_max_size": 192, "patch_size": 2},
        # Z-Image-Turbo's transformer (6B; StrSR's first base).
        "dit_zimage": {"in_channels": 16, "dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30,
                       "n_kv_heads": 30, "cap_feat_dim": 2560, "axes_dims": [32, 48, 48], "axes_lens": [1024, 512, 512]},
        # FLUX.2 [klein] 4B's transformer (StrSR's second base; guidance-distilled, so no guidance embedder) and
        # the FLUX.2 VAE it shares with every FLUX.2 model (32 latent channels, 2x2 patches, batch-norm statistics).
        "dit_flux2": {"patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20,
                      "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 7680,
                      "timestep_guidance_channels": 256, "mlp_ratio": 3.0, "axes_dims_rope": (32, 32, 32, 32),
                      "rope_theta": 2000, "guidance_embeds": False},
        "vae_flux2": {**_SD_VAE, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                      "norm_num_groups": 32, "latent_channels": 32, "sample_size": 1024, "patch_size": (2, 2),
                      "batch_norm_eps": 1e-4},
        "text_context": {"tokens": 77},
        # Qwen3-VL-4B-Instruct: its vision tower (merger to 2560) and its 36-layer, 2560-wide language model; the
        # processor's pixel bounds (256^2 to 4096^2); Qwen's special ids (the template ids only shape the sequence:
        # a folder's tokenizer gives the real ones).
        "vlm": {"vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                           "out_hidden_size": 2560, "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
                "text": {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                         "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                         "max_position_embeddings": 262144,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                             "mrope_interleaved": True}},
                "ids": {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                        "vision_end_token_id": 151653},
                "template": {"im_start": 151644, "user": 872, "newline": 198, "im_end": 151645, "assistant": 77091},
                "min_pixels": 256 * 256, "max_pixels": 4096 * 4096},
        "clip_vit": {"embed_dim": 768, "vision": {"layers": 24, "width": 1024, "head_width": 64, "patch_size": 14,
                                                  "image_size": 224}},
        "clip_convnext": {"embed_dim": 1024, "vision": {"timm_model_name": "convnext_xxlarge",
                                                        "timm_model_pretrained": False, "timm_pool": "",
                                                        "timm_proj": "linear", "image_size": 256}},
    },
}


class MissingWeights(UserError):
    """A pretrained folder lacks a file or sub-folder a recipe needs."""


def is_preset(components: str) -> bool:
    return components in PRESETS


def _is_folder(components: str) -> bool:
    return not is_preset(components)


def preset_config(components: str, role: str) -> dict:
    """The library configuration of ``role`` in preset ``components`` (a copy)."""
    try:
        return dict(PRESETS[components][role])
    except KeyError:
        raise UserError(f"component preset {components!r} has no {role!r} role "
                        f"(presets: {', '.join(PRESETS)}; roles of it: {', '.join(PRESETS.get(components, {}))})") from None


def has_role(components: str, role: str, sub: str) -> bool:
    """Whether a preset defines ``role`` or a folder (or model snapshot) holds ``sub``."""
    from srdistill.core.hub import role_dir

    return role in PRESETS[components] if is_preset(components) else role_dir(components, sub).exists()


def _need(components: str, sub: str, what: str) -> Path:
    from srdistill.core.hub import role_dir

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
    vae = AutoencoderKL(latent_channels=latent_channels, scaling_factor=0.18215 if latent_channels == 4 else 1.5305,
                        shift_factor=None if latent_channels == 4 else 0.0609, **preset_config(components, "vae"))
    return frozen(vae)


def build_flux2_vae(components: str, sub: str = "transformer_vae") -> nn.Module:
    """diffusers AutoencoderKLFlux2 (FLUX.2's VAE: f8, then 2x2 patches normalised by its batch-norm statistics)."""
    from diffusers import AutoencoderKLFlux2

    if _is_folder(components):
        return frozen(AutoencoderKLFlux2.from_pretrained(_need(components, sub, "the FLUX.2 VAE (AutoencoderKLFlux2)")))
    return frozen(AutoencoderKLFlux2(**preset_config(components, "vae_flux2")))


def build_unet(components: str, sub: str = "unet", role: str = "unet") -> nn.Module:
    """diffusers UNet2DConditionModel: ``role`` "unet" (SD 2.1 shape) or "disc_unet" (SDXL shape)."""
    from diffusers import UNet2DConditionModel

    if _is_folder(components):
        return frozen(UNet2DConditionModel.from_pretrained(_need(components, sub, "the diffusion UNet")))
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
    from diffusers import Flux2Transformer2DModel, SD3Transformer2DModel, ZImageTransformer2DModel

    cls, role = {"sd3": (SD3Transformer2DModel, "dit"), "zimage": (ZImageTransformer2DModel, "dit_zimage"),
                 "flux2": (Flux2Transformer2DModel, "dit_flux2")}[base]
    if _is_folder(components):
        return frozen(cls.from_pretrained(_need(components, "transformer", f"the DiT ({cls.__name__})")))
    return frozen(cls(**preset_config(components, role)))


def noise_scheduler(components: str):
    """diffusers DDPMScheduler of the base (SD's scaled-linear schedule for presets); an epsilon-prediction
    schedule is what every recipe's formulas assume, so any other prediction type is refused here."""
    from diffusers import DDPMScheduler

    if _is_folder(components):
        path = _need(components, "scheduler", "the noise schedule (scheduler/)")
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
    if not _is_folder(components):
        tokens = preset_config(components, "text_context")["tokens"]
        return torch.zeros(1, tokens, unet.config.cross_attention_dim)
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(_need(components, "tokenizer", "the tokenizer of the text encoder"))
    enc = CLIPTextModel.from_pretrained(_need(components, "text_encoder", "the text encoder"))
    ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids)[0].float()


# --------------------------------------------------------------------------------------------
# peft LoRA
# --------------------------------------------------------------------------------------------

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                     "conv1", "conv2")
ZIMAGE_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "w1", "w2", "w3")
DIT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                    "ff.net.0.proj", "ff.net.2")


FLUX2_LORA_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
                       "to_out", "to_qkv_mlp_proj")


def flux2_lora_targets(dit: nn.Module) -> list[str]:
    """FLUX.2's LoRA scope in StrSR's released code (configs/flux_train_stage*.yaml lora_modules, matched as name
    suffixes on linear layers): the attention projections of both streams in the double-stream blocks and the
    single blocks' fused qkv+MLP input and output; the feed-forwards, modulation, embedders and output head stay
    frozen. Full names: the single blocks' ``attn.to_out`` is a Linear while the double blocks' is a list."""
    return [n for n, m in dit.named_modules() if isinstance(m, nn.Linear) and n.endswith(FLUX2_LORA_SUFFIXES)
            and n.startswith(("transformer_blocks.", "single_transformer_blocks."))]


def add_lora(model: nn.Module, rank: int, alpha: float, targets, adapter_name: str = "default") -> None:
    """Attach a peft LoRA adapter (diffusers' PeftAdapterMixin); the base stays frozen.

    ``targets``: a tuple of module-name suffixes, or a list of full module names (OSEDiff's scope)."""
    from peft import LoraConfig

    if isinstance(targets, tuple):
        targets = r".*\.(" + "|".join(re.escape(t) for t in targets) + r")$"
    cfg = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)
    with warnings.catch_warnings():  # several adapters on one base (CTSR's teacher and snapshot) are intended
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        model.add_adapter(cfg, adapter_name=adapter_name)


def lora_parameters(model: nn.Module, adapter_name: str = "default") -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n and f".{adapter_name}." in n + "."]


def copy_adapter(model: nn.Module, src: str, dst: str) -> None:
    """Copy the LoRA weights of adapter ``src`` into adapter ``dst`` (same scope)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if "lora_" in name and f".{dst}." in name:
                p.copy_(params[name.replace(f".{dst}.", f".{src}.")])


# OSEDiff's LoRA scope (its train_osediff.py / osediff.py): every weight (not bias, not norm) whose name holds
# one of these patterns, in the UNet split into three adapters (encoder = down blocks and conv_in, decoder =
# up blocks and conv_out, others = the rest), in the VAE the encoder and quant_conv. peft's default alpha (8)
# with rank 4, as its LoraConfig leaves lora_alpha unset.
OSEDIFF_UNET_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
                         "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")
OSEDIFF_VAE_PATTERNS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v",
                        "to_out.0")
OSEDIFF_RANK, OSEDIFF_ALPHA = 4, 8
OSEDIFF_FILE = "osediff.pkl"
OSEDIFF_UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")


def osediff_unet_targets(unet: nn.Module) -> dict[str, list[str]]:
    """OSEDiff's UNet LoRA targets by its adapter name (module names of the plain, adapter-free UNet)."""
    groups: dict[str, list[str]] = {a: [] for a in OSEDIFF_UNET_ADAPTERS}
    for n, _ in unet.named_parameters():
        if "bias" in n or "norm" in n or not any(p in n for p in OSEDIFF_UNET_PATTERNS):
            continue
        module = n.removesuffix(".weight")
        if "down_blocks" in n or "conv_in" in n:
            groups["default_encoder"].append(module)
        elif "up_blocks" in n or "conv_out" in n:
            groups["default_decoder"].append(module)
        else:
            groups["default_others"].append(module)
    return groups


def osediff_vae_targets(vae: nn.Module) -> list[str]:
    """OSEDiff's VAE LoRA targets: the encoder's convolutions and attention projections, and quant_conv."""
    out = []
    for n, _ in vae.named_parameters():
        if "bias" in n or "norm" in n:
            continue
        if ("encoder" in n and any(p in n for p in OSEDIFF_VAE_PATTERNS)) or ("quant_conv" in n and "post_quant_conv" not in n):
            out.append(n.removesuffix(".weight"))
    return sorted(set(out))


def add_osediff_lora(unet: nn.Module, vae: nn.Module, adapter: str, rank: int = OSEDIFF_RANK,
                     alpha: float = OSEDIFF_ALPHA) -> None:
    """One adapter named ``adapter`` on the UNet (the union of OSEDiff's three: same rank, same scaling) and
    one on the VAE encoder, with OSEDiff's scope."""
    targets = [m for group in osediff_unet_targets(_base_view(unet)).values() for m in group]
    add_lora(unet, rank, alpha, targets, adapter)
    add_lora(vae, rank, alpha, osediff_vae_targets(_base_view(vae)), adapter)


def _base_view(model: nn.Module) -> nn.Module:
    """A model's module names as the adapter-free model has them (peft renames wrapped weights base_layer.*)."""
    class _Names(nn.Module):
        def named_parameters(self, *a, **k):
            for n, p in model.named_parameters():
                if "lora_" not in n:
                    yield n.replace(".base_layer.", "."), p

    return _Names()


def randomize_adapter(model: nn.Module, adapter: str, generator: torch.Generator, std: float = 0.02) -> None:
    """Random LoRA weights (A and B both non-zero): presets' stand-in for a released LoRA checkpoint."""
    with torch.no_grad():
        for p in lora_parameters(model, adapter):
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def load_osediff(path: str | Path, unet: nn.Module, vae: nn.Module, adapter: str) -> None:
    """Load OSEDiff's released checkpoint (``torch.save`` of a dict: ``rank_unet``, ``unet_lora_{encoder,decoder,
    others}_modules``, ``state_dict_unet``, ``rank_vae``, ``vae_lora_encoder_modules``, ``state_dict_vae``) into
    ``adapter`` as made by ``add_osediff_lora``; its conv_in weights replace the UNet's."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise MissingWeights(f"cannot read OSEDiff's checkpoint {path} ({exc}); put OSEDiff's released "
                             f"{OSEDIFF_FILE} there") from None
    keys = ("rank_unet", "state_dict_unet", "rank_vae", "state_dict_vae", "unet_lora_encoder_modules",
            "unet_lora_decoder_modules", "unet_lora_others_modules", "vae_lora_encoder_modules")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"{path} is not an OSEDiff checkpoint (no {', '.join(missing)})")
    if int(ckpt["rank_unet"]) != OSEDIFF_RANK or int(ckpt["rank_vae"]) != OSEDIFF_RANK:
        raise UserError(f"{path} has LoRA rank {ckpt['rank_unet']}/{ckpt['rank_vae']}; OSEDiff's release is rank {OSEDIFF_RANK}")
    ours = osediff_unet_targets(_base_view(unet))
    for group in OSEDIFF_UNET_ADAPTERS:
        if sorted(ckpt[f"unet_lora_{group.removeprefix('default_')}_modules"]) != sorted(ours[group]):
            raise UserError(f"{path}: OSEDiff's {group} LoRA targets differ from this UNet's; is the base SD 2.1-base?")
    where = {m: g for g, mods in ours.items() for m in mods}
    _copy_lora(unet, ckpt["state_dict_unet"], adapter, lambda module: where[module], path)
    _copy_lora(vae, ckpt["state_dict_vae"], adapter, lambda module: "default_encoder", path)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if n.startswith("conv_in.") and "lora_" not in n:
                p.copy_(ckpt["state_dict_unet"][n])


def _copy_lora(model: nn.Module, sd: dict, adapter: str, group_of, path) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" not in n or f".{adapter}." not in n:
                continue
            module = n.split(".lora_")[0]
            key = n.replace(f".{adapter}.", f".{group_of(module)}.")
            if key not in sd:
                raise UserError(f"{path} lacks {key}; it is not OSEDiff's checkpoint for this base")
            p.copy_(sd[key])


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
    cfg = preset_config(components, f"clip_{kind}")
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)  # never run: image towers only
    return frozen(CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision"]), text_cfg=text))


def qwen_smart_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's image processor size rule (smart_resize): each side rounded to a multiple of ``factor``
    (patch x merge), then scaled, keeping the aspect ratio, into [min_pixels, max_pixels]."""
    import math

    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


class QwenVLEncoder(nn.Module):
    """E_VLM of StrSR's Eq. 5: Qwen3-VL (transformers' Qwen3VLModel, frozen) reading the LR image and a fixed
    prompt in its chat template, as the processor lays them out: the image resized by Qwen-VL's size rule, cut
    into the vision tower's patches, its merged visual tokens placed at the ``<|image_pad|>`` positions of
    ``prefix + [image_token] * N + suffix`` (the template up to ``<|vision_start|>``, then from
    ``<|vision_end|>``: the prompt and the assistant turn's opening). ``tokens``:

    - ``"text"``: the language model's last hidden states at every non-image position, [B, L, hidden] (what
      StrSR's released code feeds its projector; behind the image they attend to it);
    - ``"vision"``: the vision tower's merged tokens alone, [B, N, out_hidden] (no language model: an ablation).
    """

    def __init__(self, model: nn.Module, prefix: list[int], suffix: list[int], *, min_pixels: int, max_pixels: int,
                 mean: float = 0.5, std: float = 0.5, tokens: str = "text"):
        super().__init__()
        if tokens not in ("text", "vision"):
            raise UserError(f"the Qwen3-VL encoder returns text or vision tokens, not {tokens!r}")
        self.model, self.tokens = model, tokens
        vis = model.config.vision_config
        self.patch, self.merge, self.temporal = vis.patch_size, vis.spatial_merge_size, vis.temporal_patch_size
        self.image_token_id = model.config.image_token_id
        self.min_pixels, self.max_pixels, self.mean, self.std = int(min_pixels), int(max_pixels), mean, std
        self.register_buffer("prefix", torch.tensor(prefix, dtype=torch.long), persistent=False)
        self.register_buffer("suffix", torch.tensor(suffix, dtype=torch.long), persistent=False)
        self.width = model.config.text_config.hidden_size if tokens == "text" else vis.out_hidden_size

    def size(self, height: int, width: int) -> tuple[int, int]:
        return qwen_smart_size(height, width, self.patch * self.merge, self.min_pixels, self.max_pixels)

    def patches(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened patches [B * h * w, C * T * p * p] and grid_thw [B, 3], in the image processor's order."""
        hh, ww = self.size(x01.shape[-2], x01.shape[-1])
        x = x01
        if (hh, ww) != tuple(x01.shape[-2:]):   # the processor's bicubic resize (PIL's is antialiased too)
            x = torch.nn.functional.interpolate(x01, size=(hh, ww), mode="bicubic", align_corners=False,
                                                antialias=True).clamp(0, 1)
        x = (x - self.mean) / self.std
        b, c, p, m, t = x.shape[0], x.shape[1], self.patch, self.merge, self.temporal
        gh, gw = hh // p, ww // p
        x = x.unsqueeze(1).expand(b, t, c, hh, ww)   # a still image repeats over the temporal patch
        x = x.reshape(b, 1, t, c, gh // m, m, p, gw // m, m, p).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
        grid = torch.tensor([[1, gh, gw]] * b, device=x.device)
        return x.reshape(b * gh * gw, c * t * p * p), grid

    def input_ids(self, batch: int, image_tokens: int) -> torch.Tensor:
        """The processor's expansion of the one ``<|image_pad|>`` into one token per merged visual token."""
        image = self.prefix.new_full((image_tokens,), self.image_token_id)
        return torch.cat([self.prefix, image, self.suffix]).expand(batch, -1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        pixels, grid = self.patches(x01)
        pixels = pixels.to(next(self.model.parameters()).dtype)
        b = x01.shape[0]
        if self.tokens == "vision":
            return self.model.visual(pixels, grid_thw=grid).pooler_output.view(b, -1, self.width)
        ids = self.input_ids(b, int(grid[0].prod()) // self.merge ** 2)
        image = ids == self.image_token_id
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, image_grid_thw=grid,
                         mm_token_type_ids=image.int()).last_hidden_state
        return out[~image].view(b, -1, self.width)


def _preset_prompt_ids(preset: dict, prompt: str) -> tuple[list[int], list[int]]:
    """Presets have no tokenizer: the chat template's structure from fixed ids, and one id per word of the prompt
    (its CRC-32 folded into the ids below the special ones), so a different prompt gives different tokens."""
    import zlib

    t, ids = preset["template"], preset["ids"]
    low = min(ids.values())
    words = [len(t) + 1 + zlib.crc32(w.encode()) % (low - len(t) - 1) for w in prompt.split()]
    prefix = [t["im_start"], t["user"], t["newline"], ids["vision_start_token_id"]]
    suffix = [ids["vision_end_token_id"], *words, t["im_end"], t["newline"], t["im_start"], t["assistant"], t["newline"]]
    return prefix, suffix


def _processor_prompt_ids(processor, prompt: str, image_token_id: int) -> tuple[list[int], list[int]]:
    """The real chat template: the processor's rendering of one user turn (an image, then the prompt) with the
    assistant turn opened, tokenized; split around its one image placeholder."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    if ids.count(image_token_id) != 1:
        raise UserError(f"Qwen3-VL's chat template gave {ids.count(image_token_id)} image placeholders for one image; "
                        f"is vlm/ a Qwen3-VL checkpoint with its processor files?")
    k = ids.index(image_token_id)
    return ids[:k], ids[k + 1:]


def build_vlm(components: str, prompt: str, tokens: str = "text") -> QwenVLEncoder:
    """Qwen3-VL as StrSR's E_VLM: FOLDER/vlm/ (a Qwen3-VL checkpoint with its processor: Qwen3-VL-4B-Instruct) or
    a preset (the same transformers classes at the preset's configuration)."""
    from transformers import Qwen3VLConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    if _is_folder(components):
        from transformers import AutoProcessor

        path = _need(components, "vlm", "the Qwen3-VL checkpoint and its processor (Qwen3-VL-4B-Instruct)")
        model = Qwen3VLModel.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        prefix, suffix = _processor_prompt_ids(processor, prompt, model.config.image_token_id)
        ip = processor.image_processor
        size = getattr(ip, "size", None) or {}
        low = size.get("shortest_edge") or getattr(ip, "min_pixels", None)
        high = size.get("longest_edge") or getattr(ip, "max_pixels", None)
        mean, std = float(ip.image_mean[0]), float(ip.image_std[0])
    else:
        cfg = preset_config(components, "vlm")
        model = Qwen3VLModel(Qwen3VLConfig(text_config=cfg["text"], vision_config=cfg["vision"], **cfg["ids"]))
        prefix, suffix = _preset_prompt_ids(cfg, prompt)
        low, high, mean, std = cfg["min_pixels"], cfg["max_pixels"], 0.5, 0.5
    return frozen(QwenVLEncoder(model, prefix, suffix, min_pixels=low, max_pixels=high, mean=mean, std=std,
                                tokens=tokens))


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
