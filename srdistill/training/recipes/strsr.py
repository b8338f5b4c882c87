"""StrSR: one-step adversarial distillation of a DiT with spectral and trajectory regularisation.

Generator (Eq. 2-6): rectified flow z_t = t z_1 + (1 - t) z_0 (Eq. 2) with G predicting dz/dt = z_1 - z_0
(Eq. 3-4); the LR latent z_LR = E_VAE(x_LR) is the state at t = t1 (Eq. 6), and one Euler step from t1 to 0
gives z0_hat = z_t1 - t1 G(z_t1, t1, c). The paper writes z_t1 - G(z_t1, t1, c) (Sec. 3.1) and gives no t1;
StrSR's released code runs t1 = 0.8 (model_t = coeff_t = 800): the DiT reads the flow time 0.8 (Z-Image its
1 - 0.8) and the step is z_LR - 0.8 G (HYPIR/trainer/zimage_vlm.py, flux_vlm.py, base.py forward_generator).
c (Eq. 5) is ``condition``: ``vlm`` = f_adapt(E_VLM(x_LR)) (a frozen encoder and a trainable adaptive MLP;
``semantic_encoder``: ``qwen3vl``, the paper's Qwen3-VL-4B-Instruct run whole on the LR image and a fixed prompt,
its language model's last hidden states as tokens; ``qwen3vl_vision``, its vision tower alone, an ablation; or
``clip``, an open_clip image tower standing in for it), ``text`` = a plain text
encoder's fixed embedding (the paper's "w/o VLM" ablation) or ``none`` (its "w/o emb"). G is a DiT with LoRA,
``base``: ``zimage`` (Z-Image-Turbo, the paper's StrSR-Z, diffusers' ZImageTransformer2DModel), ``flux2``
(FLUX.2 [klein] 4B, its StrSR-F, diffusers' Flux2Transformer2DModel on AutoencoderKLFlux2's normalised,
patchified latent) or ``sd3`` (SD3's transformer, a stand-in).
Discriminator (StrSR's released HYPIR/model/D.py): frozen CLIP-ConvNeXt, its first three stages and the pooled
output into trainable spectral-normalised heads giving four logit maps; RaGAN (Eq. 7, clean reals) plus the
approximated R1 on Gaussian-noised reals (Eq. 8-9), each summed over the maps (as the release sums them).
Generator loss Eq. 11: L1 + lambda1 LPIPS + lambda2 RaGAN_G + lambda3 FDL (Eq. 10), lambda3 = 0 in stage one;
L1 on [-1, 1] pixels (the release's range; LPIPS reads [-1, 1] either way).
"""
from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training.components import builders as C
from srdistill.training import losses
from srdistill.training.recipes.base import LatentCodec, Recipe, frozen_params, register


class ClipImage(nn.Module):
    """open_clip image embedding as a one-feature sequence [B, 1, D] (the stand-in semantic encoder)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.width = C.clip_embed_dim(clip)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(C.clip_normalize(self.clip, x01)).float()[:, None]


class AdaptiveCondition(nn.Module):
    """Eq. 5: z_VLM = f_adapt(E_VLM(x_LR)): each token of the frozen encoder -> ``per_feature`` context tokens
    of the DiT's width (Linear, SiLU, Linear: the projector of StrSR's released code, hidden width ``hidden``,
    there the DiT's width / 2), and a pooled vector from their mean when the base takes one."""

    def __init__(self, encoder: nn.Module, per_feature: int, joint_dim: int, pooled_dim: int, hidden: int):
        super().__init__()
        self.encoder, self.per_feature, self.joint_dim = encoder, per_feature, joint_dim
        width = encoder.width
        hidden = hidden or joint_dim // 2
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, per_feature * joint_dim))
        self.pooled = nn.Linear(width, pooled_dim) if pooled_dim else None   # Z-Image takes no pooled vector

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            feats = self.encoder(x01).float()
        tokens = self.mlp(feats).view(feats.shape[0], -1, self.joint_dim)
        pooled = self.pooled(feats.mean(1)) if self.pooled is not None else feats.new_zeros(feats.shape[0], 0)
        return tokens, pooled


class BlurPool(nn.Module):
    """Anti-aliasing blur at stride 1: a depthwise normalised 4x4 binomial filter ([1, 3, 3, 1] outer itself) on a
    zero-padded map, 1 + ``pad_off`` before and 2 + ``pad_off`` after on each axis (vision_aided_loss' BlurPool,
    as StrSR's released discriminator configures it); the map grows by 2 ``pad_off``."""

    def __init__(self, channels: int, pad_off: int = 0):
        super().__init__()
        a = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = a[:, None] * a[None, :]
        self.register_buffer("kernel", (k / k.sum()).expand(channels, 1, 4, 4).clone(), persistent=False)
        self.pad = (1 + pad_off, 2 + pad_off, 1 + pad_off, 2 + pad_off)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.kernel.to(x.dtype), groups=x.shape[1])


def _sn(layer: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer)


class ConvNeXtDiscriminator(nn.Module):
    """Frozen CLIP-ConvNeXt trunk and trainable spectral-normalised heads, as StrSR's released discriminator
    (HYPIR/model/D.py, MultiLevelDConv(level=4, down=2)): on each of the first three stages' maps, blur, 3x3 conv
    (stride 2) to ``head_channels``, LeakyReLU(0.2), blur, 1x1 conv (stride 2) to one patch logit; on the pooled
    embedding, Linear to ``head_channels``, LeakyReLU(0.2), Linear to one logit. Four logit maps."""

    STAGES = 3

    def __init__(self, clip: nn.Module, head_channels: int):
        super().__init__()
        self.clip = clip
        widths = [s.blocks[-1].conv_dw.out_channels for s in clip.visual.trunk.stages][:self.STAGES]
        self.heads = nn.ModuleList(
            nn.Sequential(BlurPool(w, pad_off=1), _sn(nn.Conv2d(w, head_channels, 3, stride=2)), nn.LeakyReLU(0.2),
                          BlurPool(head_channels), _sn(nn.Conv2d(head_channels, 1, 1, stride=2)))
            for w in widths)
        self.pooled_head = nn.Sequential(_sn(nn.Linear(C.clip_embed_dim(clip), head_channels)), nn.LeakyReLU(0.2),
                                         _sn(nn.Linear(head_channels, 1)))

    def train(self, mode: bool = True) -> ConvNeXtDiscriminator:
        """Only the heads change mode: the frozen trunk stays in eval (as the released discriminator keeps it)."""
        self.training = mode
        self.heads.train(mode)
        self.pooled_head.train(mode)
        self.clip.eval()
        return self

    def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
        trunk = self.clip.visual.trunk
        # ConvNeXt is fully convolutional: it sees the image at full resolution, where the textures are
        final, stages = trunk.forward_intermediates(C.clip_normalize(self.clip, x01, resize=False))
        pooled = self.clip.visual.head(trunk.forward_head(final))
        logits = [head(f).flatten(1) for head, f in zip(self.heads, stages)]
        return logits + [self.pooled_head(pooled)]

    def spectral_state(self) -> dict[str, torch.Tensor]:
        """The spectral norms' power-iteration vectors (buffers, not parameters): a resume needs them."""
        return {n: b for n, b in self.named_buffers() if n.endswith(("._u", "._v"))}


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """The generator step reads the discriminator in eval mode, as the release's does: its spectral norms use their
    current estimate, and only the discriminator step runs their power iteration."""
    mode = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(mode)


def _sd_codec(components: str, dit: nn.Module, scale: int) -> LatentCodec:
    """The DiT's own KL VAE with its shift/scaling factors (a folder's transformer_vae/; presets: the tiny f8 shape
    with the DiT's channel count)."""
    latent_ch = dit.config.in_channels
    sub = "transformer_vae" if latent_ch != 4 and not C.is_preset(components) else "vae"
    return LatentCodec(C.build_vae(components, latent_channels=latent_ch, sub=sub), scale)


class _DiTFlow(nn.Module):
    """A base of FLOW_BASES: the DiT it wraps (its LoRA'd transformer); subclasses say how to call it."""

    make_codec = staticmethod(_sd_codec)

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit


class SD3Flow(_DiTFlow):
    """G(z_t, t, c) = dz/dt through SD3's transformer: it takes the flow time scaled to [0, 1000] and predicts
    noise - data, which is dz/dt for z_t = t z_1 + (1 - t) z_0 (Eq. 2-3)."""

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.joint_attention_dim, dit.config.pooled_projection_dim

    @staticmethod
    def lora_targets(dit: nn.Module):
        return C.DIT_LORA_TARGETS

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), t * 1000.0, device=z.device)
        return self.dit(hidden_states=z, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=tt).sample


class ZImageFlow(_DiTFlow):
    """G through Z-Image's transformer: its time runs the other way (1 - t, 1 = clean), it takes per-image lists
    of [C, 1, H, W] latents and [L, D] caption features, and predicts data - noise, so G is minus its output
    (as diffusers' ZImagePipeline negates it). No pooled vector."""

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.cap_feat_dim, 0

    @staticmethod
    def lora_targets(dit: nn.Module):
        return C.ZIMAGE_LORA_TARGETS

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), 1.0 - t, device=z.device)
        out = self.dit([zi.unsqueeze(1) for zi in z], tt, list(tokens), return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


# FLUX.2's latent layout, as diffusers' Flux2KleinPipeline builds it (its _patchify_latents, _pack_latents,
# _prepare_latent_ids, _prepare_text_ids and their inverses): pure reshapes, so the flow step can run on the
# [B, 4C, H/2, W/2] latent and only the transformer sees tokens.
def flux2_patchify(z: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] VAE latent -> [B, 4C, H/2, W/2]: each 2x2 patch into channels (channel c, row, column)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def flux2_unpatchify(z: torch.Tensor) -> torch.Tensor:
    b, c4, h, w = z.shape
    return z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


def flux2_pack(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C] tokens, row-major."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def flux2_unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, h, w)


def flux2_image_ids(b: int, h: int, w: int, device) -> torch.Tensor:
    """RoPE coordinates (T, H, W, L) of the image tokens: (0, row, column, 0), [B, h*w, 4]."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    return ids.unsqueeze(0).expand(b, -1, -1).to(device)


def flux2_text_ids(b: int, length: int, device) -> torch.Tensor:
    """RoPE coordinates of the context tokens: (0, 0, 0, index), [B, L, 4]."""
    ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))
    return ids.unsqueeze(0).expand(b, -1, -1).to(device)


class Flux2Codec(nn.Module):
    """FLUX.2's latent as Flux2KleinPipeline makes it: the VAE posterior's mode of the [-1, 1] image, 2x2-patchified,
    then normalised per channel by the VAE's batch-norm running statistics (mean, sqrt(var + eps)); decoding undoes
    each step. The same bicubic x4 LR upsampling as LatentCodec."""

    def __init__(self, vae: nn.Module, scale: int = 4):
        super().__init__()
        self.vae, self.scale = vae, scale

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(z.device, z.dtype)
        return mean, std

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        z = flux2_patchify(self.vae.encode(x01 * 2 - 1).latent_dist.mode())
        mean, std = self._stats(z)
        return (z - mean) / std

    def encode_lr(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.encode(up)

    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        mean, std = self._stats(z)
        x = self.vae.decode(flux2_unpatchify(z * std + mean)).sample
        return ((x.clamp(-1, 1) if clamp else x) + 1) / 2


class Flux2Flow(_DiTFlow):
    """G through FLUX.2's transformer, called as Flux2KleinPipeline calls it: the normalised latent packed into
    tokens with (0, row, column, 0) positions, the context as ``encoder_hidden_states`` (where FLUX.2 reads its
    Qwen3 text features) with (0, 0, 0, index) positions, the flow time in [0, 1] (the sigma of its
    FlowMatchEulerDiscreteScheduler, 1 = noise; the transformer scales it by 1000 itself) and no guidance (klein
    is guidance-distilled). It predicts noise - data, which is dz/dt (Eq. 2-3), so G is its output. No pooled
    vector."""

    @staticmethod
    def make_codec(components: str, dit: nn.Module, scale: int) -> Flux2Codec:
        return Flux2Codec(C.build_flux2_vae(components), scale)

    @staticmethod
    def condition_widths(dit: nn.Module) -> tuple[int, int]:
        return dit.config.joint_attention_dim, 0

    @staticmethod
    def lora_targets(dit: nn.Module):
        return C.flux2_lora_targets(dit)

    def forward(self, z: torch.Tensor, t: float, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        tt = torch.full((b,), t, device=z.device, dtype=z.dtype)
        out = self.dit(hidden_states=flux2_pack(z), encoder_hidden_states=tokens, timestep=tt,
                       img_ids=flux2_image_ids(b, h, w, z.device), txt_ids=flux2_text_ids(b, tokens.shape[1], z.device),
                       guidance=None, return_dict=False)[0]
        return flux2_unpack(out, h, w)


FLOW_BASES = {"zimage": ZImageFlow, "flux2": Flux2Flow, "sd3": SD3Flow}


TEXT_CONDITION_FILE = "text_condition.safetensors"

# The prompt StrSR's released code (HYPIR/utils/captioner.py, IMAGE_DESCRIPTION_PROMPT) gives Qwen3-VL with the LR
# image; the paper does not state one. Kept verbatim, spelling included: it is what the released model read.
VLM_PROMPT = ("Descibe this image in detail, especially the text in image. Cinematic, hyper sharpness, highly detailed, "
              "perfect without deformations. Camera, hyper detailed photo, realistic maximum detail, 32k, Color. "
              "Grading, ultra HD, extreme meticulous detailing, skin pore detailing")
SEMANTIC_ENCODERS = ("qwen3vl", "qwen3vl_vision", "clip")


def text_condition(components: str, tokens: int, joint_dim: int, pooled_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The "w/o VLM" condition: the base's own text encoder's embedding of a fixed prompt, [1, L, D] and [1, P].

    A folder holds it precomputed in text_condition.safetensors (``prompt_embeds``, and ``pooled_prompt_embeds``
    for a base that takes a pooled vector, e.g. from the diffusers pipeline's ``encode_prompt("")``); presets draw
    fixed random ones from the seed."""
    if C.is_preset(components):
        gen = torch.Generator().manual_seed(seed + 11)
        return torch.randn(1, tokens, joint_dim, generator=gen), torch.randn(1, pooled_dim, generator=gen)
    from safetensors.torch import load_file

    path = C._need(components, TEXT_CONDITION_FILE,
                   "the text condition (prompt_embeds, pooled_prompt_embeds of the base's text encoders)")
    sd = load_file(str(path))
    embeds = sd["prompt_embeds"][:1].float()
    if embeds.shape[-1] != joint_dim:
        raise UserError(f"{path}: prompt_embeds are {embeds.shape[-1]} wide, but the DiT reads {joint_dim}-wide "
                        f"context; compute them with this base's own text encoder")
    if not pooled_dim:
        return embeds, embeds.new_zeros(1, 0)
    return embeds, sd["pooled_prompt_embeds"][:1].float()


@register
class StrSRRecipe(Recipe):
    name = "strsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "base": "zimage", "t1": 0.8, "lora_rank": 256, "lora_alpha": 256, "condition": "vlm",
        "semantic_encoder": "qwen3vl", "vlm_prompt": VLM_PROMPT, "cond_tokens": 4,
        "cond_hidden": 0, "disc_head_channels": 512, "lambda_lpips": 3.0, "lambda_gan": 0.1, "lambda_fdl": 0.002,
        "lambda_r1": 10.0, "r1_sigma": 0.005, "stage1_steps": 40000, "lpips_net": "vgg", "fdl_num_proj": 256,
        "fdl_patch": 5, "fdl_phase_weight": 1.0,
    }

    def __init__(self, cfg: dict, components: str, *, student_only: bool = False):
        super().__init__(cfg, components, student_only=student_only)
        c = self.cfg
        if c["semantic_encoder"] not in SEMANTIC_ENCODERS:
            raise UserError(f"strsr semantic_encoder must be qwen3vl (the paper's), qwen3vl_vision (its vision tower "
                            f"alone) or clip (a stand-in), got {c['semantic_encoder']!r}")
        if c["condition"] not in ("vlm", "text", "none"):
            raise UserError(f"strsr condition must be vlm, text (the paper's w/o VLM) or none (w/o emb), got {c['condition']!r}")
        if not 0.0 < float(c["t1"]) <= 1.0:
            raise UserError(f"strsr t1 must lie in (0, 1], got {c['t1']}")
        if c["base"] not in FLOW_BASES:
            raise UserError(f"strsr base must be one of {', '.join(FLOW_BASES)}, got {c['base']!r}")
        flow = FLOW_BASES[c["base"]]
        self.dit = C.build_dit(components, c["base"])
        self.codec = flow.make_codec(components, self.dit, self.scale)
        C.add_lora(self.dit, c["lora_rank"], c["lora_alpha"], flow.lora_targets(self.dit))
        joint, pooled = flow.condition_widths(self.dit)
        self.cond = None
        if c["condition"] == "vlm":
            if c["semantic_encoder"].startswith("qwen3vl"):   # one context token per token of the VLM
                tokens = "vision" if c["semantic_encoder"] == "qwen3vl_vision" else "text"
                vlm = C.build_vlm(components, c["vlm_prompt"], tokens)
                self.cond = AdaptiveCondition(vlm, 1, joint, pooled, c["cond_hidden"])
            else:
                enc = ClipImage(C.build_open_clip(components, "vit"))
                self.cond = AdaptiveCondition(enc, c["cond_tokens"], joint, pooled, c["cond_hidden"])
        fixed = text_condition(components, c["cond_tokens"], joint, pooled, c["init_seed"]) if c["condition"] == "text" \
            else (torch.zeros(1, c["cond_tokens"], joint), torch.zeros(1, pooled))
        self._students = [StrSRStudent(self.codec, flow(self.dit), self.cond, c["t1"], fixed,
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

    def extra_trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"disc.{n}": b for n, b in self.disc.spectral_state().items()} if self.disc is not None else {}

    def load_extra_trainable_state(self, sd: dict[str, torch.Tensor]) -> None:
        if self.disc is not None:
            for n, b in self.disc.spectral_state().items():
                if f"disc.{n}" in sd:
                    b.copy_(sd[f"disc.{n}"])

    def generator_loss(self, lr, hr, step):
        c = self.cfg
        x_pred = self.student().training_image(lr)
        l1 = 2 * (x_pred - hr).abs().mean()   # L1 of [-1, 1] pixels (the release's range) from [0, 1] ones
        lp = self.lpips(x_pred, hr).mean()
        with frozen_params(self.discriminator_parameters()), _eval_mode(self.disc):
            c_fake = self.disc(x_pred)
            with torch.no_grad():
                c_real = self.disc(hr)
        gan = torch.stack([losses.ragan_generator_loss(f, r) for f, r in zip(c_fake, c_real)]).sum()
        lam_fdl = c["lambda_fdl"] if step >= c["stage1_steps"] else 0.0
        out = {"l1": l1, "lpips": lp, "ragan_g": gan}
        total = l1 + c["lambda_lpips"] * lp + c["lambda_gan"] * gan
        if lam_fdl > 0:
            out["fdl"] = self.fdl(hr, x_pred)
            total = total + lam_fdl * out["fdl"]
        out["loss"] = total
        return out

    def discriminator_loss(self, lr, hr, step, r1_noise: torch.Tensor | None = None):
        """Eq. 9: L_D = RaGAN_D (clean reals) + lambda_R1 * approximated R1 (Eq. 8, the reals noised by a Gaussian
        of std r1_sigma in [-1, 1] pixel units, i.e. r1_sigma / 2 on the [0, 1] images here); each term summed
        over the logit maps."""
        with torch.no_grad():
            x_pred = self.student().training_image(lr)
        noise = torch.randn_like(hr) if r1_noise is None else r1_noise
        noisy = hr + 0.5 * self.cfg["r1_sigma"] * noise
        c_real = self.disc(hr)
        c_fake = self.disc(x_pred)
        c_noisy = self.disc(noisy)
        ragan = torch.stack([losses.ragan_discriminator_loss(r, f) for r, f in zip(c_real, c_fake)]).sum()
        r1 = torch.stack([losses.approx_r1_loss(a, b) for a, b in zip(c_real, c_noisy)]).sum()
        return {"loss": ragan + self.cfg["lambda_r1"] * r1, "ragan_d": ragan, "r1": r1}


class StrSRStudent(nn.Module):
    """One-step SR: lr [B,3,h,w] in [0,1] -> sr [B,3,4h,4w] in [0,1]."""

    def __init__(self, codec: LatentCodec | Flux2Codec, flow: nn.Module, cond: AdaptiveCondition | None, t1: float,
                 fixed: tuple[torch.Tensor, torch.Tensor], scale: int):
        super().__init__()
        self.codec, self.velocity, self.cond, self.t1, self.scale = codec, flow, cond, float(t1), scale
        self.register_buffer("fixed_tokens", fixed[0], persistent=False)
        self.register_buffer("fixed_pooled", fixed[1], persistent=False)

    def condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_VLM from the LR image at its own size (as StrSR's released code feeds Qwen3-VL), or the fixed one."""
        if self.cond is None:
            return self.fixed_tokens.expand(lr.shape[0], -1, -1), self.fixed_pooled.expand(lr.shape[0], -1)
        return self.cond(lr)

    def predict_latent(self, lr: torch.Tensor) -> torch.Tensor:
        """Eq. 6 then one Euler step from t1 to 0: z0_hat = z_t1 - t1 G(z_t1, t1, c)."""
        z_lr = self.codec.encode_lr(lr)
        tokens, pooled = self.condition(lr)
        return z_lr - self.t1 * self.velocity(z_lr, self.t1, tokens, pooled)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(self.predict_latent(lr))

    def training_image(self, lr: torch.Tensor) -> torch.Tensor:
        """x_pred as the losses read it: the decoding unclamped (the release clamps only for viewing), so pixels
        just outside the range keep their gradients."""
        return self.codec.decode(self.predict_latent(lr), clamp=False)
