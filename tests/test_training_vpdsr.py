"""VPD-SR's recipe against the paper: the total generator (Eq. 13) and discriminator (Eq. 12) losses on a
fixed tiny batch, recomputed here from the components and the paper's formulas written out (ResShift's
chain as its released code runs it, SinSR's Eq. 3-4 sampler, Eq. 6-11), and the schedule and weights."""
from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from srdistill.training.recipes.registry import RECIPES, build_recipe
from helpers.training import lr_hr_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KAPPA, STEPS = 2.0, 15
LAMBDAS = {"lambda_hfp": 0.1, "lambda_sd": 1.0, "lambda_adv": 0.1}  # Sec. IV-A: lambda_1, lambda_2, lambda_3
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def paper_etas(steps: int) -> list[float]:
    """ResShift's schedule: sqrt(eta_1) = 0.02, sqrt(eta_T) = 0.99, geometric in ((t-1)/(T-1))^0.3 (T-1)."""
    growth = (0.99 / 0.02) ** (1 / (steps - 1))
    return [(0.02 * growth ** ((i / (steps - 1)) ** 0.3 * (steps - 1))) ** 2 for i in range(steps)]



def _haar_high(z: torch.Tensor) -> list[torch.Tensor]:
    a, b, c, d = z[..., 0::2, 0::2], z[..., 0::2, 1::2], z[..., 1::2, 0::2], z[..., 1::2, 1::2]
    return [(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]


def _clip(recipe, x01: torch.Tensor) -> torch.Tensor:
    size = recipe.clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    x = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return recipe.clip.encode_image(x)


def _latents(recipe, lr, noise_seed):
    """z_y = E(bicubic x4 of the LR in [-1, 1]), lq = the LR in [-1, 1], and the eps the recipe draws first."""
    vq = recipe.codec.vq
    lq = lr * 2 - 1
    z_y = vq.encode(F.interpolate(lq, scale_factor=4, mode="bicubic"))
    torch.manual_seed(noise_seed)
    return z_y, lq, torch.randn(z_y.shape)


def _student(recipe, z_y, lq, noise, steps):
    """f_theta(z_T, T, y) with z_T = z_y + kappa sqrt(eta_T) eps, queried at step index T-1."""
    etas = paper_etas(steps)
    z_T = z_y + KAPPA * math.sqrt(etas[-1]) * noise
    t = torch.full((z_y.shape[0],), steps - 1)
    return recipe.student_diffusion.denoiser.net(z_T / math.sqrt(KAPPA ** 2 * etas[-1] + 1), t, lq)


def expected_generator_terms(recipe, lr, hr, noise_seed, steps):
    z_y, lq, noise = _latents(recipe, lr, noise_seed)
    etas = paper_etas(steps)
    teacher = recipe.teacher.denoiser.net
    x = z_y + KAPPA * math.sqrt(etas[-1]) * noise  # x_T
    for t in range(steps - 1, -1, -1):  # SinSR's deterministic sampler, Eq. 3-4
        x0 = teacher(x / math.sqrt(KAPPA ** 2 * etas[t] + 1), torch.full((2,), t), lq)
        if t == 0:
            break
        m = math.sqrt(etas[t - 1] / etas[t])
        j = etas[t - 1] - math.sqrt(etas[t - 1] * etas[t])
        x = (1 - m - j) * x0 + m * x + j * z_y
    z_tch, z_stu = x0, _student(recipe, z_y, lq, noise, steps)
    distill = ((z_stu - z_tch) ** 2).mean()  # Eq. 10
    hfp = sum(((bt - bs) ** 2).mean() for bt, bs in zip(_haar_high(z_tch), _haar_high(z_stu)))  # Eq. 9
    x_stu = (recipe.codec.vq.decode(z_stu).clamp(-1, 1) + 1) / 2
    sd = (1 - F.cosine_similarity(_clip(recipe, x_stu), _clip(recipe, hr), dim=-1)).mean()  # Eq. 6-8
    adv = -recipe.disc(z_stu).mean()  # Eq. 11
    return {"distill": distill, "hfp": hfp, "sd": sd, "adv_g": adv}


@pytest.fixture(scope="module")
def recipe():
    return build_recipe("vpdsr", {"resshift_steps": 4}, "tiny", "cpu")


@pytest.mark.parametrize("lambdas", [LAMBDAS, {"lambda_hfp": 0.3, "lambda_sd": 0.07, "lambda_adv": 1.9}])
def test_generator_loss_is_eq13_recomputed_from_the_components(lambdas):
    recipe = build_recipe("vpdsr", {"resshift_steps": 4, **lambdas}, "tiny", "cpu")
    lr, hr = lr_hr_batch(1)
    torch.manual_seed(5)
    got = recipe.generator_loss(lr, hr, step=0)
    with torch.no_grad():
        want = expected_generator_terms(recipe, lr, hr, noise_seed=5, steps=4)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-7), key
    total = want["distill"] + lambdas["lambda_hfp"] * want["hfp"] + lambdas["lambda_sd"] * want["sd"] + \
        lambdas["lambda_adv"] * want["adv_g"]
    assert got["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    assert min(want[k].abs().item() for k in want) > 1e-4  # every term is live, so dropping one shows


def test_discriminator_loss_is_eq12_on_the_gt_latent_and_the_student_latent(recipe):
    lr, hr = lr_hr_batch(2)
    torch.manual_seed(6)
    got = recipe.discriminator_loss(lr, hr, step=0)["loss"]
    with torch.no_grad():
        z_y, lq, noise = _latents(recipe, lr, noise_seed=6)
        z_stu = _student(recipe, z_y, lq, noise, steps=4)
        z0 = recipe.codec.vq.encode(hr * 2 - 1)
        want = F.relu(1 - recipe.disc(z0)).mean() + F.relu(1 + recipe.disc(z_stu)).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_student_output_is_one_pass_at_step_t_minus_1_decoded(recipe):
    lr, _ = lr_hr_batch(3)
    with torch.no_grad():
        got = recipe.student()(lr, seed=4)
        z_y, lq, _ = _latents(recipe, lr, noise_seed=0)
        noise = torch.randn(z_y.shape, generator=torch.Generator().manual_seed(4))
        want = (recipe.codec.vq.decode(_student(recipe, z_y, lq, noise, steps=4)).clamp(-1, 1) + 1) / 2
        assert torch.allclose(got, want, atol=1e-5)
        odd = recipe.student()(torch.rand(1, 3, 9, 13))  # padded to the network's multiple, cropped back
    assert odd.shape == (1, 3, 36, 52)


def test_schedule_is_resshifts_in_the_recipe_and_its_yaml():
    doc = yaml.safe_load((resources.files("srdistill.training.recipes") / "vpdsr.yaml").read_text())
    full = build_recipe("vpdsr", doc["recipe"], "tiny", "cpu")
    sch = full.teacher.schedule
    assert (sch.steps, sch.kappa) == (STEPS, KAPPA)
    assert np.allclose(sch.etas().numpy(), paper_etas(STEPS), rtol=1e-12)
    assert full.student_diffusion.schedule == sch
    want = torch.tensor(paper_etas(STEPS), dtype=torch.float64)
    assert torch.allclose(full.teacher.denoiser.etas.double(), want, rtol=1e-6)


def test_paper_weights_student_initialisation_and_trainable_set(recipe):
    d = RECIPES["vpdsr"].DEFAULTS
    assert {k: d[k] for k in LAMBDAS} == LAMBDAS
    t_sd = recipe.teacher.denoiser.net.state_dict()
    s_sd = recipe.student_diffusion.denoiser.net.state_dict()
    assert t_sd.keys() == s_sd.keys()
    assert not any(p.requires_grad for p in recipe.teacher.parameters())
    assert not any(p.requires_grad for p in recipe.codec.parameters()) and not any(
        p.requires_grad for p in recipe.clip.parameters())
    assert {id(p) for p in recipe.generator_parameters()} == {id(p) for p in recipe.student_diffusion.parameters()}


def test_yaml_lists_the_assumptions_and_names_the_stand_ins():
    doc = yaml.safe_load((resources.files("srdistill.training.recipes") / "vpdsr.yaml").read_text())
    text = " ".join(doc["assumptions"])
    for needle in ("resshift_realsrx4_s15_v1.pth", "sqrt(eta_1) = 0.02", "step index T-1", "Haar", "CLIP",
                   "GroupNorm instead of BatchNorm", "random weights"):
        assert needle in text, needle


@pytest.mark.slow
def test_paper_shape_student_trains_the_papers_118_59_m_parameters():
    with torch.device("meta"):
        recipe = RECIPES["vpdsr"]({}, "sd21")
    n = sum(p.numel() for p in recipe.generator_parameters())
    assert round(n / 1e6, 2) == 118.59  # VPD-SR Table I and IV, "# Params"


def _perturbed(steps=4, seed=11):
    """A recipe whose student has moved away from its teacher (they are equal at build time, so a teacher target
    computed on the student's network would otherwise pass)."""
    recipe = build_recipe("vpdsr", {"resshift_steps": steps}, "tiny", "cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in recipe.student_diffusion.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return recipe


def test_teacher_targets_come_from_the_teachers_weights_and_the_student_from_its_own():
    recipe = _perturbed()
    lr, hr = lr_hr_batch(1)
    torch.manual_seed(5)
    got = recipe.generator_loss(lr, hr, step=0)
    with torch.no_grad():
        want = expected_generator_terms(recipe, lr, hr, noise_seed=5, steps=4)
    assert want["distill"].item() > 1e-6      # the perturbation shows in the target
    for key in ("distill", "hfp", "sd", "adv_g"):
        assert got[key].item() == pytest.approx(want[key].item(), rel=1e-4, abs=1e-7), key


def _groups(recipe) -> dict[str, list[torch.nn.Parameter]]:
    return {"student": list(recipe.student_diffusion.parameters()), "teacher": list(recipe.teacher.parameters()),
            "vq": list(recipe.codec.parameters()), "clip": list(recipe.clip.parameters()),
            "disc": list(recipe.disc.parameters())}


def _reached(recipe, term: torch.Tensor) -> set[str]:
    """The parameter groups that get a non-zero gradient from ``term``."""
    groups = _groups(recipe)
    flat = [p for ps in groups.values() for p in ps if p.requires_grad]
    grads = torch.autograd.grad(term, flat, retain_graph=True, allow_unused=True)
    hit = {id(p) for p, g in zip(flat, grads) if g is not None and g.abs().sum() > 0}
    return {name for name, ps in groups.items() if any(id(p) in hit for p in ps)}


def test_each_generator_term_reaches_the_student_alone():
    """Eq. 13: every term trains f_theta only; the teacher, VQ autoencoder and CLIP are frozen, and the critic is
    held fixed in the generator step (Algorithm 1 updates it in its own step, Eq. 12)."""
    recipe = _perturbed()
    lr, hr = lr_hr_batch(1)
    torch.manual_seed(5)
    terms = recipe.generator_loss(lr, hr, step=0)
    for key in ("distill", "hfp", "sd", "adv_g"):
        assert _reached(recipe, terms[key]) == {"student"}, key


def test_discriminator_term_reaches_the_critic_alone():
    recipe = _perturbed()
    lr, hr = lr_hr_batch(1)
    torch.manual_seed(5)
    loss = recipe.discriminator_loss(lr, hr, step=0)["loss"]
    assert _reached(recipe, loss) == {"disc"}


def test_distill_gradient_equals_an_independent_computation():
    """d L_distill / d theta from the recipe against autograd through this file's own Eq. 10 (teacher chain and
    student pass written here)."""
    recipe = _perturbed()
    lr, hr = lr_hr_batch(1)
    params = [p for p in recipe.student_diffusion.parameters() if p.requires_grad]
    torch.manual_seed(5)
    got = torch.autograd.grad(recipe.generator_loss(lr, hr, step=0)["distill"], params)
    z_y, lq, noise = _latents(recipe, lr, 5)
    with torch.no_grad():
        etas = paper_etas(4)
        x = z_y + KAPPA * math.sqrt(etas[-1]) * noise
        for t in range(3, -1, -1):
            x0 = recipe.teacher.denoiser.net(x / math.sqrt(KAPPA ** 2 * etas[t] + 1), torch.full((1,), t), lq)
            if t:
                m, j = math.sqrt(etas[t - 1] / etas[t]), etas[t - 1] - math.sqrt(etas[t - 1] * etas[t])
                x = (1 - m - j) * x0 + m * x + j * z_y
        z_tch = x0
    z_stu = _student(recipe, z_y, lq, noise, 4)
    want = torch.autograd.grad(((z_stu - z_tch) ** 2).mean(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-6)


def test_precision_policy_holds_under_cpu_bf16_autocast():
    """The teacher's targets and the VQ autoencoder (codebook argmin included) run in float32 under the trainer's
    bf16 autocast; the student runs under it."""
    recipe = _perturbed()
    seen: dict[str, list[tuple[bool, torch.dtype]]] = {"teacher": [], "quantize": [], "student": []}

    def spy(name):
        def hook(module, args, output):
            seen[name].append((torch.is_autocast_enabled("cpu"), args[0].dtype))
        return hook

    hooks = [recipe.teacher.denoiser.net.register_forward_hook(spy("teacher")),
             recipe.codec.vq.quantize.register_forward_hook(spy("quantize")),
             recipe.student_diffusion.denoiser.net.register_forward_hook(spy("student"))]
    lr, hr = lr_hr_batch(1)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.manual_seed(5)
            recipe.generator_loss(lr, hr, step=0)
            z = recipe.codec.encode(hr)
            decoded = recipe.codec.decode(z)
    finally:
        for h in hooks:
            h.remove()
    assert seen["teacher"] and all(s == (False, torch.float32) for s in seen["teacher"] + seen["quantize"])
    assert seen["student"] and all(enabled for enabled, _ in seen["student"])
    assert z.dtype == decoded.dtype == torch.float32
    assert torch.equal(decoded, recipe.codec.decode(recipe.codec.encode(hr)))     # bitwise the fp32 evaluation
    assert set(RECIPES["vpdsr"].PRECISION.values()) == {"float32", "autocast"}


def test_batch_is_the_papers_global_16_and_the_optimiser_adam_without_decay(monkeypatch):
    from srdistill.training.config import load_run_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    t = load_run_config("vpdsr", None, []).trainer
    assert (t.global_batch, t.batch_size, t.weight_decay) == (16, 8, 0.0)   # 16 in all on 2 processes, as on 1
