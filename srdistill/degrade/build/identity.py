"""Source identity of shards: which finished shards a resumed build may keep, and whether a build's sources changed.

The plan gives each shard a digest of the identity of its source files (plan.py). plan.json and the manifest
record the mode (`stat` or `content`) and each shard's digest. A resumed build keeps a finished shard only if
its recorded digest equals the planned one, and its PNGs were written with today's encoding; `degrade verify`
lists the source again and compares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from srdistill.datasets.images import SHARD_PNG, describe_encoding
from srdistill.datasets.shards.manifest import PLAN_NAME, build_id, dump, part_name
from srdistill.degrade.build.plan import Plan
from srdistill.core.storage import Storage
from srdistill.core.errors import UserError

log = logging.getLogger(__name__)


def plan_document(plan: Plan) -> bytes:
    """plan.json: build id, identity, source identity mode and each shard with its planned samples and source digest."""
    return dump({"build_id": plan.build_id, "identity": plan.identity, "source_identity": plan.source_identity,
                 "shards": [{"name": n, "planned": len(j), **_digest_field(plan, n)} for n, j in plan.shards]})


def shard_entry(plan: Plan, entry: dict) -> dict:
    """A manifest shard entry with the shard's source digest added (when the plan has one)."""
    return {**entry, **_digest_field(plan, entry["name"])}


def _digest_field(plan: Plan, name: str) -> dict:
    return {"sources": plan.shard_sources[name]} if name in plan.shard_sources else {}


def recorded(doc: dict) -> tuple[str | None, dict[str, str | None]]:
    """(mode, {shard: digest or None}) as a manifest or plan.json records them."""
    mode = doc.get("source_identity")
    if mode is None and isinstance(doc.get("source"), dict):
        mode = doc["source"].get("identity")
    return mode, {e["name"]: e.get("sources") for e in doc.get("shards", []) if isinstance(e, dict) and "name" in e}


def drop_changed(storage: Storage, plan: Plan, doc: dict, done: dict[str, dict], *, from_plan_json: bool) -> dict[str, dict]:
    """`done` without the shards whose recorded source digest differs from the plan's; says which and why.

    Resuming from plan.json, the records of those shards are removed before plan.json is rewritten with the new
    digests, so a build killed in between can never pair old shard bytes with new source identities."""
    done = {n: {k: v for k, v in r.items() if k != "sources"} for n, r in done.items()}  # records carry no digest
    if not plan.shard_sources:
        return done
    mode, digests = recorded(doc)
    stale = sorted(n for n in done if digests.get(n) != plan.shard_sources.get(n) or mode != plan.source_identity)
    planned = {n: plan.shard_sources.get(n) for n, _ in plan.shards}
    if from_plan_json and (mode != plan.source_identity or digests != planned):
        for name in stale:
            storage.remove(part_name(name))
        storage.write_bytes(PLAN_NAME, plan_document(plan))
    if not stale:
        return done
    plan.changed = stale
    if mode is None or all(digests.get(n) is None for n in stale):
        why = "they were written by a build that recorded no source identity"
    elif mode != plan.source_identity:
        why = f"their sources were identified by {mode} then and by {plan.source_identity} now"
    else:
        why = "their source files changed since they were written (" + (
            "size or modification time" if mode == "stat" else "content") + ")"
    shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
    log.warning(f"rewriting {len(stale)} of {len(done)} finished shards: {why}: {shown}.")
    return {n: r for n, r in done.items() if n not in stale}


def drop_other_encoding(done: dict[str, dict]) -> dict[str, dict]:
    """`done` without the shards whose PNGs were written with another encoding than today's (by an older srdistill):
    rewritten, they hold the same pixels, and the manifest's one `image_encoding` stays true of every shard."""
    now = SHARD_PNG.record()
    other = sorted(n for n, r in done.items() if r.get("image_encoding") != now)
    if other:
        then = sorted({describe_encoding(done[n].get("image_encoding")) for n in other})
        log.warning(f"rewriting {len(other)} of {len(done)} finished shards: their PNGs were written with "
                    f"{' or '.join(then)}, and shards are now written with {describe_encoding(now)}; the pixels stay "
                    "the same.")
    return {n: r for n, r in done.items() if n not in other}


class CurationMismatch(UserError):
    """The scores file does not describe the source it is applied to (another folder, missing or changed images).
    Raised by curation (above building); defined here so that a source check can tell it from other errors."""


def check_sources(manifest: dict, load_curation: Callable[[dict | None], Any]) -> tuple[list[str], list[str]]:
    """(problems, notes): list the build's source again and compare each shard's recorded source digest with it.

    `load_curation` (curate.select.Curation.from_record) gives the curation the manifest records; it is passed in
    because curation, which hands builds their source images, sits above building."""
    from srdistill.degrade.build.plan import make_plan
    from srdistill.degrade.spec.schema import spec_from_dict

    source, identity = manifest.get("source") or {}, manifest.get("identity") or {}
    args, mode = source.get("resolve"), source.get("identity")
    if not args or not mode:
        return [], [("sources not checked: this build recorded no source identity (written by an older srdistill, or "
                     "by `degrade regen`, whose source is its parent build).")]
    policy = identity.get("crop_policy") or {}
    crop, per_image = (0, 1) if policy.get("mode") == "full" else (policy.get("crop", 0), policy.get("crops_per_image", 1))
    try:
        plan = make_plan(args["src"], spec_from_dict(manifest["spec"]), crop=crop, crops_per_image=per_image,
                         shard_samples=identity["shard_samples"], seed=manifest["seed"], limit=args.get("limit"),
                         data_root=args.get("data_root"), split=identity["split"], max_pixels=identity["max_pixels"],
                         source_identity=mode, curation=load_curation(manifest.get("curation")))
    except CurationMismatch as exc:  # the selection cannot be re-made: a problem, never a pass
        return [f"the build's curation does not fit its source now: {exc}"], []
    except UserError as exc:
        return [], [f"sources not checked: {exc}"]
    except KeyError as exc:
        return [], [f"sources not checked: the manifest has no {exc} entry."]
    # The schema version and spec hash as the build recorded them: a build written by an older srdistill (schema
    # version 1, whose spec hashes another way) is checked for its sources only.
    then = {**plan.identity, **{k: identity[k] for k in ("schema_version", "spec_hash") if k in identity}}
    if build_id(then) != manifest.get("build_id"):
        return [(f"the source {args['src']} no longer lists the files this build was made from "
                 f"({identity.get('images')} images then, {plan.images} now); re-run the build into a new --out.")], []
    _, digests = recorded(manifest)
    changed = [n for n, d in digests.items() if d != plan.shard_sources.get(n)]
    return [f"{n}: its source files changed since it was written ({mode} identity); re-run the build command to "
            "rewrite it." for n in changed], []
