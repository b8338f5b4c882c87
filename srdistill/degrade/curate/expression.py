"""Selection expressions (`--select`, a manifest's `curation.select`): a small grammar read as data, never as code.

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := "(" expr ")" | operand (OP operand)+        OP: == != < <= > >=  (chains as in Python: a < b < c)
    operand    := column name | number (optionally negative) | 'string' | "string"

A column name is looked up in the scores table and nothing else: there is no attribute access, call,
subscript, `@` name, backtick name, lambda or arithmetic, so an expression cannot reach any code. NaN compares
as in pandas and numpy (every comparison but `!=` is false), so `not (jpeg_quality < 50)` keeps a NaN.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from srdistill.core.errors import UserError

GRAMMAR = ("column names, numbers, 'strings', comparisons (== != < <= > >=), and/or/not and parentheses, e.g. "
           "'laplacian_var >= 50 and not (jpeg_quality < 50)'")
MAX_LENGTH = 4096
MAX_DEPTH = 50
OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
WORDS = {"and", "or", "not"}
_TOKEN = re.compile(r"""\s*(?:
    (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^'\\]*'|"[^"\\]*")
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<paren>[()])
  | (?P<minus>-)
)""", re.VERBOSE)
# Why a character is refused, by what it would do in Python or pandas.
_REFUSED = {".": "attribute access", "[": "a subscript", "]": "a subscript", "@": "an '@' name (a Python variable)",
            "`": "a backtick name", ":": "a lambda or slice", ",": "a call or tuple", "=": "an assignment",
            "\\": "an escape", "*": "arithmetic", "/": "arithmetic", "+": "arithmetic", "%": "arithmetic",
            "&": "'&' (write 'and')", "|": "'|' (write 'or')", "~": "'~' (write 'not')", "{": "a set or dict",
            "}": "a set or dict", "'": "an unterminated string", '"': "an unterminated string"}


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Constant:
    value: float | str


@dataclass(frozen=True)
class Compare:
    operands: tuple
    ops: tuple[str, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    values: tuple
    texts: tuple[str, ...]  # each operand's source text, as written


@dataclass(frozen=True)
class Not:
    value: object


def _refuse(expr: str, what: str, at: int) -> UserError:
    return UserError(f"the --select expression {expr!r} is refused: {what} at character {at + 1} is not part of a "
                     f"selection, which is {GRAMMAR}.")


def _tokens(expr: str) -> list[tuple[str, str, int, int]]:
    """(kind, text, start, end) for each token of `expr`; any other character is refused, named by what it does."""
    out, at = [], 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None or match.end() == at:
            if expr[at:].strip() == "":
                break
            start = len(expr) - len(expr[at:].lstrip())
            char = expr[start]
            raise _refuse(expr, _REFUSED.get(char, f"the character {char!r}"), start)
        kind = match.lastgroup
        text = match.group(kind)
        start = match.start(kind)
        if kind == "name" and text.startswith("__"):
            raise _refuse(expr, f"the dunder name {text!r}", start)
        if kind == "name" and text in {"lambda", "for", "in", "if", "else", "is", "import", "yield", "await"}:
            raise _refuse(expr, f"the Python keyword {text!r}", start)
        out.append((kind, text, start, match.end()))
        at = match.end()
    return out


class _Parser:
    def __init__(self, expr: str):
        if len(expr) > MAX_LENGTH:
            raise UserError(f"the --select expression is {len(expr)} characters long; the limit is {MAX_LENGTH}.")
        self.expr = expr
        self.tokens = _tokens(expr)
        self.at = 0
        self.depth = 0

    def peek(self, offset: int = 0) -> tuple[str, str, int, int] | None:
        n = self.at + offset
        return self.tokens[n] if n < len(self.tokens) else None

    def position(self) -> int:
        token = self.peek()
        return token[2] if token else len(self.expr)

    def expect_end(self):
        token = self.peek()
        if token is not None:
            raise _refuse(self.expr, f"an unexpected {token[1]!r}", token[2])

    def word(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "name" and token[1] == word:
            self.at += 1
            return True
        return False

    def boolean(self, op: str, inner):
        values, texts = [], []
        while True:
            begin = self.position()
            values.append(inner())
            texts.append(self.expr[begin : self.tokens[self.at - 1][3]])
            if not self.word(op):
                break
        return values[0] if len(values) == 1 else BoolOp(op, tuple(values), tuple(texts))

    def nested(self, inner):
        """`inner()` one level deeper, refused past MAX_DEPTH (a bound on the recursion, not on any real use)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise UserError(f"the --select expression nests deeper than {MAX_DEPTH} levels of parentheses or 'not'.")
        node = inner()
        self.depth -= 1
        return node

    def or_(self):
        return self.nested(lambda: self.boolean("or", self.and_))

    def and_(self):
        return self.boolean("and", self.not_)

    def not_(self):
        if self.word("not"):
            return Not(self.nested(self.not_))
        token = self.peek()
        if token and token[1] == "(":
            self.at += 1
            node = self.or_()
            closing = self.peek()
            if not closing or closing[1] != ")":
                raise _refuse(self.expr, "an unclosed '('", token[2])
            self.at += 1
            return node
        return self.comparison()

    def comparison(self):
        operands, ops = [self.operand()], []
        while (token := self.peek()) and token[0] == "op":
            self.at += 1
            ops.append(token[1])
            operands.append(self.operand())
        if not ops:
            raise _refuse(self.expr, "an operand compared with nothing", self.tokens[self.at - 1][2])
        return Compare(tuple(operands), tuple(ops))

    def operand(self):
        token = self.peek()
        if token is None:
            raise _refuse(self.expr, "a missing operand", len(self.expr))
        kind, text, start, _ = token
        self.at += 1
        after = self.peek()
        if kind == "name" and text not in WORDS:
            if after and after[1] == "(":
                raise _refuse(self.expr, f"a call of {text!r}", after[2])
            return Column(text)
        if kind == "number":
            return Constant(float(text) if set(text) & set(".eE") else int(text))
        if kind == "string":
            return Constant(text[1:-1])
        if kind == "minus" and after and after[0] == "number":
            return Constant(-self.operand().value)
        raise _refuse(self.expr, f"an unexpected {text!r}", start)


def parse(expr: str):
    """The tree of `expr` (Column, Constant, Compare, BoolOp, Not); one sentence for anything outside the grammar."""
    if not expr.strip():
        raise UserError(f"the --select expression is empty; a selection is {GRAMMAR}.")
    parser = _Parser(expr)
    node = parser.or_()
    parser.expect_end()
    return node


def clauses(expr: str) -> list[str]:
    """The top-level `and` clauses of `expr` as written (the expression itself when it is not a conjunction)."""
    node = parse(expr)
    if isinstance(node, BoolOp) and node.op == "and":
        return list(node.texts)
    return [expr.strip()]


def evaluate(frame: pd.DataFrame, expr: str) -> np.ndarray:
    """The rows of `frame` that `expr` keeps, as a boolean array; one sentence for an unknown column or a
    comparison of values that cannot be ordered."""
    return np.asarray(_value(frame, parse(expr), expr), dtype=bool)


def _value(frame: pd.DataFrame, node, expr: str):
    if isinstance(node, BoolOp):
        parts = [np.asarray(_value(frame, v, expr), dtype=bool) for v in node.values]
        return np.logical_and.reduce(parts) if node.op == "and" else np.logical_or.reduce(parts)
    if isinstance(node, Not):
        return ~np.asarray(_value(frame, node.value, expr), dtype=bool)
    result = np.ones(len(frame), dtype=bool)
    sides = [_operand(frame, o, expr) for o in node.operands]
    for op, left, right in zip(node.ops, sides, sides[1:]):
        try:
            step = OPS[op](left, right)
        except TypeError as exc:
            raise UserError(f"the --select expression {expr!r} compares values that cannot be compared with {op} "
                            f"({exc}).") from exc
        result &= np.broadcast_to(np.asarray(step, dtype=bool), result.shape)
    return result


def _operand(frame: pd.DataFrame, node, expr: str):
    if isinstance(node, Constant):
        return node.value
    if node.name not in frame.columns:
        numeric = ", ".join(c for c in frame.columns if frame[c].dtype.kind in "fi")
        raise UserError(f"the --select expression {expr!r} names an unknown column {node.name!r}; the score columns "
                        f"are {numeric}.")
    return frame[node.name].reset_index(drop=True)
