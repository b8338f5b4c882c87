"""Training components from the Hugging Face Hub: a model id resolved into the hub's own cache, then read as a folder.

`--components` (and each per-role override `components.ROLE=...`) is a preset, a local folder, or a model id
``org/name`` with an optional ``@revision`` (branch, tag or commit). An id is resolved with huggingface_hub's
``snapshot_download`` into its standard cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), honouring
``HF_ENDPOINT`` and offline mode (``SRDISTILL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: the cache only), and the
snapshot folder is then loaded by the same folder code as a local folder. A diffusers pipeline snapshot
(vae/, unet/, transformer/, scheduler/, text_encoder/, tokenizer/) is such a folder as it is.

Only what the roles read is fetched: from a pipeline the role folders (one weight format each, no fp16/
non-EMA variants, no single-file checkpoints); from a bare model repo (e.g. a VAE alone) its root files.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from srdistill.core.fetch import download
from srdistill.core.atomic import write_json
from srdistill.core.errors import UserError

# Sub-folders of a components folder, one per role (training/components/roles.py lays them out).
ROLES = ("vae", "unet", "transformer", "transformer_vae", "scheduler", "text_encoder", "tokenizer", "disc_unet",
         "resshift", "clip_convnext", "clip", "pyiqa")
DEFAULT_ENDPOINT = "https://huggingface.co"
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
_VARIANT = re.compile(r"\.(fp16|bf16|non_ema)\.[^.]+$")
_UNUSED_FORMATS = (".ckpt", ".msgpack", ".h5", ".onnx", ".onnx_data", ".ot", ".pb", ".tflite", ".mlmodel")
_WEIGHT_FORMATS = (".bin", ".pt", ".pth")  # dropped where the same folder has .safetensors
MANIFEST = "components.json"


@dataclass(frozen=True)
class ModelId:
    repo: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}"


def parse_model_id(spec: str) -> ModelId | None:
    """`org/name[@rev]` as a ModelId; None for anything else (a preset name, a path that exists on disk)."""
    if Path(spec).expanduser().exists():
        return None
    match = _ID.match(spec)
    return ModelId(match["repo"], match["revision"] or "main") if match else None


def select_files(files: list[str]) -> list[str]:
    """The files of a repo that component loading reads (see the module docstring)."""
    pipeline = "model_index.json" in files or any(PurePosixPath(f).parts[0] in ROLES for f in files if "/" in f)
    keep = []
    for name in files:
        path = PurePosixPath(name)
        if pipeline and not (path.parts[0] in ROLES or (len(path.parts) == 1 and path.suffix in (".json", ".txt"))):
            continue
        if not pipeline and len(path.parts) > 1:
            continue
        if path.suffix in _UNUSED_FORMATS or _VARIANT.search(path.name):
            continue
        keep.append(name)
    safetensors_dirs = {str(PurePosixPath(f).parent) for f in keep if f.endswith(".safetensors")}
    return [f for f in keep if not (f.endswith(_WEIGHT_FORMATS) and str(PurePosixPath(f).parent) in safetensors_dirs)]


def _explain(exc: BaseException, mid: ModelId, endpoint: str, cache: Path, offline: bool) -> str:
    """One sentence for a failed resolution, by the hub's exception kind (looked up by name along the chain)."""
    names, chain = set(), [exc]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for link in chain:
        names.update(cls.__name__ for cls in type(link).__mro__)
    root = chain[-1]  # e.g. the refused connection under the hub's generic error
    if "RevisionNotFoundError" in names:
        return (f"model {mid.repo} has no revision {mid.revision!r} on {endpoint}; "
                f"give a branch, tag or commit that exists (org/name@REVISION), or leave @REVISION out for main.")
    if "RepositoryNotFoundError" in names or "GatedRepoError" in names:
        return (f"model id {mid.repo} does not exist on {endpoint} (or it is private or gated and no token is set), "
                f"and no local folder {mid.repo} exists either; check the spelling or pass a folder.")
    if offline or "OfflineModeIsEnabled" in names:
        return (f"model {mid} is not in the Hugging Face cache {cache} and downloads are off (--offline, SRDISTILL_OFFLINE "
                f"or HF_HUB_OFFLINE); run once online, or `huggingface-cli download {mid.repo}` on a connected machine "
                f"and copy its models--* folder into {cache}.")
    return (f"cannot reach {endpoint} to resolve model id {mid} ({type(root).__name__}: "
            f"{str(root).strip().splitlines()[0][:160] if str(root).strip() else 'no detail'}); check the network or "
            f"HF_ENDPOINT, or pass --offline to use the Hugging Face cache {cache}.")


def resolve_snapshot(mid: ModelId) -> Path:
    """The local snapshot folder of `mid`, downloading what component loading reads unless offline."""
    download.sync_hub_constants()
    offline = download.hf_offline()
    endpoint = (download.current_policy().hf_endpoint or DEFAULT_ENDPOINT).rstrip("/")
    return _resolve(mid, endpoint, str(download.hf_cache_dir()), offline)


@functools.cache
def _resolve(mid: ModelId, endpoint: str, cache: str, offline: bool) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError

    try:
        if offline:
            try:
                return Path(snapshot_download(mid.repo, revision=mid.revision, cache_dir=cache, local_files_only=True))
            except IncompleteSnapshotError as exc:  # expected: only the files the roles read were fetched
                return Path(exc.snapshot_path)
        info = HfApi(endpoint=endpoint).model_info(mid.repo, revision=mid.revision)
        wanted = select_files([s.rfilename for s in info.siblings or []])
        return Path(snapshot_download(mid.repo, revision=mid.revision, cache_dir=cache, endpoint=endpoint,
                                      allow_patterns=wanted))
    except Exception as exc:  # every hub failure becomes one sentence
        raise UserError(_explain(exc, mid, endpoint, Path(cache), offline)) from None


def local_folder(spec: str) -> Path:
    """A components folder for a folder path or a model id."""
    mid = parse_model_id(spec)
    return resolve_snapshot(mid) if mid is not None else Path(spec).expanduser()


def role_dir(components: str, role: str) -> Path:
    """Where `role` lives in a components folder or model snapshot.

    A diffusers pipeline snapshot keeps the DiT's own VAE in vae/, so there it also serves transformer_vae.
    """
    root = local_folder(components)
    path = root / role
    if role == "transformer_vae" and not path.exists() and (root / "model_index.json").exists():
        return root / "vae"
    return path


def _role_source(spec: str, role: str) -> Path:
    root = local_folder(spec)
    if not root.is_dir():
        raise UserError(f"components.{role}={spec} is neither a folder nor a Hugging Face model id (org/name[@revision]).")
    for candidate in (role, "vae" if role == "transformer_vae" else None):
        if candidate and (root / candidate).is_dir():
            return root / candidate
    return root  # a repo or folder that is the model itself (e.g. a VAE alone)


def resolve_components(components: str, overrides: dict[str, str] | None, workdir: str | os.PathLike) -> str:
    """The `components` string the recipes receive: a preset, or a local folder holding every role.

    A model id becomes its snapshot folder. Per-role overrides build WORKDIR (symlinks: each role from its own
    source, the rest from `components`) and record the sources in WORKDIR/components.json.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(ROLES))
    if unknown:
        raise UserError(f"unknown component role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}.")
    mid = parse_model_id(components)
    if not overrides:
        return str(resolve_snapshot(mid)) if mid is not None else components
    base = local_folder(components)
    if not base.is_dir():
        raise UserError(f"per-role overrides ({', '.join(f'components.{r}' for r in overrides)}) replace parts of a "
                        f"pretrained folder, but --components {components} is no folder (a random-weight preset, or a "
                        f"path that does not exist); give a folder or a model id (org/name[@revision]).")
    links = {entry.name: entry.absolute() for entry in base.iterdir() if entry.name != MANIFEST}
    for role, spec in overrides.items():
        links[role] = _role_source(spec, role).absolute()
        # A DiT taken from a pipeline brings its own VAE, unless that role is overridden too.
        if role == "transformer" and "transformer_vae" not in overrides and (local_folder(spec) / "vae").is_dir():
            links["transformer_vae"] = (local_folder(spec) / "vae").absolute()
    dest = Path(workdir)
    dest.mkdir(parents=True, exist_ok=True)
    for entry in dest.iterdir():
        if entry.is_symlink() and entry.name not in links:
            entry.unlink()
    for name, target in links.items():
        tmp = dest / f".{name}.{os.getpid()}.link"
        tmp.symlink_to(target, target_is_directory=target.is_dir())
        os.replace(tmp, dest / name)  # atomic, so torchrun ranks composing at once agree
    record = {"components": components, "overrides": overrides, "links": {k: str(v) for k, v in sorted(links.items())}}
    write_json(dest / MANIFEST, record, indent=2)
    return str(dest)
