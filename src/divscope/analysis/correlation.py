"""Correlation of every post-hoc metric with performance, across subsets.

For each metric column (``m.<side>.<name>``) and each score metric (scores of different evaluation metrics are
never mixed), over the subsets that have both values: Pearson r with its two-sided p-value (t test on n - 2
degrees of freedom, as ``scipy.stats.pearsonr``) and Spearman rho with its two-sided p-value. Rows are sorted
by |r|, largest first; columns that are constant or have fewer than 3 complete pairs get r = None and a note.
Columns ending in ``_sample`` (how many texts a sampled metric used) are bookkeeping and left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRIC_PREFIX = "m."


BOOKKEEPING_SUFFIXES = ("_sample",)  # sample sizes recorded beside sampled metrics, not metrics themselves


def metric_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every ``m.*`` column, sorted, except bookkeeping ones (``*_sample``: sizes of the metric samples)."""
    cols: set[str] = set()
    for r in rows:
        cols.update(k for k in r if k.startswith(METRIC_PREFIX) and not k.endswith(BOOKKEEPING_SUFFIXES))
    return sorted(cols)


def as_number(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def correlate(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Pearson and Spearman of paired values (NaN pairs dropped)."""
    from scipy import stats

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    out: dict[str, Any] = {"n": n, "pearson_r": None, "pearson_p": None, "spearman_rho": None,
                           "spearman_p": None, "note": ""}
    if n < 3:
        out["note"] = f"{n} complete pair(s): needs 3"
        return out
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        out["note"] = "constant " + ("metric" if np.ptp(xa) == 0 else "score")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(xa, ya)
        sr = stats.spearmanr(xa, ya)
    out["pearson_r"] = _clean(pr.statistic)
    out["pearson_p"] = _clean(pr.pvalue)
    out["spearman_rho"] = _clean(sr.statistic)
    out["spearman_p"] = _clean(sr.pvalue)
    return out


def _clean(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def correlations(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (score metric, metric column), each score metric's block sorted by |r| descending."""
    columns = list(columns) if columns is not None else metric_columns(rows)
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(str(r["metric"]), []).append(r)
    out: list[dict[str, Any]] = []
    for metric in sorted(by_metric):
        group = by_metric[metric]
        y = [as_number(r.get("score")) for r in group]
        block = []
        for col in columns:
            x = [as_number(r.get(col)) for r in group]
            if not any(math.isfinite(v) for v in x):
                continue
            side, _, name = col[len(METRIC_PREFIX):].partition(".")
            block.append({"metric": metric, "column": col, "side": side if name else "", "name": name or side,
                          **correlate(x, y)})
        block.sort(key=lambda c: (c["pearson_r"] is None, -abs(c["pearson_r"] or 0.0), c["column"]))
        out.extend(block)
    return out
