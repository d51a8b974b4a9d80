"""``analyze(DIR)``: slopes, correlations, best subsets and figures from a study's ``results.jsonl``.

Input: ``DIR/results.jsonl`` (see ``divscope.analysis.results`` for the row format and what older rows default
to). Output: ``DIR/analysis/`` (built aside and swapped in whole, so it is complete or absent):
``slopes.csv/json``, ``correlations.csv/json``, ``best.json/csv``, ``baselines.csv/json``, ``results.csv``,
``paired_arms.csv/json`` and ``paired_contrasts.csv/json`` (``divscope.analysis.paired``: arms at their most
diverse level ranked, and paired differences per replicate), ``summary.json`` (fingerprint of the input, notes,
file list) and ``figures/*.png``.

Rows are put in a canonical order first and a repeated (cell, metric) keeps its last line, so the same results
give byte-identical outputs whatever order the runner wrote them in.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis import correlation as corr_mod
from divscope.analysis import paired as paired_mod
from divscope.analysis import plots
from divscope.analysis.regression import LEVEL, PAPER_SIZE, PAPER_SLOPES_10K, Fit, fit, high_low
from divscope.analysis.results import (
    ANCHOR,
    BASE_COLUMNS,
    BASELINES,
    RESULTS,
    STRATEGIES,
    clean,
    group_rows,
    load_results,
    load_study,
    slug,
    strategy_rank,
    write_csv,
)
from divscope.analysis.synthetic import synthetic_results, write_synthetic_study
from divscope.store.atomic import atomic_open, atomic_path, write_json

__all__ = ["ANCHOR", "BASELINES", "RESULTS", "STRATEGIES", "analyze", "clean", "group_rows", "is_current",
           "load_results", "load_study", "slope_rows", "slug", "strategy_rank", "synthetic_results", "write_csv",
           "write_synthetic_study"]

ANALYSIS_VERSION = 3  # 2: reference-prior / replicated slopes, BH q, partial and within-strategy correlations;
#                      3: paired comparisons (paired_arms, paired_contrasts, figures/paired_*)
OUT = "analysis"
SLOPE_COLUMNS = ("metric", "strategy", "size", "model", "n", "n_levels", "replicates", "slope", "slope_sd",
                 "slope_x100", "sd_x100", "df", "ci_low_x100", "ci_high_x100", "p_positive", "hilo_x100",
                 "hilo_low_x100", "hilo_high_x100", "hilo_n", "intercept", "intercept_sd", "sigma", "tau",
                 "paper_x100", "note")
CORR_COLUMNS = ("metric", "column", "side", "name", "unit", "n", "pearson_r", "pearson_p", "pearson_q",
                "spearman_rho", "spearman_p", "spearman_q", "partial_r", "partial_p", "partial_q", "within_r",
                "within_p", "within_q", "within_groups", "note")
BASELINE_COLUMNS = ("metric", "size", "strategy", "n", "mean", "std", "min", "max")
BEST_COLUMNS = ("metric", "scope", "cell", "strategy", "size", "diversity", "seed", "replicate", "score",
                "random_mean", "random_std", "vs_random", "z_vs_random")
NA = "n/a"


# Row keys that record how a cell ran, not what it measured: no table reads them, and ``disk_bytes`` counts the
# bytes of timing text in train.json, so a resumed run's differs. Kept out of the fingerprint, so the same results
# give a byte-identical analysis however the cells ran.
NOT_ANALYSED = frozenset({"disk_bytes"})


def fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": ANALYSIS_VERSION, "level": LEVEL}, sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps({k: v for k, v in r.items() if k not in NOT_ANALYSED}, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def _x100(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else 100.0 * v


def slope_row(metric: str, size: int, strategy: str, g: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], Fit]:
    """The slopes-table row of one (metric, size, strategy) group, and its fit."""
    d = np.array([r["diversity"] for r in g], dtype=np.float64)
    y = np.array([r["score"] for r in g], dtype=np.float64)
    rep = np.array([r.get("replicate", 0) for r in g], dtype=object)
    f = fit(d, y, rep)
    paper = PAPER_SLOPES_10K.get(strategy) if size == PAPER_SIZE else None
    row: dict[str, Any] = {"metric": metric, "strategy": strategy, "size": size, "model": f.model, "n": f.n,
                           "n_levels": f.n_levels, "replicates": f.replicates, "paper_x100": paper,
                           "note": f.note}
    if f.ok:
        lo, hi = f.interval()
        hl = high_low(d, y, rep, f)
        infer = f.inference
        row.update(slope=f.slope, slope_sd=f.se if infer else NA, slope_x100=100 * f.slope,
                   sd_x100=100 * f.se if infer else NA, df=f.df, ci_low_x100=_x100(lo), ci_high_x100=_x100(hi),
                   p_positive=f.prob_positive() if infer else NA, hilo_x100=_x100(hl["hilo"]),  # type: ignore[arg-type]
                   hilo_low_x100=_x100(hl["hilo_low"]), hilo_high_x100=_x100(hl["hilo_high"]),  # type: ignore[arg-type]
                   hilo_n=hl["hilo_n"], intercept=f.intercept, intercept_sd=f.intercept_se if infer else NA,
                   sigma=f.sigma, tau=f.tau)
    else:
        row.update({k: NA for k in ("slope", "slope_sd", "slope_x100", "sd_x100", "df", "ci_low_x100",
                                    "ci_high_x100", "p_positive", "hilo_x100", "hilo_low_x100", "hilo_high_x100",
                                    "intercept", "intercept_sd", "sigma", "tau")}, hilo_n=0)
    return {k: row.get(k) for k in SLOPE_COLUMNS}, f


def slope_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[str, int, str], Fit]]:
    """One row per (metric, size, strategy) with any diversity level; the fits keyed the same way."""
    fits: dict[tuple[str, int, str], Fit] = {}
    out = []
    groups = group_rows((r for r in rows if r["diversity"] is not None), "metric", "size", "strategy")
    for (metric, size, strategy), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                              strategy_rank(kv[0][2]))):
        row, f = slope_row(metric, size, strategy, g)
        fits[(metric, size, strategy)] = f
        out.append(row)
    return out, fits


def baseline_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof=1; 0 for one run) of every strategy run without a diversity level (the
    baselines, and the untrained model's anchor row ``base``)."""
    out = []
    groups = group_rows((r for r in rows if r["diversity"] is None), "metric", "size", "strategy")
    for (metric, size, strategy), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                              strategy_rank(kv[0][2]))):
        s = np.array([r["score"] for r in g])
        out.append({"metric": metric, "size": size, "strategy": strategy, "n": int(s.size),
                    "mean": float(s.mean()), "std": float(s.std(ddof=1)) if s.size > 1 else 0.0,
                    "min": float(s.min()), "max": float(s.max())})
    return out


def _random_of(baselines: Sequence[Mapping[str, Any]], metric: str, size: int) -> Mapping[str, Any] | None:
    for b in baselines:
        if b["metric"] == metric and b["size"] == size and b["strategy"] == "random":
            return b
    return None


def anchor_of(baselines: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any] | None:
    """The untrained model's row for ``metric`` (one anchor per study, whatever size it is filed under)."""
    return next((b for b in baselines if b["metric"] == metric and b["strategy"] == ANCHOR), None)


def best_rows(rows: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Best subset per metric (overall, per strategy), next to the random baseline of its size (the untrained
    model is not a subset and never counts)."""

    def entry(r: Mapping[str, Any], scope: str) -> dict[str, Any]:
        rnd = _random_of(baselines, r["metric"], r["size"])
        e = {"metric": r["metric"], "scope": scope, **{k: r.get(k) for k in (
            "cell", "strategy", "size", "diversity", "seed", "replicate", "score")},
             "random_mean": None, "random_std": None, "vs_random": None, "z_vs_random": None}
        if rnd is not None:
            e["random_mean"], e["random_std"] = rnd["mean"], rnd["std"]
            e["vs_random"] = r["score"] - rnd["mean"]
            e["z_vs_random"] = e["vs_random"] / rnd["std"] if rnd["std"] > 0 else None
        return e

    def top(g: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        return max(g, key=lambda r: r["score"])  # first of equals in canonical order

    out: dict[str, Any] = {}
    subsets = [r for r in rows if r["strategy"] != ANCHOR]
    for (metric,), g in sorted(group_rows(subsets, "metric").items()):
        per = {k[0]: v for k, v in group_rows(g, "strategy").items()}
        out[metric] = {"overall": entry(top(g), "overall"),
                       "per_strategy": [entry(top(per[s]), s) for s in sorted(per, key=strategy_rank)],
                       "random": [{k: b[k] for k in ("size", "n", "mean", "std")} for b in baselines
                                  if b["metric"] == metric and b["strategy"] == "random"]}
    return out


def _notes(rows: Sequence[Mapping[str, Any]], slopes: Sequence[Mapping[str, Any]], metrics: list[str],
           sizes: list[int]) -> list[str]:
    notes = [f"{s['strategy']} at size {s['size']} ({s['metric']}): {s['note']}" for s in slopes if s["note"]]
    for metric in metrics:
        for size in sizes:
            have = {r["strategy"] for r in rows if r["metric"] == metric and r["size"] == size} - {ANCHOR}
            missing = [s for s in STRATEGIES if s not in have]
            if have and missing and len(missing) < len(STRATEGIES):
                notes.append(f"size {size} ({metric}): no results for {', '.join(missing)}")
            if have and "random" not in have:
                notes.append(f"size {size} ({metric}): no random baseline, so no reference band")
    return notes


def _figures(rows: Sequence[Mapping[str, Any]], fits: Mapping[tuple[str, int, str], Fit],
             baselines: Sequence[Mapping[str, Any]], correlations: Sequence[Mapping[str, Any]],
             contrasts: Sequence[Mapping[str, Any]], metrics: list[str], sizes: list[int]) -> dict[str, bytes]:
    figs: dict[str, bytes] = {}
    for metric in metrics:
        anchor = anchor_of(baselines, metric)
        for size in sizes:
            sel = [r for r in rows if r["metric"] == metric and r["size"] == size and r["diversity"] is not None]
            by = {s: g for (s,), g in group_rows(sel, "strategy").items()}
            if not any(s in by for s in STRATEGIES):
                continue
            pts = {s: ([r["diversity"] for r in g], [r["score"] for r in g]) for s, g in by.items()}
            f = {s: fits[(metric, size, s)] for s in pts}
            rnd = _random_of(baselines, metric, size)
            figs[f"diversity_{slug(metric)}_{size}.png"] = plots.diversity_figure(
                pts, f, rnd, f"score vs diversity level, size {size:,}, metric {metric}", metric, anchor=anchor)
            # Measured diversity: types covered on the strategy's own axis, and the Vendi score of its own side.
            for name, label, column in (("measured", "types covered", lambda r, s: r.get("types_covered")),
                                        ("vendi", "Vendi score",
                                         lambda r, s: r.get(f"m.{s.partition('-')[0]}.vendi"))):
                measured = {s: ([column(r, s) for r in g if column(r, s) is not None],
                                [r["score"] for r in g if column(r, s) is not None]) for s, g in by.items()}
                if any(len(x) >= 2 for x, _ in measured.values()):
                    figs[f"{name}_{slug(metric)}_{size}.png"] = plots.measured_figure(
                        measured, rnd, f"score vs {label} (measured diversity), size {size:,}, metric {metric}",
                        metric, anchor=anchor, xlabel=f"{label} (own {'axis' if name == 'measured' else 'side'})")
        for size in sizes:
            block = [c for c in contrasts if c["metric"] == metric and c["size"] == size]
            if any(c["n"] for c in block):
                figs[f"paired_{slug(metric)}_{size}.png"] = plots.paired_figure(
                    paired_mod.figure_panels(block), f"paired differences, size {size:,}, metric {metric}")
        block = [c for c in correlations if c["metric"] == metric]
        if block:
            figs[f"correlations_{slug(metric)}.png"] = plots.correlation_figure(
                block, f"post-hoc metrics vs score ({metric}), all subsets")
    return figs


def analyze(study: str | Path, figures: bool = True) -> dict[str, Any]:
    """Run the analysis of ``study`` (a directory with results.jsonl); write ``study/analysis/``; return it all."""
    study = Path(study)
    rows, notes = load_results(study)
    subsets = [r for r in rows if r["strategy"] != ANCHOR]
    slopes, fits = slope_rows(rows)
    baselines = baseline_rows(rows)
    columns = corr_mod.metric_columns(subsets)
    correlations = corr_mod.correlations(subsets)
    corr_columns = sorted({c["column"] for c in correlations})
    best = best_rows(rows, baselines)
    arms, contrasts = paired_mod.paired_rows(rows)
    metrics = sorted({r["metric"] for r in rows})
    sizes = sorted({r["size"] for r in subsets})
    strategies = sorted({r["strategy"] for r in rows}, key=strategy_rank)
    notes += _notes(rows, slopes, metrics, sizes)
    if any(c.endswith("]") for c in corr_columns):
        notes.append("rows count micro types in different units: those columns are correlated per unit")
    figs = _figures(rows, fits, baselines, correlations, contrasts, metrics, sizes) if figures else {}
    summary = {"version": ANALYSIS_VERSION, "fingerprint": fingerprint(rows), "n_results": len(rows),
               "metrics": metrics, "sizes": sizes, "strategies": strategies, "metric_columns": columns,
               "anchor": any(r["strategy"] == ANCHOR for r in rows), "interval_level": LEVEL,
               "notes": notes, "with_figures": figures, "figures": sorted(figs),
               "units": "slope = change of score per unit of diversity level d in [0, 1]; *_x100 = slope * 100 "
                        "(shown as x 10^-2); ci = central 90% interval; hilo = score at the highest level minus "
                        "the lowest, per replicate, mean",
               "files": ["slopes.csv", "slopes.json", "correlations.csv", "correlations.json", "best.json",
                         "best.csv", "baselines.csv", "baselines.json", "paired_arms.csv", "paired_arms.json",
                         "paired_contrasts.csv", "paired_contrasts.json", "results.csv", "summary.json"]}
    out = study / OUT
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / "slopes.json", clean(slopes))
        write_csv(tmp / "slopes.csv", SLOPE_COLUMNS, slopes)
        write_json(tmp / "correlations.json", clean(correlations))
        write_csv(tmp / "correlations.csv", CORR_COLUMNS, correlations)
        write_json(tmp / "baselines.json", clean(baselines))
        write_csv(tmp / "baselines.csv", BASELINE_COLUMNS, baselines)
        write_json(tmp / "best.json", clean(best))
        write_csv(tmp / "best.csv", BEST_COLUMNS,
                  [e for m in best.values() for e in [m["overall"], *m["per_strategy"]]])
        write_json(tmp / "paired_arms.json", clean(arms))
        write_csv(tmp / "paired_arms.csv", paired_mod.ARM_COLUMNS, arms)
        write_json(tmp / "paired_contrasts.json", clean(contrasts))
        write_csv(tmp / "paired_contrasts.csv", paired_mod.CONTRAST_COLUMNS[:-1], contrasts)  # diffs: json only
        write_csv(tmp / "results.csv", BASE_COLUMNS + tuple(columns), rows)
        (tmp / "figures").mkdir()
        for name, data in figs.items():
            with atomic_open(tmp / "figures" / name, "wb") as fh:
                fh.write(data)
        write_json(tmp / "summary.json", clean(summary))
    return {**clean(summary), "dir": str(out), "slopes": clean(slopes), "correlations": clean(correlations),
            "baselines": clean(baselines), "best": clean(best), "arms": clean(arms),
            "contrasts": clean(contrasts), "fits": fits}


def is_current(study: str | Path) -> bool:
    """True when ``study/analysis`` exists, with figures, made from the current results by this version."""
    study = Path(study)
    path = study / OUT / "summary.json"
    if not path.is_file():
        return False
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    rows, _ = load_results(study)
    return summary.get("fingerprint") == fingerprint(rows) and bool(summary.get("with_figures")) and all(
        (study / OUT / f).is_file() for f in summary.get("files", [])) and all(
        (study / OUT / "figures" / f).is_file() for f in summary.get("figures", []))
