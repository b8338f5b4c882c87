"""open_clip image encoders: CLIP ViT and CLIP-ConvNeXt (whose trunk is timm's), and their input normalisation."""
from __future__ import annotations

import torch
from torch import nn

from srdistill.training.components.presets import preset_config
from srdistill.training.components.roles import frozen, is_folder, need


def build_open_clip(components: str, kind: str) -> nn.Module:
    """open_clip CLIP model; ``kind`` "convnext" (CLIP-ConvNeXt, timm trunk) or "vit" (CLIP ViT)."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if is_folder(components):
        sub = "clip_convnext" if kind == "convnext" else "clip"
        path = need(components, sub, f"the open_clip {kind} checkpoint (open_clip_config.json + weights)")
        return frozen(open_clip.create_model(f"local-dir:{path}"))
    cfg = preset_config(components, f"clip_{kind}")
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)  # never run: image towers only
    return frozen(CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**cfg["vision"]), text_cfg=text))


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
