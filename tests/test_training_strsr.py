"""StrSR against its paper and, where the paper is silent, its released code (jkwang28/StrSR): generator (Eq. 11)
and discriminator (Eq. 9) losses recomputed here from the components and Eq. 2-8 for each base (Z-Image, FLUX.2
[klein], SD3); the one-step update is the Euler step z_t1 - t1 G at flow time t1 (the release's t1 = 0.8); the
discriminator is the release's (four spectral-normalised heads, terms summed over the maps); FLUX.2's latent layout
equals diffusers' Flux2KleinPipeline's; the condition ablations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srdistill.training.recipes.registry import build_recipe
from helpers.training import lr_hr_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = {"lora_rank": 4, "lora_alpha": 4, "lpips_net": "alex", "fdl_num_proj": 16, "stage1_steps": 5, "t1": 0.6,
       "lambda_lpips": 100.0, "lambda_gan": 0.3, "lambda_fdl": 0.05, "lambda_r1": 7.0, "r1_sigma": 0.3}



def _plant_vae_statistics(vae, seed=5):
    """A trained FLUX.2 VAE's batch-norm statistics are far from (0, 1); fresh ones would hide a dropped or
    inverted normalisation."""
    gen = torch.Generator().manual_seed(seed)
    vae.bn.running_mean.copy_(0.5 * torch.randn(vae.bn.running_mean.shape, generator=gen))
    vae.bn.running_var.copy_(0.2 + 3 * torch.rand(vae.bn.running_var.shape, generator=gen))


@pytest.fixture(params=["zimage", "flux2", "sd3"])
def recipe(request):
    r = build_recipe("strsr", {**CFG, "base": request.param}, "tiny", "cpu")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in r.generator_parameters() + r.discriminator_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        if request.param == "flux2":
            _plant_vae_statistics(r.codec.vae)
    r.disc.eval()   # spectral norms' power iteration paused, so recomputing sees the same weights
    return r


def _flux2_stats(vae):
    return vae.bn.running_mean.view(1, -1, 1, 1), (vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).sqrt()


def _flux2_latent(vae, x01):
    """Flux2KleinPipeline._encode_vae_image: posterior mode, 2x2 patches into channels (pixel_unshuffle's order,
    channel-major), minus the batch-norm mean, over sqrt(var + eps)."""
    mean, std = _flux2_stats(vae)
    return (F.pixel_unshuffle(vae.encode(x01 * 2 - 1).latent_dist.mode(), 2) - mean) / std


def _flux2_velocity(dit, z, t, tokens):
    """Flux2KleinPipeline's transformer call on the packed latent; the pipeline's own static helpers build the
    tokens and positions, and its timestep / 1000 is the flow time."""
    from diffusers import Flux2KleinPipeline as P

    b, _, h, w = z.shape
    ids = P._prepare_latent_ids(z)
    out = dit(hidden_states=P._pack_latents(z), timestep=torch.full((b,), t), guidance=None,
              encoder_hidden_states=tokens, txt_ids=P._prepare_text_ids(tokens), img_ids=ids, return_dict=False)[0]
    return P._unpack_latents_with_ids(out, ids, h, w)


def _predict(r, lr, t1):
    """Eq. 5-6 and the Euler step of Eq. 2-3 from t1 to 0, through each base's diffusers transformer; E_VLM reads
    the LR image itself (StrSR's released code feeds Qwen3-VL the low-resolution input), the VAE its x4 upsampling.
    The decoding is not clamped: the release's losses read it as it comes."""
    vae = r.codec.vae
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    tokens, pooled = r.cond(lr)
    if r.cfg["base"] == "flux2":  # flow time in [0, 1] (1 = noise), predicts noise - data = dz/dt
        z_lr = _flux2_latent(vae, up)
        z0 = z_lr - t1 * _flux2_velocity(r.dit, z_lr, t1, tokens)
        mean, std = _flux2_stats(vae)
        return (vae.decode(F.pixel_shuffle(z0 * std + mean, 2)).sample + 1) / 2
    sf, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    z_lr = (vae.encode(up * 2 - 1).latent_dist.mode() - shift) * sf
    if r.cfg["base"] == "sd3":   # flow time x 1000, predicts noise - data = dz/dt
        g = r.dit(hidden_states=z_lr, encoder_hidden_states=tokens, pooled_projections=pooled,
                  timestep=torch.full((lr.shape[0],), t1 * 1000.0)).sample
    else:                        # Z-Image: time 1 - t (1 = clean), lists of [C, 1, H, W], predicts data - noise
        out = r.dit([z.unsqueeze(1) for z in z_lr], torch.full((lr.shape[0],), 1.0 - t1), list(tokens),
                    return_dict=False)[0]
        g = -torch.stack([o[:, 0] for o in out])
    z0 = z_lr - t1 * g
    return (vae.decode(z0 / sf + shift).sample + 1) / 2


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
        l1 = ((x * 2 - 1) - (hr * 2 - 1)).abs().mean()                        # L1 of [-1, 1] pixels, as the release
        lp = recipe.lpips(x, hr).mean()
        fake, real = recipe.disc(x), recipe.disc(hr)
        assert len(fake) == 4
        gan = sum(_ragan(f, r) for f, r in zip(fake, real))                    # summed over the four logit maps
        fdl = recipe.fdl(hr, x)
    lam3 = c["lambda_fdl"] if step >= c["stage1_steps"] else 0.0
    want = {"l1": l1, "lpips": lp, "ragan_g": gan, "loss": l1 + c["lambda_lpips"] * lp + c["lambda_gan"] * gan + lam3 * fdl}
    assert all(abs(float(v)) > 0.02 for v in (l1, c["lambda_lpips"] * lp, c["lambda_gan"] * gan, c["lambda_fdl"] * fdl))
    for key, value in want.items():
        assert float(got[key]) == pytest.approx(float(value), rel=1e-4), key
    assert ("fdl" in got) == (step >= c["stage1_steps"])


def test_discriminator_loss_is_eq_9_with_clean_reals_and_r1_on_noised_ones(recipe):
    lr, hr = lr_hr_batch(1)
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(4))
    got = recipe.discriminator_loss(lr, hr, 0, r1_noise=noise)
    c = recipe.cfg
    with torch.no_grad():
        x = _predict(recipe, lr, c["t1"])
        noisy = ((hr * 2 - 1) + c["r1_sigma"] * noise + 1) / 2     # std r1_sigma on [-1, 1] pixels, back to [0, 1]
        fake, noisy_c, real = recipe.disc(x), recipe.disc(noisy), recipe.disc(hr)
        ragan = sum(_ragan(r, f) for r, f in zip(real, fake))
        r1 = sum((a - b).pow(2).mean() for a, b in zip(real, noisy_c))   # Eq. 8 per map, summed
    assert float(r1) * c["lambda_r1"] > 1e-3
    assert float(got["ragan_d"]) == pytest.approx(float(ragan), rel=1e-5)
    assert float(got["r1"]) == pytest.approx(float(r1), rel=1e-4)
    assert float(got["loss"]) == pytest.approx(float(ragan + c["lambda_r1"] * r1), rel=1e-5)


def test_packaged_config_holds_the_released_values_where_the_paper_gives_none():
    from srdistill.training.config import load_run_config

    run = load_run_config("strsr")
    c, t = run.recipe_cfg, run.trainer
    # configs/zimage_train_stage1.yaml: model_t 800, r1_sigma 0.005, lora_rank (= alpha) 256; HYPIR/model/D.py out_ch 512
    assert (c["t1"], c["r1_sigma"], c["lora_alpha"], c["disc_head_channels"]) == (0.8, 0.005, 256, 512)
    assert (t.crop, t.crop_policy, t.online, t.flips) == (1024, "resize_center", "realesrgan", False)
    assert (t.adam_beta1, t.adam_beta2, t.weight_decay, t.clip_grad, t.warmup_steps) == (0.9, 0.999, 0.01, 1.0, 0)


def test_one_step_at_the_releases_t1_is_z_lr_minus_0_8_g_with_z_image_reading_time_0_2():
    """The released trainer (HYPIR/trainer/base.py forward_generator with model_t = coeff_t = 800) feeds Z-Image
    the time (1000 - model_t) / 1000 at the LR latent itself, negates its output into the velocity and steps
    latents - (coeff_t / 1000 - 0) * velocity. Passing 0.8 as Z-Image's time, dropping the factor t1 or starting
    from a noised latent all differ."""
    r = build_recipe("strsr", {**CFG, "t1": 0.8}, "tiny", "cpu", student_only=True)
    lr, _ = lr_hr_batch(6)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(12)
        for p in r.generator_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        student = r.student()
        z_lr = r.codec.encode_lr(lr)
        tokens, _ = student.condition(lr)
        model_t = coeff_t = 800
        out = r.dit([z.unsqueeze(1) for z in z_lr], torch.full((lr.shape[0],), (1000 - model_t) / 1000), list(tokens),
                    return_dict=False)[0]
        velocity = -torch.stack([o[:, 0] for o in out])
        want = z_lr - (coeff_t / 1000 - 0.0) * velocity
        got = student.predict_latent(lr)
    assert (got - z_lr).abs().mean() > 1e-3
    assert torch.allclose(got, want, atol=1e-5)


def _blur(f, pad_off):
    """vision_aided_loss' BlurPool(filt_size 4, zero padding, stride 1): [1, 3, 3, 1] outer itself over 64."""
    a = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = (torch.outer(a, a) / 64).expand(f.shape[1], 1, 4, 4)
    return F.conv2d(F.pad(f, (1 + pad_off, 2 + pad_off, 1 + pad_off, 2 + pad_off)), k, groups=f.shape[1])


def test_discriminator_is_the_releases_four_spectral_normalised_heads():
    """HYPIR/model/D.py MultiLevelDConv(level=4, down=2): per stage blur(pad_off 1), SN conv3x3 stride 2,
    LeakyReLU 0.2, blur, SN conv1x1 stride 2; on the pooled embedding SN Linear, LeakyReLU, SN Linear."""
    from srdistill.training.components.open_clip_encoders import clip_normalize

    r = build_recipe("strsr", CFG, "tiny", "cpu")
    d = r.disc
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(13))
    widths = [s.blocks[-1].conv_dw.out_channels for s in d.clip.visual.trunk.stages]
    assert [h[1].in_channels for h in d.heads] == widths[:3] and all(h[1].out_channels == 512 for h in d.heads)
    d.eval()
    with torch.no_grad():
        trunk = d.clip.visual.trunk
        final, stages = trunk.forward_intermediates(clip_normalize(d.clip, x, resize=False))
        want = []
        for f, head in zip(stages[:3], d.heads):
            h = F.leaky_relu(F.conv2d(_blur(f, 1), head[1].weight, head[1].bias, stride=2), 0.2)
            want.append(F.conv2d(_blur(h, 0), head[4].weight, head[4].bias, stride=2).flatten(1))
        lin1, lin2 = d.pooled_head[0], d.pooled_head[2]
        pooled = d.clip.visual.head(trunk.forward_head(final))
        want.append(F.linear(F.leaky_relu(F.linear(pooled, lin1.weight, lin1.bias), 0.2), lin2.weight, lin2.bias))
        got = d(x)
    assert [g.shape for g in got] == [(2, 4 * 3), (2, 2 * 2), (2, 1 * 1), (2, 1)]   # 64x48 at strides 4, 8, 16
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))
    d.train()
    assert not d.clip.training and not any(m.training for m in d.clip.modules())   # the trunk stays in eval
    with torch.no_grad():
        for _ in range(20):   # power iterations in training mode
            d(x)
    d.eval()
    with torch.no_grad():
        norms = [float(torch.linalg.matrix_norm(layer.weight.flatten(1), ord=2))
                 for layer in [h[i] for h in d.heads for i in (1, 4)] + [lin1, lin2]]
    assert norms == pytest.approx([1.0] * 8, abs=1e-2), norms


def test_spectral_norm_vectors_travel_with_the_trainable_state():
    r = build_recipe("strsr", CFG, "tiny", "cpu")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        for p in r.discriminator_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(15)))
        r.disc.train()
        r.disc(x)
    sd = r.trainable_state_dict()
    assert any(k.startswith("extra.disc.") and k.endswith("._u") for k in sd)
    rebuilt = build_recipe("strsr", CFG, "tiny", "cpu")
    rebuilt.load_trainable_state_dict(sd)
    r.disc.eval()
    rebuilt.disc.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(r.disc(x), rebuilt.disc(x)))


def test_only_the_discriminator_step_advances_the_spectral_norms():
    """HYPIR/trainer/base.py: the generator step puts the discriminator in eval (no power iteration), the
    discriminator step in train."""
    r = build_recipe("strsr", CFG, "tiny", "cpu")
    lr, hr = lr_hr_batch(2)
    before = {k: v.clone() for k, v in r.disc.spectral_state().items()}
    r.generator_loss(lr, hr, 0)
    assert r.disc.training and all(torch.equal(before[k], v) for k, v in r.disc.spectral_state().items())
    r.discriminator_loss(lr, hr, 0)
    assert not all(torch.equal(before[k], v) for k, v in r.disc.spectral_state().items())


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
    with pytest.raises(Exception, match="base must be one of zimage, flux2, sd3"):
        build_recipe("strsr", {**CFG, "base": "flux1"}, "tiny", "cpu")


def _qwen_inputs(x, prefix, suffix, image_token):
    """What Qwen3-VL's processor hands the model for images already at a size its rule keeps: the image
    processor's patches and grid, and the template's ids with the one image placeholder expanded to one id per
    merged visual token (grid / 2x2)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, do_resize=False, do_rescale=False,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ref = proc(images=[im.permute(1, 2, 0).numpy() for im in x], return_tensors="pt")
    n = int(ref["image_grid_thw"][0].prod()) // 4
    ids = torch.tensor([prefix + [image_token] * n + suffix] * x.shape[0])
    return ref, ids


def test_vlm_encoder_is_qwen3vl_whole_and_cuts_patches_as_its_image_processor():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    r = build_recipe("strsr", CFG, "tiny", "cpu", student_only=True)
    enc = r.cond.encoder
    assert isinstance(enc.model, Qwen3VLModel) and enc.tokens == "text"
    for h, w in [(8, 8), (32, 64), (48, 80), (200, 30), (100, 100)]:
        assert enc.size(h, w) == smart_resize(h, w, factor=32, min_pixels=32 * 32, max_pixels=64 * 64), (h, w)
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(6))   # h != w: a swapped axis shows
    ref, _ = _qwen_inputs(x, [], [], 0)
    pixels, grid = enc.patches(x)
    assert torch.allclose(pixels, ref["pixel_values"], atol=1e-5) and torch.equal(grid, ref["image_grid_thw"])


def test_z_vlm_is_the_language_models_last_hidden_states_at_the_non_image_positions_then_f_adapt():
    r = build_recipe("strsr", CFG, "tiny", "cpu", student_only=True)
    enc, cond = r.cond.encoder, r.cond
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(7))
    prefix, suffix = enc.prefix.tolist(), enc.suffix.tolist()
    image_token = enc.model.config.image_token_id
    assert prefix[-1] == enc.model.config.vision_start_token_id and suffix[0] == enc.model.config.vision_end_token_id
    ref, ids = _qwen_inputs(x, prefix, suffix, image_token)
    with torch.no_grad():
        hidden = enc.model(input_ids=ids, pixel_values=ref["pixel_values"], image_grid_thw=ref["image_grid_thw"],
                           attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == image_token).int()
                           ).last_hidden_state
        keep = [i for i, t in enumerate(ids[0].tolist()) if t != image_token]   # template + prompt, in order
        want_feats = hidden[:, keep]
        lin1, lin2 = cond.mlp[0], cond.mlp[2]
        want = F.linear(F.silu(F.linear(want_feats, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)
        tokens, pooled = cond(x)
    assert want_feats.shape == (2, len(prefix) + len(suffix), enc.model.config.text_config.hidden_size)
    assert torch.allclose(enc(x), want_feats, atol=1e-5) and torch.allclose(tokens, want, atol=1e-5)
    assert pooled.numel() == 0                                          # Z-Image takes no pooled vector
    assert lin1.out_features == r.dit.config.cap_feat_dim // 2            # the released projector's D / 2


def test_z_vlm_depends_on_the_lr_image_the_prompt_and_the_language_model():
    r = build_recipe("strsr", CFG, "tiny", "cpu", student_only=True)
    enc = r.cond.encoder
    lr, _ = lr_hr_batch(3)
    with torch.no_grad():
        base = enc(lr)
        assert not torch.allclose(enc(lr.flip(-1)), base, atol=1e-4)    # the image reaches the tokens
        other = build_recipe("strsr", {**CFG, "vlm_prompt": "a photo"}, "tiny", "cpu", student_only=True).cond.encoder
        other.model.load_state_dict(enc.model.state_dict())
        assert other(lr).shape[1] != base.shape[1] or not torch.allclose(other(lr), base)
        enc.model.language_model.layers[-1].mlp.down_proj.weight.mul_(3.0)   # the language model is run
        assert not torch.allclose(enc(lr), base, atol=1e-4)


def test_vlm_is_frozen_and_only_f_adapt_learns_at_each_bases_context_width():
    for base, width in [("zimage", "cap_feat_dim"), ("flux2", "joint_attention_dim"), ("sd3", "joint_attention_dim")]:
        r = build_recipe("strsr", {**CFG, "base": base}, "tiny", "cpu", student_only=True)
        enc = r.cond.encoder
        assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
        mlp = {id(p) for p in r.cond.mlp.parameters()}
        assert mlp <= {id(p) for p in r.generator_parameters()}
        assert not {id(p) for p in enc.parameters()} & {id(p) for p in r.generator_parameters()}
        lr, _ = lr_hr_batch(4)
        tokens, _ = r.student().condition(lr)
        assert tokens.shape[-1] == getattr(r.dit.config, width)
        tokens.square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in r.cond.mlp.parameters())


def test_vision_tower_ablation_skips_the_language_model():
    r = build_recipe("strsr", {**CFG, "semantic_encoder": "qwen3vl_vision"}, "tiny", "cpu", student_only=True)
    enc = r.cond.encoder
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        pixels, grid = enc.patches(x)
        want = enc.model.visual(pixels, grid_thw=grid).pooler_output.view(2, -1, enc.width)
        got = enc(x)
        enc.model.language_model.layers[-1].mlp.down_proj.weight.mul_(3.0)
        assert torch.equal(enc(x), got)
    assert got.shape == (2, (32 // 32) * (64 // 32), enc.model.config.vision_config.out_hidden_size)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(Exception, match="semantic_encoder must be qwen3vl"):
        build_recipe("strsr", {**CFG, "semantic_encoder": "qwen2vl"}, "tiny", "cpu")


def test_zimage_base_is_diffusers_z_image_transformer():
    from diffusers import ZImageTransformer2DModel

    r = build_recipe("strsr", {**CFG, "condition": "none"}, "tiny", "cpu", student_only=True)
    assert r.cfg["base"] == "zimage" and isinstance(r.dit, ZImageTransformer2DModel)
    lora = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in r.dit.named_parameters() if "lora_" in n}
    assert lora == {"to_q", "to_k", "to_v", "0", "w1", "w2", "w3"}


def test_flux2_latent_layout_round_trips_and_is_the_pipelines():
    from diffusers import Flux2KleinPipeline as P

    from srdistill.training.components.flow_dits import (flux2_image_ids, flux2_pack, flux2_patchify, flux2_text_ids,
                                                 flux2_unpack, flux2_unpatchify)

    z = torch.randn(2, 3, 6, 10, generator=torch.Generator().manual_seed(8))   # h != w: a swapped axis shows
    p = flux2_patchify(z)
    assert p.shape == (2, 12, 3, 5) and torch.equal(p, P._patchify_latents(z)) and torch.equal(p, F.pixel_unshuffle(z, 2))
    assert torch.equal(flux2_unpatchify(p), z) and torch.equal(P._unpatchify_latents(p), z)
    tokens = flux2_pack(p)
    ids = flux2_image_ids(2, 3, 5, "cpu")
    assert torch.equal(tokens, P._pack_latents(p)) and torch.equal(ids, P._prepare_latent_ids(p))
    assert torch.equal(tokens[:, 5 + 2], p[:, :, 1, 2]) and ids[0, 5 + 2].tolist() == [0, 1, 2, 0]   # row-major
    assert torch.equal(flux2_unpack(tokens, 3, 5), p) and torch.equal(P._unpack_latents_with_ids(tokens, ids, 3, 5), p)
    ctx = torch.zeros(2, 7, 4)
    assert torch.equal(flux2_text_ids(2, 7, "cpu"), P._prepare_text_ids(ctx))


def test_flux2_codec_normalises_by_the_vae_batch_norm_statistics_and_decodes_back():
    r = build_recipe("strsr", {**CFG, "base": "flux2", "condition": "none"}, "tiny", "cpu", student_only=True)
    vae = r.codec.vae
    with torch.no_grad():
        _plant_vae_statistics(vae)
        x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(9))
        z = r.codec.encode(x)
        assert torch.allclose(z, _flux2_latent(vae, x), atol=1e-5)
        mean, std = _flux2_stats(vae)
        want = (vae.decode(F.pixel_shuffle(z * std + mean, 2)).sample.clamp(-1, 1) + 1) / 2
        assert torch.allclose(r.codec.decode(z), want, atol=1e-5)


def test_flux2_one_step_is_the_pipelines_flow_match_euler_step_from_t1_to_zero():
    """The scheduler Flux2KleinPipeline samples with, set to the single sigma t1 (it appends 0), stepped once with
    the transformer called as the pipeline calls it: the student's z_t1 - t1 G. A time run backwards (1 - t), a
    timestep scaled twice by 1000 or a negated velocity all differ."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers import Flux2KleinPipeline as P

    r = build_recipe("strsr", {**CFG, "base": "flux2"}, "tiny", "cpu", student_only=True)
    lr, _ = lr_hr_batch(3)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(10)
        for p in r.generator_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        _plant_vae_statistics(r.codec.vae)
        student = r.student()
        z_lr = r.codec.encode_lr(lr)
        tokens, _ = student.condition(lr)
        sched = FlowMatchEulerDiscreteScheduler()
        sched.set_timesteps(sigmas=[r.cfg["t1"]])
        (t,) = sched.timesteps
        b, _, h, w = z_lr.shape
        latents, ids = P._pack_latents(z_lr), P._prepare_latent_ids(z_lr)
        pred = r.dit(hidden_states=latents, timestep=t.expand(b) / 1000, guidance=None, encoder_hidden_states=tokens,
                     txt_ids=P._prepare_text_ids(tokens), img_ids=ids, return_dict=False)[0]
        stepped = P._unpack_latents_with_ids(sched.step(pred, t, latents, return_dict=False)[0], ids, h, w)
        got = student.predict_latent(lr)
    assert (got - z_lr).abs().mean() > 1e-3
    assert torch.allclose(got, stepped, atol=1e-5)


def test_flux2_base_is_diffusers_flux2_klein_with_the_releases_attention_lora_and_paper_shape_on_meta():
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    from srdistill.training.components.diffusers_models import build_dit, build_flux2_vae

    r = build_recipe("strsr", {**CFG, "base": "flux2", "condition": "none"}, "tiny", "cpu", student_only=True)
    assert isinstance(r.dit, Flux2Transformer2DModel) and isinstance(r.codec.vae, AutoencoderKLFlux2)
    lora = {n.split(".lora_")[0] for n, _ in r.dit.named_parameters() if "lora_" in n}
    leaves = {n.split(".", 2)[2] for n in lora}
    # configs/flux_train_stage1.yaml lora_modules: attention only, no feed-forward
    assert leaves == {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                      "attn.add_v_proj", "attn.to_add_out", "attn.to_qkv_mlp_proj", "attn.to_out"}
    single = {n.split(".", 2)[2] for n in lora if n.startswith("single_transformer_blocks.")}
    assert single == {"attn.to_qkv_mlp_proj", "attn.to_out"}
    assert all(n.startswith(("transformer_blocks.", "single_transformer_blocks.")) for n in lora)
    with torch.device("meta"):
        dit, vae = build_dit("sd21", "flux2"), build_flux2_vae("sd21")
    cfg = dit.config   # FLUX.2 [klein] 4B: 5 double + 20 single blocks, 24 x 128 heads, Qwen3-4B's 3 x 2560 context
    assert (cfg.num_layers, cfg.num_single_layers, cfg.num_attention_heads, cfg.attention_head_dim,
            cfg.joint_attention_dim, cfg.in_channels, cfg.guidance_embeds) == (5, 20, 24, 128, 7680, 128, False)
    assert 3.5e9 < sum(p.numel() for p in dit.parameters()) < 4.5e9
    assert vae.config.latent_channels * 4 == cfg.in_channels
    assert sum(p.numel() for p in vae.parameters()) == 84_046_115   # the released FLUX.2 VAE's count


@pytest.mark.slow
def test_readme_states_the_flux2_parameter_counts_at_the_paper_shape():
    from pathlib import Path

    from srdistill.training.config import load_run_config
    from srdistill.training.paramcount import count

    c = count("strsr", "sd21", {**load_run_config("strsr").recipe_cfg, "base": "flux2"})
    m = lambda n: f"{n / 1e6:,.2f} M"  # noqa: E731
    sentence = (f"trainable G {m(c.generator_trainable)}, trainable D\n{m(c.discriminator_trainable)}, frozen "
                f"{m(c.frozen)}, student at inference {m(c.student_total)}")
    assert sentence in (Path(__file__).resolve().parents[1] / "docs" / "figures.md").read_text()


def test_flux2_lora_gets_gradients_and_its_trainable_state_rebuilds_the_student():
    r = build_recipe("strsr", {**CFG, "base": "flux2"}, "tiny", "cpu")
    lr, hr = lr_hr_batch(4)
    r.generator_loss(lr, hr, 0)["loss"].backward()
    lora = [p for n, p in r.dit.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora) and any(p.grad.abs().sum() > 0 for p in lora)
    with torch.no_grad():
        for p in r.generator_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(11)))
    rebuilt = build_recipe("strsr", r.export_config()["cfg"], "tiny", "cpu")
    rebuilt.load_trainable_state_dict(r.trainable_state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.student()(lr), r.student()(lr))


def test_text_condition_file_needs_no_pooled_vector_for_bases_without_one_and_must_fit_the_dit(tmp_path):
    from safetensors.torch import save_file

    from srdistill.core.errors import UserError
    from srdistill.training.recipes.strsr import TEXT_CONDITION_FILE, text_condition

    embeds = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(12))
    save_file({"prompt_embeds": embeds}, str(tmp_path / TEXT_CONDITION_FILE))   # encode_prompt of Z-Image / FLUX.2
    tokens, pooled = text_condition(str(tmp_path), 4, 32, 0, 0)
    assert torch.equal(tokens, embeds) and pooled.shape == (1, 0)
    with pytest.raises(UserError, match="7680-wide"):
        text_condition(str(tmp_path), 4, 7680, 0, 0)


def _tiny_qwen3vl_processor():
    """transformers' Qwen3VLProcessor built offline: Qwen-VL's image processor and a word-level tokenizer holding
    Qwen's special tokens, with a chat template of Qwen's layout (user turn, image between vision markers, then the
    text; the assistant turn opened)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    special = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    words = ["[UNK]", "user", "assistant", "\n", " ", "a", "sharp", "photo", "Describe"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words + special)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|[a-z_]+\|>|\n| "), behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", additional_special_tokens=special)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    return Qwen3VLProcessor(image_processor=image, tokenizer=fast, video_processor=Qwen3VLVideoProcessor(),
                            chat_template=template)


def test_prompt_ids_from_a_processor_expand_to_the_processors_own_input_ids():
    """The components-folder path: the template rendered and tokenized by the processor, split at its one image
    placeholder, then expanded by the encoder to one image id per merged visual token, equals what the processor
    itself gives the model for the same image."""
    import numpy as np

    from srdistill.training.components.qwen_vl import _processor_prompt_ids

    proc = _tiny_qwen3vl_processor()
    image_id = proc.image_token_id
    prefix, suffix = _processor_prompt_ids(proc, "Describe a sharp photo", image_id)
    img = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe a sharp photo"}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ref = proc(text=[text], images=[img], return_tensors="pt")
    n = int(ref["image_grid_thw"][0].prod()) // 4
    enc = build_recipe("strsr", CFG, "tiny", "cpu", student_only=True).cond.encoder
    enc.prefix, enc.suffix = torch.tensor(prefix), torch.tensor(suffix)
    enc.image_token_id = image_id
    assert torch.equal(enc.input_ids(1, n), ref["input_ids"])
    assert torch.equal((enc.input_ids(1, n) == image_id).int(), ref["mm_token_type_ids"].int())
    assert 0 not in prefix + suffix                       # every template word and the prompt are real tokens


def _strsr_groups(r) -> dict[str, list[torch.nn.Parameter]]:
    gen, disc = set(map(id, r.generator_parameters())), set(map(id, r.discriminator_parameters()))
    return {"generator (LoRA + f_adapt)": r.generator_parameters(), "discriminator heads": r.discriminator_parameters(),
            "frozen": [p for p in r.parameters() if id(p) not in gen | disc]}


def _reached(r, term) -> set[str]:
    groups = _strsr_groups(r)
    flat = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(term, flat, retain_graph=True, allow_unused=True)
    hit = {id(p) for p, g in zip(flat, grads) if g is not None and g.abs().sum() > 0}
    return {name for name, ps in groups.items() if any(id(p) in hit for p in ps)}


def test_each_term_reaches_only_its_own_player(recipe):
    """Eq. 11 trains the DiT's LoRA and f_adapt (the critic held fixed); Eq. 9 the discriminator's heads only (the
    CLIP-ConvNeXt trunk frozen)."""
    lr, hr = lr_hr_batch(1)
    terms = recipe.generator_loss(lr, hr, recipe.cfg["stage1_steps"])   # stage two: FDL on
    for key in ("l1", "lpips", "ragan_g", "fdl"):
        assert _reached(recipe, terms[key]) == {"generator (LoRA + f_adapt)"}, key
    d = recipe.discriminator_loss(lr, hr, 0, r1_noise=torch.randn(hr.shape, generator=torch.Generator().manual_seed(4)))
    assert _reached(recipe, d["loss"]) == {"discriminator heads"}


def test_perceptual_and_critic_calls_read_the_sr_and_gt_images_in_0_1(recipe, monkeypatch):
    """LPIPS (pyiqa: fed [0, 1], it rescales itself) and the critic (it applies CLIP's mean/std itself) are given
    the student's image and the GT as [0, 1] images, the GT unchanged."""
    lr, hr = lr_hr_batch(1)
    seen = {"lpips": [], "disc": []}
    for name in seen:
        module = getattr(recipe, name)
        real = module.forward

        def spy(*args, _real=real, _name=name, **kw):
            seen[_name].append([a.detach() for a in args if torch.is_tensor(a)])
            return _real(*args, **kw)

        monkeypatch.setattr(module, "forward", spy)
    recipe.generator_loss(lr, hr, 0)
    with torch.no_grad():
        x = _predict(recipe, lr, recipe.cfg["t1"])
    (sr, gt), = seen["lpips"]
    torch.testing.assert_close(sr, x, rtol=1e-4, atol=1e-5)
    assert torch.equal(gt, hr)
    (fake,), (real,) = seen["disc"]
    torch.testing.assert_close(fake, x, rtol=1e-4, atol=1e-5)
    assert torch.equal(real, hr)


def test_l1_gradient_equals_an_independent_computation(recipe):
    """d L1 / d(generator parameters) against autograd through this file's own one step (_predict)."""
    lr, hr = lr_hr_batch(1)
    params = recipe.generator_parameters()
    got = torch.autograd.grad(recipe.generator_loss(lr, hr, 0)["l1"], params, allow_unused=True)
    want = torch.autograd.grad(((_predict(recipe, lr, recipe.cfg["t1"]) - hr) * 2).abs().mean(), params,
                               allow_unused=True)
    assert sum(float(w.abs().sum()) for w in want if w is not None) > 0
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4 * float(w.abs().max()) + 1e-12)
