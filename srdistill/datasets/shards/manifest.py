"""The build's bookkeeping files: manifest.json (written last) and, while a build runs, _build/ with its plan
and one record per finished shard so that a killed build can be resumed before any manifest exists."""

from __future__ import annotations

import json

from srdistill.datasets.shards.format import READABLE_VERSIONS, SCHEMA_VERSION
from srdistill.core.storage import Storage, default_storage_options
from srdistill.core.errors import UserError
from srdistill.core.hashing import canonical_hash

MANIFEST_NAME = "manifest.json"
BUILD_DIR = "_build"
PLAN_NAME = f"{BUILD_DIR}/plan.json"


def part_name(shard: str) -> str:
    """Where the record of a finished shard is kept until the manifest is written."""
    return f"{BUILD_DIR}/{shard.removesuffix('.tar')}.json"


def build_id(identity: dict) -> str:
    """sha256 (16 hex) of everything that decides a build's bytes."""
    return canonical_hash(identity)


def dump(obj) -> bytes:
    """Human-readable JSON with sorted keys, for manifest and plan."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def read_json(storage: Storage, name: str) -> dict:
    try:
        data = json.loads(storage.read_bytes(name))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{storage.display(name)} is not valid JSON ({exc}); delete it or choose another --out.") from exc
    if not isinstance(data, dict):
        raise UserError(f"{storage.display(name)} is not a JSON object; delete it or choose another --out.")
    return data


def read_manifest(out: str, storage_options: dict | None = None) -> dict:
    """The manifest of a finished build at `out` (folder or fsspec URL); UserError if there is none."""
    storage = Storage(str(out), storage_options if storage_options is not None else default_storage_options(str(out)))
    if not storage.exists(MANIFEST_NAME):
        raise UserError(f"{storage.display()} holds no {MANIFEST_NAME}; point at the --out folder of a finished `degrade build`.")
    manifest = read_json(storage, MANIFEST_NAME)
    version = manifest.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{storage.display(MANIFEST_NAME)} has schema version {version!r}; this srdistill reads "
                        f"versions {', '.join(map(str, READABLE_VERSIONS))} (and writes {SCHEMA_VERSION}).")
    return manifest
