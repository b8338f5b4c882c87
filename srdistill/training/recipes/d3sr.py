"""D3SR: one-step diffusion SR distilled with a large diffusion discriminator.

Generator (Eq. 1): z_hat_H = (z_L - sqrt(1 - abar_TL) eps_theta(z_L; T_L)) / sqrt(abar_TL), the SD 2.1-base
UNet with LoRA (rank 16, alpha 16). Discriminator (Eq. 2-4): the down and mid blocks of SDXL's UNet (LoRA; the
up blocks are never built into the critic) and an MLP giving per-patch logits, applied to forward-diffused
latents F(z, t), t ~ U{0..T-1}. Generator loss (Eq. 8): MSE + lambda2 EA-DISTS (Eq. 5-7) + lambda1 L_G (Eq. 2);
discriminator loss Eq. 3. ``discriminator: sd21`` is the paper's Table 6 ablation (a second SD 2.1 UNet); a
components folder without ``disc_unet/`` falls back to it, said in the log and in the run's config.json.
The paper's lambda1/lambda2 and T_L are in its supplement, absent from our copy: the YAML's assumptions say so.
"""
from __future__ import annotations

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
    keep_down_and_mid,
    null_prompt_embedding,
)
from srdistill.training.components.latent_codec import LatentCodec
from srdistill.training.components.lora import (
    UNET_LORA_TARGETS,
    add_lora,
    lora_parameters,
)
from srdistill.training.inference_policy import unspecified
from srdistill.training.components.perceptual import build_dists
from srdistill.training.components.roles import has_role
from srdistill.training.recipes.base import (
    Choice,
    OneStepEpsStudent,
    Recipe,
    frozen_params,
)

SD21_FALLBACK = ("D3SR discriminator: no SDXL UNet (components folder has no disc_unet/), so a second SD 2.1 UNet "
                 "is used: this is the paper's Table 6 ablation, not its main setting")


def unet_down_mid(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Run a UNet2DConditionModel's conv_in, down blocks and mid block only (the discriminator trunk)."""
    emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
    if unet.config.addition_embed_type == "text_time":  # SDXL: empty pooled text, original = target size
        h, w = x.shape[-2] * 8, x.shape[-1] * 8
        ids = torch.tensor([h, w, 0, 0, h, w], dtype=x.dtype, device=x.device).repeat(x.shape[0], 1)
        time_embeds = unet.add_time_proj(ids.flatten()).reshape(x.shape[0], -1).to(x.dtype)
        text_dim = unet.config.projection_class_embeddings_input_dim - time_embeds.shape[1]
        text = torch.zeros(x.shape[0], text_dim, dtype=x.dtype, device=x.device)
        emb = emb + unet.add_embedding(torch.cat([text, time_embeds], dim=-1))
    h = unet.conv_in(x)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
        else:
            h, _ = block(hidden_states=h, temb=emb)
    return unet.mid_block(h, emb, encoder_hidden_states=context)


class DiffusionDiscriminator(nn.Module):
    """Eq. 2-4 critic: D(F(z, t)) = MLP(mid-block features) per patch (logits)."""

    def __init__(self, unet: nn.Module, context: torch.Tensor, hidden: int):
        super().__init__()
        self.unet = unet
        self.register_buffer("context", context, persistent=False)
        width = unet.config.block_out_channels[-1]
        self.mlp = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, 1, 1))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ctx = self.context.expand(z_t.shape[0], -1, -1).to(z_t.dtype)
        return self.mlp(unet_down_mid(self.unet, z_t, t, ctx))


@dataclass
class Noising:
    """One draw of Eq. 4 per sample: timesteps t [B] and noise eps (latent-shaped)."""

    t: torch.Tensor
    noise: torch.Tensor


class D3SRRecipe(Recipe):
    name = "d3sr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "t_l": 500, "lora_rank": 16, "lora_alpha": 16, "disc_lora_rank": 16, "disc_lora_alpha": 16,
        "disc_hidden": 256, "lambda_adv": 0.1, "lambda_ea_dists": 1.0, "discriminator": "sdxl",
    }
    CHOICES: ClassVar[dict[str, Choice]] = {
        "discriminator": Choice(lambda: ["sdxl", "sd21"], "sdxl (the paper's) or sd21 (D3SR's Table 6 ablation)")}
    PAPER = "D3SR"
    POSITION = 2
    INFERENCE = unspecified("D3SR Sec. 4.1 evaluates whole images but does not say whether the network tiles them")
    PAPER_COUNTS: ClassVar[list[tuple[str, str]]] = [("total at inference 966.3 M", "Table 4")]
    TEST_SETTINGS: ClassVar[dict] = {"lora_rank": 4, "lora_alpha": 4, "disc_lora_rank": 4, "disc_lora_alpha": 4}

    def __init__(self, cfg: dict, components: str, *, student_only: bool = False):
        super().__init__(cfg, components, student_only=student_only)
        c = self.cfg
        if c["discriminator"] not in ("sdxl", "sd21"):
            raise UserError(f"d3sr discriminator must be sdxl (the paper's) or sd21 (its Table 6 ablation), got {c['discriminator']!r}")
        self.codec = LatentCodec(build_vae(components), self.scale)
        self.unet = build_unet(components)
        add_lora(self.unet, c["lora_rank"], c["lora_alpha"], UNET_LORA_TARGETS)
        context = null_prompt_embedding(components, self.unet)
        self.register_buffer("alphas_cumprod", alphas_cumprod(components), persistent=False)
        self._students = [OneStepEpsStudent(self.codec, self.unet, context, self.alphas_cumprod, c["t_l"])]
        self.disc = self.dists = None
        if not student_only:
            self.disc = self._build_discriminator(components, context)
            self.dists = build_dists(components)

    def _build_discriminator(self, components: str, context: torch.Tensor) -> DiffusionDiscriminator:
        c = self.cfg
        if c["discriminator"] == "sdxl" and has_role(components, "disc_unet", "disc_unet"):
            disc_unet = build_unet(components, sub="disc_unet", role="disc_unet")
        else:
            if c["discriminator"] == "sdxl":
                self.substitute(SD21_FALLBACK)
            disc_unet = build_unet(components)
        keep_down_and_mid(disc_unet)
        add_lora(disc_unet, c["disc_lora_rank"], c["disc_lora_alpha"], UNET_LORA_TARGETS)
        disc_ctx = context if disc_unet.config.cross_attention_dim == context.shape[-1] else \
            torch.zeros(1, context.shape[1], disc_unet.config.cross_attention_dim)
        return DiffusionDiscriminator(disc_unet, disc_ctx, c["disc_hidden"])

    def generator_parameters(self):
        return lora_parameters(self.unet)

    def discriminator_parameters(self):
        if self.disc is None:
            return []
        return lora_parameters(self.disc.unet) + list(self.disc.mlp.parameters())

    def draw(self, z: torch.Tensor) -> Noising:
        """Eq. 4's t ~ U{0, ..., T-1} and eps ~ N(0, I), drawn afresh for every pass."""
        t = torch.randint(0, self.alphas_cumprod.numel(), (z.shape[0],), device=z.device)
        return Noising(t, torch.randn_like(z))

    def critic(self, z: torch.Tensor, noising: Noising) -> torch.Tensor:
        """D(F(z, t)) (Eq. 2-4)."""
        return self.disc(losses.forward_diffuse(z, self.alphas_cumprod[noising.t], noising.noise), noising.t)

    def generator_loss(self, lr, hr, step, noising: Noising | None = None):
        """Eq. 8: MSE + lambda2 EA-DISTS + lambda1 L_G (Eq. 2)."""
        c = self.cfg
        z_hat = self.student().predict_latent(lr)
        x_hat = self.codec.decode(z_hat)
        mse = F.mse_loss(x_hat, hr)
        ea = losses.ea_dists_loss(self.dists, x_hat, hr)
        with frozen_params(self.discriminator_parameters()):
            adv = losses.nonsaturating_generator_loss(self.critic(z_hat, noising or self.draw(z_hat)))
        total = mse + c["lambda_ea_dists"] * ea + c["lambda_adv"] * adv
        return {"loss": total, "mse": mse, "ea_dists": ea, "adv_g": adv}

    def discriminator_loss(self, lr, hr, step, real: Noising | None = None, fake: Noising | None = None):
        """Eq. 3 on the HR latent z_H (real) and the student's z_hat_H (fake)."""
        with torch.no_grad():
            z_hat = self.student().predict_latent(lr)
            z_h = self.codec.encode(hr)
        loss = losses.nonsaturating_discriminator_loss(self.critic(z_h, real or self.draw(z_h)),
                                                       self.critic(z_hat, fake or self.draw(z_hat)))
        return {"loss": loss, "adv_d": loss}
