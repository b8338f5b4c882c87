"""Where each generated, test-guarded table lives: one constant per table, so moving a table to another page
(docs/) is one edit here and the guarding tests follow."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OP_TABLE_PAGE = ROOT / "README.md"        # between <!-- op-table:start --> and <!-- op-table:end -->
RECIPE_TABLE_PAGE = ROOT / "README.md"    # between two <!-- recipe-table --> markers
PARAMCOUNT_PAGE = ROOT / "README.md"      # between the paramcounts markers (srdistill.training.paramcount)
