"""Where pyiqa's metric weights live, which metrics are ready offline, and how to bring weights in.

pyiqa downloads weights on first use into torch hub's folder (`$TORCH_HOME/hub/pyiqa`, `.../checkpoints`,
`.../clip`) and Hugging Face's cache (`$HF_HOME/hub`). Without network a download would hang or crash mid-run,
so every metric is built here with downloads blocked: a missing file surfaces as `MissingWeights`, naming the file,
the path it is expected at and the URL pyiqa would fetch it from.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srdistill.errors import UserError

WEIGHTS_ENV = "SRDISTILL_WEIGHTS"


class MissingWeights(Exception):
    """A metric needs a file that is not on disk; pyiqa would have downloaded it."""

    def __init__(self, url: str, expected: str):
        super().__init__(f"missing weights {Path(expected).name} (expected at {expected}; pyiqa's source: {url})")
        self.url, self.expected = url, expected


@dataclass
class MetricReadiness:
    """Whether one pyiqa metric can be built offline, and if not, what it lacks."""

    metric: str
    ready: bool
    missing: list[MissingWeights] = field(default_factory=list)
    note: str = ""


def configure_weights_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """Point torch hub and Hugging Face caches at the weights dir (argument, else $SRDISTILL_WEIGHTS, else defaults).

    Must run before pyiqa is imported: pyiqa reads its cache folder once at import time.
    """
    chosen = weights_dir or os.environ.get(WEIGHTS_ENV)
    if chosen:
        root = Path(chosen).expanduser().resolve()
        os.environ[WEIGHTS_ENV] = str(root)
        os.environ["TORCH_HOME"] = str(root / "torch")
        os.environ["HF_HOME"] = str(root / "huggingface")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyiqa.utils.download_util as download_util
    import torch.hub

    # pyiqa froze its cache folder at import; follow the configured one if it was imported earlier.
    download_util.DEFAULT_CACHE_DIR = os.path.join(torch.hub.get_dir(), "pyiqa")
    return Path(torch.hub.get_dir())


def hub_dir() -> Path:
    """torch hub's folder as configured now (pyiqa/, checkpoints/ and clip/ live under it)."""
    import torch.hub

    return Path(torch.hub.get_dir())


@contextlib.contextmanager
def downloads_blocked():
    """Within this block any weight download raises MissingWeights instead of touching the network."""
    import pyiqa.utils.download_util as download_util
    import torch.hub

    def refuse_file(url, dst, *args, **kwargs):
        raise MissingWeights(url, str(dst))

    def refuse_open(url, *args, **kwargs):
        url = getattr(url, "full_url", url)
        expected = hub_dir() / "clip" / os.path.basename(str(url))
        raise MissingWeights(str(url), str(expected))

    saved = (torch.hub.download_url_to_file, download_util.download_url_to_file, urllib.request.urlopen)
    torch.hub.download_url_to_file = refuse_file
    download_util.download_url_to_file = refuse_file
    urllib.request.urlopen = refuse_open
    try:
        yield
    finally:
        torch.hub.download_url_to_file, download_util.download_url_to_file, urllib.request.urlopen = saved


def explain_build_error(exc: BaseException) -> str:
    """One sentence for why a metric could not be built (missing weights, missing package, other)."""
    if isinstance(exc, MissingWeights):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return f"needs the Python package {exc.name!r}, which is not installed"
    name = type(exc).__name__
    hub_miss = _hub_miss(exc)
    if hub_miss is not None:
        cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
        repo, filename = _hub_request(hub_miss)
        what = f"{repo}/{filename}" if repo else "a file"
        return (f"missing Hugging Face weights {what} (not in the cache {cache}; download it on a connected machine, "
                f"e.g. `huggingface-cli download {repo or 'REPO'}`, and bring the models--* folder in with `evaluate weights --import`)")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"could not be built: {name}: {first[:200]}"


def _hub_miss(exc: BaseException) -> BaseException | None:
    """The huggingface_hub cache miss behind `exc`, if any: transformers re-raises it as a plain OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if "LocalEntryNotFound" in name or "OfflineMode" in name:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _hub_request(exc: BaseException) -> tuple[str | None, str | None]:
    """The (repo_id, filename) that huggingface_hub was asked for, read from the failing call's frame."""
    tb = exc.__traceback__
    found = (None, None)
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "hf_hub_download":
            local = tb.tb_frame.f_locals
            found = (local.get("repo_id"), local.get("filename"))
        tb = tb.tb_next
    return found


def probe_metric(metric: str, **metric_opts) -> MetricReadiness:
    """Build the metric on the CPU with downloads blocked and report what is missing."""
    import pyiqa

    install_shipped_weights()
    try:
        with downloads_blocked(), contextlib.redirect_stdout(io.StringIO()):
            pyiqa.create_metric(metric, device="cpu", **metric_opts)
    except MissingWeights as exc:
        return MetricReadiness(metric, False, [exc], explain_build_error(exc))
    except Exception as exc:  # any failure is reported per metric, never raised
        return MetricReadiness(metric, False, [], explain_build_error(exc))
    return MetricReadiness(metric, True)


def niqe_params_from_basicsr() -> dict[str, np.ndarray] | None:
    """NIQE's pristine-model parameters as the basicsr package ships them (niqe_pris_params.npz), if installed.

    basicsr derived them from the NIQE authors' `modelparameters.mat`, the file pyiqa's `niqe` loads as
    `niqe_modelparameters.mat` (keys mu_prisparam, cov_prisparam).
    """
    import importlib.util

    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "metrics" / "niqe_pris_params.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    return {"mu_prisparam": data["mu_pris_param"], "cov_prisparam": data["cov_pris_param"]}


def install_shipped_weights() -> list[Path]:
    """Write the weight files that registry packages ship into pyiqa's cache, where they are missing."""
    import scipy.io

    written = []
    target = hub_dir() / "pyiqa" / "niqe_modelparameters.mat"
    if not target.exists():
        params = niqe_params_from_basicsr()
        if params is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".mat.tmp")
            scipy.io.savemat(tmp, params)
            os.replace(tmp, target)
            written.append(target)
    return written


def import_weights(src: str | os.PathLike) -> list[Path]:
    """Copy a weights folder from a connected machine into the configured caches; returns the files placed.

    Accepted layouts: a torch hub folder (with pyiqa/, checkpoints/, clip/ inside, or a `hub/` above them),
    a Hugging Face hub cache (models--* folders), or loose files (`*.pth`, `*.mat`, `*.pt`): torchvision
    checkpoints go to checkpoints/, CLIP models (`RN50.pt`, `ViT-*.pt`) to clip/, the rest to pyiqa/.
    """
    src = Path(src).expanduser()
    if not src.is_dir():
        raise UserError(f"weights folder {src} does not exist; copy ~/.cache/torch/hub from a machine where pyiqa ran.")
    hub, placed = hub_dir(), []
    if (src / "hub").is_dir() and not any((src / name).is_dir() for name in ("pyiqa", "checkpoints", "clip")):
        src = src / "hub"
    hf_hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        top = rel.parts[0]
        if top in ("pyiqa", "checkpoints", "clip"):
            dest = hub / rel
        elif top.startswith("models--") or top.startswith("datasets--"):
            dest = hf_hub / rel
        elif len(rel.parts) == 1 and path.suffix in (".pth", ".pt", ".mat", ".pkl", ".npz", ".bin", ".safetensors"):
            if path.name.startswith(("RN50", "RN101", "ViT-")):
                dest = hub / "clip" / path.name
            elif path.name.startswith(("alexnet", "vgg", "resnet", "inception", "squeezenet")):
                dest = hub / "checkpoints" / path.name
            else:
                dest = hub / "pyiqa" / path.name
        else:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        placed.append(dest)
    if not placed:
        raise UserError(f"no weight files found in {src} (expected pyiqa/, checkpoints/, clip/, models--* or *.pth files).")
    return placed
