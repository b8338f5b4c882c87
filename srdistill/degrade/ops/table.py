"""The README's op table, rendered from the op registry: one row per op with its parameters and defaults,
what it does and where it comes from. `python -m srdistill.degrade.ops.table --write` rewrites the table between
the markers in README.md; tests/test_degrade_optable.py checks the README holds exactly this table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srdistill.degrade.ops.opdef import REGISTRY, REQUIRED, Op

START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"
# the page that holds the table (the repository checkout's README: srdistill/degrade/ops/table.py -> ../../..)
README = Path(__file__).resolve().parents[3] / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value) -> str:
    from srdistill.degrade.spec.compare import show

    if value is REQUIRED:
        return "required"
    if isinstance(value, dict) and not any(k in value for k in ("uniform", "log_uniform", "randint", "choice",
                                                                "pick", "bernoulli")):
        return "a mapping (see its doc)"
    return show(value)


def _params(op: Op) -> str:
    rows = [f"`{p.name}` = {_default(p.default)}: {p.doc}" for p in op.params]
    if op.seeded:
        rows.append("`seed`: drawn, uint32, for the noise made at apply time")
    return "<br>".join(_cell(r) for r in rows) or "none"


def op_table_markdown() -> str:
    """The table (markdown), ops sorted by name."""
    import srdistill.degrade.ops.library  # noqa: F401  (registers every op)

    lines = ["| op | parameters (default: meaning) | what it does | source |", "| --- | --- | --- | --- |"]
    for name in sorted(REGISTRY):
        op = REGISTRY[name]
        lines.append(f"| `{name}` | {_params(op)} | {_cell(op.summary)} | {_cell(op.source)} |")
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """The README text with the table between the markers replaced by the rendered one."""
    if START not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {START} and {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{op_table_markdown()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m srdistill.degrade.ops.table", description=__doc__)
    p.add_argument("--write", action="store_true", help=f"rewrite the table in {README}")
    args = p.parse_args(argv)
    if args.write:
        README.write_text(with_table(README.read_text()))
        print(f"wrote the op table ({len(REGISTRY)} ops) to {README}")
    else:
        print(op_table_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
