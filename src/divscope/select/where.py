"""Eligibility expressions: ``--where "score >= 4 and turns == 1"`` over record metadata and derived columns.

A small grammar, parsed here (never ``eval``)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | comparison
    comparison := operand ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
                | operand ["not"] "in" "[" literal ("," literal)* "]"
    operand    := column | literal          (at least one side of a comparison is a column)
    literal    := number | "-" number | 'string' | "string" | true | false
    column     := name | `any text` | metadata.name

Columns: every metadata key of the pool, and the derived ``instruction_tokens`` / ``response_tokens`` (lengths in
target-model tokens: the tokenizer that measures ``--length-range``), ``turns`` (user turns: 1 for a single
exchange) and ``source``. A derived name wins over a metadata key of the same name; ``metadata.NAME`` reaches the
metadata key. A comparison is false for a record whose value is missing, null or of another type than the other
side (a number, a string or true/false), ``!=`` included; ``not`` negates the result.

    parse_where("score >= 4 and turns == 1").text -> "score >= 4 and turns == 1"   (canonical form)
    where_mask(ws, "score >= 4", tokenizer=None) -> boolean mask over the pool rows
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from divscope.errors import DivscopeError, did_you_mean
from divscope.io.workspace import Workspace

TOKEN_COLUMNS = {"instruction_tokens": "instruction", "response_tokens": "response"}
DERIVED = (*TOKEN_COLUMNS, "turns", "source")
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = ("and", "or", "not", "in", "true", "false")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_HINTS = {"=": "compare with ==", "&": "write and", "|": "write or", "!": "write not or !="}


@dataclass(frozen=True)
class Column:
    name: str  # as written (``metadata.x`` keeps its prefix)

    @property
    def metadata_key(self) -> str | None:
        """The metadata key this column reads, or None for a derived column."""
        if self.name.startswith("metadata.") and len(self.name) > len("metadata."):
            return self.name[len("metadata."):]
        return None if self.name in DERIVED else self.name


Value = float | int | str | bool


@dataclass(frozen=True)
class Node:
    """``op`` is a comparison operator, "in", "not in", "and", "or" or "not"; ``args`` its operands (Column,
    a literal, a tuple of literals for "in", or Nodes)."""

    op: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Where:
    source: str  # as the user wrote it
    tree: Node

    @property
    def text(self) -> str:
        """The canonical form: one spacing, minimal parentheses, double-quoted strings (manifests record it)."""
        return _render(self.tree, 0)

    @property
    def columns(self) -> list[str]:
        """Column names the expression reads, in order of first use."""
        out: list[str] = []
        _columns(self.tree, out)
        return list(dict.fromkeys(out))


def _error(expr: str, pos: int, what: str) -> DivscopeError:
    return DivscopeError(f"where: {what} at position {pos + 1} of {json.dumps(expr, ensure_ascii=False)}")


def _tokens(expr: str) -> list[tuple[str, Any, int]]:
    """(kind, value, position) with kinds num, str, name, kw, op, and "end"."""
    out: list[tuple[str, Any, int]] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c.isspace():
            i += 1
        elif m := _NUMBER.match(expr, i):
            text = m.group()
            out.append(("num", int(text) if text.isdigit() else float(text), i))
            i = m.end()
        elif c in "'\"`":
            j, buf = i + 1, []
            while j < len(expr) and expr[j] != c:
                if expr[j] == "\\" and j + 1 < len(expr):
                    j += 1
                    buf.append({"n": "\n", "t": "\t"}.get(expr[j], expr[j]) if c != "`" else expr[j])
                else:
                    buf.append(expr[j])
                j += 1
            if j >= len(expr):
                raise _error(expr, i, f"unterminated {'column name' if c == '`' else 'string'} {c}")
            if c == "`" and not buf:
                raise _error(expr, i, "empty column name ``")
            out.append(("name" if c == "`" else "str", "".join(buf), i))
            i = j + 1
        elif m := _NAME.match(expr, i):
            word = m.group()
            kind = "kw" if word.lower() in KEYWORDS else "name"
            out.append((kind, word.lower() if kind == "kw" else word, i))
            i = m.end()
        elif op := next((o for o in COMPARISONS if expr.startswith(o, i)), None):
            out.append(("op", op, i))
            i += len(op)
        elif c in "()[],-":
            out.append(("op", c, i))
            i += 1
        else:
            hint = _HINTS.get(c)
            raise _error(expr, i, f"unexpected {c!r}" + (f" ({hint})" if hint else ""))
    out.append(("end", None, len(expr)))
    return out


class _Parser:
    def __init__(self, expr: str):
        self.expr, self.toks, self.i = expr, _tokens(expr), 0

    def peek(self, kind: str, value: Any = None) -> bool:
        k, v, _ = self.toks[self.i]
        return k == kind and (value is None or v == value)

    def take(self) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, expected: str) -> DivscopeError:
        kind, value, pos = self.toks[self.i]
        got = "the end" if kind == "end" else f"{value!r}" if kind in ("str", "num") else repr(str(value))
        return _error(self.expr, pos, f"expected {expected}, got {got}")

    def expect(self, kind: str, value: str) -> None:
        if not self.peek(kind, value):
            raise self.fail(repr(value))
        self.take()

    def parse(self) -> Node:
        if self.peek("end"):
            raise _error(self.expr, 0, "empty expression")
        node = self.or_()
        if not self.peek("end"):
            raise self.fail("and, or, or the end")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek("kw", "or"):
            self.take()
            node = Node("or", (node, self.and_()))
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek("kw", "and"):
            self.take()
            node = Node("and", (node, self.not_()))
        return node

    def not_(self) -> Node:
        if self.peek("kw", "not"):
            self.take()
            return Node("not", (self.not_(),))
        if self.peek("op", "("):
            self.take()
            node = self.or_()
            self.expect("op", ")")
            return node
        return self.comparison()

    def operand(self) -> Any:
        kind, value, pos = self.toks[self.i]
        if kind == "name":
            self.take()
            return Column(value)
        return self.literal()

    def literal(self) -> Value:
        kind, value, _ = self.toks[self.i]
        if kind in ("num", "str"):
            self.take()
            return value
        if kind == "kw" and value in ("true", "false"):
            self.take()
            return value == "true"
        if kind == "op" and value == "-" and self.toks[self.i + 1][0] == "num":
            self.take()
            return -self.take()[1]
        raise self.fail("a column, a number, a quoted string, true or false")

    def comparison(self) -> Node:
        start = self.toks[self.i][2]
        left = self.operand()
        if self.peek("kw", "in") or self.peek("kw", "not"):
            negated = self.take()[1] == "not"
            if negated:
                self.expect("kw", "in")
            if not isinstance(left, Column):
                raise _error(self.expr, start, "the left of 'in' must be a column")
            self.expect("op", "[")
            values = [self.literal()]
            while self.peek("op", ","):
                self.take()
                values.append(self.literal())
            self.expect("op", "]")
            return Node("not in" if negated else "in", (left, tuple(values)))
        if not (self.peek("op") and self.toks[self.i][1] in COMPARISONS):
            raise self.fail("a comparison (== != < <= > >=) or in [...]")
        op = self.take()[1]
        right = self.operand()
        if not isinstance(left, Column) and not isinstance(right, Column):
            raise _error(self.expr, start, "a comparison needs a column on one side")
        for side in (left, right):
            if isinstance(side, bool) and op not in ("==", "!="):
                raise _error(self.expr, start, f"true / false compare with == or != only, not {op}")
        return Node(op, (left, right))


def parse_where(expr: str) -> Where:
    """The parsed expression; a mistake is a one-line DivscopeError naming the bad token and its position."""
    if not isinstance(expr, str):
        raise DivscopeError(f"where: expected an expression string, got {expr!r}")
    return Where(expr, _Parser(expr).parse())


# -------------------------------------------------------------------------------------------- rendering

_PRECEDENCE = {"or": 1, "and": 2, "not": 3}


def _literal_text(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def _operand_text(v: Any) -> str:
    if isinstance(v, Column):
        plain = _NAME.fullmatch(v.name) and v.name.lower() not in KEYWORDS
        return v.name if plain else "`" + v.name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return _literal_text(v)


def _render(node: Node, outer: int) -> str:
    if node.op in ("and", "or"):
        p = _PRECEDENCE[node.op]
        text = f" {node.op} ".join([_render(node.args[0], p), _render(node.args[1], p + 1)])
    elif node.op == "not":
        p = _PRECEDENCE["not"]
        text = "not " + _render(node.args[0], p)
    else:
        p = 4
        if node.op in ("in", "not in"):
            text = f"{_operand_text(node.args[0])} {node.op} [{', '.join(_literal_text(v) for v in node.args[1])}]"
        else:
            text = f"{_operand_text(node.args[0])} {node.op} {_operand_text(node.args[1])}"
    return f"({text})" if p < outer else text


def _columns(node: Node, out: list[str]) -> None:
    for a in node.args:
        if isinstance(a, Node):
            _columns(a, out)
        elif isinstance(a, Column):
            out.append(a.name)


# ------------------------------------------------------------------------------------------- evaluation

def _kind(v: Any) -> str | None:
    """The comparable kind of a value: number, string, bool, or None (missing, null, list, object, NaN)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number" if not (isinstance(v, float) and math.isnan(v)) else None
    return "string" if isinstance(v, str) else None


class _Table:
    """The pool's columns, read lazily: metadata is parsed once and only when the expression reads it."""

    def __init__(self, ws: Workspace, tokenizer: str | None, what: str = "where"):
        self.ws, self.tokenizer, self.n, self.what = ws, tokenizer, len(ws.pool), what
        self._meta: list[dict[str, Any]] | None = None
        self._cache: dict[str, list[Any]] = {}
        self._numbers: dict[str, np.ndarray | None] = {}

    def metadata(self) -> list[dict[str, Any]]:
        if self._meta is None:
            raw = self.ws.pool.table.column("metadata").to_pylist()
            self._meta = [json.loads(m) if m else {} for m in raw]
        return self._meta

    def names(self) -> list[str]:
        keys = sorted({k for m in self.metadata() for k in m})
        return [*DERIVED, *(k if k not in DERIVED else f"metadata.{k}" for k in keys)]

    def values(self, col: Column) -> list[Any]:
        if col.name in self._cache:
            return self._cache[col.name]
        key = col.metadata_key
        if key is None:
            vals = self._derived(col.name)
        else:
            meta = self.metadata()
            if not any(key in m for m in meta):
                names = self.names()
                shown = ", ".join(names[:40]) + (f", ... (+{len(names) - 40} more)" if len(names) > 40 else "")
                raise DivscopeError(f"{self.what}: unknown column {col.name!r}; the pool's columns: {shown}"
                                    + did_you_mean(col.name, names))
            vals = [m.get(key) for m in meta]
        self._cache[col.name] = vals
        return vals

    def numbers(self, col: Column) -> np.ndarray | None:
        """The column as float64, NaN where a value is not a number; None when a whole number is too large for
        a float to hold exactly (the comparisons then run value by value)."""
        if col.name not in self._numbers:
            vals = self.values(col)
            exact = not any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53 for v in vals)
            self._numbers[col.name] = np.fromiter((v if _kind(v) == "number" else np.nan for v in vals),
                                                  np.float64, count=len(vals)) if exact else None
        return self._numbers[col.name]

    def _derived(self, name: str) -> list[Any]:
        if name in TOKEN_COLUMNS:
            from divscope.features.micro import token_lengths

            return token_lengths(self.ws, TOKEN_COLUMNS[name], tokenizer=self.tokenizer).tolist()
        table = self.ws.pool.table
        if name == "source":
            return table.column("source").to_pylist()
        import pyarrow.compute as pc

        conv = table.column("conversation").combine_chunks()
        roles = np.asarray(pc.list_flatten(conv).field("role").to_numpy(zero_copy_only=False))
        parents = np.asarray(pc.list_parent_indices(conv).to_numpy(zero_copy_only=False))
        return np.bincount(parents[roles == "user"], minlength=self.n).tolist()


_FLIPPED = {"==": "==", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_NUMPY_OPS = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
              ">=": np.greater_equal}


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _check_kinds(col: Column, vals: list[Any], literal: Value) -> None:
    """A column compared with a literal of a kind it never holds is a mistake (``score >= "4"``): say so."""
    want = _kind(literal)
    kinds = {_kind(v) for v in vals} - {None}
    if kinds and want not in kinds:
        example = next(v for v in vals if _kind(v) is not None)
        fix = {"number": "a number", "string": "a quoted string", "bool": "true or false"}
        raise DivscopeError(f"where: column {col.name!r} holds no {want} values (e.g. {example!r}); compare it "
                            f"with {' or '.join(fix[k] for k in sorted(kinds))}")


def _evaluate(node: Node, table: _Table) -> np.ndarray:
    if node.op == "and":
        return _evaluate(node.args[0], table) & _evaluate(node.args[1], table)
    if node.op == "or":
        return _evaluate(node.args[0], table) | _evaluate(node.args[1], table)
    if node.op == "not":
        return ~_evaluate(node.args[0], table)
    if node.op in ("in", "not in"):
        col, options = node.args
        vals = table.values(col)
        for lit in options:
            _check_kinds(col, vals, lit)
        keyed = {(_kind(v), v) for v in options}
        hit = np.fromiter(((_kind(v), v) in keyed if _kind(v) is not None else False for v in vals), bool,
                          count=len(vals))
        if node.op == "not in":  # false where the value is missing or of another kind, like every comparison
            hit = ~hit & np.fromiter((_kind(v) in {_kind(o) for o in options} for v in vals), bool, count=len(vals))
        return hit
    left, right = node.args
    lv = table.values(left) if isinstance(left, Column) else [left] * table.n
    rv = table.values(right) if isinstance(right, Column) else [right] * table.n
    if not isinstance(left, Column):
        _check_kinds(right, rv, left)
    if not isinstance(right, Column):
        _check_kinds(left, lv, right)
    if _kind(right) == "number" or _kind(left) == "number":  # column vs number: one vectorised comparison
        col, lit, op = (left, right, node.op) if isinstance(left, Column) else (right, left, _FLIPPED[node.op])
        nums = table.numbers(col)
        if nums is not None:
            with np.errstate(invalid="ignore"):
                return _NUMPY_OPS[op](nums, float(lit)) & ~np.isnan(nums)
    out = np.zeros(table.n, bool)
    for i, (a, b) in enumerate(zip(lv, rv, strict=True)):
        ka = _kind(a)
        if ka is not None and ka == _kind(b):
            out[i] = _compare(node.op, a, b)
    return out


def where_mask(ws: Workspace, where: str | Where, tokenizer: str | None = None) -> np.ndarray:
    """Boolean mask of the pool rows that satisfy ``where``; ``tokenizer`` measures the ``*_tokens`` columns
    (default: the target model's)."""
    parsed = where if isinstance(where, Where) else parse_where(where)
    return _evaluate(parsed.tree, _Table(ws, tokenizer))


def column_values(ws: Workspace, name: str, tokenizer: str | None = None, what: str = "where") -> list[Any]:
    """One column's value per pool row, read as ``where`` reads it (``metadata.NAME`` and the derived columns
    included; a missing value is None); an unknown column is a one-line error prefixed with ``what`` that lists
    the pool's columns and suggests the closest."""
    return _Table(ws, tokenizer, what).values(Column(name))
