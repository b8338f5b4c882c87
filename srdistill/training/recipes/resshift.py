"""ResShift (residual shifting) with SinSR's deterministic sampler: the teacher of VPD-SR and SinSR.

VPD-SR Eq. 1: q(x_t | x_0, y) = N(x_0 + eta_t (y - x_0), kappa^2 eta_t I); the reverse chain starts at
x_T = y + kappa sqrt(eta_T) eps and SinSR's deterministic step (Eq. 3-4) is x_{t-1} = k_t x0_hat + m_t x_t
+ j_t y, with x0_hat = f(x_t, y, t) (Eq. 5). Everything below follows ResShift's released real-SR x4 model
(configs/realsr_swinunet_realesrgan256.yaml, checkpoint resshift_realsrx4_s15_v1.pth, the one SinSR
distils and VPD-SR "follows SinSR" in using):

- schedule ``exponential``: sqrt(eta_t) = sqrt(eta_1) * b^(((t-1)/(T-1))^p (T-1)), b = (sqrt(eta_T) /
  sqrt(eta_1))^(1/(T-1)), with T = 15, p = 0.3, kappa = 2, sqrt(eta_T) = etas_end = 0.99 and sqrt(eta_1) =
  min(min_noise_level / kappa, min_noise_level, sqrt(0.001)) = 0.02 for min_noise_level = 0.04;
- the chain lives in the VQ-f4 latent (scale factor 1.0): y is the latent of the bicubic x4 upsampled LR
  image in [-1, 1] (not clamped), x_0 the latent of the HR image in [-1, 1];
- input normalisation (``normalize_input`` with ``latent_flag``): the network sees x_t / sqrt(kappa^2 eta_t + 1);
- the network's time input is the 0-based step index (0 is eta_1, T-1 is eta_T), and its condition ``lq``
  is the LR image itself in [-1, 1], concatenated to the state (same size as the f4 latent at x4);
- no clipping of x0_hat in latent space; decoding snaps to the VQ codebook.
"""
from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srdistill.core.errors import UserError
from srdistill.core.fetch.hub import role_dir
from srdistill.training.nets.resshift_unet import ResShiftUNet, SwinUNetConfig
from srdistill.training.nets.vqgan import VQAutoencoder, VQConfig

# Official file names, looked for in FOLDER/resshift/ of a components folder.
RESSHIFT_DIR = "resshift"
UNET_FILE = "resshift_realsrx4_s15_v1.pth"
VQ_FILE = "autoencoder_vq_f4.pth"


@dataclass(frozen=True)
class ResShiftSchedule:
    """ResShift's real-SR x4 schedule (used unchanged by SinSR and VPD-SR)."""

    steps: int = 15
    kappa: float = 2.0
    sqrt_eta_1: float = 0.02
    sqrt_eta_T: float = 0.99
    power: float = 0.3

    def __post_init__(self):
        if self.steps < 2:
            raise UserError(f"ResShift needs at least 2 steps, got resshift_steps={self.steps}")

    def sqrt_etas(self) -> torch.Tensor:
        """sqrt(eta_1)..sqrt(eta_T) as float64 [steps], as ``get_named_eta_schedule('exponential')`` computes them."""
        T = self.steps
        growth = math.exp(math.log(self.sqrt_eta_T / self.sqrt_eta_1) / (T - 1))
        exponent = torch.linspace(0, 1, T, dtype=torch.float64, device="cpu") ** self.power * (T - 1)
        return growth ** exponent * self.sqrt_eta_1

    def etas(self) -> torch.Tensor:
        return self.sqrt_etas() ** 2


def forward_marginal(x0: torch.Tensor, y: torch.Tensor, eta_t: torch.Tensor, kappa: float,
                     noise: torch.Tensor) -> torch.Tensor:
    """VPD-SR Eq. 1: x_t = x_0 + eta_t (y - x_0) + kappa sqrt(eta_t) eps; ``eta_t`` per sample [B]."""
    e = eta_t.view(-1, *([1] * (x0.dim() - 1))).to(x0)
    return x0 + e * (y - x0) + kappa * e.sqrt() * noise


def sinsr_coefficients(eta_prev: float, eta_t: float) -> tuple[float, float, float]:
    """VPD-SR Eq. 3 (SinSR): (k_t, m_t, j_t) with m_t = sqrt(eta_{t-1}/eta_t),
    j_t = eta_{t-1} - sqrt(eta_{t-1} eta_t), k_t = 1 - m_t - j_t."""
    m = math.sqrt(eta_prev / eta_t)
    j = eta_prev - math.sqrt(eta_prev * eta_t)
    return 1.0 - m - j, m, j


class ResShiftDenoiser(nn.Module):
    """f(x_t, lq, t): ResShift's input normalisation around its Swin-UNet (``ResShiftUNet``)."""

    def __init__(self, net: nn.Module, schedule: ResShiftSchedule):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.register_buffer("etas", schedule.etas().float(), persistent=False)

    def forward(self, x_t: torch.Tensor, lq: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t``: 0-based step indices [B] (0 is eta_1, steps-1 is eta_T); ``lq`` the network's condition."""
        std = (self.schedule.kappa ** 2 * self.etas[t] + 1).sqrt().view(-1, 1, 1, 1).to(x_t)
        return self.net(x_t / std, t, lq)


class ResShiftDiffusion(nn.Module):
    """ResShift's chain with SinSR's deterministic sampler around a ``ResShiftDenoiser``."""

    def __init__(self, denoiser: ResShiftDenoiser):
        super().__init__()
        self.denoiser = denoiser
        self.schedule = denoiser.schedule

    def prior(self, z_y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_T = y + kappa sqrt(eta_T) eps (the start of the reverse chain)."""
        return z_y + self.schedule.kappa * float(self.schedule.sqrt_etas()[-1]) * noise

    def predict_x0(self, x_t: torch.Tensor, lq: torch.Tensor, step: int) -> torch.Tensor:
        t = torch.full((x_t.shape[0],), step, dtype=torch.long, device=x_t.device)
        return self.denoiser(x_t, lq, t)

    def sample(self, z_y: torch.Tensor, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The T-step deterministic sampling of SinSR (VPD-SR Eq. 4) from x_T = prior(z_y, noise); returns x_0."""
        etas = self.schedule.etas().tolist()
        x = self.prior(z_y, noise)
        for step in range(self.schedule.steps - 1, 0, -1):
            k, m, j = sinsr_coefficients(etas[step - 1], etas[step])
            x = k * self.predict_x0(x, lq, step) + m * x + j * z_y
        return self.predict_x0(x, lq, 0)


def float32(x: torch.Tensor):
    """Run the block in float32 whatever autocast the caller set (bf16 rounding moves the VQ codebook argmin over
    8192 codes and the teacher's 15-step targets away from what fp32 evaluation computes)."""
    if not torch.amp.is_autocast_available(x.device.type):   # e.g. meta tensors: no autocast to turn off
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


class ResShiftCodec(nn.Module):
    """Images in [0, 1] <-> the VQ-f4 latent, as ResShift feeds its chain (see the module docstring); always in
    float32, under any autocast."""

    def __init__(self, vq: VQAutoencoder, scale: int = 4):
        super().__init__()
        self.vq = vq
        self.scale = scale

    @staticmethod
    def lq(lr01: torch.Tensor) -> torch.Tensor:
        """The network's condition: the LR image in [-1, 1]."""
        return lr01 * 2 - 1

    def encode(self, x01: torch.Tensor) -> torch.Tensor:
        with float32(x01):
            return self.vq.encode(x01.float() * 2 - 1)

    def encode_lr(self, lr01: torch.Tensor) -> torch.Tensor:
        """y = E(bicubic x4 of the LR in [-1, 1]); no clamp after the bicubic, as the official code."""
        with float32(lr01):
            return self.vq.encode(F.interpolate(self.lq(lr01.float()), scale_factor=self.scale, mode="bicubic"))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with float32(z):
            return (self.vq.decode(z.float()).clamp(-1, 1) + 1) / 2


class ResShiftTeacher(nn.Module):
    """The released ResShift model: ``codec`` (VQ-f4) and ``diffusion`` (Swin-UNet, schedule, sampler).

    forward(lr, noise) -> the T-step SR image in [0, 1]; ``noise`` has the latent's shape
    [B, 3, H_lr, W_lr] (LR sides must be multiples of ``size_multiple``).
    """

    def __init__(self, codec: ResShiftCodec, diffusion: ResShiftDiffusion):
        super().__init__()
        self.codec, self.diffusion = codec, diffusion

    @property
    def size_multiple(self) -> int:
        return self.diffusion.denoiser.net.cfg.size_multiple

    def forward(self, lr: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        z = self.diffusion.sample(self.codec.encode_lr(lr), self.codec.lq(lr), noise)
        return self.codec.decode(z)


# -- building and loading ------------------------------------------------------------------------


def _missing(components: str, path: Path) -> UserError:
    from srdistill.training.components.roles import MissingWeights

    return MissingWeights(
        f"components folder {components} is missing ResShift's released {path.name} (looked for {path}); "
        f"put the official file from github.com/zsyOAOA/ResShift/releases there or run with --components tiny")


def load_official_state(module: nn.Module, path: Path, components: str) -> None:
    """Load an official ResShift/LDM checkpoint into ``module`` by key (``module.``/``_orig_mod.`` prefixes
    of DDP/compiled saves are dropped). The Swin index and mask buffers are derived from the configuration,
    so a file without them still loads; every parameter must be there with its official shape."""
    if not path.is_file():
        raise _missing(components, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = module.state_dict()
    derived = {k for k in own if k.endswith(("attn_mask", "relative_position_index"))}
    missing = sorted(set(own) - set(state) - derived)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        first = (missing + unexpected + wrong)[0]
        raise UserError(f"{path} does not match the official configuration: {len(missing)} missing, "
                        f"{len(unexpected)} unexpected and {len(wrong)} mis-shaped tensors (first: {first})")
    module.load_state_dict(state, strict=False)


def _frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def build_resshift_net(components: str, latent_channels: int = 3) -> ResShiftUNet:
    """ResShift's Swin-UNet, frozen: ``tiny`` (tiny config), ``sd21`` (official shape, random weights) or
    a folder (FOLDER/resshift/resshift_realsrx4_s15_v1.pth). ``latent_channels`` is also the condition's
    width; the released network has 3 (the VQ-f4 latent beside the RGB LR image)."""
    from srdistill.training.components.presets import PRESETS

    if components == "tiny":
        return _frozen(ResShiftUNet(SwinUNetConfig.tiny(latent_channels, latent_channels)))
    official = SwinUNetConfig.official()
    if latent_channels != official.latent_channels:
        cfg = SwinUNetConfig(latent_channels=latent_channels, lq_channels=latent_channels, out_channels=latent_channels)
        if components in PRESETS:
            return _frozen(ResShiftUNet(cfg))
        raise UserError(f"the released ResShift network works on the 3-channel VQ-f4 latent, "
                        f"not a {latent_channels}-channel one, so {components} cannot provide it")
    net = ResShiftUNet(official)
    if components not in PRESETS:
        load_official_state(net, role_dir(components, RESSHIFT_DIR) / UNET_FILE, components)
    return _frozen(net)


def build_resshift_vq(components: str) -> VQAutoencoder:
    """The VQ-f4 autoencoder, frozen (tiny / official shape / FOLDER/resshift/autoencoder_vq_f4.pth)."""
    from srdistill.training.components.presets import PRESETS

    if components == "tiny":
        return _frozen(VQAutoencoder(VQConfig.tiny()))
    vq = VQAutoencoder(VQConfig.official())
    if components not in PRESETS:
        load_official_state(vq, role_dir(components, RESSHIFT_DIR) / VQ_FILE, components)
    return _frozen(vq)


def build_resshift(components: str, schedule: ResShiftSchedule | None = None, scale: int = 4) -> ResShiftTeacher:
    """The ResShift teacher (network, VQ-f4 codec, schedule), frozen, from ``components``."""
    schedule = schedule or ResShiftSchedule()
    denoiser = ResShiftDenoiser(build_resshift_net(components), schedule)
    return ResShiftTeacher(ResShiftCodec(build_resshift_vq(components), scale), ResShiftDiffusion(denoiser))
