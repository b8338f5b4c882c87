"""Role builders: real library classes from tiny configs, LoRA wiring, loading from a pretrained folder."""
from __future__ import annotations

import pytest
import torch

from srdistill.core.errors import UserError
from srdistill.training.components.diffusers_models import alphas_cumprod, build_dit, build_unet, build_vae
from srdistill.training.components.lora import UNET_LORA_TARGETS, add_lora, lora_parameters
from srdistill.training.components.open_clip_encoders import build_open_clip
from srdistill.training.components.perceptual import build_lpips
from srdistill.training.components.presets import PRESETS, is_preset
from srdistill.training.components.roles import has_role


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_roles_are_the_real_library_classes_and_frozen():
    from diffusers import (
        AutoencoderKL,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )
    from open_clip.model import CLIP
    from pyiqa.archs.lpips_arch import LPIPS

    from srdistill.training.nets.resshift_unet import ResShiftUNet
    from srdistill.training.recipes.resshift import build_resshift_net

    built = {
        AutoencoderKL: build_vae("tiny"),
        UNet2DConditionModel: build_unet("tiny"),
        SD3Transformer2DModel: build_dit("tiny"),
        ResShiftUNet: build_resshift_net("tiny", 4),
        CLIP: build_open_clip("tiny", "convnext"),
        LPIPS: build_lpips("tiny", "alex"),
    }
    for cls, module in built.items():
        assert isinstance(module, cls)
        assert not any(p.requires_grad for p in module.parameters())
    z = built[AutoencoderKL].encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 4, 8, 8)  # f8 like SD's VAE


def test_ddpm_alphas_cumprod_is_sd_scaled_linear():
    abar = alphas_cumprod("tiny")
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(abar.double(), torch.cumprod(1 - betas, 0), atol=1e-6)


def test_lora_adds_only_trainable_low_rank_weights_and_starts_as_identity():
    unet = build_unet("tiny")
    z, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 8, 32)
    before = unet(z, t, encoder_hidden_states=ctx).sample
    add_lora(unet, 4, 4, UNET_LORA_TARGETS)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(lora_parameters(unet)) == len(trainable)
    assert torch.allclose(unet(z, t, encoder_hidden_states=ctx).sample, before, atol=1e-6)  # B starts at zero


def test_missing_pretrained_folder_names_what_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        build_vae(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "vae") in msg and "AutoencoderKL" in msg and "\n" not in msg


def test_diffusers_roles_load_from_a_pretrained_folder(tmp_path):
    vae = build_vae("tiny")
    vae.save_pretrained(tmp_path / "vae")
    loaded = build_vae(str(tmp_path))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode())
    assert not any(p.requires_grad for p in loaded.parameters())


def test_pyiqa_lpips_loads_backbone_and_linear_weights_from_a_folder(tmp_path):
    ref = build_lpips("tiny", "alex")
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.01)
    folder = tmp_path / "pyiqa"
    folder.mkdir()
    features = {}
    for key, value in ref.net.state_dict().items():  # torchvision naming: features.{index}.{weight,bias}
        _, index, kind = key.split(".")
        features[f"features.{index}.{kind}"] = value
    torch.save(features, folder / "alexnet-test.pth")
    torch.save({k: v for k, v in ref.state_dict().items() if k.startswith("lin")}, folder / "LPIPS_v0.1_alex-test.pth")
    loaded = build_lpips(str(tmp_path), "alex")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(x, y), ref(x, y), atol=1e-6)
    tiny = build_lpips("tiny", "alex")
    assert not torch.allclose(tiny(x, y), ref(x, y), atol=1e-6)


def test_a_new_preset_is_one_table_entry(monkeypatch):
    wide = {**PRESETS["tiny"], "unet": {**PRESETS["tiny"]["unet"], "block_out_channels": (48, 64)}}
    monkeypatch.setitem(PRESETS, "tiny-wide", wide)
    assert is_preset("tiny-wide") and build_unet("tiny-wide").config.block_out_channels == (48, 64)
    assert build_vae("tiny-wide").config.block_out_channels == (8, 16, 16, 16)
    monkeypatch.setitem(PRESETS, "no-disc", {k: v for k, v in PRESETS["tiny"].items() if k != "disc_unet"})
    assert not has_role("no-disc", "disc_unet", "disc_unet")
    with pytest.raises(UserError, match="preset 'no-disc' has no 'disc_unet' role"):
        build_unet("no-disc", role="disc_unet")
