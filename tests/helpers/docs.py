"""Where each generated, test-guarded table lives: one constant per table, so moving a table to another page
(docs/) is one edit and the guarding tests follow (the op table's is its renderer's own constant)."""
from pathlib import Path

from srdistill.degrade.ops.table import DOC as OP_TABLE_PAGE  # noqa: F401  (the page `table --write` rewrites)

ROOT = Path(__file__).resolve().parents[2]
RECIPE_TABLE_PAGE = ROOT / "docs" / "training.md"    # between two <!-- recipe-table --> markers
PARAMCOUNT_PAGE = ROOT / "docs" / "figures.md"    # between the paramcounts markers (srdistill.training.paramcount)
