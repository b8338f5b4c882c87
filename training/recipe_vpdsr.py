"""VPD-SR: visual-perception diffusion distillation of a ResShift teacher into one step.

Teacher F_phi: ResShift with SinSR's deterministic T-step sampler (Eq. 1-5). Student f_theta: a copy
of the teacher's network (initialised from it, trained in full as in the paper), one pass from
z_T = z_y + kappa sqrt(eta_T) eps. Loss (Eq. 13): L_distill (Eq. 10, latent MSE to the teacher's
T-step output) + lambda1 L_HFP (Eq. 9, DWT high bands) + lambda2 L_SD (Eq. 6-8, 1 - cos of CLIP image
embeddings of SR and GT) + lambda3 L_adv (Eq. 11; the patch discriminator on latents is trained with
the hinge loss of Eq. 12).
"""
from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.training import components as C
from srdistill.training import losses
from srdistill.training.recipe import LatentCodec, Recipe, frozen_params, register
from srdistill.training.resshift import ResShiftDenoiser, ResShiftDiffusion, ResShiftSchedule


class PatchDiscriminator(nn.Module):
    """PatchGAN-style critic on latents: stride-2 4x4 convs, then 3x3 convs to one logit per patch.
    GroupNorm instead of BatchNorm so the critic carries no running statistics."""

    def __init__(self, in_channels: int, width: int, n_layers: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, n_layers):
            nxt = width * min(2 ** i, 8)
            layers += [nn.Conv2d(ch, nxt, 4, 2, 1), nn.GroupNorm(1, nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        layers += [nn.Conv2d(ch, ch, 3, 1, 1), nn.GroupNorm(1, ch), nn.LeakyReLU(0.2), nn.Conv2d(ch, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VPDSRStudent(nn.Module):
    """forward(lr, seed=0): one pass of f_theta from z_T; ``seed`` fixes the prior noise eps."""

    def __init__(self, codec: LatentCodec, diffusion: ResShiftDiffusion):
        super().__init__()
        self.codec, self.diffusion = codec, diffusion

    def predict_latent(self, z_y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        z_t = self.diffusion.prior(z_y, noise)
        return self.diffusion.predict_x0(z_t, z_y, self.diffusion.schedule.steps - 1)

    def forward(self, lr: torch.Tensor, seed: int = 0) -> torch.Tensor:
        z_y = self.codec.encode_lr(lr)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(z_y.shape, generator=gen).to(z_y)
        return self.codec.decode(self.predict_latent(z_y, noise))


@register
class VPDSRRecipe(Recipe):
    name = "vpdsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "lambda_hfp": 0.1, "lambda_sd": 1.0, "lambda_adv": 0.1, "wavelet": "haar",
        "resshift_steps": 15, "resshift_kappa": 2.0, "disc_width": 64, "disc_layers": 3,
    }

    def __init__(self, cfg: dict, components: str):
        super().__init__(cfg, components)
        c = self.cfg
        self.codec = LatentCodec(C.build_vae(components), self.scale)
        schedule = ResShiftSchedule(steps=c["resshift_steps"], kappa=c["resshift_kappa"])
        self.teacher = ResShiftDiffusion(ResShiftDenoiser(C.build_resshift_unet(components), schedule))
        student_net = copy.deepcopy(self.teacher.denoiser).requires_grad_(True).train()
        self.student_diffusion = ResShiftDiffusion(student_net)
        self.clip = C.build_open_clip(components, "vit")
        latent_ch = self.codec.vae.config.latent_channels
        n_layers = 1 if components == "tiny" else c["disc_layers"]
        self.disc = PatchDiscriminator(latent_ch, c["disc_width"] if components != "tiny" else 16, n_layers)
        self._students = [VPDSRStudent(self.codec, self.student_diffusion)]

    def generator_parameters(self):
        return list(self.student_diffusion.parameters())

    def discriminator_parameters(self):
        return list(self.disc.parameters())

    def student(self):
        return self._students[0]

    def _embed(self, x01: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(C.clip_normalize(self.clip, x01))

    def generator_loss(self, lr, hr, step):
        """Algorithm 1, generator half."""
        c, s = self.cfg, self.student()
        with torch.no_grad():
            z_y = self.codec.encode_lr(lr)
            noise = torch.randn_like(z_y)
            z_tch = self.teacher.sample(z_y, noise)
            v_gt = self._embed(hr)
        z_stu = s.predict_latent(z_y, noise)
        distill = F.mse_loss(z_stu, z_tch)
        hfp = losses.hfp_loss(z_tch, z_stu, c["wavelet"])
        sd = losses.semantic_distill_loss(self._embed(self.codec.decode(z_stu)), v_gt)
        with frozen_params(self.discriminator_parameters()):
            adv = losses.hinge_generator_loss(self.disc(z_stu))
        total = distill + c["lambda_hfp"] * hfp + c["lambda_sd"] * sd + c["lambda_adv"] * adv
        return {"loss": total, "distill": distill, "hfp": hfp, "sd": sd, "adv_g": adv}

    def discriminator_loss(self, lr, hr, step):
        """Eq. 12."""
        with torch.no_grad():
            z_y = self.codec.encode_lr(lr)
            z_stu = self.student().predict_latent(z_y, torch.randn_like(z_y))
            z0 = self.codec.encode(hr)
        loss = losses.hinge_discriminator_loss(self.disc(z0), self.disc(z_stu))
        return {"loss": loss, "hinge_d": loss}
