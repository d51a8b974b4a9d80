"""One eligibility mask for every strategy: given rows (a study's evaluation-overlap exclusion), the length band
(``--length-range``) and the ``--where`` expression, applied in that order.

    elig = eligibility(ws, length_range="200:600", where="score >= 4")
    selector = Selector(ws, elig.mask)
    subset = select_eligible(selector, elig, "response-micro", 1000, 0.5, 0)

``steps`` records the pool size and the count left after each filter; when the filters leave fewer samples than
N (typeless samples of the strategy's axis excluded too), ``select_eligible`` says which filter shrank the pool
to what, in one line. A manifest of a ``where`` selection records the expression (canonical form) in its request
and the counts in ``filters``; selections without ``where`` write the manifests they always wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.io.workspace import Workspace
from divscope.select.balance import BalanceColumn
from divscope.select.builtin import DEFAULT_TYPELESS
from divscope.select.registry import get_strategy
from divscope.select.strategies import Selector, Subset


@dataclass
class Eligibility:
    mask: np.ndarray | None  # None: every pool row
    steps: list[tuple[str, int]]  # ("pool", rows), then (filter, rows left after it)
    request: dict[str, Any] = field(default_factory=dict)  # entries of the manifest's request: length, where
    where: str | None = None  # canonical expression
    balance: BalanceColumn | None = None  # --balance-by: the column per pool row (not a filter)

    @property
    def filtered(self) -> bool:
        """Whether any filter applies: given rows (a study's evaluation-overlap exclusion), a length band or a
        where expression."""
        return len(self.steps) > 1

    def too_few(self, n: int, typed: tuple[str, int] | None = None) -> str:
        """The one-line message for N above what the filters leave."""
        steps = [*self.steps, *([typed] if typed else [])]
        chain = f"pool {steps[0][1]:,}" + "".join(f" -> {name}: {count:,}" for name, count in steps[1:])
        fixes = "a smaller --size, --typeless include" if typed else "a smaller --size"
        loosen = ("loosen --length-range / --where" if "length" in self.request or self.where is not None
                  else "a larger pool")  # only given rows: nothing of the request to loosen
        return (f"cannot select {n:,} samples: the eligibility filters leave {steps[-1][1]:,} ({chain}); choose "
                f"{fixes} or {loosen}")


def eligibility(ws: Workspace | str | Path, base: np.ndarray | None = None, *, base_label: str = "given rows",
                length_range: Any = None, length_side: str = "response", length_tokenizer: str | None = None,
                where: str | None = None, balance_by: str | None = None) -> Eligibility:
    """The eligible rows: ``base`` (a boolean mask or row indices) & the length band & ``where``.
    ``length_tokenizer`` measures the band and the ``*_tokens`` columns of ``where`` (default: smollm2's).
    ``balance_by``: the column whose shares every selection keeps (read here, so an unknown column fails before
    any selection; ``select_eligible`` hands it to the selector), recorded in the request as ``balance_by``."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    n = len(ws.pool)
    steps: list[tuple[str, int]] = [("pool", n)]
    mask: np.ndarray | None = None
    if base is not None:
        arr = np.asarray(base)
        mask = arr.astype(bool) if arr.dtype == np.bool_ else np.isin(np.arange(n), arr)
        steps.append((base_label, int(mask.sum())))
    request: dict[str, Any] = {}
    if length_range is not None:
        from divscope.select.lengths import format_range, length_mask, length_request

        band, _ = length_mask(ws, length_range, length_side, length_tokenizer)
        mask = band if mask is None else mask & band
        request["length"] = length_request(length_range, length_side, length_tokenizer)
        steps.append((f"length band {format_range(request['length']['range'])} {length_side} tokens",
                      int(mask.sum())))
    text = None
    if where is not None:
        from divscope.select.where import TOKEN_COLUMNS, parse_where, where_mask

        parsed = parse_where(where)
        text = parsed.text
        hit = where_mask(ws, parsed, length_tokenizer)
        mask = hit if mask is None else mask & hit
        request["where"] = {"expression": text}
        if any(c in TOKEN_COLUMNS for c in parsed.columns):  # the tokenizer is part of what was asked
            from divscope import models

            tok = length_tokenizer or models.DEFAULT_TOKENIZER
            request["where"] |= {"tokenizer": tok, "identity": models.tokenizer_identity(tok)}
        steps.append((f"where {text}", int(mask.sum())))
    if not request:
        mask = base  # no filter: the rows exactly as given (row indices keep their order)
    balance = None
    if balance_by is not None:
        from divscope.select.balance import balance_column

        balance = balance_column(ws, balance_by, length_tokenizer)
        request["balance_by"] = balance_by
    return Eligibility(mask, steps, request, text, balance)


def _typed_step(selector: Selector, strategy: str, seed: int, options: dict[str, Any]) -> tuple[str, int] | None:
    """("typeless on AXIS excluded", typed count) for a diversity strategy that excludes typeless samples."""
    s = get_strategy(strategy)
    needs = s.needs(**options)
    if not needs.incidence or options.get("typeless", DEFAULT_TYPELESS) != "exclude":
        return None
    side, level = needs.incidence
    engine = selector.engine(side, level, seed)
    return f"typeless on {side}-{level} excluded", engine.n_samples - engine.n_typeless


def select_eligible(selector: Selector, elig: Eligibility, strategy: str, n: int, d: float | None, seed: int,
                    **options: Any) -> Subset:
    """``selector.select`` on the eligible pool; with a length band or ``where``, N above what they leave is a
    one-line error naming each filter and its count, and a ``where`` selection records the counts."""
    try:
        sub = selector.select(strategy, n, d, seed, balance=elig.balance, **options)
    except DivscopeError as e:
        if not elig.filtered or not str(e).startswith("cannot select"):
            raise
        typed = None
        if isinstance(n, int) and n <= len(selector.rows):  # the filters leave enough: the axis' types do not
            typed = _typed_step(selector, strategy, seed, options)
        raise DivscopeError(elig.too_few(n, typed)) from None
    if elig.where is not None:
        sub.info["where"] = elig.where
        sub.info["filters"] = [{"filter": name, "eligible": count} for name, count in elig.steps]
    return sub
