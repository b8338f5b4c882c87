"""Where pyiqa's metric weights live, how missing ones are fetched (or not), and which metrics are ready.

pyiqa downloads weights on first use into torch hub's folder (`$TORCH_HOME/hub/pyiqa`, `.../checkpoints`,
`.../clip`) and Hugging Face's cache (`$HF_HOME/hub`). Every metric is built inside `weight_downloads()`,
which routes those downloads through srdistill.core.fetch.download: fetched with a progress bar (through the mirror,
if one is set) by default, or, offline (`--offline`, SRDISTILL_OFFLINE=1), refused as `MissingWeights`,
naming the file, the path it is expected at and the URL it would come from. Weights are data (safeload.py): a
download is kept only after its published hash or a safe load has checked it, and while a metric is built every
`torch.load` reads with `weights_only=True` unless the file matches its published hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srdistill.core.fetch import download
from srdistill.core.atomic import atomic_file
from srdistill.core.errors import UserError
from srdistill.core.fetch.safeload import DamagedWeights, torch_loads_guarded

WEIGHTS_ENV = "SRDISTILL_WEIGHTS"


class MissingWeights(Exception):
    """A metric needs a file that is not on disk; pyiqa would have downloaded it."""

    def __init__(self, url: str, expected: str):
        super().__init__(f"missing weights {Path(expected).name} (expected at {expected}; source: {url}; "
                         f"`evaluate weights --download` fetches it, `--import DIR` copies it in)")
        self.url, self.expected = url, expected


@dataclass
class MetricReadiness:
    """Whether one pyiqa metric can be built offline, and if not, what it lacks."""

    metric: str
    ready: bool
    missing: list[MissingWeights] = field(default_factory=list)
    note: str = ""


@dataclass
class FetchReport:
    """What prefetching one metric's weights placed where, or why it failed."""

    metric: str
    ok: bool
    placed: list[Path] = field(default_factory=list)
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
    download.sync_hub_constants()
    import pyiqa.utils.download_util as download_util
    import torch.hub

    # pyiqa froze its cache folder at import; follow the configured one if it was imported earlier.
    download_util.DEFAULT_CACHE_DIR = os.path.join(torch.hub.get_dir(), "pyiqa")
    return Path(torch.hub.get_dir())


def hub_dir() -> Path:
    """torch hub's folder as configured now (pyiqa/, checkpoints/ and clip/ live under it)."""
    import torch.hub

    return Path(torch.hub.get_dir())


# pyiqa's two CLIP loaders each have their own `_download(url, root)` (SHA-256 in the URL, written in place).
_CLIP_LOADERS = ("pyiqa.archs.clip_model", "pyiqa.archs.afineclip_model")


@contextlib.contextmanager
def weight_downloads(offline: bool | None = None):
    """Within this block pyiqa, torch hub and CLIP downloads follow the download policy.

    Online they go through srdistill.core.fetch.download.fetch_file (mirror, progress bar, temporary name + rename,
    torch hub's SHA-256 prefix where the file name carries one); offline (`offline`, else the policy) they
    raise MissingWeights, and huggingface_hub is held offline too. Files already on disk are never fetched; they
    are loaded with weights_only=True unless they match their published hash (safeload.torch_loads_guarded).
    """
    import pyiqa.utils.download_util as download_util
    import torch.hub

    offline = download.current_policy().offline if offline is None else offline

    def torch_download(url, dst, hash_prefix=None, progress=True):
        if offline:
            raise MissingWeights(url, str(dst))
        download.fetch_file(url, dst, sha256_prefix=hash_prefix, progress=progress)

    def clip_download(url, root):
        target = Path(root) / os.path.basename(url)
        expected_sha256 = url.split("/")[-2]
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected_sha256:
            return str(target)
        if offline:
            raise MissingWeights(url, str(target))
        return str(download.fetch_file(url, target, sha256_prefix=expected_sha256))

    patches = [(torch.hub, "download_url_to_file", torch_download),
               (download_util, "download_url_to_file", torch_download)]
    patches += [(importlib.import_module(name), "_download", clip_download) for name in _CLIP_LOADERS]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    hub_constants = importlib.import_module("huggingface_hub.constants")
    hub_offline = hub_constants.HF_HUB_OFFLINE
    try:
        for owner, attr, fn in patches:
            setattr(owner, attr, fn)
        hub_constants.HF_HUB_OFFLINE = offline or download.hf_offline()
        with torch_loads_guarded():
            yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
        hub_constants.HF_HUB_OFFLINE = hub_offline


def downloads_blocked():
    """Within this block any weight download raises MissingWeights instead of touching the network."""
    return weight_downloads(offline=True)


def explain_build_error(exc: BaseException) -> str:
    """One sentence for why a metric could not be built (missing weights, missing package, other)."""
    if isinstance(exc, (MissingWeights, download.DownloadFailed, DamagedWeights)):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return f"needs the Python package {exc.name!r}, which is not installed"
    name = type(exc).__name__
    hub_miss = _hub_miss(exc)
    if hub_miss is not None:
        cache = download.hf_cache_dir()
        repo, filename = _hub_request(hub_miss)
        what = f"{repo}/{filename}" if repo else "a file"
        endpoint = (os.environ.get(download.HF_ENDPOINT_ENV) or "https://huggingface.co").rstrip("/")
        url = f"{endpoint}/{repo}/resolve/main/{filename}" if repo else endpoint
        if download.hf_offline():
            return (f"missing Hugging Face weights {what} (not in the cache {cache}; source: {url}; run without --offline "
                    f"to download it, or `huggingface-cli download {repo or 'REPO'}` on a connected machine and bring the "
                    f"models--* folder in with `evaluate weights --import`)")
        return f"could not download Hugging Face weights {what} from {url}: {_first_line(_root_cause(hub_miss))}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"could not be built: {name}: {first[:200]}"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (the refused connection under the hub's generic cache-miss error)."""
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hub_miss(exc: BaseException) -> BaseException | None:
    """The huggingface_hub cache miss or failed request behind `exc`, if any: transformers re-raises it as an OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if any(kind in name for kind in ("LocalEntryNotFound", "OfflineMode", "NotFoundError", "HfHubHTTPError")):
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


def _cached_files() -> set[Path]:
    """Every file in torch hub's folder and the Hugging Face cache, as a user would name it (no blobs, locks, parts)."""
    found = set()
    for root in (hub_dir(), download.hf_cache_dir()):
        if root.is_dir():
            found.update(p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".part", ".lock", ".incomplete"))
                         and not {"blobs", ".locks"} & set(p.relative_to(root).parts))
    return found


def fetch_metric(metric: str, **metric_opts) -> FetchReport:
    """Build the metric once on the CPU with downloads allowed, so pyiqa fetches exactly the files it needs."""
    import pyiqa

    install_shipped_weights()
    before = _cached_files()
    try:
        with weight_downloads(offline=False), contextlib.redirect_stdout(io.StringIO()):
            pyiqa.create_metric(metric, device="cpu", **metric_opts)
    except Exception as exc:  # reported per metric, like probe_metric
        return FetchReport(metric, False, sorted(_cached_files() - before), explain_build_error(exc))
    return FetchReport(metric, True, sorted(_cached_files() - before))


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
            with atomic_file(target) as fh:
                scipy.io.savemat(fh, params)
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
    hf_hub = download.hf_cache_dir()
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
