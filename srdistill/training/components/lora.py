"""peft LoRA on diffusers models (through diffusers' adapter API): the recipes' LoRA scopes, adapters and their
weights, and OSEDiff's scope and released checkpoint (CTSR's student and realism teacher)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training.components.roles import MissingWeights

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
