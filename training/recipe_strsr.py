"""StrSR: one-step adversarial distillation of a DiT with spectral and trajectory regularisation.

Generator (Eq. 2-6): rectified flow from the LR latent z_LR = E_VAE(x_LR) (t = t1) to the HR latent,
one Euler step z0_hat = z_LR - G(z_LR, t1, c); c is the optional image-derived condition
f_adapt(E_VLM(x_LR)) (Eq. 5: a frozen image encoder, here an open_clip image tower, and a trainable
adaptive MLP). G is an SD3 DiT with LoRA. Discriminator: frozen CLIP-ConvNeXt, features of every
stage and the pooled output, trainable conv heads giving patch logits; RaGAN (Eq. 7) plus the
approximated R1 on Gaussian-noised reals (Eq. 8-9). Generator loss Eq. 11:
L1 + lambda1 LPIPS + lambda2 RaGAN_G + lambda3 FDL (Eq. 10), lambda3 = 0 in stage one.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.training import components as C
from srdistill.training import losses
from srdistill.training.recipe import LatentCodec, Recipe, frozen_params, register


class AdaptiveCondition(nn.Module):
    """Eq. 5: z_VLM = f_adapt(E_VLM(x_LR)): frozen image embedding -> context tokens + pooled vector."""

    def __init__(self, encoder: nn.Module, embed_dim: int, tokens: int, joint_dim: int, pooled_dim: int, hidden: int):
        super().__init__()
        self.encoder = encoder
        self.tokens, self.joint_dim = tokens, joint_dim
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, tokens * joint_dim))
        self.pooled = nn.Linear(embed_dim, pooled_dim)

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            emb = self.encoder.encode_image(C.clip_normalize(self.encoder, x01)).float()
        return self.mlp(emb).view(-1, self.tokens, self.joint_dim), self.pooled(emb)


class ConvNeXtDiscriminator(nn.Module):
    """Frozen CLIP-ConvNeXt trunk; a trainable conv head per stage (patch logits) and one on the pooled output."""

    def __init__(self, clip: nn.Module, head_channels: int):
        super().__init__()
        self.clip = clip
        widths = [s.blocks[-1].conv_dw.out_channels for s in clip.visual.trunk.stages]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w, head_channels, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(head_channels, 1, 1))
            for w in widths)
        self.pooled_head = nn.Linear(C.clip_embed_dim(clip), 1)

    def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
        trunk = self.clip.visual.trunk
        # ConvNeXt is fully convolutional: it sees the image at full resolution, where the textures are
        final, stages = trunk.forward_intermediates(C.clip_normalize(self.clip, x01, resize=False))
        pooled = self.clip.visual.head(trunk.forward_head(final))
        logits = [head(f).flatten(1) for head, f in zip(self.heads, stages)]
        return logits + [self.pooled_head(pooled)]


@register
class StrSRRecipe(Recipe):
    name = "strsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "t1": 1.0, "lora_rank": 256, "lora_alpha": 256, "use_condition": True, "cond_tokens": 4,
        "cond_hidden": 256, "disc_head_channels": 64, "lambda_lpips": 3.0, "lambda_gan": 0.1, "lambda_fdl": 0.002,
        "lambda_r1": 10.0, "r1_sigma": 0.01, "stage1_steps": 40000, "lpips_net": "vgg", "fdl_num_proj": 256,
        "fdl_patch": 5, "fdl_phase_weight": 1.0,
    }

    def __init__(self, cfg: dict, components: str):
        super().__init__(cfg, components)
        c = self.cfg
        self.dit = C.build_dit(components)
        latent_ch = self.dit.config.in_channels
        sub = "transformer_vae" if latent_ch != 4 and components not in C.PRESETS else "vae"
        self.codec = LatentCodec(C.build_vae(components, latent_channels=latent_ch, sub=sub), self.scale)
        C.add_lora(self.dit, c["lora_rank"], c["lora_alpha"], C.DIT_LORA_TARGETS)
        joint, pooled = self.dit.config.joint_attention_dim, self.dit.config.pooled_projection_dim
        self.cond = None
        if c["use_condition"]:
            enc = C.build_open_clip(components, "vit")
            self.cond = AdaptiveCondition(enc, C.clip_embed_dim(enc), c["cond_tokens"], joint, pooled,
                                          c["cond_hidden"])
        self._students = [StrSRStudent(self.codec, self.dit, self.cond, c["t1"], c["cond_tokens"], self.scale)]
        self.disc = ConvNeXtDiscriminator(C.build_open_clip(components, "convnext"), c["disc_head_channels"])
        self.lpips = C.build_lpips(components, c["lpips_net"])
        self._fdl_proj: dict[tuple[int, int, int], torch.Tensor] = {}

    def generator_parameters(self):
        params = C.lora_parameters(self.dit)
        if self.cond is not None:
            params += list(self.cond.mlp.parameters()) + list(self.cond.pooled.parameters())
        return params

    def discriminator_parameters(self):
        return list(self.disc.heads.parameters()) + list(self.disc.pooled_head.parameters())

    def student(self):
        return self._students[0]

    # -- losses ----------------------------------------------------------------------------
    def fdl(self, x_hr: torch.Tensor, x_pred: torch.Tensor) -> torch.Tensor:
        """Eq. 10 with Phi = the LPIPS backbone; slice directions fixed per (layer, size) from the recipe seed."""
        fh = C.lpips_features(self.lpips, x_hr)
        fp = C.lpips_features(self.lpips, x_pred)
        projs = []
        for i, f in enumerate(fh):
            patch = min(self.cfg["fdl_patch"], f.shape[-2], f.shape[-1])
            key = (i, f.shape[1], patch)
            if key not in self._fdl_proj:
                gen = torch.Generator().manual_seed(self.cfg["init_seed"] * 1000 + i)
                self._fdl_proj[key] = losses.random_patch_projections(f.shape[1], self.cfg["fdl_num_proj"], patch, gen)
            projs.append(self._fdl_proj[key].to(f.device))
        return losses.fdl_loss(fh, fp, projs, self.cfg["fdl_phase_weight"])

    def generator_loss(self, lr, hr, step):
        c = self.cfg
        x_pred = self.student()(lr)
        l1 = (x_pred - hr).abs().mean()
        lp = self.lpips(x_pred, hr).mean()
        with frozen_params(self.discriminator_parameters()):
            c_fake = self.disc(x_pred)
            with torch.no_grad():
                c_real = self.disc(hr)
        gan = torch.stack([losses.ragan_generator_loss(f, r) for f, r in zip(c_fake, c_real)]).mean()
        lam_fdl = c["lambda_fdl"] if step >= c["stage1_steps"] else 0.0
        out = {"l1": l1, "lpips": lp, "ragan_g": gan}
        total = l1 + c["lambda_lpips"] * lp + c["lambda_gan"] * gan
        if lam_fdl > 0:
            out["fdl"] = self.fdl(hr, x_pred)
            total = total + lam_fdl * out["fdl"]
        out["loss"] = total
        return out

    def discriminator_loss(self, lr, hr, step):
        """Eq. 9: L_D = RaGAN_D (reals noised with N(0, sigma^2)) + lambda_R1 * approximated R1 (Eq. 8)."""
        with torch.no_grad():
            x_pred = self.student()(lr)
        noisy = hr + self.cfg["r1_sigma"] * torch.randn_like(hr)
        c_fake = self.disc(x_pred)
        c_noisy = self.disc(noisy)
        c_real = self.disc(hr)
        ragan = torch.stack([losses.ragan_discriminator_loss(r, f) for r, f in zip(c_noisy, c_fake)]).mean()
        r1 = torch.stack([losses.approx_r1_loss(a, b) for a, b in zip(c_real, c_noisy)]).mean()
        return {"loss": ragan + self.cfg["lambda_r1"] * r1, "ragan_d": ragan, "r1": r1}


class StrSRStudent(nn.Module):
    """One-step SR: lr [B,3,h,w] in [0,1] -> sr [B,3,4h,4w] in [0,1]."""

    def __init__(self, codec: LatentCodec, dit: nn.Module, cond: AdaptiveCondition | None, t1: float, tokens: int,
                 scale: int):
        super().__init__()
        self.codec, self.dit, self.cond, self.t1, self.scale = codec, dit, cond, t1, scale
        self.register_buffer("null_tokens", torch.zeros(1, tokens, dit.config.joint_attention_dim), persistent=False)
        self.register_buffer("null_pooled", torch.zeros(1, dit.config.pooled_projection_dim), persistent=False)

    def predict_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """Eq. 6 then one Euler step: z0_hat = z_LR - G(z_LR, t1, c)."""
        z_lr = self.codec.encode_lr(lr)
        if self.cond is not None:
            up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
            tokens, pooled = self.cond(up)
        else:
            tokens = self.null_tokens.expand(lr.shape[0], -1, -1)
            pooled = self.null_pooled.expand(lr.shape[0], -1)
        t = torch.full((lr.shape[0],), self.t1 * 1000.0, device=lr.device)
        v = self.dit(hidden_states=z_lr, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=t).sample
        return z_lr - v

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(self.predict_latent(lr))
