"""Named component sets as data: a preset maps each role to the configuration of the real library class that plays
it, with random weights (``"tiny"``: tiny configs for tests and CPU smoke runs; ``"sd21"``: paper-shaped roles for
benchmarks and parameter counts). A new base network or a new size is one entry here."""
from __future__ import annotations

from srdistill.core.errors import UserError

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


def is_preset(components: str) -> bool:
    return components in PRESETS


def preset_config(components: str, role: str) -> dict:
    """The library configuration of ``role`` in preset ``components`` (a copy)."""
    try:
        return dict(PRESETS[components][role])
    except KeyError:
        raise UserError(f"component preset {components!r} has no {role!r} role "
                        f"(presets: {', '.join(PRESETS)}; roles of it: {', '.join(PRESETS.get(components, {}))})") from None
