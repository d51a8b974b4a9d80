"""Paired comparisons, replicate by replicate: each strategy's highest level against its lowest, and every arm at
its most diverse level against every other (the paper's headline claim: "response-micro at maximum diversity
beats every other strategy at its maximum").

Replicate r of every cell of a study selects with seed ``s + 1000 r`` and trains with ``train.seed + 1000 r``
(``select.settings``), so two cells of one replicate share their training seed and are scored on the same
prompts: their difference cancels what the replicate shares. A pair is (the seed's position among its strategy's
seeds, replicate); a contrast is the mean of its paired differences with a t interval on pairs - 1 df, the two-sided
p of no difference, and the smallest true difference the same number of pairs with the same spread detects with
80% power at two-sided 5% (``plan.min_detectable``, the unit the plan's table uses).

Arm pairs are many (21 for six strategies and random), so a pair is called *distinguishable* only when its
Holm-adjusted p is below 1 - LEVEL (0.10), the family-wise error of the 90% intervals shown beside it. The
untrained model (one evaluation, no replicates) enters as a constant: ``vs_anchor`` is the arm's mean minus its
score, with the interval of the arm's replicates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from divscope.analysis.regression import LEVEL, mean_interval, t_cdf
from divscope.analysis.results import ANCHOR, group_rows, strategy_rank

ARM_COLUMNS = ("metric", "size", "rank", "arm", "diversity", "n", "mean", "sd", "ci_low", "ci_high", "vs_anchor",
               "vs_anchor_low", "vs_anchor_high")
CONTRAST_COLUMNS = ("metric", "size", "kind", "a", "b", "n", "diff", "sd", "ci_low", "ci_high", "p", "p_holm",
                    "distinguishable", "min_detectable", "diffs")
POWER, ALPHA = 0.8, 0.05  # of min_detectable, as in ``divscope plan``


def _pairs(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int], float]:
    """Score per pair key (position of the row's seed among the group's seeds, replicate); a repeated key keeps
    the mean of its rows."""
    seeds = sorted({r["seed"] for r in rows}, key=lambda s: (s is None, s if s is not None else 0))
    got: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        got.setdefault((seeds.index(r["seed"]), r["replicate"]), []).append(float(r["score"]))
    return {k: float(np.mean(v)) for k, v in got.items()}


def _interval(x: np.ndarray) -> tuple[float, float, float, float]:
    """(sd, low, high, two-sided p of mean 0) of the mean of ``x``; nan without 2 values."""
    sd, lo, hi = mean_interval(x)
    if x.size < 2:
        return sd, lo, hi, math.nan
    se = sd / math.sqrt(x.size)
    m = float(x.mean())
    p = float(2 * (1 - t_cdf(abs(m) / se, x.size - 1))) if se > 0 else (1.0 if m == 0 else 0.0)
    return sd, lo, hi, p


@functools.lru_cache(maxsize=64)
def _mde_factor(df: int) -> float:
    """The minimum detectable difference in units of its standard error (power depends on difference / se only)."""
    from divscope.analysis.plan import min_detectable

    return min_detectable(1.0, df, ALPHA, POWER)


def contrast(a: Mapping[tuple[int, int], float], b: Mapping[tuple[int, int], float]) -> dict[str, Any]:
    """a - b over the pairs both have: n, diff (mean), sd, 90% interval, p, min_detectable, diffs (by pair)."""
    keys = sorted(set(a) & set(b))
    x = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    sd, lo, hi, p = _interval(x)
    mde = _mde_factor(x.size - 1) * sd / math.sqrt(x.size) if x.size >= 2 and sd > 0 else math.nan
    return {"n": int(x.size), "diff": float(x.mean()) if x.size else math.nan, "sd": sd, "ci_low": lo,
            "ci_high": hi, "p": p, "min_detectable": mde, "diffs": [float(v) for v in x]}


def _holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (nan stays nan). Not statsmodels' ``multipletests``: it runs ``gc.collect()``
    on every call (0.14 s each here), which dominated a whole analysis."""
    finite = sorted((v, i) for i, v in enumerate(p) if math.isfinite(v))
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(finite):
        running = max(running, min(1.0, v * (len(finite) - rank)))
        out[i] = running
    return out


def _arm_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Each strategy's rows at its highest level (baselines: all their rows), by strategy in report order."""
    out = {}
    for (s,), g in sorted(group_rows(rows, "strategy").items(), key=lambda kv: strategy_rank(kv[0][0])):
        levels = [r["diversity"] for r in g if r["diversity"] is not None]
        out[s] = [r for r in g if r["diversity"] == max(levels)] if levels else list(g)
    return out


def paired_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(arms, contrasts) of every (metric, size): arms ranked by mean score at their most diverse level; contrasts
    of kind ``high-low`` (a strategy's highest level minus its lowest) and ``arms`` (every pair of arms, the
    better-ranked first)."""
    arms: list[dict[str, Any]] = []
    contrasts: list[dict[str, Any]] = []
    anchors = {r["metric"]: float(r["score"]) for r in rows if r["strategy"] == ANCHOR}
    subsets = [r for r in rows if r["strategy"] != ANCHOR]
    for (metric, size), g in sorted(group_rows(subsets, "metric", "size").items()):
        for (s,), sg in sorted(group_rows([r for r in g if r["diversity"] is not None], "strategy").items(),
                               key=lambda kv: strategy_rank(kv[0][0])):
            levels = sorted({r["diversity"] for r in sg})
            if len(levels) >= 2:
                c = contrast(_pairs([r for r in sg if r["diversity"] == levels[-1]]),
                             _pairs([r for r in sg if r["diversity"] == levels[0]]))
                contrasts.append({"metric": metric, "size": size, "kind": "high-low", "a": f"{s}@{levels[-1]:g}",
                                  "b": f"{s}@{levels[0]:g}", **c, "p_holm": c["p"],
                                  "distinguishable": bool(c["p"] < 1 - LEVEL)})
        groups = _arm_groups(g)
        pairs = {s: _pairs(sg) for s, sg in groups.items()}
        stats = []
        for s, sg in groups.items():
            x = np.array(list(pairs[s].values()), dtype=np.float64)
            sd, lo, hi, _ = _interval(x)
            base = anchors.get(metric, math.nan)
            stats.append({"metric": metric, "size": size, "arm": s, "diversity": sg[0]["diversity"],
                          "n": int(x.size), "mean": float(x.mean()), "sd": sd, "ci_low": lo, "ci_high": hi,
                          "vs_anchor": float(x.mean()) - base, "vs_anchor_low": lo - base,
                          "vs_anchor_high": hi - base})
        stats.sort(key=lambda a: (-a["mean"], strategy_rank(a["arm"])))
        for i, a in enumerate(stats, 1):
            arms.append({"rank": i, **a})
        block = []
        for i, a in enumerate(stats):
            for b in stats[i + 1:]:
                c = contrast(pairs[a["arm"]], pairs[b["arm"]])
                block.append({"metric": metric, "size": size, "kind": "arms", "a": a["arm"], "b": b["arm"], **c})
        for c, q in zip(block, _holm([c["p"] for c in block]), strict=True):
            c.update(p_holm=q, distinguishable=bool(q < 1 - LEVEL))
        contrasts.extend(block)
    return ([{k: a.get(k) for k in ARM_COLUMNS} for a in arms],
            [{k: c.get(k) for k in CONTRAST_COLUMNS} for c in contrasts])


def against(contrasts: Sequence[Mapping[str, Any]], ref: str) -> list[dict[str, Any]]:
    """The ``arms`` contrasts that involve ``ref``, each turned to read arm - ``ref`` (in the arms' rank order)."""
    out = []
    for c in contrasts:
        if c["kind"] != "arms" or ref not in (c["a"], c["b"]):
            continue
        if c["a"] == ref:
            c = {**c, "a": c["b"], "b": ref, "diff": -c["diff"], "ci_low": -c["ci_high"], "ci_high": -c["ci_low"],
                 "diffs": [-v for v in c["diffs"]]}
        out.append(dict(c))
    return out


def figure_panels(contrasts: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The panels of one (metric, size)'s paired figure: highest minus lowest level per strategy, and every arm at
    its most diverse level minus random (or minus the lowest-ranked arm when there is no random baseline)."""
    hilo = [dict(c) for c in contrasts if c["kind"] == "high-low"]
    arms = [c for c in contrasts if c["kind"] == "arms"]
    names = [c["a"] for c in arms] + [c["b"] for c in arms]
    ref = "random" if "random" in names else (names[-1] if names else None)
    panels = [("highest minus lowest diversity level, per replicate", hilo)]
    if ref is not None:
        panels.append((f"each arm at its most diverse level minus {ref}, per replicate", against(arms, ref)))
    return panels
