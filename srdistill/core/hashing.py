"""Content hashes: sha256 of canonical JSON (sorted keys, no whitespace), shortened to 16 hex characters.

Every content hash srdistill records (spec hash, build id, protocol hash and tags, suite fingerprint) comes from
here, so two documents with the same content hash alike however their keys were ordered."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

SHORT = 16  # hex characters kept: 64 bits, ample for naming builds and caches


def canonical_json(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """`obj` as JSON with sorted keys and no whitespace (`default` converts what JSON cannot hold)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default).encode()


def short_sha256(data: bytes) -> str:
    """The first 16 hex characters of the sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()[:SHORT]


def canonical_hash(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """The short sha256 of `obj`'s canonical JSON."""
    return short_sha256(canonical_json(obj, default))
