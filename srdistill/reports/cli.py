"""`reports`: nightly benchmark runs with a history, regression detection and markdown reports."""

from __future__ import annotations

import argparse
import sys
import traceback
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from srdistill.core.fetch import download
from srdistill.core.errors import UserError, run_command

DEFAULT_HISTORY = "srdistill-nightly/history"
DEFAULT_OUT = "srdistill-nightly/reports"

_DESCRIPTION = """\
Run a fixed benchmark suite every night, remember every night in a parquet history, and say at the top of
a markdown report what got better or worse since the previous night and since a pinned baseline.

  reports nightly                                  # the built-in suite on the embedded sample photos
  reports nightly --suite my-suite.yaml --history /data/sr-history --out /data/sr-reports
  reports pin 2026-01-05                           # compare every later night against this one too
  reports nights                                   # list the recorded nights

Exit status of `nightly`: 0 no regression, 1 a regression (a metric worse beyond noise, a method that broke,
or slower throughput when the suite says so), 2 a usage mistake, 3 no regression but some evaluations failed,
4 the run crashed (a bug or an environment fault; the traceback is printed, nothing is recorded), 130 interrupted.
"""

_NIGHTLY_EPILOG = """\
The suite file (YAML) names datasets, methods, metrics, spec presets to record, short training jobs and
throughput benchmarks; the packaged default suite is a commented example: reports/suites/default.yaml in a source
checkout, here {default_suite}.
Re-running the same --date replaces that night in the history. A change is flagged when its paired
confidence interval over images excludes 0 and it exceeds the metric's minimum effect (suite `compare:`).

Run it nightly with cron, e.g.:
  30 2 * * * cd /srv/sr && .venv/bin/reports nightly --suite suite.yaml >> nightly.log 2>&1
"""


def _default_suite_path() -> str:
    from srdistill.reports.suite import DEFAULT_SUITE

    return str(resources.files("srdistill.reports") / "suites" / f"{DEFAULT_SUITE}.yaml")


def _recorded_history(path: str) -> Path:
    """The --history of `pin` and `nights`: it must already exist (a typo must not read as an empty history)."""
    history = Path(path)
    if not history.is_dir():
        what = "is a file, not a history folder" if history.exists() else "does not exist"
        raise UserError(f"--history {history} {what}; give the --history folder of earlier `reports nightly` runs.")
    return history


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reports", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    n = sub.add_parser("nightly", help="run the suite, record the night, compare and write the report",
                       description="Run the benchmark suite as one night: train its short jobs, evaluate, measure "
                       "throughput, store the night in the history, compare with the previous night and the "
                       "baseline, and write OUT/DATE/report.md with trend plots.",
                       epilog=_NIGHTLY_EPILOG.format(default_suite=_default_suite_path()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    n.add_argument("--suite", help="suite YAML file, or the name of a built-in suite (default: `default`, on the "
                                   "embedded sample)")
    n.add_argument("--history", default=DEFAULT_HISTORY, help="history folder (default: %(default)s)")
    n.add_argument("--date", default=None, help="the night's date, YYYY-MM-DD (default: today in UTC)")
    n.add_argument("--out", default=DEFAULT_OUT, help="where OUT/DATE/report.md, plots and work files go "
                   "(default: %(default)s)")
    n.add_argument("--baseline", help="compare against this recorded night too (default: the one pinned "
                   "with `reports pin`, if any)")
    n.add_argument("--quiet", action="store_true", help="no progress bars")
    n.add_argument("--latex", metavar="FILE.tex", help="also write tonight's leaderboard as booktabs tables (one per "
                   "protocol) in a document pdflatex compiles")
    n.add_argument("--html", metavar="DIR", help="also write tonight's leaderboard as a self-contained static site "
                   "(sortable tables, per-image values, comparison slider) to DIR")
    download.add_flags(n)

    p = sub.add_parser("pin", help="pin a recorded night as the baseline",
                       description="Pin a recorded night as the baseline that every later night is compared against.")
    p.add_argument("date", help="a recorded night, YYYY-MM-DD")
    p.add_argument("--history", default=DEFAULT_HISTORY, help="history folder (default: %(default)s)")

    s = sub.add_parser("nights", help="list the recorded nights",
                       description="List the nights recorded in a history with their commit and row counts.")
    s.add_argument("--history", default=DEFAULT_HISTORY, help="history folder (default: %(default)s)")
    return parser


def _nightly(args) -> int:
    from srdistill.reports.nightly import run_nightly
    from srdistill.reports.suite import load_suite

    download.configure(offline=args.offline, mirror=args.mirror)
    if args.html:
        from srdistill.evaluate.render.site import check_site_dest

        check_site_dest(args.html)  # before the suite runs, not after it
    suite = load_suite(args.suite)
    outcome = run_nightly(suite, args.history, args.date or _today(), args.out, baseline=args.baseline,
                          progress=not args.quiet, latex=args.latex, html=args.html)
    for line in outcome.eval_lines:
        print(line)
    if not outcome.comparisons:
        print(f"{outcome.date}: first night in {args.history}; nothing to compare against yet")
    for c in outcome.comparisons:
        print(f"vs {c.label} {c.ref_date}: {len(c.regressions())} regression(s), {len(c.improvements())} "
              f"improvement(s), {len(c.broken())} broken, {len(c.slower())} slower throughput figure(s)")
        for r in c.regressions().itertuples(index=False):
            print(f"  REGRESSION {r.method} / {r.dataset} / {r.metric}: {r.ref_mean:.4g} -> {r.cur_mean:.4g} "
                  f"(change {r.delta:+.4g}, {suite.compare.confidence:.0%} CI [{r.ci_low:+.4g}, {r.ci_high:+.4g}])")
        for r in c.broken().itertuples(index=False):
            print(f"  BROKEN {r.method} / {r.dataset}: {r.detail}")
    if outcome.failed_rows:
        print(f"{outcome.failed_rows} result row(s) failed tonight; see the report")
    print(f"report: {outcome.report} ({outcome.seconds:.1f} s)")
    return outcome.exit_code


def _nightly_or_crash(args) -> int:
    """`nightly`, with any unexpected exception mapped to EXIT_CRASH: Python's own exit 1 is the regression code."""
    from srdistill.reports.nightly import EXIT_CRASH

    try:
        return _nightly(args)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 -- whatever it is, a scheduler must not read it as a regression
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or ["no message"])[0]
        print(f"reports: nightly crashed ({type(exc).__name__}: {first}); nothing was compared, this is not a "
              f"regression (exit {EXIT_CRASH}).", file=sys.stderr)
        return EXIT_CRASH


def _pin(args) -> int:
    from srdistill.reports.history import pin_baseline

    from srdistill.core.outputs import check_output_dir

    check_output_dir(_recorded_history(args.history), "--history")
    pin_baseline(args.history, args.date)
    print(f"baseline of {args.history} is now {args.date}")
    return 0


def _nights(args) -> int:
    from srdistill.reports.history import nights, pinned_baseline, read_results, read_runs

    dates = nights(_recorded_history(args.history))
    if not dates:
        print(f"no nights recorded in {args.history}")
        return 0
    runs = read_runs(args.history).set_index("date")
    counts = read_results(args.history).groupby("date").size()
    base = pinned_baseline(args.history)
    for d in dates:
        mark = "  (baseline)" if d == base else ""
        print(f"{d}  commit {runs.loc[d, 'commit'][:12]}  {int(counts.get(d, 0))} result rows{mark}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"nightly": _nightly_or_crash, "pin": _pin, "nights": _nights}[args.command]
    return run_command("reports", lambda: handler(args),
                       "interrupted; re-run the same command (the night is recorded only when complete).")


if __name__ == "__main__":
    sys.exit(main())
