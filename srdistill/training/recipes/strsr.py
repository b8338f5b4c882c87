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
from srdistill.training import losses
from srdistill.training.components.diffusers_models import build_dit
from srdistill.training.components.flow_dits import FLOW_BASES, Flux2Codec
from srdistill.training.components.latent_codec import LatentCodec
from srdistill.training.components.lora import add_lora, lora_parameters
from srdistill.training.components.open_clip_encoders import (
    build_open_clip,
    clip_embed_dim,
    clip_normalize,
)
from srdistill.training.inference_policy import InferencePolicy
from srdistill.training.components.perceptual import build_lpips, lpips_features
from srdistill.training.components.presets import is_preset
from srdistill.training.components.qwen_vl import build_vlm
from srdistill.training.components.roles import need
from srdistill.training.recipes.base import LPIPS_NET, Choice, Recipe, frozen_params


class ClipImage(nn.Module):
    """open_clip image embedding as a one-feature sequence [B, 1, D] (the stand-in semantic encoder)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.width = clip_embed_dim(clip)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(clip_normalize(self.clip, x01)).float()[:, None]


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
        self.pooled_head = nn.Sequential(_sn(nn.Linear(clip_embed_dim(clip), head_channels)), nn.LeakyReLU(0.2),
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
        final, stages = trunk.forward_intermediates(clip_normalize(self.clip, x01, resize=False))
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
    if is_preset(components):
        gen = torch.Generator().manual_seed(seed + 11)
        return torch.randn(1, tokens, joint_dim, generator=gen), torch.randn(1, pooled_dim, generator=gen)
    from safetensors.torch import load_file

    path = need(components, TEXT_CONDITION_FILE,
                   "the text condition (prompt_embeds, pooled_prompt_embeds of the base's text encoders)")
    sd = load_file(str(path))
    embeds = sd["prompt_embeds"][:1].float()
    if embeds.shape[-1] != joint_dim:
        raise UserError(f"{path}: prompt_embeds are {embeds.shape[-1]} wide, but the DiT reads {joint_dim}-wide "
                        f"context; compute them with this base's own text encoder")
    if not pooled_dim:
        return embeds, embeds.new_zeros(1, 0)
    return embeds, sd["pooled_prompt_embeds"][:1].float()


class StrSRRecipe(Recipe):
    name = "strsr"
    DEFAULTS: ClassVar[dict] = {
        "init_seed": 0, "base": "zimage", "t1": 0.8, "lora_rank": 256, "lora_alpha": 256, "condition": "vlm",
        "semantic_encoder": "qwen3vl", "vlm_prompt": VLM_PROMPT, "cond_tokens": 4,
        "cond_hidden": 0, "disc_head_channels": 512, "lambda_lpips": 3.0, "lambda_gan": 0.1, "lambda_fdl": 0.002,
        "lambda_r1": 10.0, "r1_sigma": 0.005, "stage1_steps": 40000, "lpips_net": "vgg", "fdl_num_proj": 256,
        "fdl_patch": 5, "fdl_phase_weight": 1.0,
    }
    # the paper's choice first, then its ablations or named stand-ins
    CHOICES: ClassVar[dict[str, Choice]] = {
        "condition": Choice(lambda: ["vlm", "text", "none"], "vlm, text (StrSR's w/o VLM) or none (w/o emb)"),
        "semantic_encoder": Choice(lambda: ["qwen3vl", "qwen3vl_vision", "clip"],
                                   "qwen3vl (the paper's), qwen3vl_vision (its vision tower alone) or clip (a stand-in)"),
        "base": Choice(lambda: list(FLOW_BASES),
                       "zimage (the paper's Z-Image-Turbo), flux2 (its FLUX.2 [klein] 4B) or sd3 (a stand-in)"),
        "lpips_net": LPIPS_NET,
    }
    PAPER = "StrSR"
    POSITION = 1
    # The release's test_zimage.sh / test_flux.sh: --tile 1024 --overlap 64 on the x4 bicubic image (infer_tiled).
    INFERENCE = InferencePolicy(1024 // 4, 64 // 4, "crop", False,
                                "StrSR release (test_zimage.sh, test_flux.sh: --tile 1024 --overlap 64 on the x4 "
                                "bicubic image, no VAE tiling): 256 LR px tiles with 16 LR px of context; the release "
                                "blends overlapping tiles with a Hann window, here each tile keeps its own area")
    PAPER_COUNTS: ClassVar[list[tuple[str, str]]] = [
        ("base generator 6000 M (Z-Image-Turbo; also FLUX.2 [klein] 4B)", "Sec. 4, Implementation Details")]
    # smaller than the paper's only where they cost CPU time: ranks, LPIPS backbone, FDL slices, stage length
    TEST_SETTINGS: ClassVar[dict] = {"lora_rank": 4, "lora_alpha": 4, "lpips_net": "alex", "fdl_num_proj": 16,
                                     "stage1_steps": 1}

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
        self.dit = build_dit(components, c["base"])
        self.codec = flow.make_codec(components, self.dit, self.scale)
        add_lora(self.dit, c["lora_rank"], c["lora_alpha"], flow.lora_targets(self.dit))
        joint, pooled = flow.condition_widths(self.dit)
        self.cond = None
        if c["condition"] == "vlm":
            if c["semantic_encoder"].startswith("qwen3vl"):   # one context token per token of the VLM
                tokens = "vision" if c["semantic_encoder"] == "qwen3vl_vision" else "text"
                vlm = build_vlm(components, c["vlm_prompt"], tokens)
                self.cond = AdaptiveCondition(vlm, 1, joint, pooled, c["cond_hidden"])
            else:
                enc = ClipImage(build_open_clip(components, "vit"))
                self.cond = AdaptiveCondition(enc, c["cond_tokens"], joint, pooled, c["cond_hidden"])
        fixed = text_condition(components, c["cond_tokens"], joint, pooled, c["init_seed"]) if c["condition"] == "text" \
            else (torch.zeros(1, c["cond_tokens"], joint), torch.zeros(1, pooled))
        self._students = [StrSRStudent(self.codec, flow(self.dit), self.cond, c["t1"], fixed,
                                       self.scale)]
        self.disc = self.lpips = None
        if not student_only:
            self.disc = ConvNeXtDiscriminator(build_open_clip(components, "convnext"), c["disc_head_channels"])
            self.lpips = build_lpips(components, c["lpips_net"])
        self._fdl_proj: dict[tuple[int, int, int], torch.Tensor] = {}

    def generator_parameters(self):
        params = lora_parameters(self.dit)
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
        fh = lpips_features(self.lpips, x_hr)
        fp = lpips_features(self.lpips, x_pred)
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
