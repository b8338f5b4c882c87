"""StrSR against its paper: generator (Eq. 11) and discriminator (Eq. 9) losses recomputed here from the components
and Eq. 2-8; the one-step update is the Euler step z_t1 - t1 G at flow time t1; the condition ablations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srdistill.training.recipe import build_recipe
from helpers.training import lr_hr_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = {"lora_rank": 4, "lora_alpha": 4, "lpips_net": "alex", "fdl_num_proj": 16, "stage1_steps": 5, "t1": 0.6,
       "lambda_lpips": 100.0, "lambda_gan": 0.3, "lambda_fdl": 0.05, "lambda_r1": 7.0, "r1_sigma": 0.3}



@pytest.fixture(params=["zimage", "sd3"])
def recipe(request):
    r = build_recipe("strsr", {**CFG, "base": request.param}, "tiny", "cpu")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in r.generator_parameters() + r.discriminator_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return r


def _predict(r, lr, t1):
    """Eq. 5-6 and the Euler step of Eq. 2-3 from t1 to 0, through diffusers' SD3 transformer."""
    vae = r.codec.vae
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    sf, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    z_lr = (vae.encode(up * 2 - 1).latent_dist.mode() - shift) * sf
    tokens, pooled = r.cond(up)
    if r.cfg["base"] == "sd3":   # flow time x 1000, predicts noise - data = dz/dt
        g = r.dit(hidden_states=z_lr, encoder_hidden_states=tokens, pooled_projections=pooled,
                  timestep=torch.full((lr.shape[0],), t1 * 1000.0)).sample
    else:                        # Z-Image: time 1 - t (1 = clean), lists of [C, 1, H, W], predicts data - noise
        out = r.dit([z.unsqueeze(1) for z in z_lr], torch.full((lr.shape[0],), 1.0 - t1), list(tokens),
                    return_dict=False)[0]
        g = -torch.stack([o[:, 0] for o in out])
    z0 = z_lr - t1 * g
    return (vae.decode(z0 / sf + shift).sample.clamp(-1, 1) + 1) / 2


def _ragan(c_x, c_y):
    """-E[log g(x, y)] - E[log(1 - g(y, x))], g(x, y) = sigmoid(C(x) - E_y C(y)) (Eq. 7), batch means."""
    g_xy = torch.sigmoid(c_x - c_y.mean(0, keepdim=True))
    g_yx = torch.sigmoid(c_y - c_x.mean(0, keepdim=True))
    return -torch.log(g_xy).mean() - torch.log(1 - g_yx).mean()


@pytest.mark.parametrize("step", [0, 5])
def test_generator_loss_is_eq_11_with_fdl_only_in_stage_two(recipe, step):
    lr, hr = lr_hr_batch()
    got = recipe.generator_loss(lr, hr, step)
    c = recipe.cfg
    with torch.no_grad():
        x = _predict(recipe, lr, c["t1"])
        l1 = (x - hr).abs().mean()
        lp = recipe.lpips(x, hr).mean()
        fake, real = recipe.disc(x), recipe.disc(hr)
        gan = torch.stack([_ragan(f, r) for f, r in zip(fake, real)]).mean()   # mean over the five logit maps
        fdl = recipe.fdl(hr, x)
    lam3 = c["lambda_fdl"] if step >= c["stage1_steps"] else 0.0
    want = {"l1": l1, "lpips": lp, "ragan_g": gan, "loss": l1 + c["lambda_lpips"] * lp + c["lambda_gan"] * gan + lam3 * fdl}
    assert all(abs(float(v)) > 0.02 for v in (l1, c["lambda_lpips"] * lp, c["lambda_gan"] * gan, c["lambda_fdl"] * fdl))
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(float(value), rel=1e-4), key
    assert ("fdl" in got) == (step >= c["stage1_steps"])


def test_discriminator_loss_is_eq_9_with_noised_reals_and_approximated_r1(recipe):
    lr, hr = lr_hr_batch(1)
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(4))
    got = recipe.discriminator_loss(lr, hr, 0, r1_noise=noise)
    c = recipe.cfg
    with torch.no_grad():
        x = _predict(recipe, lr, c["t1"])
        noisy = hr + c["r1_sigma"] * noise                                    # N(x_real, sigma^2 I), sigma a std
        fake, noisy_c, real = recipe.disc(x), recipe.disc(noisy), recipe.disc(hr)
        ragan = torch.stack([_ragan(r, f) for r, f in zip(noisy_c, fake)]).mean()
        r1 = torch.stack([(a - b).pow(2).mean() for a, b in zip(real, noisy_c)]).mean()   # Eq. 8
    assert float(r1) * c["lambda_r1"] > 1e-3
    assert float(got["ragan_d"]) == pytest.approx(float(ragan), rel=1e-5)
    assert float(got["r1"]) == pytest.approx(float(r1), rel=1e-4)
    assert float(got["loss"]) == pytest.approx(float(ragan + c["lambda_r1"] * r1), rel=1e-5)


def test_condition_ablations_vlm_text_and_none(recipe):
    lr, _ = lr_hr_batch(2)
    base = recipe.cfg["base"]
    text = build_recipe("strsr", {**CFG, "base": base, "condition": "text"}, "tiny", "cpu")
    none = build_recipe("strsr", {**CFG, "base": base, "condition": "none"}, "tiny", "cpu")
    assert recipe.cond is not None and text.cond is None and none.cond is None
    tokens, pooled = text.student().condition(lr)
    assert tokens.abs().sum() > 0 and (pooled.numel() == 0 or pooled.abs().sum() > 0)   # not the empty embedding
    assert none.student().condition(lr)[0].abs().sum() == 0
    assert text.parameter_counts()["generator"] < recipe.parameter_counts()["generator"]   # no f_adapt to train
    with pytest.raises(Exception, match="condition must be vlm, text"):
        build_recipe("strsr", {**CFG, "condition": "caption"}, "tiny", "cpu")
    with pytest.raises(Exception, match="base must be one of zimage, sd3"):
        build_recipe("strsr", {**CFG, "base": "flux2"}, "tiny", "cpu")


def test_qwen3vl_encoder_cuts_patches_as_qwen_vl_image_processor_and_feeds_one_token_per_visual_token():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    r = build_recipe("strsr", CFG, "tiny", "cpu", student_only=True)
    enc = r.cond.encoder
    assert isinstance(enc.vision, Qwen3VLVisionModel)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    proc = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, do_resize=False, do_rescale=False,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ref = proc(images=[im.permute(1, 2, 0).numpy() for im in x], return_tensors="pt")
    pixels, grid = enc.patches(x)
    assert torch.allclose(pixels, ref["pixel_values"], atol=1e-5) and torch.equal(grid, ref["image_grid_thw"])
    tokens, _ = r.cond(x)
    assert tokens.shape == (2, (64 // 32) ** 2, r.dit.config.cap_feat_dim)


def test_zimage_base_is_diffusers_z_image_transformer():
    from diffusers import ZImageTransformer2DModel

    r = build_recipe("strsr", {**CFG, "condition": "none"}, "tiny", "cpu", student_only=True)
    assert r.cfg["base"] == "zimage" and isinstance(r.dit, ZImageTransformer2DModel)
    lora = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in r.dit.named_parameters() if "lora_" in n}
    assert lora == {"to_q", "to_k", "to_v", "0", "w1", "w2", "w3"}
