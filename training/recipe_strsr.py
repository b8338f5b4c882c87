"""StrSR: one-step adversarial distillation of a DiT with spectral and trajectory regularisation.

Generator (Eq. 2-6): rectified flow z_t = t z_1 + (1 - t) z_0 (Eq. 2) with G predicting dz/dt = z_1 - z_0
(Eq. 3-4); the LR latent z_LR = E_VAE(x_LR) is the state at t = t1 (Eq. 6), and one Euler step from t1 to 0
gives z0_hat = z_t1 - t1 G(z_t1, t1, c). The paper writes z_t1 - G(z_t1, t1, c) (Sec. 3.1), the same step at
its t1 = 1; for t1 < 1 only the Euler step keeps G's meaning (a velocity), so that is what runs.
c (Eq. 5) is ``condition``: ``vlm`` = f_adapt(E_VLM(x_LR)) (a frozen encoder and a trainable adaptive MLP;
``semantic_encoder``: ``qwen3vl``, the vision tower of the paper's Qwen3-VL-4B, or ``clip``, an open_clip image
tower standing in for it), ``text`` = a plain text
encoder's fixed embedding (the paper's "w/o VLM" ablation) or ``none`` (its "w/o emb"). G is a DiT with LoRA,
``base``: ``zimage`` (Z-Image-Turbo, the paper's first base, diffusers' ZImageTransformer2DModel) or ``sd3`` (SD3's
transformer, a stand-in). The paper's second base, FLUX.2 [klein] 4B, is not wired.
Discriminator: frozen CLIP-ConvNeXt, features of every stage and the pooled output, trainable conv heads giving
patch logits; RaGAN (Eq. 7) plus the approximated R1 on Gaussian-noised reals (Eq. 8-9), each averaged over the
five logit maps. Generator loss Eq. 11: L1 + lambda1 LPIPS + lambda2 RaGAN_G + lambda3 FDL (Eq. 10), lambda3 = 0
in stage one.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.errors import UserError
from srdistill.training import components as C
from srdistill.training import losses
from srdistill.training.recipe import LatentCodec, Recipe, frozen_params, register


class ClipImage(nn.Module):
    """open_clip image embedding as a one-feature sequence [B, 1, D] (the stand-in semantic encoder)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.width = C.clip_embed_dim(clip)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(C.clip_normalize(self.clip, x01)).float()[:, None]


class AdaptiveCondition(nn.Module):
    """Eq. 5: z_VLM = f_adapt(E_VLM(x_LR)): each feature of the frozen encoder -> ``per_feature`` context tokens
    (a two-layer MLP), and a pooled vector from their mean when the base takes one."""

    def __init__(self, encoder: nn.Module, per_feature: int, joint_dim: int, pooled_dim: int, hidden: int):
        super().__init__()
        self.encoder, self.per_feature, self.joint_dim = encoder, per_feature, joint_dim
        width = encoder.width
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, per_feature * joint_dim))
        self.pooled = nn.Linear(width, pooled_dim) if pooled_dim else None   # Z-Image takes no pooled vector

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            feats = self.encoder(x01).float()
        tokens = self.mlp(feats).view(feats.shape[0], -1, self.joint_dim)
        pooled = self.pooled(feats.mean(1)) if self.pooled is not None else feats.new_zeros(feats.shape[0], 0)
        return tokens, pooled


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


class SD3Flow(nn.Module):
    """G(z_t, t, c) = dz/dt through SD3's transformer: it takes the flow time scaled to [0, 1000] and predicts
    noise - data, which is dz/dt for z_t = t z_1 + (1 - t) z_0 (Eq. 2-3)."""

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.joint_attention_dim, dit.config.pooled_projection_dim

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), t * 1000.0, device=z.device)
        return self.dit(hidden_states=z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=tt).sample


class ZImageFlow(nn.Module):
    """G through Z-Image's transformer: its time runs the other way (1 - t, 1 = clean), it takes per-image lists
    of [C, 1, H, W] latents and [L, D] caption features, and predicts data - noise, so G is minus its output
    (as diffusers' ZImagePipeline negates it). No pooled vector."""

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.cap_feat_dim, 0

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), 1.0 - t, device=z.device)
        out = self.dit([zi.unsqueeze(1) for zi in z], tt, list(tokens), return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


FLOW_BASES = {"zimage": ZImageFlow, "sd3": SD3Flow}


TEXT_CONDITION_FILE = "text_condition.safetensors"


def text_condition(components: str, tokens: int, joint_dim: int, pooled_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The "w/o VLM" condition: the base's own text encoder's embedding of a fixed prompt, [1, L, D] and [1, P].

    A folder holds it precomputed in text_condition.safetensors (``prompt_embeds``, ``pooled_prompt_embeds``,
    e.g. from the diffusers pipeline's ``encode_prompt("")``); presets draw fixed random ones from the seed."""
    if C.is_preset(components):
        gen = torch.Generator().manual_seed(seed + 11)
        return torch.randn(1, tokens, joint_dim, generator=gen), torch.randn(1, pooled_dim, generator=gen)
    from safetensors.torch import load_file

    path = C._need(components, TEXT_CONDITION_FILE,
                   "the text condition (prompt_embeds, pooled_prompt_embeds of the base's text encoders)")
    sd = load_file(str(path))
    return sd["prompt_embeds"][:1].float(), sd["pooled_prompt_embeds"][:1].float()


@register
class StrSRRecipe(Recipe):
    name = "strsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "base": "zimage", "t1": 1.0, "lora_rank": 256, "lora_alpha": 256, "condition": "vlm",
        "semantic_encoder": "qwen3vl", "cond_tokens": 4,
        "cond_hidden": 256, "disc_head_channels": 64, "lambda_lpips": 3.0, "lambda_gan": 0.1, "lambda_fdl": 0.002,
        "lambda_r1": 10.0, "r1_sigma": 0.01, "stage1_steps": 40000, "lpips_net": "vgg", "fdl_num_proj": 256,
        "fdl_patch": 5, "fdl_phase_weight": 1.0,
    }

    def __init__(self, cfg: dict, components: str, *, student_only: bool = False):
        super().__init__(cfg, components, student_only=student_only)
        c = self.cfg
        if c["semantic_encoder"] not in ("qwen3vl", "clip"):
            raise UserError(f"strsr semantic_encoder must be qwen3vl (the paper's) or clip (a stand-in), got {c['semantic_encoder']!r}")
        if c["condition"] not in ("vlm", "text", "none"):
            raise UserError(f"strsr condition must be vlm, text (the paper's w/o VLM) or none (w/o emb), got {c['condition']!r}")
        if not 0.0 < float(c["t1"]) <= 1.0:
            raise UserError(f"strsr t1 must lie in (0, 1], got {c['t1']}")
        if c["base"] not in FLOW_BASES:
            raise UserError(f"strsr base must be one of {', '.join(FLOW_BASES)}, got {c['base']!r}")
        self.dit = C.build_dit(components, c["base"])
        latent_ch = self.dit.config.in_channels
        sub = "transformer_vae" if latent_ch != 4 and not C.is_preset(components) else "vae"
        self.codec = LatentCodec(C.build_vae(components, latent_channels=latent_ch, sub=sub), self.scale)
        C.add_lora(self.dit, c["lora_rank"], c["lora_alpha"],
                   C.ZIMAGE_LORA_TARGETS if c["base"] == "zimage" else C.DIT_LORA_TARGETS)
        joint, pooled = FLOW_BASES[c["base"]].condition_widths(self.dit)
        self.cond = None
        if c["condition"] == "vlm":
            if c["semantic_encoder"] == "qwen3vl":   # one context token per merged visual token
                self.cond = AdaptiveCondition(C.build_vlm_vision(components), 1, joint, pooled, c["cond_hidden"])
            else:
                enc = ClipImage(C.build_open_clip(components, "vit"))
                self.cond = AdaptiveCondition(enc, c["cond_tokens"], joint, pooled, c["cond_hidden"])
        fixed = text_condition(components, c["cond_tokens"], joint, pooled, c["init_seed"]) if c["condition"] == "text" \
            else (torch.zeros(1, c["cond_tokens"], joint), torch.zeros(1, pooled))
        self._students = [StrSRStudent(self.codec, FLOW_BASES[c["base"]](self.dit), self.cond, c["t1"], fixed,
                                       self.scale)]
        self.disc = self.lpips = None
        if not student_only:
            self.disc = ConvNeXtDiscriminator(C.build_open_clip(components, "convnext"), c["disc_head_channels"])
            self.lpips = C.build_lpips(components, c["lpips_net"])
        self._fdl_proj: dict[tuple[int, int, int], torch.Tensor] = {}

    def generator_parameters(self):
        params = C.lora_parameters(self.dit)
        if self.cond is not None:
            params += list(self.cond.mlp.parameters()) + (list(self.cond.pooled.parameters()) if self.cond.pooled else [])
        return params

    def discriminator_parameters(self):
        if self.disc is None:
            return []
        return list(self.disc.heads.parameters()) + list(self.disc.pooled_head.parameters())

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

    def discriminator_loss(self, lr, hr, step, r1_noise: torch.Tensor | None = None):
        """Eq. 9: L_D = RaGAN_D (reals noised with N(0, sigma^2)) + lambda_R1 * approximated R1 (Eq. 8)."""
        with torch.no_grad():
            x_pred = self.student()(lr)
        noisy = hr + self.cfg["r1_sigma"] * (torch.randn_like(hr) if r1_noise is None else r1_noise)
        c_fake = self.disc(x_pred)
        c_noisy = self.disc(noisy)
        c_real = self.disc(hr)
        ragan = torch.stack([losses.ragan_discriminator_loss(r, f) for r, f in zip(c_noisy, c_fake)]).mean()
        r1 = torch.stack([losses.approx_r1_loss(a, b) for a, b in zip(c_real, c_noisy)]).mean()
        return {"loss": ragan + self.cfg["lambda_r1"] * r1, "ragan_d": ragan, "r1": r1}


class StrSRStudent(nn.Module):
    """One-step SR: lr [B,3,h,w] in [0,1] -> sr [B,3,4h,4w] in [0,1]."""

    def __init__(self, codec: LatentCodec, flow: nn.Module, cond: AdaptiveCondition | None, t1: float,
                 fixed: tuple[torch.Tensor, torch.Tensor], scale: int):
        super().__init__()
        self.codec, self.velocity, self.cond, self.t1, self.scale = codec, flow, cond, float(t1), scale
        self.register_buffer("fixed_tokens", fixed[0], persistent=False)
        self.register_buffer("fixed_pooled", fixed[1], persistent=False)

    def condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cond is None:
            return self.fixed_tokens.expand(lr.shape[0], -1, -1), self.fixed_pooled.expand(lr.shape[0], -1)
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.cond(up)

    def predict_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """Eq. 6 then one Euler step from t1 to 0: z0_hat = z_t1 - t1 G(z_t1, t1, c)."""
        z_lr = self.codec.encode_lr(lr)
        tokens, pooled = self.condition(lr)
        return z_lr - self.t1 * self.velocity(z_lr, self.t1, tokens, pooled)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(self.predict_latent(lr))
