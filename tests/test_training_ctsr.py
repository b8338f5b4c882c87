"""CTSR against its paper: stage-1 and stage-2 losses recomputed here from the components and Eq. 1-8 (the fidelity
teacher from the raw ResShift network and VQ-f4 autoencoder through the pixel bridge written out in
configs/ctsr.yaml), the knob's t = 0 output is the stage-1 output, OSEDiff's and ResShift's released checkpoint
formats load, teachers run with the right adapter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srdistill.core.errors import UserError
from srdistill.training.components.diffusers_models import build_unet, build_vae
from srdistill.training.components.lora import OSEDIFF_FILE, add_osediff_lora, load_osediff, lora_parameters, osediff_unet_targets, osediff_vae_targets
from srdistill.training.recipes.registry import build_recipe
from srdistill.training.recipes.ctsr import Stage1Draws, Stage2Draws, build_fidelity_teacher
from helpers.training import lr_hr_batch, sd_alphas_cumprod
from test_training_resshift import OFFICIAL_UNET, _random_state, official_sqrt_etas, official_vq_keys, official_unet_keys

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Weights chosen so that every weighted term is of the same order on the tiny networks: a dropped or swapped
# term moves the total far beyond float error.
LAMBDAS = {"lambda_l2": 1.3, "lambda_lpips": 30.0, "lambda_rn": 0.9, "lambda_fl": 0.03, "gamma_time": 3.3}
CFG = {"lpips_net": "alex", "stage1_steps": 1, **LAMBDAS}
KAPPA = 2.0   # ResShift's released kappa; its 15-step schedule is official_sqrt_etas()




def _perturb(model, adapter, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model, adapter):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


class Hand:
    """The recipe's networks driven directly through diffusers/peft, with the paper's formulas."""

    def __init__(self, recipe):
        self.r, self.unet, self.vae = recipe, recipe.unet, recipe.codec.vae
        self.sf = self.vae.config.scaling_factor
        self.abar = sd_alphas_cumprod()

    def _adapter(self, model, adapter):
        if adapter is None:
            model.disable_adapters()
        else:
            model.enable_adapters()
            model.set_adapter(adapter)

    def encode(self, x01, adapter):
        self._adapter(self.vae, adapter)
        z = self.vae.encode(x01 * 2 - 1).latent_dist.mode() * self.sf
        self._adapter(self.vae, "student")
        return z

    def decode(self, z):
        return (self.vae.decode(z / self.sf).sample.clamp(-1, 1) + 1) / 2

    def eps(self, z, t, adapter):
        self._adapter(self.unet, adapter)
        ctx = torch.zeros(z.shape[0], 8, self.unet.config.cross_attention_dim)
        t = torch.as_tensor(t, dtype=torch.float32).expand(z.shape[0]) if not torch.is_tensor(t) or t.dim() == 0 else t
        out = self.unet(z, t, encoder_hidden_states=ctx).sample
        self._adapter(self.unet, "student")
        return out

    def one_step(self, lr, adapter):
        """OSEDiff: z_L = E(bicubic x4), z_0 = (z_L - sqrt(1 - abar_999) eps(z_L, 999)) / sqrt(abar_999)."""
        up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        z_l = self.encode(up, adapter)
        a = self.abar[999]
        return (z_l - (1 - a).sqrt() * self.eps(z_l, torch.full((lr.shape[0],), 999), adapter)) / a.sqrt(), z_l


    def resshift_input(self, t, x01, lr, e_r):
        """What the ResShift network is fed for the image x01 behind an SD state at timestep t: ResShift step
        k = floor(15 t / 1000), v_k = v_0 + eta_k (y - v_0) + kappa sqrt(eta_k) e_R with v_0 = E_VQ(2x - 1) and
        y = E_VQ(bicubic x4 of 2 x_LR - 1), normalised by sqrt(kappa^2 eta_k + 1); its condition is 2 x_LR - 1."""
        vq = self.r.fidelity.resshift.codec.vq
        k = torch.div(t * 15, 1000, rounding_mode="floor")
        eta = torch.from_numpy(official_sqrt_etas() ** 2).float()[k].view(-1, 1, 1, 1)
        lq = lr * 2 - 1
        v0 = vq.encode(x01 * 2 - 1)
        y = vq.encode(F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False))
        v_k = v0 + eta * (y - v0) + KAPPA * eta.sqrt() * e_r
        return v_k / (KAPPA ** 2 * eta + 1).sqrt(), k, lq

    def eps_fidelity(self, z_t, t, x01, lr, e_r):
        """Eq. 2's eps_Tf(z_t, t) from the raw ResShift Swin-UNet and VQ-f4 autoencoder: x0_hat = net(resshift_input),
        z0_hat = E_SD(D_VQ(x0_hat)); eps = (z_t - sqrt(abar_t) z0_hat) / sqrt(1 - abar_t)."""
        rs = self.r.fidelity.resshift
        x0_hat = rs.diffusion.denoiser.net(*self.resshift_input(t, x01, lr, e_r))
        z0_hat = self.encode((rs.codec.vq.decode(x0_hat).clamp(-1, 1) + 1) / 2, None)
        a = self.abar[t].view(-1, 1, 1, 1)
        return (z_t - a.sqrt() * z0_hat) / (1 - a).sqrt()


def _mse(a, b):
    return (a - b).pow(2).mean()


def _expected_stage1(recipe, lr, hr, t, noise, e_r, grad: bool = False):
    h, c = Hand(recipe), recipe.cfg
    with torch.set_grad_enabled(grad):
        z0_s, _ = h.one_step(lr, "student")
        x0 = h.decode(z0_s)
        z0 = h.encode(hr, None)
        a = h.abar[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        z_t_s = a.sqrt() * h.encode(x0, None) + (1 - a).sqrt() * noise   # Eq. 2: x_0 through the VAE encoder E
        l2 = _mse(x0 * 2 - 1, hr * 2 - 1)                                   # Eq. 1 on [-1, 1]
        lp = recipe.lpips(x0, hr).mean()
        e_s = h.eps(z_t_s, t, "student")
        e_f_s, e_f = h.eps_fidelity(z_t_s, t, x0, lr, e_r), h.eps_fidelity(z_t, t, hr, lr, e_r)
        e_r_s, e_r = h.eps(z_t_s, t, "realism"), h.eps(z_t, t, "realism")
        l_fl = _mse(e_f_s, e_s) + c["gamma_time"] * _mse(e_f_s, e_f)      # Eq. 2
        l_rn = _mse(e_r_s, e_s) + c["gamma_time"] * _mse(e_r_s, e_r)      # Eq. 3
        total = c["lambda_l2"] * l2 + c["lambda_lpips"] * lp + c["lambda_rn"] * l_rn + c["lambda_fl"] * l_fl  # Eq. 4
    return {"loss": total, "l2": l2, "lpips": lp, "l_rn": l_rn, "l_fl": l_fl}


@pytest.fixture
def recipe():
    r = build_recipe("ctsr", CFG, "tiny", "cpu")
    _perturb(r.unet, "student", 1)   # as after some training: the student no longer equals T_r
    _perturb(r.codec.vae, "student", 2)
    return r


def test_stage_one_loss_is_eq_1_to_4_with_one_shared_noise_and_the_right_teachers(recipe):
    lr, hr = lr_hr_batch()
    t = torch.tensor([150, 700])
    gen = torch.Generator().manual_seed(5)
    noise, e_r = torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    got = recipe.stage1_loss(lr, hr, Stage1Draws(t, noise, e_r))
    want = _expected_stage1(recipe, lr, hr, t, noise, e_r)
    weighted = [recipe.cfg["lambda_l2"] * want["l2"], recipe.cfg["lambda_lpips"] * want["lpips"],
                recipe.cfg["lambda_rn"] * want["l_rn"], recipe.cfg["lambda_fl"] * want["l_fl"]]
    assert all(0.02 < abs(float(w)) < 5 for w in weighted), weighted   # comparable: a swap or drop shows
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-4, abs=1e-7), key


def test_stage_one_feeds_resshift_the_bridged_gt_and_sr_images_at_the_matching_step_with_one_noise(recipe):
    """What the real ResShift network receives during stage one (recorded by a forward pre-hook): for the z_t term
    the bridged x_GT, for the z_t^s term the bridged SR image S(x_LR), both at step floor(15 t / 1000) and with the
    one drawn e_R. The loss alone cannot show this on tiny networks, where T_f's share of L_fl is small."""
    lr, hr = lr_hr_batch()
    t = torch.tensor([150, 700])
    gen = torch.Generator().manual_seed(5)
    noise, e_r = torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    calls = []
    net = recipe.fidelity.resshift.diffusion.denoiser.net
    hook = net.register_forward_pre_hook(lambda _, args: calls.append([a.detach().clone() for a in args]))
    try:
        recipe.stage1_loss(lr, hr, Stage1Draws(t, noise, e_r))
    finally:
        hook.remove()
    h = Hand(recipe)
    with torch.no_grad():
        sr = h.decode(h.one_step(lr, "student")[0])
        want = [h.resshift_input(t, x, lr, e_r) for x in (hr, sr)]   # z_t's term, then z_t^s's
    assert len(calls) == 2
    for got, expected in zip(calls, want):
        assert torch.equal(got[1], expected[1])
        for g, e in zip(got[::2], expected[::2]):
            assert torch.allclose(g, e, atol=1e-5)


def test_realism_teacher_is_osediff_not_the_student_nor_plain_sd(recipe):
    z, t = torch.randn(1, 4, 4, 4), torch.tensor([300])
    with torch.no_grad():
        got = recipe.eps_realism(z, t)
    assert all(p.requires_grad for p in recipe.generator_parameters())       # switching left the flags alone
    assert not any(p.requires_grad for p in lora_parameters(recipe.unet, "realism"))
    h = Hand(recipe)
    with torch.no_grad():
        assert torch.allclose(got, h.eps(z, t, "realism"), atol=1e-6)
        assert not torch.allclose(got, h.eps(z, t, "student"), atol=1e-4)
        assert not torch.allclose(got, h.eps(z, t, None), atol=1e-4)


def test_stage_two_loss_is_eq_5_and_8_on_the_frozen_snapshot(recipe):
    lr, _ = lr_hr_batch(1)
    recipe.generator_loss(lr, lr_hr_batch(1)[1], step=1)   # stage two starts: the snapshot is taken
    _perturb(recipe.unet, "student", 3)                # stage-two training moves the student off T_S
    t, tp = torch.tensor([0.2, 0.55]), torch.tensor([0.7, 0.9])
    got = recipe.stage2_loss(lr, Stage2Draws(t, tp))["ctrl"]
    h = Hand(recipe)
    with torch.no_grad():
        z0, _ = h.one_step(lr, "stage1")
        e_t, e_tp = h.eps(z0, t * 999, "stage1"), h.eps(z0, tp * 999, "stage1")
        z_t = z0 + t.view(-1, 1, 1, 1) * e_t                                  # Eq. 5
        e_s = h.eps(z_t, t * 999, "student")
        shape = (-1, 1, 1, 1)
        want = (t.view(shape) * e_t - tp.view(shape) * e_tp + (tp - t).view(shape) * e_s).pow(2).mean()  # Eq. 8
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_knob_starts_from_the_stage_one_result_and_stage_two_leaves_t0_alone(recipe):
    lr, hr = lr_hr_batch(2)
    h = Hand(recipe)
    with torch.no_grad():
        stage1_out = h.decode(h.one_step(lr, "student")[0])
        assert torch.allclose(recipe.student()(lr, t=0.0), stage1_out, atol=1e-6)
    recipe.generator_loss(lr, hr, step=1)   # snapshot
    _perturb(recipe.unet, "student", 4)     # stage two trains the student
    _perturb(recipe.codec.vae, "student", 5)
    with torch.no_grad():
        assert torch.allclose(recipe.student()(lr, t=0.0), stage1_out, atol=1e-6)
        z0, _ = h.one_step(lr, "stage1")
        want = h.decode(z0 + 0.6 * h.eps(z0, torch.zeros(2), "student"))   # one flow step from (z_0, 0)
        got = recipe.student()(lr, t=0.6)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, stage1_out, atol=1e-3)


def _osediff_release(unet, vae, seed):
    """A random-weight checkpoint in OSEDiff's released format, built as its code builds one: three UNet adapters
    (encoder, decoder, others) and one VAE-encoder adapter, rank 4, peft's default alpha."""
    from peft import LoraConfig

    gen = torch.Generator().manual_seed(seed)
    groups = osediff_unet_targets(unet)
    for name, targets in groups.items():
        unet.add_adapter(LoraConfig(r=4, init_lora_weights="gaussian", target_modules=targets), adapter_name=name)
    vae_targets = osediff_vae_targets(vae)
    vae.add_adapter(LoraConfig(r=4, init_lora_weights="gaussian", target_modules=vae_targets), adapter_name="default_encoder")
    with torch.no_grad():
        for model in (unet, vae):
            for n, p in model.named_parameters():
                if "lora_" in n or n.startswith("conv_in."):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    unet.set_adapter(list(groups))
    return {"rank_unet": 4, "rank_vae": 4,
            "unet_lora_encoder_modules": groups["default_encoder"], "unet_lora_decoder_modules": groups["default_decoder"],
            "unet_lora_others_modules": groups["default_others"], "vae_lora_encoder_modules": vae_targets,
            "state_dict_unet": {n: p.detach().clone() for n, p in unet.named_parameters() if "lora" in n or "conv_in" in n},
            "state_dict_vae": {n: p.detach().clone() for n, p in vae.named_parameters() if "lora" in n}}


def test_osediff_released_checkpoint_loads_into_the_realism_adapter(tmp_path):
    def bases():   # the same SD 2.1-shaped bases on both sides
        torch.manual_seed(0)
        return build_unet("tiny"), build_vae("tiny")

    ref_unet, ref_vae = bases()
    ckpt = _osediff_release(ref_unet, ref_vae, seed=9)
    path = tmp_path / OSEDIFF_FILE
    torch.save(ckpt, path)
    unet, vae = bases()
    add_osediff_lora(unet, vae, "realism")
    load_osediff(path, unet, vae, "realism")
    unet.set_adapter("realism")
    vae.set_adapter("realism")
    z, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([999]), torch.zeros(1, 8, 32)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(unet(z, t, encoder_hidden_states=ctx).sample,
                              ref_unet(z, t, encoder_hidden_states=ctx).sample, atol=1e-5)
        assert torch.allclose(vae.encode(x).latent_dist.mode(), ref_vae.encode(x).latent_dist.mode(), atol=1e-5)
    bad = dict(ckpt, rank_unet=8)
    torch.save(bad, tmp_path / "bad.pkl")
    with pytest.raises(UserError, match="rank 8"):
        load_osediff(tmp_path / "bad.pkl", unet, vae, "realism")


def test_osediff_scope_at_sd21_shape_is_4_4_million_parameters():
    """OSEDiff's generator LoRA at SD 2.1-base shape (UNet 4.06 M + VAE encoder 0.37 M), on the meta device."""
    with torch.device("meta"):
        unet, vae = build_unet("sd21"), build_vae("sd21")
        add_osediff_lora(unet, vae, "student")
    n_unet = sum(p.numel() for p in lora_parameters(unet, "student"))
    n_vae = sum(p.numel() for p in lora_parameters(vae, "student"))
    assert (n_unet, n_vae) == (4_055_712, 369_356)


def test_fidelity_teacher_is_resshift_through_the_pixel_bridge_at_the_matching_step(recipe):
    """T_f's eps at every ResShift step boundary (t = 0, 66/67, 999 map to steps 0, 0/1, 14) equals the written-out
    bridge; the ResShift noise and the step both move it."""
    lr, hr = lr_hr_batch(3)
    gen = torch.Generator().manual_seed(6)
    z_t, e_r = torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    h = Hand(recipe)
    with torch.no_grad():
        for t in ([0, 999], [66, 67], [500, 933]):
            t = torch.tensor(t)
            got = recipe.fidelity.eps(z_t, t, hr, lr, e_r, recipe.encode_plain)
            assert torch.allclose(got, h.eps_fidelity(z_t, t, hr, lr, e_r), atol=1e-5), t
        t = torch.tensor([500, 933])
        other_noise = recipe.fidelity.eps(z_t, t, hr, lr, torch.randn(2, 3, 8, 8, generator=gen), recipe.encode_plain)
        other_step = recipe.fidelity.eps(z_t, torch.tensor([600, 999]), hr, lr, e_r, recipe.encode_plain)
        base = recipe.fidelity.eps(z_t, t, hr, lr, e_r, recipe.encode_plain)
    assert not torch.allclose(base, other_noise, atol=1e-4)
    assert not torch.allclose(base[0], other_step[0], atol=1e-4)   # 500 -> step 7, 600 -> step 9


def test_fidelity_teacher_refuses_schedule_overrides_for_the_released_network_and_names_missing_files(tmp_path):
    abar = sd_alphas_cumprod()
    with pytest.raises(UserError, match="resshift_steps/resshift_kappa"):
        build_fidelity_teacher(str(tmp_path), {"resshift_steps": 4, "resshift_kappa": 2.0}, abar, 4)
    with pytest.raises(UserError) as err:
        build_fidelity_teacher(str(tmp_path), {"resshift_steps": 15, "resshift_kappa": 2.0}, abar, 4)
    assert str(tmp_path / "resshift" / "resshift_realsrx4_s15_v1.pth") in str(err.value)


@pytest.mark.slow
def test_resshift_released_files_load_into_the_fidelity_teacher(tmp_path):
    """Random-weight files with the official keys and shapes (the network saved from DDP, the autoencoder plain)
    in FOLDER/resshift/ become T_f's network and VQ-f4 autoencoder, frozen."""
    gen = torch.Generator().manual_seed(8)
    folder = tmp_path / "resshift"
    folder.mkdir()
    unet_state = _random_state(official_unet_keys(OFFICIAL_UNET), gen)
    torch.save({"state_dict": {f"module.{k}": v for k, v in unet_state.items()}}, folder / "resshift_realsrx4_s15_v1.pth")
    vq_state = _random_state(official_vq_keys(), gen)
    torch.save(vq_state, folder / "autoencoder_vq_f4.pth")
    teacher = build_fidelity_teacher(str(tmp_path), {"resshift_steps": 15, "resshift_kappa": 2.0}, sd_alphas_cumprod(), 4)
    rs = teacher.resshift
    for k, v in rs.diffusion.denoiser.net.state_dict().items():
        assert torch.equal(v, unet_state[k].to(v.dtype)), k
    for k, v in rs.codec.vq.state_dict().items():
        assert torch.equal(v, vq_state[k].to(v.dtype)), k
    assert not any(p.requires_grad for p in teacher.parameters())
    assert rs.diffusion.schedule.steps == 15 and rs.codec.vq.cfg.embed_dim == 3


def _ctsr_groups(recipe) -> dict[str, list[torch.nn.Parameter]]:
    unet, vae = recipe.unet, recipe.codec.vae
    groups = {f"{a} LoRA": lora_parameters(unet, a) + lora_parameters(vae, a) for a in ("student", "realism", "stage1")}
    lora = {id(p) for ps in groups.values() for p in ps}
    groups["SD base"] = [p for m in (unet, vae) for p in m.parameters() if id(p) not in lora]
    groups["ResShift (T_f)"] = list(recipe.fidelity.parameters())
    groups["LPIPS"] = list(recipe.lpips.parameters())
    return groups


def _reached(recipe, term) -> set[str]:
    """Parameter groups (of those that require a gradient) with a non-zero gradient from ``term``."""
    groups = _ctsr_groups(recipe)
    flat = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(term, flat, retain_graph=True, allow_unused=True)
    hit = {id(p) for p, g in zip(flat, grads) if g is not None and g.abs().sum() > 0}
    return {name for name, ps in groups.items() if any(id(p) in hit for p in ps)}


def test_stage_one_terms_reach_the_students_lora_alone(recipe):
    """Sec. 5.1: only the student's LoRA is trained; T_r (OSEDiff's LoRA), the snapshot, the SD base, ResShift and
    LPIPS are frozen, and each of Eq. 1-3's terms reaches the student."""
    lr, hr = lr_hr_batch()
    gen = torch.Generator().manual_seed(5)
    draws = Stage1Draws(torch.tensor([150, 700]), torch.randn(2, 4, 4, 4, generator=gen),
                        torch.randn(2, 3, 8, 8, generator=gen))
    terms = recipe.stage1_loss(lr, hr, draws)
    for key in ("l2", "lpips", "l_rn", "l_fl"):
        assert _reached(recipe, terms[key]) == {"student LoRA"}, key


def test_fidelity_teacher_reads_states_built_like_the_images_behind_them(recipe, monkeypatch):
    """Eq. 2: z_t and z_t^s are E(x_GT) and E(x_0) noised with one eps at t, and T_f is given those same images:
    (z - sqrt(abar_t) E_SD(x)) / sqrt(1 - abar_t) is the shared eps for both calls (an identity T_f then adds no
    bias to the gamma term)."""
    lr, hr = lr_hr_batch()
    gen = torch.Generator().manual_seed(5)
    t = torch.tensor([20, 700])
    noise = torch.randn(2, 4, 4, 4, generator=gen)
    calls = []
    real = recipe.fidelity.eps

    def spy(z_t, tt, x01, lr_, e_r, sd_encode):
        calls.append((z_t.detach(), tt, x01.detach()))
        return real(z_t, tt, x01, lr_, e_r, sd_encode)

    monkeypatch.setattr(recipe.fidelity, "eps", spy)
    recipe.stage1_loss(lr, hr, Stage1Draws(t, noise, torch.randn(2, 3, 8, 8, generator=gen)))
    assert len(calls) == 2
    h = Hand(recipe)
    a = h.abar[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        for z_t, tt, x01 in calls:
            assert torch.equal(tt, t)
            torch.testing.assert_close((z_t - a.sqrt() * h.encode(x01, None)) / (1 - a).sqrt(), noise,
                                       rtol=1e-4, atol=1e-4)


def test_fidelity_term_gradient_equals_an_independent_computation(recipe):
    """d L_fl / d(student LoRA), through both the student's eps and T_f's z_t^s term (its bridge), against autograd
    through this file's own Eq. 2 (Hand)."""
    lr, hr = lr_hr_batch()
    gen = torch.Generator().manual_seed(5)
    t, noise, e_r = torch.tensor([150, 700]), torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    params = recipe.generator_parameters()
    got = torch.autograd.grad(recipe.stage1_loss(lr, hr, Stage1Draws(t, noise, e_r))["l_fl"], params, allow_unused=True)
    want = torch.autograd.grad(_expected_stage1(recipe, lr, hr, t, noise, e_r, grad=True)["l_fl"], params,
                               allow_unused=True)
    assert sum(float(w.abs().sum()) for w in want if w is not None) > 0
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:   # float32 through two UNets and three autoencoders: tolerance relative to the largest entry
            torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4 * float(w.abs().max()))
