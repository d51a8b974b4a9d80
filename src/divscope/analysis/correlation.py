"""Correlation of every post-hoc metric with performance, across subsets, with multiplicity and confound control.

For each metric column (``m.<side>.<name>``) and each score metric (never mixed), over the subsets with both
values:

* Pearson r and Spearman rho with two-sided p (scipy.stats), each with a Benjamini-Hochberg q-value over the
  metric columns tested for that score metric (``scipy.stats.false_discovery_control``): 26 correlations read at
  p < 0.05 give one or two "findings" by chance, q < 0.05 bounds the expected share of false ones at 5%;
* the partial Pearson correlation controlling for mean response length (``m.response.mean_tokens``): both
  variables residualised on [1, length] by least squares, p from t on n - 3 df (a metric that only tracks length
  loses its correlation here);
* the within-strategy Pearson correlation: score and metric centred within each (strategy, size), so that
  differences between strategies (or sizes) do not make the correlation; p from t on n - G - 1 df (G groups).

Columns ending in ``_sample`` are bookkeeping and left out. A column whose value depends on the featurizer's unit
(``types_micro``: types counted in a tokenizer's tokens or in words) is split by the rows' ``unit`` when rows in
different units meet, ``m.response.types_micro[llama2]``: a count of llama2 tokens is never pooled with one of
words.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRIC_PREFIX = "m."
LENGTH = "m.response.mean_tokens"
BOOKKEEPING_SUFFIXES = ("_sample",)  # sample sizes recorded beside sampled metrics, not metrics themselves
UNIT_DEPENDENT = (".types_micro",)  # counted in the micro featurizer's unit (a tokenizer's tokens, or words)
TESTS = ("pearson", "spearman", "partial", "within")


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


def unit_dependent(column: str) -> bool:
    return column.startswith(METRIC_PREFIX) and column.endswith(UNIT_DEPENDENT)


def split_units(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose unit-dependent columns are renamed ``col[unit]`` when the rows holding that column come in more
    than one ``unit`` (None: "unknown unit"); otherwise unchanged."""
    units: dict[str, set[Any]] = {}
    for r in rows:
        for k in r:
            if unit_dependent(k) and r[k] is not None:
                units.setdefault(k, set()).add(r.get("unit"))
    mixed = {k for k, u in units.items() if len(u) > 1}
    if not mixed:
        return [dict(r) for r in rows]
    out = []
    for r in rows:
        unit = r.get("unit") or "unknown unit"
        out.append({(f"{k}[{unit}]" if k in mixed else k): v for k, v in r.items()})
    return out


def _clean(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def _t_p(r: float, df: float) -> float | None:
    """Two-sided p of a correlation r on ``df`` degrees of freedom (t = r sqrt(df / (1 - r^2)))."""
    from scipy.special import stdtr

    if df <= 0 or not math.isfinite(r):
        return None
    if abs(r) >= 1.0:
        return 0.0
    t = abs(r) * math.sqrt(df / (1.0 - r * r))
    return _clean(2.0 * stdtr(df, -t))


def _resid(v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(Z, v, rcond=None)
    return v - Z @ coef


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    sx, sy = math.sqrt(float(x @ x)), math.sqrt(float(y @ y))
    return float(x @ y) / (sx * sy) if sx > 0 and sy > 0 else math.nan


def partial(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> dict[str, Any]:
    """Partial Pearson correlation of x and y given z (triples with a NaN dropped): r, two-sided p (n - 3 df), n."""
    xa, ya, za = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    ok = np.isfinite(xa) & np.isfinite(ya) & np.isfinite(za)
    xa, ya, za = xa[ok], ya[ok], za[ok]
    n = int(xa.size)
    if n < 4 or np.ptp(za) == 0:
        return {"r": None, "p": None, "n": n}
    Z = np.column_stack([np.ones(n), za])
    r = _pearson(_resid(xa, Z), _resid(ya, Z))
    return {"r": _clean(r), "p": _t_p(r, n - 3) if math.isfinite(r) else None, "n": n}


def within(x: Sequence[float], y: Sequence[float], groups: Sequence[Any]) -> dict[str, Any]:
    """Pearson correlation of x and y after centring both within each group (groups of one pair carry nothing
    and are dropped): r, two-sided p on n - G - 1 df, n pairs, G groups."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    g = np.asarray([str(v) for v in groups], dtype=object)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, g = xa[ok], ya[ok], g[ok]
    xc, yc, keep = np.zeros_like(xa), np.zeros_like(ya), np.zeros(xa.size, dtype=bool)
    n_groups = 0
    for key in sorted(set(g.tolist())):
        m = g == key
        if m.sum() < 2:
            continue
        n_groups += 1
        keep |= m
        xc[m], yc[m] = xa[m] - xa[m].mean(), ya[m] - ya[m].mean()
    n = int(keep.sum())
    df = n - n_groups - 1
    if df < 1:
        return {"r": None, "p": None, "n": n, "groups": n_groups}
    r = _pearson(xc[keep], yc[keep])
    return {"r": _clean(r) if math.isfinite(r) else None, "p": _t_p(r, df) if math.isfinite(r) else None, "n": n,
            "groups": n_groups}


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


def bh_qvalues(p: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values of the p-values given (None stays None and is not counted as a test)."""
    from scipy.stats import false_discovery_control

    idx = [i for i, v in enumerate(p) if v is not None and math.isfinite(v)]
    out: list[float | None] = [None] * len(p)
    if idx:
        q = false_discovery_control(np.array([p[i] for i in idx], dtype=np.float64), method="bh")
        for i, v in zip(idx, q, strict=True):
            out[i] = float(v)
    return out


def correlations(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 control: str = LENGTH) -> list[dict[str, Any]]:
    """One row per (score metric, metric column): Pearson, Spearman, partial on ``control``, within-strategy,
    each with p and BH q over the columns of that score metric; each block sorted by |r| descending."""
    rows = split_units(rows)
    columns = list(columns) if columns is not None else metric_columns(rows)
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(str(r["metric"]), []).append(r)
    out: list[dict[str, Any]] = []
    for metric in sorted(by_metric):
        group = by_metric[metric]
        y = [as_number(r.get("score")) for r in group]
        z = [as_number(r.get(control)) for r in group]
        strata = [(r.get("strategy"), r.get("size")) for r in group]
        block = []
        for col in columns:
            x = [as_number(r.get(col)) for r in group]
            if not any(math.isfinite(v) for v in x):
                continue
            side, _, name = col[len(METRIC_PREFIX):].partition(".")
            c = {"metric": metric, "column": col, "side": side if name else "", "name": name or side,
                 "unit": next((r.get("unit") for r in group if r.get(col) is not None), None)
                 if unit_dependent(col.split("[")[0]) else None, **correlate(x, y)}
            pc = partial(x, y, z) if col != control else {"r": None, "p": None, "n": 0}
            wc = within(x, y, strata)
            c.update(partial_r=pc["r"], partial_p=pc["p"], within_r=wc["r"], within_p=wc["p"],
                     within_groups=wc["groups"])
            if c["pearson_r"] is None:
                c.update(partial_r=None, partial_p=None, within_r=None, within_p=None)
            block.append(c)
        for test in TESTS:  # one BH family per test and score metric: the columns tested
            for c, q in zip(block, bh_qvalues([c[f"{test}_p"] for c in block]), strict=True):
                c[f"{test}_q"] = q
        block.sort(key=lambda c: (c["pearson_r"] is None, -abs(c["pearson_r"] or 0.0), c["column"]))
        out.extend(block)
    return out
