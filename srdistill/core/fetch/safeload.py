"""What a weights file must pass before it enters a cache, and how cached weights are loaded: files are data.

A file is checked against its published hash where one exists: the SHA-256 a server states (Hugging Face's
`X-Linked-Etag` for LFS files), the one a caller passes (CLIP's URLs), or the prefix in its name (torch hub's
and pyiqa's convention `NAME-<first hex digits of the sha256>.pth`). Otherwise it must load without running
code: torch files with `weights_only=True`, NumPy files without pickles, MATLAB files with scipy; safetensors
files are data by construction (their header is read). Other files (text, JSON) are not code and pass.

While metrics are built (`torch_loads_guarded()`), every `torch.load` reads with `weights_only=True`; a file that
needs more is loaded as its caller asked only when it matches its published hash (upstream's own file), and a
file that cannot be read is named with its path and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch hub's HASH_REGEX, with at least 6 digits to count
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".tar")


class DamagedWeights(Exception):
    """A cached weights file cannot be loaded safely; the message names its path and the fix."""

    def __init__(self, path: str, why: str):
        super().__init__(f"the cached weights file {path} cannot be loaded ({why}); delete it and fetch it again with "
                         f"`evaluate weights --download`, or bring a good copy with `evaluate weights --import DIR`")
        self.path = path


def published_sha256_prefix(name: str) -> str | None:
    """The SHA-256 prefix a file name carries (`resnet50-0676ba61.pth` -> '0676ba61'), else None."""
    found = HASH_IN_NAME.search(name)
    return found.group(1) if found else None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _refusal(exc: BaseException, suffix: str) -> str:
    text = str(exc).strip()
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it is a pickle that calls {found.group(1)}, not plain tensors, and would run code when loaded "
                "without weights_only")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    first = detail.group(1) if detail else (text.splitlines()[0] if text else type(exc).__name__)
    return f"it cannot be read as a {suffix} file ({first[:120]})"


def _read(path: str | os.PathLike, suffix: str) -> None:
    if suffix in TORCH_SUFFIXES:
        import torch.serialization

        # torch.serialization.load, not torch.load: torch_loads_guarded() may have replaced the latter.
        torch.serialization.load(path, map_location="cpu", weights_only=True)
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    elif suffix in (".npz", ".npy"):
        import numpy as np

        loaded = np.load(path, allow_pickle=False)
        for key in getattr(loaded, "files", []):
            loaded[key]
    elif suffix == ".mat":
        import scipy.io

        scipy.io.loadmat(path)


def check_content(path: str | os.PathLike, name: str) -> None:
    """Raise ValueError(why) unless the file at `path` (named `name` upstream) loads without running code."""
    suffix = Path(name).suffix.lower()
    try:
        _read(path, suffix)
    except Exception as exc:  # any failure of a reader means the file is not what its name says
        raise ValueError(_refusal(exc, suffix)) from None


def check_download(path: str | os.PathLike, name: str, *, sha256: str | None = None,
                   sha256_prefix: str | None = None) -> None:
    """Raise ValueError(why) unless the downloaded file matches its published hash, or, with none, loads safely."""
    expected = sha256 or sha256_prefix or published_sha256_prefix(name)
    if expected:
        actual = sha256_of(path)
        if not actual.startswith(expected.lower()):
            raise ValueError(f"its SHA-256 {actual[:16]}... does not start with the published {expected}")
        return
    check_content(path, name)


@contextlib.contextmanager
def torch_loads_guarded():
    """Within this block `torch.load` reads with weights_only=True; see the module docstring for the rest."""
    import torch

    real_load = torch.load

    def guarded(f, *args, weights_only=None, **kwargs):
        path = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", None)
        start = f.tell() if hasattr(f, "tell") else None
        try:
            return real_load(f, *args, weights_only=True, **kwargs)
        except Exception as exc:  # whatever a reader raises, the file is not plain tensors
            trusted = (weights_only is False and isinstance(path, str) and str(exc).startswith("Weights only load failed")
                       and (prefix := published_sha256_prefix(os.path.basename(path))) is not None
                       and sha256_of(path).startswith(prefix))
            if not trusted:
                raise DamagedWeights(str(path or f), _refusal(exc, "torch")) from None
        if start is not None:
            f.seek(start)
        return real_load(f, *args, weights_only=False, **kwargs)

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = real_load
