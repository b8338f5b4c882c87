"""`degrade build`: plan source images into shards, write each shard in one Ray task, then the manifest.

The plan (plan.py) is fixed before any work; each shard is written by one Ray task (runner.py, writer.py) from
its sample jobs, whose HR comes from a provider (providers.py). Finished shards leave a record in _build/;
re-running the same command reuses every shard whose bytes still hash to its record, and the manifest is
written last. `prepare_out` and `write_manifest` serve `degrade regen` too.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

from srdistill import __version__
from srdistill.datasets.images import DEFAULT_MAX_PIXELS, SHARD_PNG
from srdistill.degrade.build.identity import drop_changed, drop_other_encoding, plan_document, shard_entry
from srdistill.datasets.shards.manifest import BUILD_DIR, MANIFEST_NAME, PLAN_NAME, dump, read_json
from srdistill.degrade.build.plan import Plan, make_plan
from srdistill.degrade.build.runner import ShardRun, run_shards
from srdistill.datasets.shards.format import SCHEMA_VERSION, is_shard_name
from srdistill.core.storage import Storage, default_storage_options
from srdistill.degrade.build.writer import ShardRecord
from srdistill.core.errors import UserError
from srdistill.core.lock import output_lock


@dataclass
class BuildSummary:
    out: str
    samples: int
    shards: int
    bytes: int
    skipped: int
    shards_built: int
    shards_reused: int
    seconds: float
    images_per_second: float
    worker_peak_rss: int
    manifest: dict
    sources_changed: list[str] = dataclasses.field(default_factory=list)

    def text(self) -> str:
        return (
            f"{self.samples} samples in {self.shards} shards ({self.bytes / 2**20:.1f} MiB) at {self.out}; "
            f"{self.shards_built} shards written, {self.shards_reused} reused; {self.skipped} source files skipped; "
            f"{self.images_per_second:.2f} img/s; peak worker memory {self.worker_peak_rss / 2**20:.0f} MiB"
        ) + (f"; {len(self.sources_changed)} rewritten because their source files changed" if self.sources_changed else "")


def check_run_options(*, seed: int | None, workers: int | None) -> None:
    """Refuse options a Ray worker would only trip over after the cluster started (`seed=None`: not given)."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}.")


def prepare_out(storage: Storage, plan: Plan) -> dict[str, dict]:
    """Create `out` and check it holds nothing or this same build; return the records of shards already finished."""
    try:
        storage.makedirs()
        return _finished_shards(storage, plan)
    except OSError as exc:
        raise UserError(f"cannot use {storage.display()} as output ({exc}); check the path or credentials.") from exc


def _finished_shards(storage: Storage, plan: Plan) -> dict[str, dict]:
    what = f"{storage.display()} holds a different build"
    hint = "choose another --out or delete that folder"
    if storage.exists(MANIFEST_NAME):
        manifest = read_json(storage, MANIFEST_NAME)
        if manifest.get("build_id") != plan.build_id:
            raise UserError(f"{what} ({_differences(manifest.get('identity', {}), plan.identity)}); {hint}.")
        storage.remove_temporaries()
        done = {r["name"]: {**r, "skipped": [s for s in manifest.get("skipped", []) if s.get("shard") == r["name"]],
                            "image_encoding": manifest.get("image_encoding")}
                for r in manifest.get("shards", [])}
        return drop_other_encoding(drop_changed(storage, plan, manifest, done, from_plan_json=False))
    previous = None
    if storage.exists(PLAN_NAME):
        previous = read_json(storage, PLAN_NAME)
        if previous.get("build_id") != plan.build_id:
            raise UserError(f"{what} (an unfinished one: {_differences(previous.get('identity', {}), plan.identity)}); {hint}.")
    else:
        strangers = [n for n in storage.listdir() if is_shard_name(n)]
        if strangers:
            raise UserError(f"{storage.display()} already holds shards ({strangers[0]} ...) but no manifest or plan "
                            f"of this build; {hint}.")
        storage.write_bytes(PLAN_NAME, plan_document(plan))
    storage.remove_temporaries()
    done = {}
    for part in storage.listdir(BUILD_DIR):
        if part != PLAN_NAME:
            record = read_json(storage, part)
            done[record["name"]] = {**{k: record[k] for k in ("name", "samples", "bytes", "sha256", "skipped", "seconds",
                                                              "cpu_seconds", "peak_rss")},
                                    "image_encoding": record.get("image_encoding")}
    return drop_other_encoding(done if previous is None else drop_changed(storage, plan, previous, done, from_plan_json=True))


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not changed:
        return "its build id differs"
    # Name the differing keys inside a section (crop_policy.crop) rather than printing both sections whole.
    return "; ".join(_differences(old[k], new[k], f"{prefix}{k}.")
                     if isinstance(old.get(k), dict) and isinstance(new.get(k), dict)
                     else f"{prefix}{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:3])


def write_manifest(storage: Storage, plan: Plan, run: ShardRun, spec, seed: int, *, images: int | None,
                   command: str | None, extra: dict) -> BuildSummary:
    """Write manifest.json for the finished `run` of `plan` (plus the caller's `extra` fields), drop _build/."""
    from srdistill.degrade.spec.schema import spec_hash, spec_to_dict

    ordered = [run.records[name] for name, _ in plan.shards]
    skipped = sorted(
        [{"source_path": s.source_path, "reason": s.reason} for s in plan.source_skipped]
        + [{**s, "shard": r.name} for r in ordered for s in r.skipped],
        key=lambda s: s["source_path"],
    )
    skipped = list({s["source_path"]: s for s in skipped}.values())
    peak = max((r.peak_rss for r in ordered if not r.reused), default=0)
    totals = {"samples": sum(r.samples for r in ordered), "shards": len(ordered), "bytes": sum(r.bytes for r in ordered),
              "images": images, "skipped": len(skipped)}
    seconds, built = run.seconds, run.built_samples
    timings = {
        "wall_seconds": round(seconds, 3),
        "samples_built": built,
        "images_per_second": round(built / seconds, 3) if seconds > 0 else 0.0,
        "workers": run.slots,
        "shards_built": sum(not r.reused for r in ordered),
        "shards_reused": sum(r.reused for r in ordered),
        "shard_seconds": {r.name: round(r.seconds, 3) for r in ordered},
        "task_cpu_seconds": round(sum(r.cpu_seconds for r in ordered if not r.reused), 3),
        "worker_peak_rss_bytes": peak,
    }
    manifest = {
        **extra,
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "build_id": plan.build_id,
        "identity": plan.identity,
        "spec": spec_to_dict(spec),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": spec.scale,
        "split": plan.identity["split"],
        "image_encoding": SHARD_PNG.record(),
        "shards": [shard_entry(plan, r.manifest_entry()) for r in ordered],
        "totals": totals,
        "skipped": skipped,
        "timings": timings,
    }
    # Every shard is final: what a killed and retried task left half-written goes (this process holds the folder).
    storage.remove_temporaries()
    storage.write_bytes(MANIFEST_NAME, dump(manifest))
    storage.remove_tree(BUILD_DIR)
    return BuildSummary(
        out=storage.display(), samples=totals["samples"], shards=totals["shards"], bytes=totals["bytes"],
        skipped=len(skipped), shards_built=timings["shards_built"], shards_reused=timings["shards_reused"],
        seconds=seconds, images_per_second=timings["images_per_second"], worker_peak_rss=peak, manifest=manifest,
        sources_changed=list(plan.changed),
    )


def build(src: str, out: str, spec="realesrgan", *, scale: int | None = None, crop: int = 512, crops_per_image: int = 1,
          shard_samples: int = 256, seed: int = 0, workers: int | None = None, address: str | None = None,
          limit: int | None = None, data_root: str | None = None, split: str = "train",
          max_pixels: int = DEFAULT_MAX_PIXELS, storage_options: dict | None = None, progress: bool = True,
          on_shard: Callable[[ShardRecord], None] | None = None, command: str | None = None,
          source_identity: str = "stat", curation=None) -> BuildSummary:
    """Build (or finish) the shards of `src` degraded by `spec` into `out`; see the module docstring.

    `curation` (curate_select.Curation): build only the images it keeps; the manifest records it."""
    from srdistill.degrade.spec.schema import load_spec

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    if scale is not None and scale != spec.scale:
        if scale < 1:
            raise UserError(f"--scale must be a positive integer, got {scale}.")
        spec = dataclasses.replace(spec, scale=scale)
    check_run_options(seed=seed, workers=workers)
    plan = make_plan(src, spec, crop=crop, crops_per_image=crops_per_image, shard_samples=shard_samples, seed=seed,
                     limit=limit, data_root=data_root, split=split, max_pixels=max_pixels, source_identity=source_identity,
                     curation=curation)
    options = default_storage_options(str(out)) if storage_options is None else storage_options
    storage = Storage(str(out), options)
    with output_lock(str(out)):
        return _build_locked(storage, plan, spec, seed, workers=workers, address=address, progress=progress,
                             on_shard=on_shard, command=command, curation=curation)


def _build_locked(storage: Storage, plan: Plan, spec, seed: int, *, workers, address, progress, on_shard, command,
                  curation) -> BuildSummary:
    done = prepare_out(storage, plan)
    run = run_shards(storage, plan.shards, spec, seed, done, workers=workers, address=address, progress=progress,
                     on_shard=on_shard)
    extra = {
        "source": {"name": plan.identity["source"], "root": plan.source_root, "images": plan.images,
                   "identity": plan.source_identity, "resolve": plan.source_resolve, "notes": plan.source_notes,
                   "changed_shards": plan.changed},
        "crop_policy": plan.identity["crop_policy"],
        "shard_samples": plan.identity["shard_samples"],
        **({"curation": curation.record()} if curation is not None else {}),
    }
    return write_manifest(storage, plan, run, spec, seed, images=plan.images, command=command, extra=extra)
