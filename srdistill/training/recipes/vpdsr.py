"""VPD-SR: visual-perception diffusion distillation of the ResShift teacher into one step.

Teacher F_phi: the released ResShift (Swin-UNet on the VQ-f4 latent, srdistill.training.recipes.resshift) with
SinSR's deterministic T-step sampler (Eq. 1-5). Student f_theta: a copy of the teacher's network
(initialised from it, trained in full), one pass at step T-1 from z_T = z_y + kappa sqrt(eta_T) eps, the same
z_T the teacher starts from (Algorithm 1). Loss (Eq. 13): L_distill (Eq. 10, latent MSE to the teacher's
T-step output) + lambda_1 L_HFP (Eq. 9, DWT high bands of the two latents) + lambda_2 L_SD (Eq. 6-8,
1 - cos of CLIP image embeddings of the decoded student output and the GT) + lambda_3 L_adv (Eq. 11); the
patch discriminator on latents, z_0 = E(x_0) real and z_0^Stu fake, is trained with the hinge loss of Eq. 12.
Values the paper does not give are listed under ``assumptions:`` in recipes/vpdsr.yaml.
"""
from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.training import losses
from srdistill.training.components.open_clip_encoders import (
    build_open_clip,
    clip_normalize,
)
from srdistill.training.inference_policy import unspecified
from srdistill.training.recipes.base import Choice, Recipe, frozen_params
from srdistill.training.recipes.resshift import (
    ResShiftCodec,
    ResShiftDenoiser,
    ResShiftDiffusion,
    ResShiftSchedule,
    build_resshift,
    float32,
)


class PatchDiscriminator(nn.Module):
    """PatchGAN-style critic on latents (pix2pix's n-layer layout): stride-2 4x4 convs, then 3x3 convs to
    one logit per patch. GroupNorm instead of BatchNorm so the critic carries no running statistics."""

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
    """forward(lr, seed=0): one pass of f_theta from z_T; ``seed`` fixes the prior noise eps.

    Any LR size: it is reflect-padded to the network's size multiple (as ResShift's sampler pads) and the
    output cropped back."""

    def __init__(self, codec: ResShiftCodec, diffusion: ResShiftDiffusion):
        super().__init__()
        self.codec, self.diffusion = codec, diffusion

    def predict_latent(self, z_y: torch.Tensor, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """f_theta(z_T, T, y): the student queried at the last step, T-1 in 0-based indices."""
        z_t = self.diffusion.prior(z_y, noise)
        return self.diffusion.predict_x0(z_t, lq, self.diffusion.schedule.steps - 1)

    def forward(self, lr: torch.Tensor, seed: int = 0) -> torch.Tensor:
        h, w = lr.shape[-2:]
        mult = self.diffusion.denoiser.net.cfg.size_multiple
        ph, pw = -h % mult, -w % mult
        if ph or pw:
            lr = F.pad(lr, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        z_y = self.codec.encode_lr(lr)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(z_y.shape, generator=gen).to(z_y)
        sr = self.codec.decode(self.predict_latent(z_y, self.codec.lq(lr), noise))
        return sr[..., : h * self.codec.scale, : w * self.codec.scale]

def _wavelets() -> list[str]:
    """pywt's discrete wavelet names: what ptwt (the DWT of the HFP loss) accepts."""
    import pywt

    return pywt.wavelist(kind="discrete")


class VPDSRRecipe(Recipe):
    name = "vpdsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "lambda_hfp": 0.1, "lambda_sd": 1.0, "lambda_adv": 0.1, "wavelet": "haar",
        "resshift_steps": 15, "resshift_kappa": 2.0, "resshift_sqrt_eta_1": 0.02, "resshift_sqrt_eta_T": 0.99,
        "resshift_power": 0.3, "disc_width": 64, "disc_layers": 3,
    }
    CHOICES: ClassVar[dict[str, Choice]] = {"wavelet": Choice(
        _wavelets, "a discrete wavelet of pywt (haar, db2, sym4, ...: pywt.wavelist(kind='discrete'))")}
    PAPER = "VPD-SR"
    POSITION = 4
    INFERENCE = unspecified("VPD-SR gives no inference size or tiling")
    # Which networks may run under the trainer's bf16 autocast (VPD-SR and SinSR give no precision; ResShift's
    # sampler runs its VQ autoencoder in fp16, which this keeps in fp32 as the evaluation does).
    PRECISION: ClassVar[dict[str, str]] = {
        "teacher (ResShift, T-step targets)": "float32", "VQ-f4 autoencoder (encode, codebook argmin, decode)": "float32",
        "student": "autocast", "CLIP image tower": "autocast", "patch discriminator": "autocast"}
    PAPER_COUNTS: ClassVar[list[tuple[str, str]]] = [("trainable 118.59 M", "Tables I and IV")]
    TEST_SETTINGS: ClassVar[dict] = {"resshift_steps": 4}

    def __init__(self, cfg: dict, components: str):
        super().__init__(cfg, components)
        c = self.cfg
        schedule = ResShiftSchedule(steps=c["resshift_steps"], kappa=c["resshift_kappa"],
                                    sqrt_eta_1=c["resshift_sqrt_eta_1"], sqrt_eta_T=c["resshift_sqrt_eta_T"],
                                    power=c["resshift_power"])
        resshift = build_resshift(components, schedule, self.scale)
        self.codec, self.teacher = resshift.codec, resshift.diffusion
        student_net = copy.deepcopy(self.teacher.denoiser.net).requires_grad_(True).train()
        self.student_diffusion = ResShiftDiffusion(ResShiftDenoiser(student_net, schedule))
        self.clip = build_open_clip(components, "vit")
        latent_ch = self.codec.vq.cfg.embed_dim
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
        return self.clip.encode_image(clip_normalize(self.clip, x01))

    def generator_loss(self, lr, hr, step):
        """Algorithm 1, generator half (lines 3-11)."""
        c, s = self.cfg, self.student()
        with torch.no_grad():
            z_y, lq = self.codec.encode_lr(lr), self.codec.lq(lr)
            noise = torch.randn_like(z_y)
            with float32(z_y):
                z_tch = self.teacher.sample(z_y, lq.float(), noise)
            v_gt = self._embed(hr)
        z_stu = s.predict_latent(z_y, lq, noise)
        distill = F.mse_loss(z_stu, z_tch)
        hfp = losses.hfp_loss(z_tch, z_stu, c["wavelet"])
        sd = losses.semantic_distill_loss(self._embed(self.codec.decode(z_stu)), v_gt)
        with frozen_params(self.discriminator_parameters()):
            adv = losses.hinge_generator_loss(self.disc(z_stu))
        total = distill + c["lambda_hfp"] * hfp + c["lambda_sd"] * sd + c["lambda_adv"] * adv
        return {"loss": total, "distill": distill, "hfp": hfp, "sd": sd, "adv_g": adv}

    def discriminator_loss(self, lr, hr, step):
        """Eq. 12 (Algorithm 1, lines 12-13) on a fresh student output."""
        with torch.no_grad():
            z_y = self.codec.encode_lr(lr)
            z_stu = self.student().predict_latent(z_y, self.codec.lq(lr), torch.randn_like(z_y))
            z0 = self.codec.encode(hr)
        loss = losses.hinge_discriminator_loss(self.disc(z0), self.disc(z_stu))
        return {"loss": loss, "hinge_d": loss}
