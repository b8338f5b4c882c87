"""`degrade build`: plan source images into shards, write each shard in one Ray task, then the manifest.

The plan is fixed before any work: every source image becomes K sample jobs with stable keys, jobs are sorted
by key and cut into shards of `shard_samples`. A shard task writes its jobs in key order, so a retried, resumed
or differently scheduled task writes the same bytes. Finished shards leave a record in _build/; re-running the
same command reuses every shard whose bytes still hash to its record, and the manifest is written last.

On a multi-node cluster (--address) every node must read the source paths (a shared folder) and reach `out`
(a shared folder or an fsspec URL such as s3://bucket/prefix): tasks run wherever Ray places them.

A shard task takes a list of `SampleJob`s, each with an HR provider; `SourceImage` reads and crops a source file.
Other providers (e.g. the HR of an existing shard, for re-degrading with a new spec) plug into the same writer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import resource
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from srdistill import __version__
from srdistill.datasets.images import DEFAULT_MAX_PIXELS, BadImage, encode_png, read_rgb
from srdistill.datasets.sources import Skip, resolve_source
from srdistill.degrade.manifest import (
    BUILD_DIR,
    MANIFEST_NAME,
    PLAN_NAME,
    build_id,
    dump,
    part_name,
    read_json,
)
from srdistill.degrade.shards import SCHEMA_VERSION, Sample, ShardWriter, is_shard_name, shard_name
from srdistill.degrade.storage import Storage, default_storage_options
from srdistill.errors import UserError

CROP_RNG_SUFFIX = "#crop"


@dataclass(frozen=True)
class CropPolicy:
    """`crop` > 0: K random crop x crop windows per image (reflect-padded first if smaller);
    `crop` == 0: the full image, cut at the bottom/right to a multiple of `scale`."""

    crop: int
    crops_per_image: int
    scale: int

    def describe(self) -> dict:
        if self.crop == 0:
            return {"mode": "full", "cut_to_multiple_of": self.scale}
        return {
            "mode": "random",
            "crop": self.crop,
            "crops_per_image": self.crops_per_image,
            "pad": "reflect101 bottom/right to the crop size when smaller",
            "position": f"uniform, drawn from sample_rng(seed, key + {CROP_RNG_SUFFIX!r})",
        }

    def keys(self, item_key: str) -> list[str]:
        if self.crop == 0:
            return [item_key]
        width = max(2, len(str(self.crops_per_image - 1)))
        return [f"{item_key}_c{i:0{width}d}" for i in range(self.crops_per_image)]


class HRProvider(Protocol):
    """Where a sample's HR comes from. Jobs sharing `ident` share one `load()`."""

    ident: str
    source: str
    source_path: str

    def load(self) -> np.ndarray: ...  # raises BadImage

    def hr(self, image: np.ndarray, key: str, seed: int) -> tuple[np.ndarray, dict]: ...  # HR + json fields


@dataclass(frozen=True)
class SourceImage:
    """HR crops of one source file under a crop policy."""

    source: str
    source_path: str  # relative to the source root; recorded in json and manifest
    path: str
    policy: CropPolicy
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def ident(self) -> str:
        return self.path

    def load(self) -> np.ndarray:
        image = read_rgb(self.path, max_pixels=self.max_pixels)
        s = self.policy.scale
        if self.policy.crop == 0 and (image.shape[0] < s or image.shape[1] < s):
            raise BadImage(f"smaller than the scale: {image.shape[1]}x{image.shape[0]} pixels at scale {s}")
        return image

    def hr(self, image: np.ndarray, key: str, seed: int) -> tuple[np.ndarray, dict]:
        from srdistill.degrade.pipeline import sample_rng

        h, w = image.shape[:2]
        c, s = self.policy.crop, self.policy.scale
        fields: dict = {"source": self.source, "source_path": self.source_path, "source_size": [h, w]}
        if c == 0:
            hh, ww = h - h % s, w - w % s
            fields["crop"] = [0, 0, hh, ww]
            return np.ascontiguousarray(image[:hh, :ww]), fields
        pad_h, pad_w = max(0, c - h), max(0, c - w)
        if pad_h or pad_w:
            import cv2

            border = cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_REPLICATE
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, border)
            fields["pad"] = [pad_h, pad_w]
        rng = sample_rng(seed, key + CROP_RNG_SUFFIX)
        top = int(rng.integers(0, image.shape[0] - c + 1))
        left = int(rng.integers(0, image.shape[1] - c + 1))
        fields["crop"] = [top, left, c, c]
        return np.ascontiguousarray(image[top : top + c, left : left + c]), fields


@dataclass(frozen=True)
class SampleJob:
    key: str
    provider: HRProvider


@dataclass
class ShardRecord:
    """What a shard task reports; `name`, `samples`, `bytes`, `sha256` go into the manifest."""

    name: str
    samples: int
    bytes: int
    sha256: str
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    reused: bool = False

    def manifest_entry(self) -> dict:
        return {"name": self.name, "samples": self.samples, "bytes": self.bytes, "sha256": self.sha256}


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

    def text(self) -> str:
        return (
            f"{self.samples} samples in {self.shards} shards ({self.bytes / 2**20:.1f} MiB) at {self.out}; "
            f"{self.shards_built} shards written, {self.shards_reused} reused; {self.skipped} source files skipped; "
            f"{self.images_per_second:.2f} img/s; peak worker memory {self.worker_peak_rss / 2**20:.0f} MiB"
        )


class _HashingFile:
    """Forwards writes to a file and keeps their sha256 and length."""

    def __init__(self, fh) -> None:
        self.fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size


def write_shard(storage: Storage, name: str, jobs: list[SampleJob], spec, seed: int,
                on_sample: Callable[[int], None] | None = None) -> ShardRecord:
    """Write one shard from `jobs` (sorted here by key) and its record in _build/; bad HR sources are skipped.
    `on_sample(n)` is told the number of samples written so far, after each one."""
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec import spec_hash

    start, cpu_start = time.perf_counter(), time.process_time()
    digest = spec_hash(spec)
    skipped: dict[str, str] = {}
    loaded_ident, image = None, None
    with storage.writer(name) as raw:
        out = _HashingFile(raw)
        with ShardWriter(out) as writer:
            for job in sorted(jobs, key=lambda j: j.key):
                p = job.provider
                if p.source_path in skipped:
                    continue
                if p.ident != loaded_ident:
                    loaded_ident, image = p.ident, None
                    try:
                        image = p.load()
                    except BadImage as exc:
                        skipped[p.source_path] = str(exc)
                        continue
                hr, fields = p.hr(image, job.key, seed)
                lr, params = degrade_image(hr, spec, seed, job.key)
                meta = {"key": job.key, **fields, "scale": spec.scale, "seed": seed, "spec_hash": digest, "params": params}
                writer.write(Sample(job.key, encode_png(hr), encode_png(lr), meta))
                if on_sample is not None:
                    on_sample(writer.count)
        count = writer.count
    record = ShardRecord(
        name=name,
        samples=count,
        bytes=out.size,
        sha256=out.digest.hexdigest(),
        skipped=[{"source_path": k, "reason": v} for k, v in sorted(skipped.items())],
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    storage.write_bytes(part_name(name), dump(dataclasses.asdict(record)))
    return record


class ProgressBoard:
    """A Ray actor holding, per shard, the samples its current attempt has written (for the driver's progress bar)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def set(self, name: str, n: int) -> None:
        self.counts[name] = n

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def shard_task(url: str, options: dict, name: str, jobs: list[SampleJob], spec, seed: int, expected: dict | None,
               board=None) -> ShardRecord:
    """Body of the Ray task: reuse the shard if its bytes still match `expected`, else (re)write it."""
    import cv2

    cv2.setNumThreads(1)  # one core per task: Ray schedules one task per CPU
    storage = Storage(url, options)
    if expected is not None and storage.exists(name) and storage.size(name) == expected["bytes"]:
        if storage.sha256(name) == expected["sha256"]:
            return ShardRecord(**{**expected, "reused": True})
    report = None if board is None else (lambda n: board.set.remote(name, n))
    return write_shard(storage, name, jobs, spec, seed, on_sample=report)


@dataclass
class Plan:
    identity: dict
    build_id: str
    shards: list[tuple[str, list[SampleJob]]]
    source_skipped: list[Skip]
    source_root: str
    images: int


def make_plan(src: str, spec, *, crop: int, crops_per_image: int, shard_samples: int, seed: int, limit: int | None,
              data_root: str | None, split: str, max_pixels: int) -> Plan:
    from srdistill.degrade.spec import spec_hash

    s = spec.scale
    if crop < 0 or (crop and crop % s):
        raise UserError(f"--crop must be 0 (full images) or a positive multiple of the scale {s}, got {crop}.")
    if crops_per_image < 1:
        raise UserError(f"--crops-per-image must be at least 1, got {crops_per_image}.")
    if crop == 0 and crops_per_image != 1:
        raise UserError("--crops-per-image needs --crop > 0: with --crop 0 each image is one full-size sample.")
    if shard_samples < 1:
        raise UserError(f"--shard-samples must be at least 1, got {shard_samples}.")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}.")
    if not split or not all(ch.isalnum() or ch in "_-" for ch in split):
        raise UserError(f"--split must hold only letters, digits, '_' and '-', got {split!r}.")
    source = resolve_source(src, data_root)
    items = source.items()[:limit] if limit else source.items()
    policy = CropPolicy(crop, crops_per_image, s)
    jobs = sorted(
        (SampleJob(key, SourceImage(item.source, item.rel, item.path, policy, max_pixels))
         for item in items for key in policy.keys(item.key)),
        key=lambda j: j.key,
    )
    identity = {
        "schema_version": SCHEMA_VERSION,
        "source": source.name,
        "items": hashlib.sha256("\n".join(i.rel for i in items).encode()).hexdigest()[:16],
        "images": len(items),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": s,
        "crop_policy": policy.describe(),
        "shard_samples": shard_samples,
        "split": split,
        "max_pixels": max_pixels,
    }
    shards = [(shard_name(split, i // shard_samples), jobs[i : i + shard_samples]) for i in range(0, len(jobs), shard_samples)]
    return Plan(identity, build_id(identity), shards, source.skipped(), str(source.root), len(items))


def _prepare_out(storage: Storage, plan: Plan) -> dict[str, dict]:
    """Check `out` holds nothing or this same build; return the records of shards already finished."""
    what = f"{storage.display()} holds a different build"
    hint = "choose another --out or delete that folder"
    if storage.exists(MANIFEST_NAME):
        manifest = read_json(storage, MANIFEST_NAME)
        if manifest.get("build_id") != plan.build_id:
            raise UserError(f"{what} ({_differences(manifest.get('identity', {}), plan.identity)}); {hint}.")
        storage.remove_temporaries()
        return {r["name"]: {**r, "skipped": [s for s in manifest.get("skipped", []) if s.get("shard") == r["name"]]}
                for r in manifest.get("shards", [])}
    if storage.exists(PLAN_NAME):
        previous = read_json(storage, PLAN_NAME)
        if previous.get("build_id") != plan.build_id:
            raise UserError(f"{what} (an unfinished one: {_differences(previous.get('identity', {}), plan.identity)}); {hint}.")
    else:
        strangers = [n for n in storage.listdir() if is_shard_name(n)]
        if strangers:
            raise UserError(f"{storage.display()} already holds shards ({strangers[0]} ...) but no manifest or plan "
                            f"of this build; {hint}.")
        storage.write_bytes(PLAN_NAME, dump({"build_id": plan.build_id, "identity": plan.identity,
                                             "shards": [{"name": n, "planned": len(j)} for n, j in plan.shards]}))
    storage.remove_temporaries()
    done = {}
    for part in storage.listdir(BUILD_DIR):
        if part != PLAN_NAME:
            record = read_json(storage, part)
            done[record["name"]] = {k: record[k] for k in ("name", "samples", "bytes", "sha256", "skipped", "seconds",
                                                           "cpu_seconds", "peak_rss")}
    return done


def _differences(old: dict, new: dict) -> str:
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not changed:
        return "its build id differs"
    return "; ".join(f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in changed[:3])


def _connect_ray(workers: int | None, address: str | None) -> tuple[bool, int]:
    """Join a running Ray (this process or --address) or start an embedded one; returns (started_here, slots)."""
    import ray

    if ray.is_initialized():
        return False, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address!r} ({exc}); check the address or leave out --address.") from exc
        return True, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = workers or os.cpu_count() or 1
    ray.init(num_cpus=n, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    return True, n


def _show_progress(bar, board, finished: int, running: set[str]):
    """Move the bar to finished shards + samples written by running ones; returns the board, or None once lost."""
    import ray

    partial = 0
    if board is not None:
        try:
            partial = sum(n for name, n in ray.get(board.get.remote(), timeout=10).items() if name in running)
        except (ray.exceptions.RayError, TimeoutError):
            board = None  # the progress actor's node went away: fall back to whole-shard steps
    if finished + partial > bar.n:
        bar.update(finished + partial - bar.n)
    return board


@dataclass
class ShardRun:
    records: dict[str, ShardRecord]
    built_samples: int
    seconds: float
    slots: int


def run_shards(storage: Storage, options: dict, shards: list[tuple[str, list[SampleJob]]], spec, seed: int,
               done: dict[str, dict], *, workers: int | None = None, address: str | None = None, progress: bool = True,
               on_shard: Callable[[ShardRecord], None] | None = None, desc: str = "degrade build") -> ShardRun:
    """One Ray task per shard (at most `workers` in flight), with a per-sample progress bar; `done` holds the
    records of shards to reuse when their bytes still match. Starts an embedded Ray unless one is connected."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from tqdm import tqdm

    started, slots = _connect_ray(workers, address)
    remote = ray.remote(num_cpus=1, max_retries=3)(shard_task)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    board = ray.remote(num_cpus=0)(ProgressBoard).options(scheduling_strategy=here).remote() if progress else None
    records: dict[str, ShardRecord] = {}
    t0 = time.perf_counter()
    built_samples = finished = 0
    try:
        queue = list(shards)
        pending: dict = {}
        bar = tqdm(total=sum(len(j) for _, j in shards), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)
        while queue or pending:
            while queue and len(pending) < slots:
                name, jobs = queue.pop(0)
                ref = remote.remote(storage.url, options, name, jobs, spec, seed, done.get(name), board)
                pending[ref] = (name, len(jobs))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                name, planned = pending.pop(ref)
                record = ray.get(ref)
                records[name] = record
                finished += planned
                if not record.reused:
                    built_samples += planned
                if on_shard is not None:
                    on_shard(record)
            board = _show_progress(bar, board, finished, {name for name, _ in pending.values()})
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return ShardRun(records, built_samples, time.perf_counter() - t0, slots)


def build(src: str, out: str, spec="realesrgan", *, scale: int | None = None, crop: int = 512, crops_per_image: int = 1,
          shard_samples: int = 256, seed: int = 0, workers: int | None = None, address: str | None = None,
          limit: int | None = None, data_root: str | None = None, split: str = "train",
          max_pixels: int = DEFAULT_MAX_PIXELS, storage_options: dict | None = None, progress: bool = True,
          on_shard: Callable[[ShardRecord], None] | None = None, command: str | None = None) -> BuildSummary:
    """Build (or finish) the shards of `src` degraded by `spec` into `out`; see the module docstring."""
    from srdistill.degrade.spec import load_spec, spec_hash, spec_to_dict

    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    if scale is not None and scale != spec.scale:
        if scale < 1:
            raise UserError(f"--scale must be a positive integer, got {scale}.")
        spec = dataclasses.replace(spec, scale=scale)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}.")
    plan = make_plan(src, spec, crop=crop, crops_per_image=crops_per_image, shard_samples=shard_samples, seed=seed,
                     limit=limit, data_root=data_root, split=split, max_pixels=max_pixels)
    options = default_storage_options(str(out)) if storage_options is None else storage_options
    storage = Storage(str(out), options)
    try:
        storage.makedirs()
        done = _prepare_out(storage, plan)
    except OSError as exc:
        raise UserError(f"cannot use {storage.display()} as output ({exc}); check the path or credentials.") from exc

    run = run_shards(storage, options, plan.shards, spec, seed, done, workers=workers, address=address,
                     progress=progress, on_shard=on_shard)
    records, built_samples, seconds, slots = run.records, run.built_samples, run.seconds, run.slots

    ordered = [records[name] for name, _ in plan.shards]
    skipped = sorted(
        [{"source_path": s.source_path, "reason": s.reason} for s in plan.source_skipped]
        + [{**s, "shard": r.name} for r in ordered for s in r.skipped],
        key=lambda s: s["source_path"],
    )
    skipped = list({s["source_path"]: s for s in skipped}.values())
    peak = max((r.peak_rss for r in ordered if not r.reused), default=0)
    totals = {"samples": sum(r.samples for r in ordered), "shards": len(ordered), "bytes": sum(r.bytes for r in ordered),
              "images": plan.images, "skipped": len(skipped)}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "build_id": plan.build_id,
        "identity": plan.identity,
        "source": {"name": plan.identity["source"], "root": plan.source_root, "images": plan.images},
        "spec": spec_to_dict(spec),
        "spec_hash": spec_hash(spec),
        "seed": seed,
        "scale": spec.scale,
        "split": plan.identity["split"],
        "crop_policy": plan.identity["crop_policy"],
        "shard_samples": plan.identity["shard_samples"],
        "shards": [r.manifest_entry() for r in ordered],
        "totals": totals,
        "skipped": skipped,
        "timings": {
            "wall_seconds": round(seconds, 3),
            "samples_built": built_samples,
            "images_per_second": round(built_samples / seconds, 3) if seconds > 0 else 0.0,
            "workers": slots,
            "shards_built": sum(not r.reused for r in ordered),
            "shards_reused": sum(r.reused for r in ordered),
            "shard_seconds": {r.name: round(r.seconds, 3) for r in ordered},
            "task_cpu_seconds": round(sum(r.cpu_seconds for r in ordered if not r.reused), 3),
            "worker_peak_rss_bytes": peak,
        },
    }
    storage.write_bytes(MANIFEST_NAME, dump(manifest))
    storage.remove_tree(BUILD_DIR)
    return BuildSummary(
        out=storage.display(), samples=totals["samples"], shards=totals["shards"], bytes=totals["bytes"],
        skipped=len(skipped), shards_built=manifest["timings"]["shards_built"], shards_reused=manifest["timings"]["shards_reused"],
        seconds=seconds, images_per_second=manifest["timings"]["images_per_second"], worker_peak_rss=peak, manifest=manifest,
    )
