"""`degrade regen`: re-degrade the HR of an existing build under a new spec, without the original source.

Every sample keeps its key, its HR (decoded from the parent shard, written again with the same deterministic
PNG encoder, so the bytes are the same) and its crop/source fields; only the LR, the params and the spec hash
change. Parent shard ``train-000003.tar`` becomes regen shard ``train-000003.tar`` holding the same keys.

It runs on the same machinery as `degrade build` (one Ray task per shard through `build.shard_task`, the
_build/ records and the build-id check of `build._prepare_out`), so it is distributed and resumable the
same way: re-running the same command keeps every finished shard whose bytes still match.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import tarfile
import time
from dataclasses import dataclass

import numpy as np

from srdistill import __version__
from srdistill.datasets.images import BadImage, decode_png
from srdistill.degrade.build import (
    BuildSummary,
    Plan,
    SampleJob,
    ShardRecord,
    _connect_ray,
    _prepare_out,
    shard_task,
)
from srdistill.degrade.manifest import BUILD_DIR, MANIFEST_NAME, build_id, dump, read_manifest
from srdistill.degrade.shards import SCHEMA_VERSION, read_samples
from srdistill.degrade.storage import Storage, default_storage_options
from srdistill.errors import UserError

# Meta fields that the shard writer sets itself; everything else is carried over from the parent sample.
_WRITER_FIELDS = ("key", "scale", "seed", "spec_hash", "params")


@dataclass(frozen=True)
class ParentShard:
    """HR provider for `build.write_shard`: the samples of one parent shard, read once per task."""

    url: str
    options: dict
    name: str

    @property
    def ident(self) -> str:
        return f"{self.url}/{self.name}"

    @property
    def source(self) -> str:
        return self.url

    @property
    def source_path(self) -> str:
        return self.name

    def load(self) -> dict[str, tuple[bytes, dict]]:
        """{key: (hr_png, meta)} of the whole parent shard."""
        try:
            with Storage(self.url, self.options).open(self.name) as fh:
                return {key: (hr, meta) for key, hr, _, meta in read_samples(fh)}
        except (OSError, ValueError) as exc:
            raise BadImage(f"parent shard unreadable ({exc})") from exc

    def hr(self, image: dict[str, tuple[bytes, dict]], key: str, seed: int) -> tuple[np.ndarray, dict]:
        hr_png, meta = image[key]
        return decode_png(hr_png), {k: v for k, v in meta.items() if k not in _WRITER_FIELDS}


def _parent_keys(storage: Storage, name: str) -> list[str]:
    """Sample keys of a parent shard from its tar headers alone (member data is skipped by seeking)."""
    try:
        with storage.open(name) as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            return [n.removesuffix(".json") for n in tar.getnames() if n.endswith(".json")]
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"parent shard {storage.display(name)} cannot be read ({exc}); check it with `degrade verify`.") from exc


def make_regen_plan(parent: str, parent_manifest: dict, spec, seed: int, options: dict) -> Plan:
    """One regen shard per parent shard, same names and keys; the identity names the parent build."""
    from srdistill.degrade.spec import spec_hash

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
        "parent_shards": hashlib.sha256(
            "\n".join(f"{s['name']}:{s['sha256']}" for s in parent_manifest["shards"]).encode()
        ).hexdigest()[:16],
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
    from tqdm import tqdm

    from srdistill.degrade.spec import load_spec, spec_hash, spec_to_dict

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    parent_options = default_storage_options(str(parent))
    parent_manifest = read_manifest(str(parent))
    if os.path.abspath(str(parent)) == os.path.abspath(str(out)):
        raise UserError("--out must differ from --from: regen writes a new build beside its parent.")
    seed = int(parent_manifest["seed"]) if seed is None else seed
    plan = make_regen_plan(str(parent), parent_manifest, spec, seed, parent_options)
    options = default_storage_options(str(out))
    storage = Storage(str(out), options)
    storage.makedirs()
    done = _prepare_out(storage, plan)

    import ray

    started, slots = _connect_ray(workers, address)
    task = ray.remote(num_cpus=1, max_retries=3)(shard_task)
    records: dict[str, ShardRecord] = {}
    t0 = time.perf_counter()
    built = 0
    try:
        queue, pending = list(plan.shards), {}
        bar = tqdm(total=plan.images, unit="img", desc="degrade regen", disable=not progress, dynamic_ncols=True)
        while queue or pending:
            while queue and len(pending) < slots:
                name, jobs = queue.pop(0)
                pending[task.remote(storage.url, options, name, jobs, spec, seed, done.get(name))] = (name, len(jobs))
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                name, planned = pending.pop(ref)
                records[name] = ray.get(ref)
                built += 0 if records[name].reused else planned
                bar.update(planned)
        bar.close()
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - t0

    ordered = [records[name] for name, _ in plan.shards]
    skipped = [{**s, "shard": r.name} for r in ordered for s in r.skipped]
    totals = {"samples": sum(r.samples for r in ordered), "shards": len(ordered),
              "bytes": sum(r.bytes for r in ordered), "images": parent_manifest["totals"].get("images"),
              "skipped": len(skipped)}
    timings = {
        "wall_seconds": round(seconds, 3),
        "samples_built": built,
        "images_per_second": round(built / seconds, 3) if seconds > 0 else 0.0,
        "workers": slots,
        "shards_built": sum(not r.reused for r in ordered),
        "shards_reused": sum(r.reused for r in ordered),
        "shard_seconds": {r.name: round(r.seconds, 3) for r in ordered},
        "worker_peak_rss_bytes": max((r.peak_rss for r in ordered if not r.reused), default=0),
    }
    manifest = {
        **{k: parent_manifest[k] for k in ("source", "crop_policy", "shard_samples") if k in parent_manifest},
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "build_id": plan.build_id,
        "identity": plan.identity,
        "parent": {
            "build": str(parent),
            "build_id": parent_manifest["build_id"],
            "spec_hash": parent_manifest["spec_hash"],
            "seed": parent_manifest["seed"],
        },
        "spec": spec_to_dict(spec),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": spec.scale,
        "split": plan.identity["split"],
        "shards": [r.manifest_entry() for r in ordered],
        "totals": totals,
        "skipped": skipped,
        "timings": timings,
    }
    storage.write_bytes(MANIFEST_NAME, dump(manifest))
    storage.remove_tree(BUILD_DIR)
    return BuildSummary(
        out=storage.display(), samples=totals["samples"], shards=totals["shards"], bytes=totals["bytes"],
        skipped=len(skipped), shards_built=timings["shards_built"], shards_reused=timings["shards_reused"],
        seconds=seconds, images_per_second=timings["images_per_second"],
        worker_peak_rss=timings["worker_peak_rss_bytes"], manifest=manifest,
    )


def add_regen_parser(subparsers) -> argparse.ArgumentParser:
    """Register `regen` on the `degrade` CLI's subparsers; the handler is ``args.func(args)`` -> exit code."""
    p = subparsers.add_parser(
        "regen",
        help="re-degrade the HR of an existing build under a new spec (runs on Ray)",
        description="Write a new build from the HR images of an existing one, degraded with a new spec: same keys, "
        "same HR bytes, new LR, params and spec hash; its manifest names the parent build. Distributed and "
        "resumable like `degrade build`: re-run the same command to finish an interrupted regen.",
    )
    p.add_argument("--from", dest="parent", required=True, metavar="SHARDS",
                   help="the parent build: a folder or URL holding manifest.json and shards")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--spec", help="the new degradation spec file (YAML or JSON)")
    group.add_argument("--preset", help="a shipped preset instead of a file (realesrgan, bicubic)")
    p.add_argument("--out", required=True, help="output folder or fsspec URL for the new build")
    p.add_argument("--seed", type=int, help="global seed (default: the parent's, so only the spec change shows)")
    p.add_argument("--workers", type=int, help="parallel shard tasks (default: all CPUs of the cluster)")
    p.add_argument("--address", help="join an existing Ray cluster instead of starting one here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_regen)
    return p


def run_regen(args: argparse.Namespace) -> int:
    argv = getattr(args, "argv", None)
    summary = regen(
        args.parent, args.out, args.spec or args.preset, seed=args.seed, workers=args.workers,
        address=args.address, progress=not args.quiet,
        command=" ".join(shlex.quote(a) for a in ["degrade", *argv]) if argv is not None else None,
    )
    parent = summary.manifest["parent"]
    print(summary.text())
    print(f"spec {parent['spec_hash']} -> {summary.manifest['spec_hash']}; parent build {parent['build_id']}")
    return 0

