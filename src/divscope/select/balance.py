"""Stratified selection: ``--balance-by COLUMN`` keeps each value's share of the subset within one sample of its
share in the eligible pool, for every strategy.

    column = balance_column(ws, "source")              # the column's value per pool row
    strata = stratify(column, selector.rows, n)        # labels per eligible row, counts, quotas
    strata.quotas                                      # q_v, summing to n

Quotas are the largest-remainder apportionment of N over the eligible counts c_v (C = sum c_v): q_v =
floor(N c_v / C), then one more for the N - sum q_v values with the largest remainders N c_v mod C (ties: the
value's key, ascending), so |q_v - N c_v / C| < 1 and q_v <= c_v. Each strategy then picks as it always does,
except that a sample whose value has reached its quota is no longer a candidate (``Strata`` is handed to the
strategy as the ``balance`` option; the built-ins pass its labels and quotas to their pick loops). A value is
compared as ``where`` compares it: a missing or null value is a stratum of its own; 4 and "4" are two values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.io.workspace import Workspace


def value_key(v: Any) -> str:
    """A value's identity and sort key: its JSON text (strings quoted, so "4" and 4 differ; None is null)."""
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class BalanceColumn:
    """A column over the pool (``balance_column``): its distinct values' keys in sorted order, and each pool
    row's index into them (read once; every selection of a grid stratifies from it)."""

    name: str
    keys: tuple[str, ...]
    codes: np.ndarray

    @classmethod
    def of(cls, name: str, values: list[Any]) -> BalanceColumn:
        row_keys = [value_key(v) for v in values]
        keys = tuple(sorted(set(row_keys)))
        index = {k: i for i, k in enumerate(keys)}
        return cls(name, keys, np.fromiter((index[k] for k in row_keys), np.int64, count=len(row_keys)))


def balance_column(ws: Workspace, name: str, tokenizer: str | None = None) -> BalanceColumn:
    """The column ``name`` (any column ``--where`` reads: metadata, ``source``, ``turns``, ...) over the pool."""
    from divscope.select.where import column_values

    if not isinstance(name, str) or not name:
        raise DivscopeError(f"--balance-by: expected a column name, got {name!r}")
    return BalanceColumn.of(name, column_values(ws, name, tokenizer, what="--balance-by"))


def largest_remainder(counts: np.ndarray, n: int) -> np.ndarray:
    """Quotas summing to ``n`` in proportion to ``counts`` (in the caller's order, which breaks remainder ties:
    earlier first), each within one of n c / C and at most its count (n <= C). Exact integer arithmetic."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"cannot apportion {n} over {total}")
    scaled = [n * int(c) for c in counts]
    quotas = np.asarray([s // total for s in scaled], np.int64)
    rest = n - int(quotas.sum())
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(scaled[i] % total), i))
    quotas[by_remainder[:rest]] += 1
    return quotas


@dataclass(frozen=True)
class Strata:
    """The strata of one selection: ``labels[i]`` is local row i's index into ``values`` (ordered by
    ``value_key``), ``counts`` the eligible rows per value, ``quotas`` how many of them the subset takes."""

    column: str
    values: tuple[Any, ...]
    labels: np.ndarray
    counts: np.ndarray
    quotas: np.ndarray

    def pick_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, quotas) as the pick loops take them: int64, contiguous."""
        return np.ascontiguousarray(self.labels, np.int64), np.ascontiguousarray(self.quotas, np.int64)

    def selected(self, local: np.ndarray) -> np.ndarray:
        """Rows per value among the local rows ``local``."""
        return np.bincount(self.labels[np.asarray(local, np.int64)], minlength=len(self.values))

    def report(self, local: np.ndarray) -> dict[str, Any]:
        """The manifest's ``balance``: per value its eligible count, share, quota and the rows selected."""
        got = self.selected(local)
        total = int(self.counts.sum())
        return {"column": self.column, "values": [
            {"value": v, "eligible": int(c), "share": round(int(c) / total, 6), "quota": int(q), "selected": int(g)}
            for v, c, q, g in zip(self.values, self.counts, self.quotas, got, strict=True)]}


def stratify(column: BalanceColumn, rows: np.ndarray, n: int) -> Strata:
    """The strata of the eligible ``rows`` (pool rows, in the order the strategies see them) for a subset of
    ``n``; more distinct values than ``n`` is an error (some value would get no sample at all)."""
    codes = column.codes[np.asarray(rows, np.int64)]
    present = np.unique(codes)  # ascending codes = ascending keys
    if len(present) > n:
        shown = ", ".join(column.keys[c] for c in present[:5]) + (", ..." if len(present) > 5 else "")
        raise DivscopeError(f"--balance-by {column.name}: {len(present):,} distinct values among the eligible "
                            f"samples ({shown}) for a subset of {n:,}; balance by a column with at most {n:,} "
                            "values, or select more samples")
    labels = np.searchsorted(present, codes).astype(np.int64)
    counts = np.bincount(labels, minlength=len(present)).astype(np.int64)
    values = tuple(json.loads(column.keys[c]) for c in present)
    return Strata(column.name, values, labels, counts, largest_remainder(counts, n))


def take(order: np.ndarray, labels: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """The first ``sum(quotas)`` entries of the priority ``order`` (local rows) whose value is still under its
    quota, in that order: a ranking strategy's pick under quotas (random: stratified random sampling)."""
    order = np.asarray(order, np.int64)
    lab = labels[order]
    # rank of each entry among the earlier entries of its value: keep it while below the value's quota
    first = np.zeros(len(order), np.int64)
    sort = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[sort], np.arange(len(quotas)))
    first[sort] = np.arange(len(order)) - starts[lab[sort]]
    return order[first < quotas[lab]]
