"""Small fixed inputs for the recipe tests."""

from __future__ import annotations

import torch


def lr_hr_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 8x8 LR / 32x32 HR pairs in [0, 1], drawn from a seeded generator (independent of each other)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's scaled-linear DDPM schedule, written out from its definition (not read from diffusers)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()
