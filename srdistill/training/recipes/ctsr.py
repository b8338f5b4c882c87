"""CTSR: controllable fidelity-realness trade-off by dual-teacher and controllability distillation.

Student S and realism teacher T_r start from OSEDiff (Sec. 4.2, 5.1): the SD 2.1-base UNet and VAE with
OSEDiff's LoRA (rank 4, its scope: UNet and VAE encoder). One UNet/VAE pair carries three LoRA adapters:
``student`` (trained), ``realism`` (T_r: OSEDiff's weights, frozen) and ``stage1`` (T_S: the frozen snapshot
of the student taken when stage two starts). The fidelity teacher T_f is the released ResShift model, reached
from the SD latent through pixels (``FidelityTeacher``).

Stage 1 (Algorithm 1, Eq. 1-4): with t ~ U{t_min..t_max} and one noise eps shared by both branches,
z_t = F(z_0, t, eps), z_t^s = F(z_0^s, t, eps),
L_s1 = L_rec + lambda_rn L_rn + lambda_fl L_fl, L_rec = lambda_l2 ||S(x_LR) - x_GT||^2 + lambda_lp LPIPS.
The MSE is taken on [-1, 1] pixels as OSEDiff's code (the base CTSR fine-tunes) does: 4x the [0, 1] MSE.
Stage 2 (Algorithm 2, Eq. 5-9): t < t' ~ U(0, 1), z_0 = T_S(x_LR), z_t = z_0 + t eps_TS(z_0, t) (Eq. 5) and
L_ctrl = ||t eps_TS(z_0, t) - t' eps_TS(z_0, t') + (t' - t) eps_S(z_t, t)||^2 (Eq. 8, main text).
Knob t in [0, 1] at inference: z_0 from the stage-1 result (T_S once stage two has started, else S), then one
step of the learned flow from the trained input (z_0, 0): z_t = z_0 + t eps_S(z_0, 0) (Eq. 6-7 with t = 0).
t = 0 is the realism end and equals the stage-1 output whatever stage two does; t = 1 the fidelity end.
A knob t maps to the UNet timestep t (N - 1).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training import losses
from srdistill.training.components.diffusers_models import (
    alphas_cumprod,
    build_unet,
    build_vae,
    null_prompt_embedding,
)
from srdistill.training.components.latent_codec import LatentCodec
from srdistill.training.components.lora import (
    OSEDIFF_ALPHA,
    OSEDIFF_FILE,
    OSEDIFF_RANK,
    add_osediff_lora,
    copy_adapter,
    load_osediff,
    lora_parameters,
    randomize_adapter,
)
from srdistill.training.inference_policy import TOOL_OVERLAP, InferencePolicy
from srdistill.training.components.perceptual import build_lpips
from srdistill.training.components.presets import is_preset
from srdistill.training.components.roles import need
from srdistill.training.recipes.base import LPIPS_NET, Choice, OneStepEpsStudent, Recipe
from srdistill.training.recipes.resshift import (
    ResShiftSchedule,
    ResShiftTeacher,
    build_resshift,
    forward_marginal,
)

STUDENT, REALISM, SNAPSHOT = "student", "realism", "stage1"


class Adapters:
    """Switches the LoRA adapter that a UNet and a VAE run with; peft's set_adapter also flips requires_grad,
    so every flag is put back afterwards (only the student's adapter is ever trained)."""

    def __init__(self, unet: nn.Module, vae: nn.Module):
        self.modules = (unet, vae)

    @contextlib.contextmanager
    def use(self, adapter: str | None):
        """Run with ``adapter`` on both (None: the plain SD 2.1 weights)."""
        params = [p for m in self.modules for n, p in m.named_parameters() if "lora_" in n]
        flags = [p.requires_grad for p in params]
        try:
            for m in self.modules:
                if adapter is None:
                    m.disable_adapters()
                else:
                    m.set_adapter(adapter)
            yield
        finally:
            for m in self.modules:
                m.enable_adapters()
                m.set_adapter(STUDENT)
            for p, f in zip(params, flags):
                p.requires_grad_(f)


class CTSRStudent(OneStepEpsStudent):
    """forward(lr, t=0.0): the trade-off knob t in [0, 1] (see the module docstring). `eps` and `predict_latent`
    run with whichever adapter is active."""

    def __init__(self, codec: LatentCodec, unet: nn.Module, adapters: Adapters, context: torch.Tensor,
                 alphas_cumprod: torch.Tensor, t_l: int, flags: dict):
        super().__init__(codec, unet, context, alphas_cumprod, t_l)
        self.adapters = adapters
        self.flags = flags   # the recipe's {"snapshot": bool} (shared; mirrors its snapshot_taken buffer)

    def knob_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * (self.alphas_cumprod.numel() - 1)

    def stage1_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """The stage-1 result z_0: the frozen snapshot T_S once stage two has begun, the student before."""
        with self.adapters.use(SNAPSHOT if self.flags["snapshot"] else STUDENT):
            return self.predict_latent(lr)

    def forward(self, lr: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        if not 0.0 <= float(t) <= 1.0:
            raise UserError(f"CTSR knob t must lie in [0, 1], got {t}")
        z = self.stage1_latent(lr)
        if float(t) > 0:
            zero = torch.zeros(lr.shape[0], device=lr.device)
            z = z + float(t) * self.eps(z, zero)
        return self.codec.decode(z)


def resshift_step(t: torch.Tensor, train_steps: int, steps: int) -> torch.Tensor:
    """The ResShift step (0-based) at the same fraction of its chain as DDPM timestep t: floor(t steps /
    train_steps), so t in [0, 1000) covers ResShift's 15 steps evenly. It does not match noise levels (the two
    chains' noise-to-signal ratios differ at the same fraction); ctsr.yaml lists the choice."""
    return (t.float() / train_steps * steps).long().clamp(0, steps - 1)


class FidelityTeacher(nn.Module):
    """T_f: the released ResShift model (Swin-UNet on the VQ-f4 latent, its own 15-step residual-shifting chain,
    an x0-predictor) behind Eq. 2's eps_Tf(z_t, t, c), through a pixel bridge:

    the image x behind z_t (x_GT for z_t, the student's SR image for z_t^s) is VQ-encoded, v_0 = E_VQ(x); it is
    put at ResShift step k = ``resshift_step(t)`` of ResShift's forward marginal with one noise e_R (shared by
    the z_t and z_t^s terms, as the paper shares its DDPM noise), v_k = v_0 + eta_k (y - v_0) + kappa sqrt(eta_k) e_R,
    y the VQ latent of the bicubic LR; ResShift predicts v_0_hat = f(v_k, lq, k); that prediction is decoded
    and SD-encoded, z_0_hat = E_SD(D_VQ(v_0_hat)), and expressed as the DDPM noise it implies at z_t:
    eps_Tf = (z_t - sqrt(abar_t) z_0_hat) / sqrt(1 - abar_t)."""

    def __init__(self, resshift: ResShiftTeacher, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.resshift = resshift
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def noise_shape(self, lr: torch.Tensor) -> tuple[int, ...]:
        """Shape of ResShift's noise e_R: the VQ-f4 latent of the x4 image, i.e. the LR's sides."""
        return (lr.shape[0], self.resshift.codec.vq.cfg.embed_dim, *lr.shape[-2:])

    def x0_image(self, x01: torch.Tensor, lr: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """ResShift's x0 prediction, in [0, 1] pixels, from image ``x01`` noised to the step matching t."""
        codec, denoiser = self.resshift.codec, self.resshift.diffusion.denoiser
        sched = denoiser.schedule
        step = resshift_step(t, self.alphas_cumprod.numel(), sched.steps)
        state = forward_marginal(codec.encode(x01), codec.encode_lr(lr), denoiser.etas[step], sched.kappa, noise)
        return codec.decode(denoiser(state, codec.lq(lr), step))

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, x01: torch.Tensor, lr: torch.Tensor, noise: torch.Tensor,
            sd_encode) -> torch.Tensor:
        """eps_Tf(z_t, t): ``x01`` the image behind z_t, ``noise`` e_R, ``sd_encode`` the SD encoder of z_t's latents."""
        return losses.eps_from_x0(z_t, sd_encode(self.x0_image(x01, lr, t, noise)), self.alphas_cumprod[t])


def build_fidelity_teacher(components: str, cfg: dict, alphas_cumprod: torch.Tensor, scale: int) -> FidelityTeacher:
    """The one place that says which network is T_f: ResShift from ``components`` (FOLDER/resshift/ holds the
    released resshift_realsrx4_s15_v1.pth and autoencoder_vq_f4.pth)."""
    schedule = ResShiftSchedule(steps=cfg["resshift_steps"], kappa=cfg["resshift_kappa"])
    if not is_preset(components) and schedule != ResShiftSchedule():
        raise UserError(f"the released ResShift network in {components} runs its own {ResShiftSchedule().steps}-step "
                        f"schedule with kappa {ResShiftSchedule().kappa}; remove the resshift_steps/resshift_kappa overrides")
    return FidelityTeacher(build_resshift(components, schedule, scale), alphas_cumprod)


@dataclass
class Stage1Draws:
    t: torch.Tensor              # DDPM timesteps [B]
    noise: torch.Tensor          # one eps for z_t and z_t^s (Algorithm 1 lines 6 and 9)
    resshift_noise: torch.Tensor  # one e_R for T_f's z_t and z_t^s terms (FidelityTeacher.noise_shape)


@dataclass
class Stage2Draws:
    t: torch.Tensor        # [B] in (0, 1)
    t_prime: torch.Tensor  # [B], t' > t


class CTSRRecipe(Recipe):
    name = "ctsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "t_l": 999, "lora_rank": 4, "lora_alpha": 8, "lambda_l2": 1.0, "lambda_lpips": 2.0,
        "lambda_rn": 1.0, "lambda_fl": 2.0, "gamma_time": 5.5, "t_min": 20, "t_max": 980, "stage1_steps": 20000,
        "lpips_net": "vgg", "resshift_steps": 15, "resshift_kappa": 2.0,
    }
    CHOICES: ClassVar[dict[str, Choice]] = {"lpips_net": LPIPS_NET}
    PAPER = "CTSR"
    POSITION = 3
    # Sec. 5.1: "for images larger than 512x512, we use patch splitting and apply VAE tiling"; 512 is the models'
    # input, the x4 bicubic upsampling of the LR (OSEDiff's pipeline), so 128 LR px. Overlap and blending unstated.
    INFERENCE = InferencePolicy(512 // 4, TOOL_OVERLAP, "crop", True,
                                "CTSR Sec. 5.1: patch splitting at 512x512 model input (128 LR px at x4) with VAE tiling "
                                "(diffusers AutoencoderKL tiling, its defaults); overlap and blending unspecified: the "
                                f"tool's {TOOL_OVERLAP} LR px context, each tile keeping its own area")
    PAPER_COUNTS: ClassVar[list[tuple[str, str]]] = [("total 1775 M / trainable 8.5 M", "Table 8")]
    TEST_SETTINGS: ClassVar[dict] = {"lpips_net": "alex", "stage1_steps": 1}

    def __init__(self, cfg: dict, components: str, *, student_only: bool = False):
        super().__init__(cfg, components, student_only=student_only)
        c = self.cfg
        vae, self.unet = build_vae(components), build_unet(components)
        self.codec = LatentCodec(vae, self.scale)
        for adapter in (STUDENT, REALISM, SNAPSHOT):
            add_osediff_lora(self.unet, vae, adapter, c["lora_rank"], c["lora_alpha"])
        self._init_osediff(components, vae)
        for model in (self.unet, vae):
            copy_adapter(model, REALISM, STUDENT)   # Algorithm 1 line 1: S starts as T_r
            model.set_adapter(STUDENT)
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n and f".{STUDENT}." in n)
        self.adapters = Adapters(self.unet, vae)
        self.register_buffer("alphas_cumprod", alphas_cumprod(components), persistent=False)
        self.register_buffer("snapshot_taken", torch.zeros((), dtype=torch.long))   # saved with checkpoints
        self.flags = {"snapshot": False}
        context = null_prompt_embedding(components, self.unet)
        self._students = [CTSRStudent(self.codec, self.unet, self.adapters, context, self.alphas_cumprod, c["t_l"],
                                      self.flags)]
        if not student_only:
            self.fidelity = build_fidelity_teacher(components, c, self.alphas_cumprod, self.scale)
            if is_preset(components):
                self.substitute("random-weight ResShift network and VQ-f4 autoencoder stand in for ResShift's "
                                "released files as T_f (preset)", loud=False)
            self.lpips = build_lpips(components, c["lpips_net"])

    def _init_osediff(self, components: str, vae: nn.Module) -> None:
        """T_r's LoRA: OSEDiff's released checkpoint from a folder; random weights (drawn from the recipe
        seed) stand in for it on presets."""
        if is_preset(components):
            gen = torch.Generator().manual_seed(int(self.cfg["init_seed"]) + 7)
            for model in (self.unet, vae):
                randomize_adapter(model, REALISM, gen)
            self.substitute("random-weight LoRA stands in for OSEDiff's released checkpoint (preset)", loud=False)
            return
        if (self.cfg["lora_rank"], self.cfg["lora_alpha"]) != (OSEDIFF_RANK, OSEDIFF_ALPHA):
            raise UserError(f"CTSR continues OSEDiff's LoRA, which has rank {OSEDIFF_RANK} and alpha {OSEDIFF_ALPHA}; "
                            f"remove the lora_rank/lora_alpha overrides to load {components}")
        path = need(components, OSEDIFF_FILE, "OSEDiff's released checkpoint (T_r and S start from it)")
        load_osediff(path, self.unet, vae, REALISM)

    def _take_snapshot(self) -> None:
        for model in self.adapters.modules:
            copy_adapter(model, STUDENT, SNAPSHOT)
        self.snapshot_taken.fill_(1)
        self.flags["snapshot"] = True

    def extra_trainable_state(self):
        snap = {f"{prefix}.{n}": p for prefix, model in (("unet", self.unet), ("vae", self.codec.vae))
                for n, p in model.named_parameters() if "lora_" in n and f".{SNAPSHOT}." in n}
        return {**snap, "snapshot_taken": self.snapshot_taken}

    def load_extra_trainable_state(self, sd):
        params = {f"{prefix}.{n}": p for prefix, model in (("unet", self.unet), ("vae", self.codec.vae))
                  for n, p in model.named_parameters()}
        with torch.no_grad():
            for k, v in sd.items():
                (self.snapshot_taken if k == "snapshot_taken" else params[k]).copy_(v)
        self.flags["snapshot"] = bool(sd.get("snapshot_taken", torch.zeros(())).item())

    def generator_parameters(self):
        return lora_parameters(self.unet, STUDENT) + lora_parameters(self.codec.vae, STUDENT)

    # -- teachers --------------------------------------------------------------------------
    def encode_plain(self, x01: torch.Tensor) -> torch.Tensor:
        """The SD latent of an image through the plain SD 2.1 VAE encoder (no LoRA): z_0 of x_GT, and T_f's bridge."""
        with self.adapters.use(None):
            return self.codec.encode(x01)

    def eps_realism(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_Tr: the UNet with OSEDiff's (frozen) LoRA."""
        with self.adapters.use(REALISM):
            return self.student().eps(z_t, t)

    # -- losses ----------------------------------------------------------------------------
    def generator_loss(self, lr, hr, step):
        if step < self.cfg["stage1_steps"]:
            return self.stage1_loss(lr, hr)
        if not self.flags["snapshot"]:
            self._take_snapshot()
        return self.stage2_loss(lr)

    def stage1_loss(self, lr, hr, draws: Stage1Draws | None = None):
        """Algorithm 1."""
        c, s = self.cfg, self.student()
        z_lr = self.codec.encode_lr(lr)
        with torch.no_grad():
            z0 = self.encode_plain(hr)
        if draws is None:
            t = torch.randint(c["t_min"], c["t_max"] + 1, (lr.shape[0],), device=lr.device)
            draws = Stage1Draws(t, torch.randn_like(z0), torch.randn(self.fidelity.noise_shape(lr), device=lr.device))
        t, noise, e_r = draws.t, draws.noise, draws.resshift_noise
        t_l = torch.full((lr.shape[0],), s.t_l, device=lr.device, dtype=torch.long)
        z0_s = losses.one_step_x0(z_lr, s.eps(z_lr, t_l), self.alphas_cumprod[s.t_l])
        x0 = self.codec.decode(z0_s)
        abar = self.alphas_cumprod[t]
        z_t = losses.forward_diffuse(z0, abar, noise)
        # Eq. 2-3: z_t and z_t^s are both "the latent codes of x_GT and the SR result x_0 obtained via VAE encoder E",
        # so the student's state is E(D(z0_s)) like the GT's E(x_GT) and like what T_f's bridge reads back.
        z_t_s = losses.forward_diffuse(self.encode_plain(x0), abar, noise)
        l2 = F.mse_loss(x0 * 2 - 1, hr * 2 - 1)
        lp = self.lpips(x0, hr).mean()
        rec = c["lambda_l2"] * l2 + c["lambda_lpips"] * lp  # Eq. 1
        eps_s = s.eps(z_t_s, t)
        with torch.no_grad():
            eps_fl_gt = self.fidelity.eps(z_t, t, hr, lr, e_r, self.encode_plain)
            eps_rn_gt = self.eps_realism(z_t, t)
        l_fl = losses.ctsr_teacher_loss(self.fidelity.eps(z_t_s, t, x0, lr, e_r, self.encode_plain), eps_s, eps_fl_gt,
                                        c["gamma_time"])  # Eq. 2
        l_rn = losses.ctsr_teacher_loss(self.eps_realism(z_t_s, t), eps_s, eps_rn_gt, c["gamma_time"])  # Eq. 3
        total = rec + c["lambda_rn"] * l_rn + c["lambda_fl"] * l_fl  # Eq. 4
        return {"loss": total, "l2": l2, "lpips": lp, "l_rn": l_rn, "l_fl": l_fl}

    def stage2_loss(self, lr, draws: Stage2Draws | None = None):
        """Algorithm 2 / Eq. 5-9 (Eq. 8 as in the main text: both teacher terms at z_0)."""
        s = self.student()
        if draws is None:
            u = torch.rand(lr.shape[0], 2, device=lr.device).sort(dim=1).values
            draws = Stage2Draws(u[:, 0], u[:, 1])
        t, t_prime = draws.t, draws.t_prime
        with torch.no_grad(), self.adapters.use(SNAPSHOT):
            z0 = s.predict_latent(lr)
            eps_t = s.eps(z0, s.knob_timestep(t))
            eps_tp = s.eps(z0, s.knob_timestep(t_prime))
        z_t = z0 + t.view(-1, 1, 1, 1) * eps_t  # Eq. 5
        ctrl = losses.ctsr_control_loss(eps_t, eps_tp, s.eps(z_t, s.knob_timestep(t)), t, t_prime)
        return {"loss": ctrl, "ctrl": ctrl}
