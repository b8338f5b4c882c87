"""D3SR against its paper: generator (Eq. 8) and discriminator (Eq. 3) losses recomputed here from the components
and Eq. 1-7; the SDXL-shaped critic keeps only down and mid blocks; the SD 2.1 fallback is said out loud."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from srdistill.core.errors import UserError
from srdistill.training.components.diffusers_models import alphas_cumprod, build_unet
from srdistill.training.recipes.registry import build_recipe
from srdistill.training.recipes.d3sr import SD21_FALLBACK, Noising
from helpers.training import lr_hr_batch, sd_alphas_cumprod

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = {"lora_rank": 4, "lora_alpha": 4, "disc_lora_rank": 4, "disc_lora_alpha": 4,
       "lambda_adv": 0.37, "lambda_ea_dists": 1.9, "t_l": 400}




def _sobel(x):
    """Eq. 6-7 written out: Sobel magnitude per channel, replicate padding."""
    gx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gy = gx.t().contiguous()
    c = x.shape[1]
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    ex = F.conv2d(xp, gx.expand(c, 1, 3, 3), groups=c)
    ey = F.conv2d(xp, gy.expand(c, 1, 3, 3), groups=c)
    return torch.sqrt(ex ** 2 + ey ** 2 + 1e-6)


def _draw(seed, shape=(2, 4, 4, 4)):
    gen = torch.Generator().manual_seed(seed)
    return Noising(torch.randint(0, 1000, (shape[0],), generator=gen), torch.randn(shape, generator=gen))


def _diffuse(z, noising, abar):
    """Eq. 4: F(z, t) = sqrt(abar_t) z + sqrt(1 - abar_t) eps."""
    a = abar[noising.t].view(-1, 1, 1, 1)
    return a.sqrt() * z + (1 - a).sqrt() * noising.noise


@pytest.fixture
def recipe():
    r = build_recipe("d3sr", CFG, "tiny", "cpu")
    with torch.no_grad():   # trained-looking LoRA and heads: every term is non-trivial
        gen = torch.Generator().manual_seed(3)
        for p in r.generator_parameters() + r.discriminator_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return r


def _student_latent(r, lr, abar):
    """Eq. 1 with the generator UNet (its LoRA on), T_L from the config."""
    vae, unet = r.codec.vae, r.unet
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    z_l = vae.encode(up * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    t_l = r.cfg["t_l"]
    ctx = torch.zeros(lr.shape[0], 8, unet.config.cross_attention_dim)
    eps = unet(z_l, torch.full((lr.shape[0],), t_l), encoder_hidden_states=ctx).sample
    return (z_l - (1 - abar[t_l]).sqrt() * eps) / abar[t_l].sqrt()


def test_generator_loss_is_eq_8_with_ea_dists_and_the_critic_on_the_noised_fake(recipe):
    lr, hr = lr_hr_batch()
    noising = _draw(1)
    got = recipe.generator_loss(lr, hr, 0, noising=noising)
    abar, vae = sd_alphas_cumprod(), recipe.codec.vae
    with torch.no_grad():
        z_hat = _student_latent(recipe, lr, abar)
        x_hat = (vae.decode(z_hat / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2
        mse = (x_hat - hr).pow(2).mean()
        ea = recipe.dists(x_hat, hr).mean() + recipe.dists(_sobel(x_hat), _sobel(hr)).mean()   # Eq. 5
        logits = recipe.disc(_diffuse(z_hat, noising, abar), noising.t)
        adv = -torch.log(torch.sigmoid(logits)).mean()                                         # Eq. 2
    c = recipe.cfg
    terms = {"mse": mse, "ea_dists": ea, "adv_g": adv,
             "loss": mse + c["lambda_ea_dists"] * ea + c["lambda_adv"] * adv}                  # Eq. 8
    assert all(0.02 < float(v) for v in (mse, c["lambda_ea_dists"] * ea, c["lambda_adv"] * adv))
    for key, want in terms.items():
        assert float(got[key]) == pytest.approx(float(want), rel=1e-4), key


def test_discriminator_loss_is_eq_3_real_hr_latent_against_noised_fake(recipe):
    lr, hr = lr_hr_batch(1)
    real, fake = _draw(2), _draw(3)
    got = recipe.discriminator_loss(lr, hr, 0, real=real, fake=fake)["loss"]
    abar, vae = sd_alphas_cumprod(), recipe.codec.vae
    with torch.no_grad():
        z_hat = _student_latent(recipe, lr, abar)
        z_h = vae.encode(hr * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        d_real = torch.sigmoid(recipe.disc(_diffuse(z_h, real, abar), real.t))
        d_fake = torch.sigmoid(recipe.disc(_diffuse(z_hat, fake, abar), fake.t))
        want = -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_sdxl_shaped_critic_keeps_down_and_mid_blocks_only_and_runs_micro_conditioning(recipe):
    unet = recipe.disc.unet
    assert unet.config.addition_embed_type == "text_time" and unet.config.cross_attention_dim == 48
    assert len(unet.up_blocks) == 0 and unet.conv_out is None
    lora = {n for n, _ in unet.named_parameters() if "lora_" in n}
    assert lora and not any(n.startswith("up_blocks") for n in lora)
    assert recipe.substitutions == []
    full = build_unet("tiny", role="disc_unet")
    kept = sum(p.numel() for n, p in unet.named_parameters() if "lora_" not in n)
    dropped = sum(p.numel() for m in (full.up_blocks, full.conv_norm_out, full.conv_out) for p in m.parameters())
    assert kept == sum(p.numel() for p in full.parameters()) - dropped


def test_folder_without_sdxl_falls_back_to_sd21_loudly_and_the_ablation_is_asked_for_by_name(tmp_path, caplog):
    torch.manual_seed(0)
    build_unet("tiny").save_pretrained(tmp_path / "unet")   # a components folder with no disc_unet/
    r = build_recipe("d3sr", CFG, "tiny", "cpu", student_only=True)
    with caplog.at_level(logging.WARNING):
        disc = r._build_discriminator(str(tmp_path), torch.zeros(1, 8, 32))
    assert r.substitutions == [SD21_FALLBACK] and "Table 6 ablation" in caplog.text
    assert disc.unet.config.addition_embed_type is None and len(disc.unet.up_blocks) == 0
    ablation = build_recipe("d3sr", {**CFG, "discriminator": "sd21"}, "tiny", "cpu")
    assert ablation.substitutions == [] and ablation.disc.unet.config.addition_embed_type is None
    with pytest.raises(UserError, match="discriminator must be sdxl"):
        build_recipe("d3sr", {**CFG, "discriminator": "sd3"}, "tiny", "cpu")


def test_v_prediction_schedule_is_refused(tmp_path):
    from diffusers import DDPMScheduler

    DDPMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "scheduler")
    with pytest.raises(UserError, match="v_prediction"):
        alphas_cumprod(str(tmp_path))


def _undo_geometry(img, meta):
    import numpy as np

    img = np.rot90(img, -meta["rot90"])
    img = img[::-1] if meta["flip_v"] else img
    return img[:, ::-1] if meta["flip_h"] else img


def test_d3sr_trains_on_online_degraded_random_crops(shards, tmp_path):
    """Sec. 4.1: random 512 crops of the images, each degraded by the Real-ESRGAN pipeline during training."""
    import numpy as np
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec
    from srdistill.training.config import load_run_config
    from srdistill.training.trainer import Trainer

    run = load_run_config("d3sr", None, ["crop=64", "batch_size=4", "num_workers=0", "shuffle_buffer=1"])
    assert (run.trainer.online, run.trainer.crop_policy) == ("realesrgan", "random")
    recipe = build_recipe("d3sr", run.recipe_cfg, "tiny", "cpu")
    trainer = Trainer(recipe, run, shards=shards, run_dir=tmp_path, components="tiny", device=torch.device("cpu"),
                      scale=4)
    batches = [next(trainer.stream) for _ in range(3)]
    metas = [m for b in batches for m in b["meta"]]
    assert all(m["online"] for m in metas)
    offsets = {tuple(m["train_crop"][:2]) for m in metas}
    assert len(offsets) > 1 and offsets != {(0, 0)}       # the 128 px samples are cut at varying places
    spec = load_spec("realesrgan")
    b, m = batches[0], batches[0]["meta"][0]
    assert b["hr"].dtype == torch.uint8 and b["hr"].shape[-1] == 64 and b["lr"].shape[-1] == 16
    # the LR is re-derived from this crop (flips and rotations reach both after degrading: undo them first)
    undo = [_undo_geometry(x[0].permute(1, 2, 0).numpy(), m) for x in (b["hr"], b["lr"])]
    expected, _ = degrade_image(np.ascontiguousarray(undo[0]), spec, run.trainer.seed, f"{m['key']}-epoch0")
    assert np.array_equal(undo[1], expected)


def _d3sr_groups(r) -> dict[str, list[torch.nn.Parameter]]:
    disc = set(map(id, r.discriminator_parameters()))
    gen = set(map(id, r.generator_parameters()))
    return {"generator LoRA": r.generator_parameters(), "critic LoRA + head": r.discriminator_parameters(),
            "frozen": [p for p in r.parameters() if id(p) not in disc | gen]}


def _reached(r, term) -> set[str]:
    groups = _d3sr_groups(r)
    flat = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(term, flat, retain_graph=True, allow_unused=True)
    hit = {id(p) for p, g in zip(flat, grads) if g is not None and g.abs().sum() > 0}
    return {name for name, ps in groups.items() if any(id(p) in hit for p in ps)}


def test_each_term_reaches_only_its_own_player(recipe):
    """Eq. 8 trains the generator's LoRA only (the critic held fixed); Eq. 3 the critic's LoRA and MLP head only."""
    lr, hr = lr_hr_batch()
    terms = recipe.generator_loss(lr, hr, 0, noising=_draw(1))
    for key in ("mse", "ea_dists", "adv_g"):
        assert _reached(recipe, terms[key]) == {"generator LoRA"}, key
    d = recipe.discriminator_loss(lr, hr, 0, real=_draw(2), fake=_draw(3))["loss"]
    assert _reached(recipe, d) == {"critic LoRA + head"}


def test_critic_reads_the_noised_latent_at_the_timestep_it_is_given_and_dists_reads_0_1(recipe, monkeypatch):
    """Every network call of Eq. 8: the critic gets F(z_hat, t) and that same t (and its output depends on t);
    DISTS's first call gets images in [0, 1], the range its network expects."""
    lr, hr = lr_hr_batch()
    noising, abar = _draw(1), sd_alphas_cumprod()
    critic_calls, dists_calls = [], []
    disc_forward, dists = recipe.disc.forward, recipe.dists.forward

    def disc_spy(z_t, t):
        critic_calls.append((z_t.detach(), t))
        return disc_forward(z_t, t)

    def dists_spy(x, y):
        dists_calls.append((x.detach(), y.detach()))
        return dists(x, y)

    monkeypatch.setattr(recipe.disc, "forward", disc_spy)
    monkeypatch.setattr(recipe.dists, "forward", dists_spy)
    recipe.generator_loss(lr, hr, 0, noising=noising)
    with torch.no_grad():
        z_hat = _student_latent(recipe, lr, abar)
        (z_t, t), = critic_calls
        assert torch.equal(t, noising.t)
        torch.testing.assert_close(z_t, _diffuse(z_hat, noising, abar), rtol=1e-4, atol=1e-5)
        other = torch.tensor([0, 999]) if int(t[0]) != 0 else torch.tensor([999, 0])
        assert not torch.allclose(disc_forward(z_t, t), disc_forward(z_t, other))
    x, y = dists_calls[0]
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and torch.equal(y, hr)


def test_mse_gradient_equals_an_independent_computation(recipe):
    """d MSE / d(generator LoRA) against autograd through this file's own Eq. 1 and decoder call."""
    lr, hr = lr_hr_batch()
    params = recipe.generator_parameters()
    got = torch.autograd.grad(recipe.generator_loss(lr, hr, 0, noising=_draw(1))["mse"], params, allow_unused=True)
    vae = recipe.codec.vae
    z_hat = _student_latent(recipe, lr, sd_alphas_cumprod())
    x_hat = (vae.decode(z_hat / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2
    want = torch.autograd.grad((x_hat - hr).pow(2).mean(), params, allow_unused=True)
    assert sum(float(w.abs().sum()) for w in want if w is not None) > 0
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4 * float(w.abs().max()))
