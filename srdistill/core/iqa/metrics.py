"""Quality metrics, every one through pyiqa by its pyiqa name; built lazily, failures reported not raised.

Which options each metric is built with comes from the evaluation protocol (evaluate/protocol.py); the options
are part of a result row's identity (`metric_version`). METRIC_OPTS are the default protocol's (`srdistill`):
`psnry` and `ssim` on the Y channel of ITU-R BT.601 YCbCr (BasicSR style), no border cropped.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from srdistill.core.iqa import weights

from srdistill.core.errors import UserError

DEFAULT_METRICS = ("psnry", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa", "clipiqa", "qalign", "qualiclip", "fid")
# Options passed to pyiqa.create_metric, part of the metric's identity in the results.
METRIC_OPTS: dict[str, dict] = {"psnry": {"color_space": "ycbcr", "crop_border": 0},
                                 "ssim": {"color_space": "ycbcr", "crop_border": 0}}
DATASET_LEVEL = ("fid",)  # computed once per (method, dataset) over folders, stored with image "*"
DATASET_IMAGE = "*"


class MetricUnavailable(Exception):
    """The metric cannot be built here; the message says why (missing weights, missing package)."""


@dataclass(frozen=True)
class MetricInfo:
    name: str
    mode: str  # "FR" (needs the HR), "NR", or "dataset" (folder-level, e.g. fid)
    lower_better: bool


def pyiqa_version() -> str:
    import pyiqa

    return getattr(pyiqa, "__version__", "unknown")


def metric_info(name: str) -> MetricInfo:
    """Mode and direction from pyiqa's registry without building the network; UserError for an unknown name."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    if name not in DEFAULT_CONFIGS:
        raise UserError(f"unknown metric {name!r}; metrics are pyiqa names (see `python -c \"import pyiqa; print(pyiqa.list_models())\"`).")
    cfg = DEFAULT_CONFIGS[name]
    mode = "dataset" if name in DATASET_LEVEL else cfg.get("metric_mode", "NR")
    return MetricInfo(name, mode, bool(cfg.get("lower_better", False)))


# What pyiqa.create_metric itself takes; everything else goes to the metric's network class.
_CREATE_OPTIONS = {"as_loss": False, "loss_weight": None, "loss_reduction": "mean", "seed": 123,
                   "check_input_range": True}


def _accepted_options(name: str) -> tuple[str, dict[str, object] | None]:
    """(network class name, {option: default}) for a pyiqa metric, or None for "any" when the class passes unknown
    options on (**kwargs) to something whose signature cannot be read; read from signatures, nothing is built."""
    import inspect
    import sys

    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    arch = DEFAULT_CONFIGS[name]["metric_opts"]["type"]
    try:
        import pyiqa.archs as archs

        archs._lazy_import_arch(arch)  # pyiqa imports a network's module on first use
        cls = ARCH_REGISTRY.get(arch)
    except (AttributeError, KeyError, ImportError):
        return arch, None
    found: dict[str, object] = {}
    for fn in (cls.__init__, getattr(sys.modules[cls.__module__], cls.__name__.lower(), None)):
        if not callable(fn):
            return arch, None
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        found.update({p.name: p.default for p in params
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty})
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return arch, {**_CREATE_OPTIONS, **found}
    return arch, None


@functools.lru_cache(maxsize=None)
def _named_in_pyiqa(word: str) -> bool:
    """Whether pyiqa's network code spells `word` as a string literal (a mode an option may take)."""
    from pathlib import Path

    import pyiqa.archs

    literals = (f"'{word}'", f'"{word}"')
    return any(any(lit in path.read_text(errors="replace") for lit in literals)
               for path in Path(pyiqa.archs.__file__).parent.glob("*.py"))


def check_metric_options(name: str, options: dict, where: str) -> None:
    """One sentence, before any work, for an option the metric does not take or a value that is not a number where
    the default is one, unless pyiqa's network code names that value as a mode (FID's dims='logits_unbiased');
    boolean options often take a name too (pretrained='koniq10k'), so those are left to pyiqa."""
    arch, accepted = _accepted_options(name)
    if accepted is None:
        return
    for key, value in options.items():
        if key not in accepted:
            known = ", ".join(k for k in accepted if k not in _CREATE_OPTIONS)
            raise UserError(f"{where}: pyiqa's {arch} takes no option {key!r} (its options: {known or 'none'}).")
        default = accepted[key]
        if (isinstance(default, (int, float)) and not isinstance(default, bool)
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
                and not (isinstance(value, str) and _named_in_pyiqa(value))):
            raise UserError(f"{where}: option {key} must be a number like its default {default}, got {value!r}.")


def metric_options(name: str, overrides: dict[str, dict] | None = None) -> dict:
    """The default protocol's options for a metric (METRIC_OPTS) updated by the caller's."""
    return {**METRIC_OPTS.get(name, {}), **((overrides or {}).get(name, {}))}


def metric_version(name: str, overrides: dict[str, dict] | None = None, *, options: dict | None = None) -> str:
    """pyiqa version plus the options a metric is built with, so a convention change invalidates cached rows.

    `options`: the options exactly as a protocol states them (`unspecified` ones included); without it, the default
    protocol's (METRIC_OPTS) updated by `overrides`."""
    opts = metric_options(name, overrides) if options is None else options
    suffix = "".join(f";{k}={v}" for k, v in sorted(opts.items()))
    return f"pyiqa-{pyiqa_version()}{suffix}"


def parse_metrics(spec: str | list[str] | None) -> list[str]:
    """`all`/None -> the default set; `a,b` -> those names, validated against pyiqa."""
    if spec is None or spec == "all" or spec == ["all"]:
        names = list(DEFAULT_METRICS)
    else:
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [n.strip() for n in names if n.strip()]
    for name in names:
        metric_info(name)
    if not names:
        raise UserError("no metric given; pass --metrics all or a comma-separated list of pyiqa names.")
    return list(dict.fromkeys(names))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [0, 1], any float dtype -> uint8 HxWx3 as SR images are stored (float32, round half to even)."""
    return sr[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


class Scorer:
    """One built pyiqa metric: scores an SR image (against its HR for FR metrics)."""

    def __init__(self, name: str, device: str = "cpu", opts: dict | None = None):
        """`opts`: pyiqa.create_metric options, exactly; None means the default protocol's (METRIC_OPTS)."""
        import pyiqa

        self.info = metric_info(name)
        self.name = name
        self.device = device
        try:
            with weights.weight_downloads(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                # pyiqa builds torchvision backbones with the `pretrained=` keyword torchvision deprecated: its
                # warning is about pyiqa's code, not anything a user of srdistill can change.
                warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
                self.model = pyiqa.create_metric(name, device=device, **(METRIC_OPTS.get(name, {}) if opts is None else opts))
        except Exception as exc:  # reported as the metric's status
            raise MetricUnavailable(weights.explain_build_error(exc)) from exc
        self.model.eval()

    @torch.no_grad()
    def score(self, sr: np.ndarray, hr: np.ndarray | None = None) -> float:
        x = to_tensor(sr).to(self.device)
        if self.info.mode == "FR":
            value = self.model(x, to_tensor(hr).to(self.device))
        else:
            value = self.model(x)
        return float(torch.as_tensor(value).flatten()[0])

    @torch.no_grad()
    def score_folders(self, sr_dir: str, hr_dir: str) -> float:
        return float(self.model(sr_dir, hr_dir, verbose=False, num_workers=0))


class MetricPool:
    """Builds each metric once per run; remembers why one could not be built."""

    def __init__(self, device: str = "cpu", options: dict[str, dict] | None = None):
        self.device = device
        self.options = options or {}  # pyiqa.create_metric options per metric name
        self._built: dict[str, Scorer] = {}
        self._failed: dict[str, str] = {}

    def get(self, name: str) -> Scorer:
        if name in self._failed:
            raise MetricUnavailable(self._failed[name])
        if name not in self._built:
            try:
                self._built[name] = Scorer(name, self.device, self.options.get(name, {}))
            except MetricUnavailable as exc:
                self._failed[name] = str(exc)
                raise
        return self._built[name]

    @property
    def failed(self) -> dict[str, str]:
        return dict(self._failed)
