"""Residual-shifting diffusion (ResShift) with SinSR's deterministic sampler, over any denoiser.

VPD-SR Eq. 1-5: the forward marginal q(x_t | x_0, y) = N(x_0 + eta_t (y - x_0), kappa^2 eta_t I)
shifts the residual e_0 = y - x_0 into the state; the deterministic reverse step (SinSR, Eq. 3-4)
is x_{t-1} = k_t x0_hat + m_t x_t + j_t y. ``x0_hat = f(x_t, y, t)`` is predicted by a network
(Eq. 5). The eta schedule is ResShift's: sqrt(eta_t) = sqrt(eta_1) * b0^beta_t with
beta_t = ((t-1)/(T-1))^p (T-1) and b0 = exp(log(eta_T / eta_1) / (2 (T-1))).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResShiftSchedule:
    """Hyper-parameters of ResShift's real-SR setting (used unchanged by SinSR and VPD-SR)."""

    steps: int = 15
    kappa: float = 2.0
    eta_1: float = 0.001
    eta_T: float = 0.999
    power: float = 0.3

    def etas(self) -> torch.Tensor:
        """eta_1..eta_T as a float64 tensor of length ``steps``."""
        T = self.steps
        if T == 1:
            return torch.tensor([self.eta_T], dtype=torch.float64, device="cpu")
        b0 = math.exp(math.log(self.eta_T / self.eta_1) / (2 * (T - 1)))
        t = torch.arange(1, T + 1, dtype=torch.float64, device="cpu")
        beta = ((t - 1) / (T - 1)) ** self.power * (T - 1)
        return (math.sqrt(self.eta_1) * b0 ** beta) ** 2


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
    """x0-predicting network f(x_t, y, t) around a diffusers ``UNet2DModel``.

    The state and the LR latent are concatenated on channels; as in ResShift the state is divided
    by its marginal std sqrt(kappa^2 eta_t + 1) before the network sees it.
    """

    def __init__(self, unet: nn.Module, schedule: ResShiftSchedule):
        super().__init__()
        self.unet = unet
        self.schedule = schedule
        self.register_buffer("etas", schedule.etas().float(), persistent=False)

    def forward(self, x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t``: 0-based step indices [B] (0 is eta_1, steps-1 is eta_T)."""
        scale = (self.schedule.kappa ** 2 * self.etas[t] + 1).rsqrt().view(-1, 1, 1, 1).to(x_t)
        inp = torch.cat([x_t * scale, y], dim=1)
        return self.unet(inp, t).sample


class ResShiftDiffusion(nn.Module):
    """ResShift's chain with SinSR's deterministic sampler around a ``ResShiftDenoiser``."""

    def __init__(self, denoiser: ResShiftDenoiser):
        super().__init__()
        self.denoiser = denoiser
        self.schedule = denoiser.schedule

    def prior(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_T = y + kappa sqrt(eta_T) eps (the start of the reverse chain)."""
        return y + self.schedule.kappa * math.sqrt(self.schedule.etas()[-1].item()) * noise

    def predict_x0(self, x_t: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        t = torch.full((x_t.shape[0],), step, dtype=torch.long, device=x_t.device)
        return self.denoiser(x_t, y, t)

    def sample(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The T-step deterministic sampling of SinSR (VPD-SR Eq. 4), from x_T = prior(y, noise)."""
        etas = self.schedule.etas().tolist()
        x = self.prior(y, noise)
        for step in range(self.schedule.steps - 1, -1, -1):
            x0_hat = self.predict_x0(x, y, step)
            if step == 0:
                return x0_hat
            k, m, j = sinsr_coefficients(etas[step - 1], etas[step])
            x = k * x0_hat + m * x + j * y
        return x
