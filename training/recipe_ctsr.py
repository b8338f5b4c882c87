"""CTSR: controllable fidelity-realness trade-off by dual-teacher and controllability distillation.

Student S: an OSEDiff-style one-step SR UNet with LoRA (rank 4), initialised from the realism teacher
T_r (same UNet; T_r = the UNet with the LoRA adapter switched off). Fidelity teacher T_f: a ResShift
residual-shifting model (srdistill.training.resshift). It lives on its own chain, so it denoises the
residual-shifted state of the same clean latent and noise at the matching step, and its x0 prediction
is turned into DDPM noise at z_t; both teachers then give eps_T(z_t, t, c) as Eq. 2-3 need.

Stage 1 (Algorithm 1, Eq. 1-4): L_s1 = L_rec + lambda_rn L_rn + lambda_fl L_fl.
Stage 2 (Algorithm 2, Eq. 5-9): T_S is a frozen snapshot of the stage-1 LoRA; with t < t' ~ U(0,1),
z_t = z_0 + t eps_TS(z_0, t, c) (Eq. 5) and L_ctrl (Eq. 8) trains eps_S(z_t, t, c).
Inference with knob t in [0, 1]: z_0 from the one-step pass, then z_t = z_0 + t eps_S(z_0, t, c)
(Eq. 5 with the student): t = 0 is the realism end, t = 1 the fidelity end.
"""
from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn.functional as F

from srdistill.errors import UserError
from srdistill.training import components as C
from srdistill.training import losses
from srdistill.training.recipe import LatentCodec, Recipe, register
from srdistill.training.recipe_d3sr import OneStepEpsStudent
from srdistill.training.resshift import ResShiftDenoiser, ResShiftDiffusion, ResShiftSchedule, forward_marginal

SNAPSHOT = "stage1"


class CTSRStudent(OneStepEpsStudent):
    """forward(lr, t=0.0): the trade-off knob t in [0, 1]."""

    def knob_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * (self.alphas_cumprod.numel() - 1)

    def forward(self, lr: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        if not 0.0 <= float(t) <= 1.0:
            raise UserError(f"CTSR knob t must lie in [0, 1], got {t}")
        z = self.predict_latent(lr)
        if float(t) > 0:
            tt = torch.full((lr.shape[0],), float(t), device=lr.device)
            z = z + float(t) * self.eps(z, self.knob_timestep(tt))
        return self.codec.decode(z)


@register
class CTSRRecipe(Recipe):
    name = "ctsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "t_l": 999, "lora_rank": 4, "lora_alpha": 4, "lambda_l2": 1.0, "lambda_lpips": 2.0,
        "lambda_rn": 1.0, "lambda_fl": 2.0, "gamma_time": 5.5, "t_min": 20, "t_max": 980, "stage1_steps": 20000,
        "lpips_net": "vgg", "resshift_steps": 15, "resshift_kappa": 2.0,
    }

    def __init__(self, cfg: dict, components: str):
        super().__init__(cfg, components)
        c = self.cfg
        self.codec = LatentCodec(C.build_vae(components), self.scale)
        self.unet = C.build_unet(components)
        C.add_lora(self.unet, c["lora_rank"], c["lora_alpha"], C.UNET_LORA_TARGETS, adapter_name=SNAPSHOT)
        C.add_lora(self.unet, c["lora_rank"], c["lora_alpha"], C.UNET_LORA_TARGETS)
        self._activate("default")
        self.register_buffer("alphas_cumprod", C.alphas_cumprod(components), persistent=False)
        self.register_buffer("snapshot_taken", torch.zeros((), dtype=torch.long))
        schedule = ResShiftSchedule(steps=c["resshift_steps"], kappa=c["resshift_kappa"])
        self.fidelity = ResShiftDiffusion(ResShiftDenoiser(C.build_resshift_unet(components), schedule))
        self.lpips = C.build_lpips(components, c["lpips_net"])
        context = C.null_prompt_embedding(components, self.unet)
        self._students = [CTSRStudent(self.codec, self.unet, context, self.alphas_cumprod, c["t_l"])]

    # -- adapters --------------------------------------------------------------------------
    def _activate(self, adapter: str) -> None:
        self.unet.set_adapter(adapter)
        for p in C.lora_parameters(self.unet, SNAPSHOT):
            p.requires_grad_(False)

    @contextlib.contextmanager
    def _adapter(self, adapter: str | None):
        """Run with the LoRA ``adapter`` (None: base weights only, i.e. the realism teacher T_r)."""
        if adapter is None:
            self.unet.disable_adapters()
        else:
            self._activate(adapter)
        try:
            yield
        finally:
            if adapter is None:
                self.unet.enable_adapters()
            self._activate("default")

    def _take_snapshot(self) -> None:
        with torch.no_grad():
            src = dict(self.unet.named_parameters())
            for name, p in src.items():
                if "lora_" in name and f".{SNAPSHOT}." in name:
                    p.copy_(src[name.replace(f".{SNAPSHOT}.", ".default.")])
        self.snapshot_taken.fill_(1)

    def extra_trainable_state(self):
        snap = {n: p for n, p in self.unet.named_parameters() if "lora_" in n and f".{SNAPSHOT}." in n}
        return {**{f"unet.{n}": p for n, p in snap.items()}, "snapshot_taken": self.snapshot_taken}

    def load_extra_trainable_state(self, sd):
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            for k, v in sd.items():
                if k == "snapshot_taken":
                    self.snapshot_taken.copy_(v)
                else:
                    params[k[len("unet."):]].copy_(v)

    def generator_parameters(self):
        return C.lora_parameters(self.unet)

    def student(self):
        return self._students[0]

    # -- teachers --------------------------------------------------------------------------
    def eps_fidelity(self, z_t: torch.Tensor, z_clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     z_lr: torch.Tensor) -> torch.Tensor:
        """eps_Tf(z_t, t): the ResShift teacher denoises its own state for the same clean latent and noise
        (VPD-SR Eq. 1 at the step matching t), and its x0 is expressed as DDPM noise at z_t."""
        sched = self.fidelity.schedule
        step = (t.float() / self.alphas_cumprod.numel() * sched.steps).long().clamp(0, sched.steps - 1)
        eta = self.fidelity.denoiser.etas[step]
        state = forward_marginal(z_clean, z_lr, eta, sched.kappa, noise)
        x0 = self.fidelity.denoiser(state, z_lr, step)
        return losses.eps_from_x0(z_t, x0, self.alphas_cumprod[t])

    def eps_realism(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self._adapter(None):
            return self.student().eps(z_t, t)

    # -- losses ----------------------------------------------------------------------------
    def generator_loss(self, lr, hr, step):
        if step < self.cfg["stage1_steps"]:
            return self._stage1(lr, hr)
        if int(self.snapshot_taken) == 0:
            self._take_snapshot()
        return self._stage2(lr)

    def _stage1(self, lr, hr):
        """Algorithm 1."""
        c, s = self.cfg, self.student()
        z_lr = self.codec.encode_lr(lr)
        with torch.no_grad():
            z0 = self.codec.encode(hr)
        t = torch.randint(c["t_min"], c["t_max"] + 1, (lr.shape[0],), device=lr.device)
        noise = torch.randn_like(z0)
        abar = self.alphas_cumprod[t]
        z_t = losses.forward_diffuse(z0, abar, noise)
        t_l = torch.full((lr.shape[0],), s.t_l, device=lr.device, dtype=torch.long)
        z0_s = losses.one_step_x0(z_lr, s.eps(z_lr, t_l), self.alphas_cumprod[s.t_l])
        x0 = self.codec.decode(z0_s)
        z_t_s = losses.forward_diffuse(z0_s, abar, noise)
        l2 = F.mse_loss(x0, hr)
        lp = self.lpips(x0, hr).mean()
        rec = c["lambda_l2"] * l2 + c["lambda_lpips"] * lp  # Eq. 1
        eps_s = s.eps(z_t_s, t)
        l_fl = losses.ctsr_teacher_loss(self.eps_fidelity(z_t_s, z0_s, noise, t, z_lr), eps_s,
                                        self.eps_fidelity(z_t, z0, noise, t, z_lr), c["gamma_time"])  # Eq. 2
        l_rn = losses.ctsr_teacher_loss(self.eps_realism(z_t_s, t), eps_s,
                                        self.eps_realism(z_t, t), c["gamma_time"])  # Eq. 3
        total = rec + c["lambda_rn"] * l_rn + c["lambda_fl"] * l_fl  # Eq. 4
        return {"loss": total, "l2": l2, "lpips": lp, "l_rn": l_rn, "l_fl": l_fl}

    def _stage2(self, lr):
        """Algorithm 2 / Eq. 5-9 (Eq. 8 as in the main text: both teacher terms at z_0)."""
        s = self.student()
        u = torch.rand(lr.shape[0], 2, device=lr.device).sort(dim=1).values
        t, t_prime = u[:, 0], u[:, 1]
        with torch.no_grad(), self._adapter(SNAPSHOT):
            z0 = s.predict_latent(lr)
            eps_t = s.eps(z0, s.knob_timestep(t))
            eps_tp = s.eps(z0, s.knob_timestep(t_prime))
        z_t = z0 + t.view(-1, 1, 1, 1) * eps_t  # Eq. 5
        ctrl = losses.ctsr_control_loss(eps_t, eps_tp, s.eps(z_t, s.knob_timestep(t)), t, t_prime)
        return {"loss": ctrl, "ctrl": ctrl}
