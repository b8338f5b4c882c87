"""`srdistill TOOL ...`: one entry point for the four tools, for users who prefer a single command."""

from __future__ import annotations

import importlib
import sys

TOOLS = {
    "degrade": ("srdistill.degrade.cli", "synthesize Real-ESRGAN HR/LR pairs into WebDataset shards"),
    "train": ("srdistill.training.cli", "train a one-step SR student with one of the four recipes"),
    "evaluate": ("srdistill.evaluate.cli", "score SR methods with pyiqa into parquet leaderboards"),
    "reports": ("srdistill.reports.cli", "nightly benchmark runs, history and markdown reports"),
}


def _usage() -> str:
    lines = ["usage: srdistill TOOL [ARGS...]", "", "tools:"]
    lines += [f"  {name:<9} {about}" for name, (_, about) in TOOLS.items()]
    lines += ["", "Each tool is also installed as its own command; `srdistill TOOL --help` shows its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in TOOLS:
        print(f"srdistill: unknown tool {name!r}; choose one of {', '.join(TOOLS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(TOOLS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
