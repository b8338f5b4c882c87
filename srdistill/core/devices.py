"""One check of a torch device name the user gave (--device, trainer.device), before any network is built."""

from __future__ import annotations

import torch

from srdistill.core.errors import UserError


def user_device(name: str, how_to_change: str) -> torch.device:
    """`name` as a torch.device that exists here; UserError in one sentence otherwise (a bad name, CUDA
    missing, or a cuda:N beyond the GPUs this process sees). `how_to_change` ends that sentence."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{name!r} is not a torch device name (e.g. cpu, cuda, cuda:1); {how_to_change}.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} was asked for but CUDA is not available here; {how_to_change}.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device {name!r} was asked for but this process sees {count} GPU(s) "
                            f"(cuda:0 to cuda:{count - 1}; CUDA_VISIBLE_DEVICES may hide others); {how_to_change}.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} was asked for but MPS is not available here; {how_to_change}.")
    return device
