"""The Recipe contract (the abstract ``Recipe`` below) and the one-step epsilon student D3SR and CTSR share.

A recipe owns every role of one paper's distillation (frozen bases, LoRA / heads, teachers, discriminator) and
exposes generator/discriminator losses for the trainer, the one-step student for export, and the trainable
state for checkpoints. Frozen bases are rebuilt identically from ``components`` and a seed, so the student's
weights plus ``export_config()`` are enough to rebuild the student. Built with ``student_only=True`` a recipe
builds the student's roles alone (inference: no teacher, discriminator or loss network).
"""
from __future__ import annotations

import abc
import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from srdistill.core.errors import UserError
from srdistill.training import losses
from srdistill.training.components.latent_codec import LatentCodec
from srdistill.training.inference_policy import InferencePolicy

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Choice:
    """A recipe setting that names one thing of a fixed set: its allowed values (computed when a value is checked)
    and how to say them in an error."""

    allowed: Callable[[], list[str]]
    described: str


# the two LPIPS backbones srdistill.training.components.perceptual.build_lpips loads from a components folder
LPIPS_NET = Choice(lambda: ["vgg", "alex"], "vgg or alex")


class Recipe(nn.Module, metaclass=abc.ABCMeta):
    """Base class: subclasses declare what the registry (srdistill.training.recipes.registry) and the generic tests
    read, and build their roles in ``__init__``:

    - ``name``: the recipe's name (``train --recipe NAME``; its YAML is ``NAME.yaml`` beside the module);
    - ``DEFAULTS``: every setting with the paper's value (a run's ``recipe:`` section may set only these);
    - ``CHOICES``: the settings that name one of a fixed set, each a ``Choice`` (checked before any work);
    - ``PAPER``: its paper as the reported numbers name it (the `paper` column of evaluate/data/reported.csv);
    - ``POSITION``: its place in the docs' tables (the recipe table, the parameter counts), 1 = first;
    - ``PAPER_COUNTS``: every parameter count its paper states, (what, where it says it), for the counts table;
    - ``TEST_SETTINGS``: small overrides that build it fast on the ``tiny`` preset (the generic tests use them);
    - ``INFERENCE``: how its student runs on images of any size (tiles, overlap, VAE tiling), per paper or release;
    - ``PRECISION``: which networks run under the trainer's bf16 autocast ("autocast") and which always in "float32"
      (default: every network under autocast).
    """

    name: ClassVar[str]
    DEFAULTS: ClassVar[dict] = {}
    CHOICES: ClassVar[dict[str, Choice]] = {}
    PAPER: ClassVar[str]
    POSITION: ClassVar[int]
    PAPER_COUNTS: ClassVar[list[tuple[str, str]]] = []
    TEST_SETTINGS: ClassVar[dict] = {}
    INFERENCE: ClassVar[InferencePolicy]
    PRECISION: ClassVar[dict[str, str]] = {"every network": "autocast"}
    scale: int = 4
    # The one-step student(s): kept out of the module tree (they share the recipe's modules, so registering
    # them would duplicate parameter names) but moved with it by ``_apply``; ``student()`` returns the first.
    _students: list[nn.Module]

    def __init__(self, cfg: dict, components: str, *, student_only: bool = False):
        super().__init__()
        unknown = sorted(set(cfg) - set(self.DEFAULTS))
        if unknown:
            raise UserError(f"recipe {self.name} has no setting {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(self.DEFAULTS))})")
        self.cfg = {**self.DEFAULTS, **cfg}
        self.components = components
        self.student_only = student_only
        self._students = []
        # Where the run departs from the paper because a component is missing (said in the log and config.json).
        self.substitutions: list[str] = []

    # -- contract -------------------------------------------------------------------------
    @abc.abstractmethod
    def generator_parameters(self) -> list[nn.Parameter]: ...

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return []

    @abc.abstractmethod
    def generator_loss(self, lr: torch.Tensor, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]: ...

    def discriminator_loss(self, lr: torch.Tensor, hr: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return {}

    def student(self) -> nn.Module:
        return self._students[0]

    def extra_trainable_state(self) -> dict[str, torch.Tensor]:
        """Non-optimised state a resume needs (e.g. a frozen snapshot); empty by default."""
        return {}

    def load_extra_trainable_state(self, sd: dict[str, torch.Tensor]) -> None:
        """Counterpart of ``extra_trainable_state``."""

    def _named_trainable(self, student: bool = False) -> dict[str, nn.Parameter]:
        wanted = {id(p) for p in self.generator_parameters() + ([] if student else self.discriminator_parameters())}
        return {n: p for n, p in self.named_parameters(remove_duplicate=False) if id(p) in wanted}

    def trainable_state_dict(self, student: bool = False) -> dict[str, torch.Tensor]:
        """Everything a resume needs; ``student=True``: only what the student needs (no discriminator)."""
        sd = {n: p.detach().clone() for n, p in self._named_trainable(student).items()}
        sd.update({f"extra.{k}": v.detach().clone() for k, v in self.extra_trainable_state().items()})
        return sd

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor], student: bool = False) -> None:
        params = self._named_trainable(student)
        extra = {k[len("extra."):]: v for k, v in sd.items() if k.startswith("extra.")}
        plain = {k: v for k, v in sd.items() if not k.startswith("extra.")}
        missing = sorted(set(params) - set(plain))
        unexpected = sorted(set(plain) - set(params))
        if missing or unexpected:
            raise UserError(f"checkpoint does not match recipe {self.name}: "
                            f"{len(missing)} missing and {len(unexpected)} unexpected tensors "
                            f"(first: {(missing + unexpected)[0]})")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(plain[n].to(p))
        self.load_extra_trainable_state(extra)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for s in self._students:
            s._apply(fn, *args, **kwargs)
        return self

    def export_config(self) -> dict:
        return {"recipe": self.name, "components": self.components, "cfg": copy.deepcopy(self.cfg), "scale": self.scale,
                "inference": self.INFERENCE.to_dict()}

    def substitute(self, note: str, loud: bool = True) -> None:
        """Record (and, when ``loud``, log as a warning) a departure from the paper forced by missing components."""
        if loud:
            log.warning("%s", note)
        self.substitutions.append(note)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters of the generator and the discriminator (README's recipe table)."""
        return {"generator": sum(p.numel() for p in self.generator_parameters()),
                "discriminator": sum(p.numel() for p in self.discriminator_parameters())}


@contextlib.contextmanager
def frozen_params(params: list[nn.Parameter]):
    """Turn requires_grad off for ``params`` for the duration: they stay out of the autograd graph of a forward
    pass (gradients still reach the input). The trainer freezes the other side of the game with it too."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


class OneStepEpsStudent(nn.Module):
    """The OSEDiff-style one-step student D3SR trains and CTSR extends (D3SR Eq. 1):
    lr -> z_L -> eps_theta(z_L; T_L) -> z_hat_H -> sr in [0,1]."""

    def __init__(self, codec: LatentCodec, unet: nn.Module, context: torch.Tensor, alphas_cumprod: torch.Tensor,
                 t_l: int):
        super().__init__()
        self.codec, self.unet, self.t_l = codec, unet, int(t_l)
        self.register_buffer("context", context, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def eps(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ctx = self.context.expand(z.shape[0], -1, -1).to(z.dtype)
        return self.unet(z, t, encoder_hidden_states=ctx).sample

    def predict_latent(self, lr: torch.Tensor) -> torch.Tensor:
        z_l = self.codec.encode_lr(lr)
        t = torch.full((lr.shape[0],), self.t_l, device=lr.device, dtype=torch.long)
        return losses.one_step_x0(z_l, self.eps(z_l, t), self.alphas_cumprod[self.t_l])

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(self.predict_latent(lr))
