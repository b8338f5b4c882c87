"""Memory and speed switches of the trainer (TrainerConfig's last fields), resolved per device and applied once.

Every switch leaves the arithmetic of a step unchanged up to floating-point tolerance
(tests/test_training_perf.py checks each on the CPU); `None` means "auto": on where it pays (CUDA), off on the
CPU where it would only cost time.

- grad_checkpointing: activation checkpointing in every diffusers model of the recipe (the networks that
  gradients flow through: the student's UNet/DiT, the VAE decoder, the discriminator's UNet) — recomputes
  block activations during backward instead of keeping them.
- bf16: autocast to bfloat16 (TrainerConfig.bf16, applied by the trainer).
- tf32: TF32 tensor cores for fp32 matmuls and convolutions (CUDA only; a no-op elsewhere).
- channels_last: NHWC weights for the recipe's parts where convolutions hold most of the parameters.
- fused_adamw: AdamW's fused kernel, only where torch has one for the device.
- pin_memory: page-locked host batches and non-blocking host-to-device copies (CUDA only).
- compile_student: torch.compile of the student's trainable backbone (off by default: compiling costs
  minutes before the first step).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn

from srdistill.core.errors import UserError

SWITCHES = ("bf16", "grad_checkpointing", "tf32", "channels_last", "fused_adamw", "pin_memory", "compile_student")


class GpuOutOfMemory(UserError):
    """A step did not fit in the accelerator's memory."""


@dataclass(frozen=True)
class Switches:
    """The resolved switches of one run (no `None` left)."""

    bf16: bool
    grad_checkpointing: bool
    tf32: bool
    channels_last: bool
    fused_adamw: bool
    pin_memory: bool
    compile_student: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fused_adamw_supported(device: torch.device) -> bool:
    """Whether torch has a fused AdamW kernel for this device type (CUDA always; the CPU from torch 2.4)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # older torch: CUDA only
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def resolve(cfg, device: torch.device) -> Switches:
    """TrainerConfig -> Switches for `device` (auto values filled in, impossible ones turned off)."""
    cuda = device.type == "cuda"

    def auto(value):
        return cuda if value is None else bool(value)

    return Switches(
        bf16=auto(cfg.bf16),
        grad_checkpointing=auto(cfg.grad_checkpointing),
        tf32=bool(cfg.tf32) and cuda,
        channels_last=auto(cfg.channels_last),
        fused_adamw=auto(cfg.fused_adamw) and fused_adamw_supported(device),
        pin_memory=bool(cfg.pin_memory) and cuda,
        compile_student=bool(cfg.compile_student),
    )


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _block_state(block) -> tuple[list, list]:
    """What a recipe may switch on a network between forward and backward: which parameters require grad
    (frozen_params, the trainer's phases) and which peft adapters are active (CTSR's teacher = adapters off)."""
    if not isinstance(block, nn.Module):
        return [], []
    grads = [(p, p.requires_grad) for p in block.parameters()]
    adapters = [(m, m._disable_adapters, copy.copy(m._active_adapter)) for m in block.modules()
                if hasattr(m, "_disable_adapters") and hasattr(m, "_active_adapter")]
    return grads, adapters


@contextlib.contextmanager
def _restored(state: tuple[list, list]):
    grads, adapters = state
    now = _block_state_of(grads, adapters)
    _set_state(grads, adapters)
    try:
        yield
    finally:
        _set_state(*now)


def _block_state_of(grads, adapters) -> tuple[list, list]:
    return ([(p, p.requires_grad) for p, _ in grads],
            [(m, m._disable_adapters, copy.copy(m._active_adapter)) for m, _, _ in adapters])


def _set_state(grads, adapters) -> None:
    for p, flag in grads:
        p.requires_grad_(flag)
    for m, disabled, active in adapters:
        m._disable_adapters, m._active_adapter = disabled, active


def state_preserving_checkpoint(block, *args):
    """Non-reentrant activation checkpointing whose recomputation sees the block as its forward did.

    Without this, a recipe that freezes parameters or switches LoRA adapters for one forward call (and
    restores them before backward) would be recomputed in a different state: wrong or failing gradients."""
    state = _block_state(block)
    return torch.utils.checkpoint.checkpoint(block.__call__ if isinstance(block, nn.Module) else block, *args,
                                             use_reentrant=False,
                                             context_fn=lambda: (contextlib.nullcontext(), _restored(state)))


def enable_checkpointing(module: nn.Module) -> list[str]:
    """Turn on activation checkpointing in every diffusers model inside `module`; returns their names."""
    from diffusers import ModelMixin

    done = []
    for name, m in module.named_modules():
        if isinstance(m, ModelMixin) and m._supports_gradient_checkpointing:
            m.enable_gradient_checkpointing(state_preserving_checkpoint)
            done.append(name)
    return done


def conv_dominated(module: nn.Module) -> bool:
    """Whether convolution weights hold at least half of the module's parameters."""
    total = sum(p.numel() for p in module.parameters())
    conv = sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))
    return total > 0 and 2 * conv >= total


def to_channels_last(recipe: nn.Module) -> list[str]:
    """NHWC memory format for each top-level part of the recipe that is conv-dominated; returns their names."""
    done = []
    for name, child in recipe.named_children():
        if conv_dominated(child):
            child.to(memory_format=torch.channels_last)
            done.append(name)
    return done


def student_backbone(recipe) -> nn.Module:
    """The module of the student that holds most of the generator's trainable parameters (what compile wraps)."""
    trainable = {id(p) for p in recipe.generator_parameters()}
    best, best_n = recipe.student(), -1
    for m in recipe.student().modules():
        if m is recipe.student():
            continue
        n = sum(p.numel() for p in m.parameters() if id(p) in trainable)
        # ties go to the innermost (pre-order: later = deeper), the network that is actually called
        if n >= best_n:
            best, best_n = m, n
    return best


def compile_student(recipe, **compile_kwargs) -> nn.Module:
    """torch.compile the student's trainable backbone in place (nn.Module.compile); returns it."""
    backbone = student_backbone(recipe)
    if getattr(backbone, "_compiled_call_impl", None) is None:   # a second Trainer on the same recipe: keep the compiled one
        backbone.compile(**compile_kwargs)
    return backbone


def adamw(params: list[nn.Parameter], *, fused: bool, **kwargs) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, fused=True, **kwargs) if fused else torch.optim.AdamW(params, **kwargs)


def to_device(t: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    """Host tensor -> device; through page-locked memory and a non-blocking copy when `pin`."""
    if pin and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=pin)


def apply(recipe, cfg, device: torch.device) -> tuple[Switches, dict]:
    """Resolve and apply every switch that acts on the model; returns the switches and what each touched."""
    sw = resolve(cfg, device)
    if device.type == "cuda":
        set_tf32(sw.tf32)
    touched = {"grad_checkpointing": enable_checkpointing(recipe) if sw.grad_checkpointing else [],
               "channels_last": to_channels_last(recipe) if sw.channels_last else []}
    if sw.compile_student:
        touched["compile_student"] = [type(compile_student(recipe)).__name__]
    return sw, touched


def helpful_switches(sw: Switches) -> list[str]:
    """The memory-saving settings not yet in use, as `--set` arguments."""
    out = []
    if not sw.grad_checkpointing:
        out.append("trainer.grad_checkpointing=true")
    if not sw.bf16:
        out.append("trainer.bf16=true")
    return out


def oom_message(recipe: str, batch: int, crop: int, grad_accum: int, sw: Switches) -> str:
    """One sentence naming the recipe, batch and resolution, and what would make the step fit."""
    smaller = max(1, batch // 2)
    fixes = helpful_switches(sw) + [f"trainer.batch_size={smaller} with trainer.grad_accum={grad_accum * batch // smaller}"
                                    " (same samples per step)"]
    size = f"{crop}x{crop} HR crops" if crop else "whole-sample HR images"
    return (f"recipe {recipe} ran out of accelerator memory at batch {batch} per micro-batch and {size}; "
            f"the last checkpoint is intact, re-run with --set " + ", --set ".join(fixes) + ".")
