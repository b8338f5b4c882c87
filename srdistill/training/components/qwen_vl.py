"""transformers' Qwen3-VL as StrSR's semantic encoder E_VLM: the image processor's size rule and patch layout, the
chat template's token layout, and the frozen encoder."""
from __future__ import annotations

import torch
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training.components.presets import preset_config
from srdistill.training.components.roles import frozen, is_folder, need


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

    if is_folder(components):
        from transformers import AutoProcessor

        path = need(components, "vlm", "the Qwen3-VL checkpoint and its processor (Qwen3-VL-4B-Instruct)")
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
