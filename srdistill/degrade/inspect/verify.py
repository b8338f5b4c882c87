"""Checking a finished build: every shard against the manifest (`verify`), and LR re-derivation from HR + params (`replay`)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field

import numpy as np
from srdistill.datasets.images import BadImage, decode_png
from srdistill.degrade.build.identity import check_sources
from srdistill.degrade.curate.select import Curation, file_sha256
from srdistill.datasets.shards.manifest import MANIFEST_NAME
from srdistill.datasets.shards.reader import build_samples, open_build
from srdistill.datasets.shards.format import is_shard_name, read_samples

from srdistill.core.errors import UserError

# What a damaged shard raises while being read: every one is reported, the check goes on with the next shard.
_DAMAGE = (ValueError, KeyError, TypeError, AttributeError, BadImage, OSError, EOFError, tarfile.TarError)


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(out: str, *, storage_options: dict | None = None, decode: bool = True, progress: bool = False,
           sources: bool = True) -> VerifyReport:
    """Each manifest shard: present, same size and sha256, a readable tar of complete samples in key order whose
    count matches, whose PNGs decode, whose LR is exactly HR/scale and whose json agrees with the manifest; with
    `sources`, each shard's source files still have the identity recorded (a note when they cannot be listed)."""
    from tqdm import tqdm

    storage, manifest = open_build(out, storage_options)
    report = VerifyReport()
    scale, spec_hash = manifest["scale"], manifest["spec_hash"]
    listed = {s["name"] for s in manifest["shards"]}
    for name in storage.listdir():
        if is_shard_name(name) and name not in listed:
            report.problems.append(f"{name} is not listed in {MANIFEST_NAME}.")
    for entry in tqdm(manifest["shards"], desc="verify", unit="shard", disable=not progress):
        name = entry["name"]
        report.shards += 1
        if not storage.exists(name):
            report.problems.append(f"{name} is missing.")
            continue
        try:
            data = storage.read_bytes(name)
        except OSError as exc:
            report.problems.append(f"{name} cannot be read ({exc.strerror or exc}).")
            continue
        if len(data) != entry["bytes"]:
            report.problems.append(f"{name} has {len(data)} bytes, the manifest says {entry['bytes']}.")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            report.problems.append(f"{name} does not match its sha256 in the manifest.")
        report.problems.extend(_check_samples(name, data, entry["samples"], scale, spec_hash, decode, report))
    curation_problems = check_curation(manifest)
    report.problems.extend(curation_problems)
    if sources and curation_problems:
        report.notes.append("sources not checked: the curation that chose them cannot be applied (see the problems).")
    elif sources:
        problems, notes = check_sources(manifest, Curation.from_record)
        report.problems.extend(problems)
        report.notes.extend(notes)
    return report


def check_curation(manifest: dict) -> list[str]:
    """The curation scores file the build names still exists with the sha256 recorded, and its selection is one the
    grammar reads (nothing when uncurated): a manifest is data, so a selection outside the grammar is a problem
    and is never run."""
    import os

    from srdistill.degrade.curate.expression import parse

    curation = manifest.get("curation")
    if not curation:
        return []
    if curation.get("select") is not None:
        try:
            parse(str(curation["select"]))
        except UserError as exc:
            return [f"the curation selection in {MANIFEST_NAME} is refused: {exc}"]
    path = curation["file"]
    if not os.path.isfile(path):
        return [f"the curation scores file {path} named in {MANIFEST_NAME} is missing."]
    if file_sha256(path) != curation["sha256"]:
        return [f"the curation scores file {path} changed since the build (its sha256 differs from {MANIFEST_NAME})."]
    return []


def _check_samples(name: str, data: bytes, expected: int, scale: int, spec_hash: str, decode: bool, report: VerifyReport) -> list[str]:
    problems: list[str] = []
    count, last = 0, None
    try:
        for key, hr_png, lr_png, meta in read_samples(io.BytesIO(data)):
            count += 1
            if last is not None and key <= last:
                problems.append(f"{name}: sample {key} is out of key order.")
            last = key
            if meta.get("key") != key or meta.get("spec_hash") != spec_hash or meta.get("scale") != scale:
                problems.append(f"{name}: the json of {key} disagrees with its key or the manifest's spec hash/scale.")
            if decode:
                hr, lr = decode_png(hr_png), decode_png(lr_png)
                if hr.shape[0] % scale or hr.shape[1] % scale or lr.shape != (hr.shape[0] // scale, hr.shape[1] // scale, 3):
                    problems.append(f"{name}: {key} has HR {hr.shape[:2]} and LR {lr.shape[:2]}, not HR/{scale}.")
    except _DAMAGE as exc:
        problems.append(f"{name} cannot be read as a shard ({str(exc).strip() or type(exc).__name__}).")
        return problems
    report.samples += count
    if count != expected:
        problems.append(f"{name} holds {count} samples, the manifest says {expected}.")
    return problems


@dataclass
class ReplayReport:
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)


def sample_record(meta: dict, manifest_spec: dict) -> dict:
    """A sample's params as a version-3 op record: as stored, or converted from a version-1 shard's params with
    its manifest's (version-1) spec."""
    params = meta["params"]
    if params.get("version") in (1, 2):
        from srdistill.degrade.spec.v1 import record_from_v1

        return record_from_v1(params, manifest_spec)
    return params


def replay_sample(hr: np.ndarray, meta: dict, manifest_spec: dict) -> np.ndarray:
    """The LR that the recorded params give for this HR (the library form of `degrade replay`)."""
    from srdistill.degrade.pipeline import apply_record

    return apply_record(hr, sample_record(meta, manifest_spec))


def replay(out: str, *, samples: int = 8, key: str | None = None, storage_options: dict | None = None) -> ReplayReport:
    """Re-derive the LR of the first `samples` samples (0 = all, or only `key`) and compare with the stored LR bit for bit."""
    storage, manifest = open_build(out, storage_options)
    report = ReplayReport()
    try:
        for shard, k, hr_png, lr_png, meta in build_samples(storage, manifest):
            if key is not None and k != key:
                continue
            if not np.array_equal(replay_sample(decode_png(hr_png), meta, manifest["spec"]), decode_png(lr_png)):
                report.mismatches.append(f"{shard}:{k}")
            report.checked += 1
            if key is None and samples and report.checked >= samples:
                break
    except _DAMAGE as exc:
        raise UserError(f"a shard of {out} cannot be read ({str(exc).strip() or type(exc).__name__}); "
                        f"`degrade verify {out}` lists every damaged shard.") from exc
    return report
