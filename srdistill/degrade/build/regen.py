"""`degrade regen`: re-degrade the HR of an existing build under a new spec, without the original source.

Every sample keeps its key, its HR (decoded from the parent shard, written again with the same deterministic
PNG encoder, so the bytes are the same) and its crop/source fields; only the LR, the params and the spec hash
change. Parent shard ``train-000003.tar`` becomes regen shard ``train-000003.tar`` holding the same keys.

It runs on the same machinery as `degrade build` (the `ParentShard` HR provider, `runner.run_shards` on `srdistill.core.cluster`, and the
_build/ records, build-id check and manifest of `build.prepare_out`/`build.write_manifest`), so it is
distributed and resumable the same way: re-running the same command keeps every finished shard whose bytes
still match.
"""

from __future__ import annotations

import os
import tarfile

from srdistill.degrade.build.builder import BuildSummary, check_run_options, prepare_out, write_manifest
from srdistill.datasets.shards.manifest import build_id, read_manifest
from srdistill.degrade.build.plan import Plan, SampleJob
from srdistill.degrade.build.providers import ParentShard
from srdistill.degrade.build.runner import run_shards
from srdistill.datasets.shards.format import SCHEMA_VERSION
from srdistill.core.storage import Storage, default_storage_options
from srdistill.core.errors import UserError
from srdistill.core.hashing import short_sha256
from srdistill.core.lock import output_lock


def _parent_keys(storage: Storage, name: str) -> list[str]:
    """Sample keys of a parent shard from its tar headers alone (member data is skipped by seeking)."""
    try:
        with storage.open(name) as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            return [n.removesuffix(".json") for n in tar.getnames() if n.endswith(".json")]
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"parent shard {storage.display(name)} cannot be read ({exc}); check it with `degrade verify`.") from exc


def make_regen_plan(parent: str, parent_manifest: dict, spec, seed: int, options: dict) -> Plan:
    """One regen shard per parent shard, same names and keys; the identity names the parent build."""
    from srdistill.degrade.spec.schema import spec_hash

    parent_scale = int(parent_manifest["scale"])
    crop = parent_manifest.get("crop_policy", {}).get("crop", 0)
    if parent_scale % spec.scale and not (crop and crop % spec.scale == 0):
        raise UserError(f"the parent's HR sizes are multiples of its scale {parent_scale}, not of the new spec's "
                        f"scale {spec.scale}; use a spec with scale {parent_scale} or one of its divisors.")
    storage = Storage(parent, options)
    shards = []
    for entry in parent_manifest["shards"]:
        provider = ParentShard(parent, options, entry["name"])
        shards.append((entry["name"], [SampleJob(k, provider) for k in _parent_keys(storage, entry["name"])]))
    identity = {
        "schema_version": SCHEMA_VERSION,
        "regen_of": parent_manifest["build_id"],
        "parent_shards": short_sha256("\n".join(f"{s['name']}:{s['sha256']}" for s in parent_manifest["shards"]).encode()),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": spec.scale,
        "split": parent_manifest.get("split", "train"),
    }
    images = sum(len(jobs) for _, jobs in shards)
    return Plan(identity, build_id(identity), shards, [], parent, images)


def regen(parent: str, out: str, spec, *, seed: int | None = None, workers: int | None = None,
          address: str | None = None, progress: bool = True, command: str | None = None) -> BuildSummary:
    """Re-degrade every HR of the build at ``parent`` with ``spec`` into ``out``; see the module docstring."""
    from srdistill.degrade.spec.schema import load_spec

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    check_run_options(seed=seed, workers=workers)
    parent_options = default_storage_options(str(parent))
    parent_manifest = read_manifest(str(parent))
    if os.path.abspath(str(parent)) == os.path.abspath(str(out)):
        raise UserError("--out must differ from --from: regen writes a new build beside its parent.")
    seed = int(parent_manifest["seed"]) if seed is None else seed
    plan = make_regen_plan(str(parent), parent_manifest, spec, seed, parent_options)
    storage = Storage(str(out), default_storage_options(str(out)))
    with output_lock(str(out)):
        done = prepare_out(storage, plan)
        run = run_shards(storage, plan.shards, spec, seed, done, workers=workers, address=address, progress=progress,
                         desc="degrade regen")
        extra = {
            **{k: parent_manifest[k] for k in ("source", "crop_policy", "shard_samples") if k in parent_manifest},
            "parent": {
                "build": str(parent),
                "build_id": parent_manifest["build_id"],
                "spec_hash": parent_manifest["spec_hash"],
                "seed": parent_manifest["seed"],
            },
        }
        return write_manifest(storage, plan, run, spec, seed, images=parent_manifest["totals"].get("images"),
                              command=command, extra=extra)

