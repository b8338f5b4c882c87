"""Selection expressions are data: the grammar keeps what pandas' query kept for the documented expressions, and
refuses every way out to code (attributes, calls, `@` names, dunder, lambdas, subscripts, comprehensions,
backticks) in one sentence, without running any of it, in `build --select` and `curate --report --select` alike.
(`degrade verify` re-checking a manifest's selection is in test_degrade_curate.py, which has a curated build.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from srdistill.core.errors import UserError
from srdistill.degrade.cli import main
from srdistill.degrade.curate.expression import MAX_DEPTH, clauses, evaluate

FRAME = pd.DataFrame({
    "laplacian_var": [10.0, 80.0, 120.0, 60.0],
    "blockiness": [1.0, 2.0, 0.5, 1.2],
    "noise_sigma": [3.0, 4.0, 9.0, 1.0],
    "jpeg_quality": [np.nan, 30.0, 90.0, np.nan],
    "path": ["a.png", "chelsea.png", "c.png", "d.png"],
})

# (expression, the rows it keeps, worked out by hand from FRAME)
KEEPS = [
    ("laplacian_var >= 50 and blockiness <= 1.5 and noise_sigma <= 8", [3]),  # README's selection
    ("not (jpeg_quality < 50)", [0, 2, 3]),  # README: NaN (a PNG) is kept
    ("path == 'chelsea.png'", [1]),
    ('path != "chelsea.png"', [0, 2, 3]),
    ("laplacian_var < 50 or noise_sigma > 8", [0, 2]),
    ("50 <= laplacian_var < 100", [1, 3]),
    ("noise_sigma > -1 and not (blockiness > 1 or laplacian_var > 100)", [0]),
    ("(laplacian_var > 50) and (blockiness < 1.5)", [2, 3]),
    ("jpeg_quality == jpeg_quality", [1, 2]),
    ("laplacian_var >= 1e2", [2]),
]


@pytest.mark.parametrize("expr,rows", KEEPS)
def test_an_expression_of_the_grammar_keeps_the_rows_worked_out_by_hand(expr, rows):
    assert list(np.nonzero(evaluate(FRAME, expr))[0]) == rows


def test_the_clauses_are_the_top_level_and_operands_as_written():
    assert clauses("laplacian_var >= 50 and blockiness <= 1.5") == ["laplacian_var >= 50", "blockiness <= 1.5"]
    assert clauses("(a > 1 or b < 2) and not (c == 'x')") == ["(a > 1 or b < 2)", "not (c == 'x')"]
    assert clauses(" a > 1 or b < 2 ") == ["a > 1 or b < 2"]


def _escapes(canary) -> dict[str, str]:
    """{expression that would touch `canary` (or reach code) under pandas' query/eval: what the refusal names}."""
    touch = f"'touch {canary}'"
    return {
        f"@pd.io.common.os.system({touch})": "an '@' name",
        f"@np.lib.npyio.os.system({touch})==0": "an '@' name",
        "laplacian_var == @x": "an '@' name",
        f"laplacian_var.__class__.__init__.__globals__['os'].system({touch})": "attribute access",
        "laplacian_var.max() > 0": "attribute access",
        f"__import__('os').system({touch})": "the dunder name",
        "__class__ > 0": "the dunder name",
        f"system({touch}) == 0": "a call of 'system'",
        "(lambda: 1)() == 1": "the Python keyword 'lambda'",
        "laplacian_var[0] > 1": "a subscript",
        "[x for x in laplacian_var] == 1": "a subscript",
        "{x for x in laplacian_var} == 1": "a set or dict",
        "`laplacian_var` > 1": "a backtick name",
        "laplacian_var + 1 > 2": "arithmetic",
        "laplacian_var > 1 & blockiness < 1": "'&' (write 'and')",
        "laplacian_var := 1": "a lambda or slice",
        "laplacian_var > 1 if 1 else 0": "the Python keyword 'if'",
        "path in ['a.png']": "the Python keyword 'in'",
        "(laplacian_var > 1": "an unclosed '('",
        "laplacian_var": "an operand compared with nothing",
        "laplacian_var > 1 and": "a missing operand",
    }


def test_every_escape_is_refused_in_one_sentence_and_runs_nothing(tmp_path):
    canary = tmp_path / "pwned"
    for expr, what in _escapes(canary).items():
        with pytest.raises(UserError) as caught:
            evaluate(FRAME, expr)
        message = str(caught.value)
        assert what in message and message.startswith(f"the --select expression {expr!r} is refused"), expr
        assert "\n" not in message, message
    assert not canary.exists()


def test_unknown_columns_unorderable_values_and_deep_nesting_are_one_sentence():
    with pytest.raises(UserError, match="names an unknown column 'sharpness'; the score columns are laplacian_var"):
        evaluate(FRAME, "sharpness >= 3")
    with pytest.raises(UserError, match="compares values that cannot be compared with <"):
        evaluate(FRAME, "path < 3")
    with pytest.raises(UserError, match=f"nests deeper than {MAX_DEPTH} levels"):
        evaluate(FRAME, "not " * 300 + "laplacian_var > 1")
    with pytest.raises(UserError, match=f"nests deeper than {MAX_DEPTH} levels"):
        evaluate(FRAME, "(" * 300 + "laplacian_var > 1" + ")" * 300)
    with pytest.raises(UserError, match="is empty"):
        evaluate(FRAME, "  ")


@pytest.mark.parametrize("command", ["build", "curate"])
def test_the_commands_refuse_an_escape_before_reading_anything(command, tmp_path, capsys):
    canary = tmp_path / "pwned"
    expr = f"@pd.io.common.os.system('touch {canary}')"
    out = tmp_path / "out"
    if command == "build":
        argv = ["build", "--src", str(tmp_path), "--out", str(out), "--preset", "bicubic",
                "--curation", str(tmp_path / "none.parquet"), "--select", expr, "--quiet"]
    else:
        argv = ["curate", "--src", str(tmp_path), "--out", str(out / "s.parquet"), "--report", str(out / "r"),
                "--select", expr, "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "is refused: an '@' name" in err and "\n" not in err and "Traceback" not in err
    assert not canary.exists() and not out.exists()
