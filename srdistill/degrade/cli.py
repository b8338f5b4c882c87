"""`degrade`: synthesize Real-ESRGAN HR/LR training pairs into WebDataset shards, and inspect them."""

from __future__ import annotations

import argparse
import shlex
import sys

from srdistill.core.errors import UserError, run_command

_DESCRIPTION = """\
Turn a folder of photos (or a named data set) into degraded HR/LR training pairs.

Each source image is cropped, degraded by a spec's pipeline of ops (a shipped preset such as
realesrgan, bsrgan or realesrgan-codecs, or your own YAML file), and stored as {key}.hr.png /
{key}.lr.png / {key}.json in WebDataset tar shards beside a manifest.json. The same source, spec and seed always give
byte-identical shards.

  degrade build --src sample --out shards/        # the embedded sample photos
  degrade build --src sample --preset bsrgan --out bsrgan/    # another preset (or --spec my.yaml)
  degrade curate --src photos/ --out scores.parquet           # score HR images before building
  degrade build --src photos/ --out shards/ --curation scores.parquet --select 'laplacian_var >= 50'
  degrade preview shards/ --out grid.png          # look at some pairs
  degrade verify shards/                          # check every shard against the manifest
  degrade replay shards/                          # re-derive LRs from HR + params, bit for bit
  degrade regen --from shards/ --spec new.yaml --out shards2/   # same HR, new degradation
  degrade diff shards/ shards2/ --out diff/       # how two builds differ
  degrade diff shards/ --reference realesrgan     # LR statistics against the Real-ESRGAN reference's
  degrade presets                                 # the shipped degradation specs
"""

_BUILD_EPILOG = """\
Sources (--src): a folder, a glob such as 'photos/**/*.jpg', 'sample', or a named data set
found under --data-root (or $SRDISTILL_DATA):
{sources}

Re-running the same command resumes: finished shards whose bytes still match are kept, unless their
source files changed since (see --source-identity); those are rewritten, and the build says so.
Bad source files (corrupt, not images, too large) are skipped and listed in manifest.json.
"""


def _parser() -> argparse.ArgumentParser:
    from srdistill.datasets.images import DEFAULT_MAX_PIXELS
    from srdistill.datasets.sources import describe_sources
    from srdistill.degrade.inspect.diff import DEFAULT_LIMIT
    from srdistill.degrade.spec.schema import PRESETS

    parser = argparse.ArgumentParser(prog="degrade", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser(
        "build", help="degrade a source into shards (runs on Ray)",
        description="Crop and degrade every image of a source into WebDataset shards plus manifest.json.",
        epilog=_BUILD_EPILOG.format(sources="\n".join("  " + line for line in describe_sources().splitlines())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--src", required=True, help="where the HR images come from (see Sources below)")
    b.add_argument("--out", required=True, help="output folder or fsspec URL such as s3://bucket/prefix")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--preset", help=f"shipped degradation preset, one of {', '.join(PRESETS)} (default realesrgan)")
    group.add_argument("--spec", help="a degradation spec file (YAML or JSON) instead of a preset")
    b.add_argument("--scale", type=int, help="downscaling factor (default: the spec's, 4 for the presets)")
    b.add_argument("--crop", type=int, default=512,
                   help="HR crop size in pixels; 0 keeps whole images cut to a multiple of the scale (default 512)")
    b.add_argument("--crops-per-image", type=int, default=1, metavar="K", help="random crops taken from each image (default 1)")
    b.add_argument("--shard-samples", type=int, default=256, metavar="N", help="samples per shard (default 256)")
    b.add_argument("--seed", type=int, default=0, help="global seed; every sample's randomness comes from (seed, key) (default 0)")
    b.add_argument("--workers", type=int, help="parallel shard tasks (default: all CPUs of the embedded or joined cluster)")
    b.add_argument("--address", help="join an existing Ray cluster (e.g. 10.0.0.5:6379 or 'auto') instead of starting one here; "
                        "every node must then read --src and reach --out (shared folder or s3://)")
    b.add_argument("--limit", type=int, metavar="N", help="use only the first N source images in sorted order")
    b.add_argument("--data-root", help="folder holding the named data sets (default $SRDISTILL_DATA)")
    b.add_argument("--split", default="train", help="shard name prefix: {split}-000000.tar (default train)")
    b.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"skip source images with more pixels than this (default {DEFAULT_MAX_PIXELS})")
    b.add_argument("--source-identity", choices=("stat", "content"), default="stat",
                   help="how a resumed build tells that a source file changed, so its shard is rewritten: size and "
                        "modification time (stat, default) or the sha256 of its bytes (content, reads every file)")
    b.add_argument("--curation", metavar="SCORES", help="a `degrade curate` scores file: build only the images it keeps")
    b.add_argument("--select", metavar="EXPR", help="with --curation: which images to keep, in a small grammar "
                        "(score column names, numbers, 'strings', == != < <= > >=, and/or/not, parentheses), e.g. "
                        "'laplacian_var >= 50 and blockiness <= 1.5'")
    b.add_argument("--dedup", metavar="RULE", help="with --curation: keep one image per group of near-duplicates, "
                        "phash:D (Hamming distance <= D) or embed:T (cosine similarity >= T); the largest, then the "
                        "most complex, is kept")
    b.add_argument("--best-tile", action="store_true", help="with --curation: crop each image to its highest-complexity "
                        "tile (scores made with `degrade curate --tile N`)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("curate", help="score source images (sharpness, noise, JPEG history, pHash, pyiqa) into parquet",
                       description="Score every image of a source, and each N x N tile with --tile, into one parquet "
                                   "table (runs on Ray; re-running resumes). `degrade build --curation` then selects.")
    c.add_argument("--src", required=True, help="where the HR images come from (as for build)")
    c.add_argument("--out", required=True, help="the scores file to write, NAME.parquet")
    c.add_argument("--tile", type=int, default=0, metavar="N", help="also score each full N x N tile (default 0: none)")
    c.add_argument("--metrics", help="comma-separated pyiqa no-reference metrics to add, e.g. niqe,musiq")
    c.add_argument("--offline", action="store_true", help="download no metric or --embed weights; a missing one is an error")
    c.add_argument("--embed", metavar="timm:MODEL", help="also store an image embedding per image (a timm model, "
                        "pretrained weights fetched like metric weights) for --dedup embed:T")
    c.add_argument("--dedup", metavar="RULE", help="also list near-duplicates: phash:D (Hamming distance <= D) or "
                        "embed:T (embedding cosine similarity >= T)")
    c.add_argument("--report", metavar="DIR", help="also write score histograms (thresholds of --select marked) and "
                        "contact sheets of the lowest and highest scored images into DIR")
    c.add_argument("--select", metavar="EXPR", help="with --report: the selection whose thresholds to mark")
    c.add_argument("--workers", type=int, help="parallel tasks (default: all CPUs of the embedded or joined cluster)")
    c.add_argument("--address", help="join an existing Ray cluster instead of starting one here")
    c.add_argument("--limit", type=int, metavar="N", help="use only the first N source images in sorted order")
    c.add_argument("--data-root", help="folder holding the named data sets (default $SRDISTILL_DATA)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("preview", help="PNG grid of samples: HR, the image after each stage, LR, with their ops",
                       description="Draw the first samples of a build, one row each: the HR, the image after each "
                                   "named stage of its spec (re-derived from the sample's recorded ops) and the LR, "
                                   "captioned with the ops that ran and their values.")
    p.add_argument("dir", help="the --out folder (or URL) of a finished build")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--samples", type=int, default=8, help="how many pairs to draw (default 8)")

    v = sub.add_parser("verify", help="check every shard against manifest.json",
                       description="Check every shard of a build: present, size and sha256 as in the manifest, readable tar, "
                                   "complete samples, decodable PNGs, LR exactly HR/scale; and that the source files "
                                   "are still those the shards were made from. Exit status 1 on any mismatch.")
    v.add_argument("dir", help="the --out folder (or URL) of a finished build")

    r = sub.add_parser("replay", help="re-derive LRs from HR + recorded params and compare bit for bit",
                       description="Re-run the degradation of stored samples from their HR and the params in their json, "
                                   "and check the result equals the stored LR exactly. Exit status 1 on any difference.")
    r.add_argument("dir", help="the --out folder (or URL) of a finished build")
    r.add_argument("--samples", type=int, default=8, help="how many samples to replay from the start, 0 for all (default 8)")
    r.add_argument("--key", help="replay only this sample key")

    sub.add_parser("presets", help="list the shipped degradation presets",
                   description="Every shipped preset (a name for --preset) with its one-line description and "
                               "where its numbers come from.")

    g = sub.add_parser(
        "regen",
        help="re-degrade the HR of an existing build under a new spec (runs on Ray)",
        description="Write a new build from the HR images of an existing one, degraded with a new spec: same keys, "
        "same HR bytes, new LR, params and spec hash; its manifest names the parent build. Distributed and "
        "resumable like `degrade build`: re-run the same command to finish an interrupted regen.",
    )
    g.add_argument("--from", dest="parent", required=True, metavar="SHARDS",
                   help="the parent build: a folder or URL holding manifest.json and shards")
    group = g.add_mutually_exclusive_group(required=True)
    group.add_argument("--spec", help="the new degradation spec file (YAML or JSON)")
    group.add_argument("--preset", help="a shipped preset instead of a file (`degrade presets` lists them)")
    g.add_argument("--out", required=True, help="output folder or fsspec URL for the new build")
    g.add_argument("--seed", type=int, help="global seed (default: the parent's, so only the spec change shows)")
    g.add_argument("--workers", type=int, help="parallel shard tasks (default: all CPUs of the cluster)")
    g.add_argument("--address", help="join an existing Ray cluster instead of starting one here")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser(
        "diff",
        help="compare two builds, or a build with the Real-ESRGAN reference: spec, parameter distributions and "
        "LR statistics (markdown + PNG)",
        description="Show how build B differs from build A before training on it: the spec steps and parameters that differ (op by op), "
        "the distribution of every recorded degradation parameter, and statistics measured on the LR images "
        "(strength against bicubic and area downscales of the HR, colour, high frequencies, noise level, JPEG "
        "blockiness). With --reference instead of B, compare A's LR statistics with the reference "
        "implementation's on the same HR images (KS test per statistic). Writes OUT/diff.md and PNG histograms.",
    )
    d.add_argument("a", help="first build: a folder or URL holding manifest.json and shards")
    d.add_argument("b", nargs="?", help="second build, e.g. the output of `degrade regen` under a new spec")
    d.add_argument("--reference", metavar="SPEC",
                   help="instead of a second build, compare A's LR statistics with the Real-ESRGAN reference "
                        "implementation (basicsr + realesrgan, CPU, about a second per 512x512 HR) run on A's HR "
                        "images under this spec's numbers, e.g. `realesrgan`")
    d.add_argument("--seed", type=int, default=0, help="seed of the reference's draws (default: %(default)s)")
    d.add_argument("--out", default="degrade-diff", help="folder for diff.md and plots (default: %(default)s)")
    d.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="samples read per build, spread over its shards (default: %(default)s)")
    return parser


def _curation(args):
    from srdistill.degrade.curate.expression import parse
    from srdistill.degrade.curate.select import Curation, parse_dedup

    if args.curation is None:
        if args.select or args.dedup or args.best_tile:
            raise UserError("--select, --dedup and --best-tile need --curation SCORES (from `degrade curate`).")
        return None
    parse_dedup(args.dedup)
    if args.select is not None:
        parse(args.select)
    return Curation(args.curation, select=args.select, dedup=args.dedup, best_tile=args.best_tile)


def _curate(args) -> int:
    from srdistill.core.fetch import download
    from srdistill.degrade.curate.run import curate
    from srdistill.degrade.curate.expression import parse
    from srdistill.degrade.curate.select import dedup_groups, parse_dedup, read_scores

    rule = parse_dedup(args.dedup)
    if args.select is not None:
        parse(args.select)
    metrics = [m.strip() for m in (args.metrics or "").split(",") if m.strip()]
    if metrics or args.embed:
        download.configure(offline=args.offline, mirror=None)
    summary = curate(args.src, args.out, tile=args.tile, metrics=metrics, workers=args.workers, address=args.address,
                     data_root=args.data_root, limit=args.limit, progress=not args.quiet, embed=args.embed)
    print(summary.text())
    if rule is not None:
        frame = read_scores(args.out)
        full = frame[(frame["tile"] == "full") & (frame["error"] == "")]
        dropped = dedup_groups(full, rule)
        paths = dict(zip(full["key"], full["path"]))
        print(f"{len(dropped)} near-duplicates would be dropped by --dedup {args.dedup}:")
        for key, kept in sorted(dropped.items(), key=lambda kv: paths[kv[0]]):
            print(f"  {paths[key]} duplicates {paths[kept]}")
    if args.report:
        from srdistill.degrade.curate.report import write_report

        files = write_report(args.out, args.report, select=args.select)
        print(f"wrote {len(files)} report files to {args.report} (start with report.md)")
    elif args.select:
        raise UserError("--select in `degrade curate` only marks thresholds in --report DIR; give --report too.")
    return 0


def _build(args) -> int:
    from srdistill.degrade.build.builder import build

    from srdistill.core.outputs import check_output_dir

    check_output_dir(args.out, "--out")
    summary = build(
        args.src, args.out, args.spec or args.preset or "realesrgan", scale=args.scale, crop=args.crop,
        crops_per_image=args.crops_per_image, shard_samples=args.shard_samples, seed=args.seed, workers=args.workers,
        address=args.address, limit=args.limit, data_root=args.data_root, split=args.split, max_pixels=args.max_pixels,
        progress=not args.quiet, command=" ".join(shlex.quote(a) for a in ["degrade", *args.argv]),
        source_identity=args.source_identity, curation=_curation(args),
    )
    print(summary.text())
    for skip in summary.manifest["skipped"][:10]:
        print(f"  skipped {skip['source_path']}: {skip['reason']}")
    if summary.skipped > 10:
        print(f"  ... {summary.skipped - 10} more in manifest.json")
    if summary.samples == 0:
        why = (f"all {summary.skipped} source files of {args.src} were skipped (reasons above and in manifest.json)"
               if summary.skipped else f"{args.src} holds no images")
        raise UserError(f"no samples were written: {why}.")
    return 0


def _preview(args) -> int:
    from srdistill.degrade.inspect.preview import preview

    from srdistill.core.outputs import check_output_file

    check_output_file(args.out, "--out")
    n = preview(args.dir, args.out, samples=args.samples)
    print(f"wrote {n} HR/LR pairs to {args.out}")
    return 0


def _verify(args) -> int:
    from srdistill.degrade.inspect.verify import verify

    report = verify(args.dir, progress=True)
    for line in report.notes + report.problems:
        print(line)
    if report.ok:
        print(f"ok: {report.shards} shards, {report.samples} samples match the manifest")
        return 0
    print(f"degrade verify: {len(report.problems)} problems in {args.dir}", file=sys.stderr)
    return 1


def _replay(args) -> int:
    from srdistill.degrade.inspect.verify import replay

    report = replay(args.dir, samples=args.samples, key=args.key)
    if args.key and report.checked == 0:
        raise UserError(f"no sample with key {args.key!r} in {args.dir}.")
    if report.mismatches:
        print(f"degrade replay: {len(report.mismatches)} of {report.checked} samples differ: "
              f"{', '.join(report.mismatches[:5])}", file=sys.stderr)
        return 1
    print(f"ok: {report.checked} samples re-derived bit-exactly from HR + params")
    return 0


def _regen(args) -> int:
    from srdistill.core.outputs import check_output_dir
    from srdistill.degrade.build.regen import regen

    check_output_dir(args.out, "--out")
    summary = regen(
        args.parent, args.out, args.spec or args.preset, seed=args.seed, workers=args.workers,
        address=args.address, progress=not args.quiet,
        command=" ".join(shlex.quote(a) for a in ["degrade", *args.argv]),
    )
    parent = summary.manifest["parent"]
    print(summary.text())
    print(f"spec {parent['spec_hash']} -> {summary.manifest['spec_hash']}; parent build {parent['build_id']}")
    return 0


def _diff(args) -> int:
    from srdistill.core.outputs import check_output_dir
    from srdistill.degrade.inspect.diff import diff_builds, diff_reference

    if args.limit < 2:
        raise UserError("--limit must be at least 2 samples")
    check_output_dir(args.out, "--out")
    if (args.b is None) == (args.reference is None):
        raise UserError("give either a second build B or --reference SPEC, not both and not neither.")
    if args.reference is not None:
        ref = diff_reference(args.a, args.reference, args.out, args.limit, args.seed)
        print(f"read {ref.samples} samples and degraded their HR with the reference; "
              + (f"LR statistics that differ (KS p < 0.01): {', '.join(ref.differs)}" if ref.differs
                 else "no LR statistic differs (KS p >= 0.01)"))
        print(f"report: {ref.report}")
        return 0
    summary = diff_builds(args.a, args.b, args.out, args.limit)
    print(f"read {summary.samples[0]} + {summary.samples[1]} samples; {summary.spec_fields} spec difference(s) "
          f"(steps or parameters); "
          f"{len(summary.moved)} parameter distribution(s) changed"
          + (f": {', '.join(summary.moved[:8])}" + (" ..." if len(summary.moved) > 8 else "") if summary.moved else ""))
    print(f"report: {summary.report}")
    return 0


def _presets(args) -> int:
    from srdistill.degrade.spec.schema import preset_infos

    infos = preset_infos()
    width = max(len(i.name) for i in infos)
    for i in infos:
        print(f"{i.name:<{width}}  {i.description}")
        print(f"{'':<{width}}  source: {i.source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"build": _build, "curate": _curate, "preview": _preview, "verify": _verify, "replay": _replay,
                "presets": _presets, "regen": _regen, "diff": _diff}
    handler = handlers[args.command]
    return run_command("degrade", lambda: handler(args), "interrupted; re-run the same command to resume.")


if __name__ == "__main__":
    sys.exit(main())
