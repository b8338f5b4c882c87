"""The op table of docs/degrade.md is the one the registry renders, and it documents every op and parameter."""

from helpers.docs import OP_TABLE_PAGE as README  # docs/degrade.md
from srdistill.degrade.ops.opdef import REGISTRY
from srdistill.degrade.ops.table import END, START, op_table_markdown, with_table


def test_the_page_holds_the_rendered_op_table():
    text = README.read_text()
    assert with_table(text) == text, f"{README}'s op table is stale: run `python -m srdistill.degrade.ops.table --write`"


def test_every_op_and_parameter_is_documented():
    table = op_table_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(REGISTRY)
    for name, op in REGISTRY.items():
        (row,) = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert op.summary and op.source and op.source in row
        for p in op.params:
            assert p.doc and f"`{p.name}` = " in row, (name, p.name)
    readme = README.read_text()
    assert readme.index(START) < readme.index(END)
