"""``analyze(DIR)``: slopes, correlations, best subsets and figures from a study's ``results.jsonl``.

Input: ``DIR/results.jsonl``, one evaluated subset per line::

    {"cell": "response-micro/n10000/d0.500/s0", "strategy": "response-micro", "size": 10000,
     "diversity": 0.5 (null for baselines), "seed": 0, "metric": "nll", "score": -1.43 (higher is better),
     "m.response.distinct_2": 0.41, "m.response.mean_tokens": 212.0, ...}

Output: ``DIR/analysis/`` (built aside and swapped in whole, so it is complete or absent):
``slopes.csv/json``, ``correlations.csv/json``, ``best.json/csv``, ``baselines.csv/json``, ``results.csv``,
``summary.json`` (fingerprint of the input, notes, file list) and ``figures/*.png``.

Rows are put in a canonical order first (strategy, size, metric, d, seed, cell) and a repeated (cell, metric)
keeps its last line, so the same results give byte-identical outputs whatever order the runner wrote them in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis import correlation as corr_mod
from divscope.analysis import plots
from divscope.analysis.regression import PAPER_SIZE, PAPER_SLOPES_10K, Fit, Prior, fit
from divscope.errors import DivscopeError
from divscope.store.atomic import atomic_open, atomic_path, write_json

ANALYSIS_VERSION = 1
STRATEGIES = tuple(f"{side}-{level}" for side in ("instruction", "response") for level in ("macro", "meso", "micro"))
BASELINES = ("random", "k-center", "distance")
RESULTS = "results.jsonl"
ANCHOR = "base"  # strategy of the untrained model's row (experiment.cells.ANCHOR)
OUT = "analysis"
BASE_COLUMNS = ("cell", "strategy", "size", "diversity", "seed", "metric", "score")
SLOPE_COLUMNS = ("metric", "strategy", "size", "n", "n_levels", "slope", "slope_sd", "slope_x100", "sd_x100",
                 "intercept", "intercept_sd", "sigma", "p_positive", "paper_x100", "note")
CORR_COLUMNS = ("metric", "column", "side", "name", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p",
                "note")
BASELINE_COLUMNS = ("metric", "size", "strategy", "n", "mean", "std", "min", "max")
BEST_COLUMNS = ("metric", "scope", "cell", "strategy", "size", "diversity", "seed", "score", "random_mean",
                "random_std", "vs_random", "z_vs_random")


# ---------------------------------------------------------------------------------------------------- loading

def strategy_rank(s: str) -> tuple[int, str]:
    order = STRATEGIES + BASELINES
    return (order.index(s), "") if s in order else (len(order), s)


def _row_key(r: Mapping[str, Any]) -> tuple:
    d = r["diversity"]
    return (strategy_rank(r["strategy"]), r["size"], r["metric"], -1.0 if d is None else d, r["seed"], r["cell"])


def _bad(path: Path, lineno: int, why: str) -> DivscopeError:
    return DivscopeError(f"{path}:{lineno}: {why}; fix or delete that line and rerun")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_results(study: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated rows of ``study/results.jsonl`` in canonical order, and notes on what was skipped."""
    study = Path(study)
    path = study / RESULTS if study.is_dir() or not study.suffix else study
    if not path.is_file():
        raise DivscopeError(f"no results file at {path}: run the experiment first (it writes {RESULTS}) "
                            "or pass the study directory that holds it")
    notes: list[str] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    replaced = skipped = anchors = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad(path, lineno, f"not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise _bad(path, lineno, "expected a JSON object")
            for k, typ in (("cell", str), ("strategy", str), ("metric", str)):
                if not isinstance(obj.get(k), typ) or not obj[k]:
                    raise _bad(path, lineno, f"field {k!r} missing or not a non-empty string")
            if obj["strategy"] == ANCHOR:  # the untrained model (size 0, no seeds): not a subset, not fitted here
                anchors += 1
                continue
            size = obj.get("size")
            if isinstance(size, float) and size.is_integer():
                size = int(size)
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise _bad(path, lineno, "field 'size' missing or not a positive integer")
            d = obj.get("diversity")
            if d is not None and not (_finite(d) and 0.0 <= d <= 1.0):
                raise _bad(path, lineno, "field 'diversity' must be a number in [0, 1] or null")
            seed = obj.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise _bad(path, lineno, "field 'seed' must be an integer")
            score = obj.get("score")
            if score is None or not _finite(score):
                skipped += 1
                continue
            row = {"cell": obj["cell"], "strategy": obj["strategy"], "size": size,
                   "diversity": None if d is None else float(d), "seed": seed, "metric": obj["metric"],
                   "score": float(score)}
            for k, v in obj.items():
                if k.startswith(corr_mod.METRIC_PREFIX):
                    row[k] = float(v) if _finite(v) else None
            key = (row["cell"], row["metric"])
            replaced += key in rows
            rows[key] = row
    if not rows:
        raise DivscopeError(f"{path} holds no scored result: run the experiment's evaluation step first")
    if replaced:
        notes.append(f"{replaced} repeated (cell, metric) line(s): the last one of each was kept")
    if skipped:
        notes.append(f"{skipped} line(s) without a finite score were skipped")
    if anchors:
        notes.append(f"{anchors} line(s) of the untrained model ({ANCHOR}) are not part of this analysis")
    return sorted(rows.values(), key=_row_key), notes


def load_study(study: str | Path) -> dict[str, Any]:
    """``study.json`` if present (name, spec, command, optional date), else ``{}``."""
    path = Path(study) / "study.json"
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DivscopeError(f"{path}: not valid JSON ({e}); fix or delete it") from None
    return obj if isinstance(obj, dict) else {}


def fingerprint(rows: Sequence[Mapping[str, Any]], prior: Prior) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": ANALYSIS_VERSION, "prior": _prior_dict(prior)}, sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps(r, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def _prior_dict(prior: Prior) -> dict[str, Any]:
    return {"mean": ["mean(score)" if prior.mean[0] is None else prior.mean[0], prior.mean[1]],
            "scale": list(prior.scale), "a0": prior.a0,
            "b0": "a0 * var(score)" if prior.b0 is None else prior.b0}


# --------------------------------------------------------------------------------------------------- analysis

def _r(v: Any, digits: int = 12) -> Any:
    """Stable floats for the outputs: 12 significant digits, non-finite as None."""
    if isinstance(v, float | np.floating):
        f = float(v)
        return float(f"{f:.{digits}g}") if math.isfinite(f) else None
    return v


def clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return _r(obj)


def group_rows(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def slope_rows(rows: Sequence[Mapping[str, Any]], prior: Prior | None = None
               ) -> tuple[list[dict[str, Any]], dict[tuple[str, int, str], Fit]]:
    """One row per (metric, size, strategy) with any diversity level; the fits keyed the same way."""
    fits: dict[tuple[str, int, str], Fit] = {}
    out = []
    groups = group_rows((r for r in rows if r["diversity"] is not None), "metric", "size", "strategy")
    for (metric, size, strategy), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                              strategy_rank(kv[0][2]))):
        f = fit([r["diversity"] for r in g], [r["score"] for r in g], prior)
        fits[(metric, size, strategy)] = f
        paper = PAPER_SLOPES_10K.get(strategy) if size == PAPER_SIZE else None
        row: dict[str, Any] = {"metric": metric, "strategy": strategy, "size": size, "n": f.n,
                               "n_levels": f.n_levels, "paper_x100": paper, "note": f.note}
        if f.ok:
            row.update(slope=f.slope, slope_sd=f.slope_sd, slope_x100=100 * f.slope, sd_x100=100 * f.slope_sd,
                       intercept=f.intercept, intercept_sd=f.intercept_sd, sigma=f.sigma,
                       p_positive=f.prob_positive())
        else:
            row.update(slope="n/a", slope_sd="n/a", slope_x100="n/a", sd_x100="n/a", intercept="n/a",
                       intercept_sd="n/a", sigma="n/a", p_positive="n/a")
        out.append({k: row[k] for k in SLOPE_COLUMNS})
    return out, fits


def baseline_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof=1; 0 for one run) of every strategy run without a diversity level."""
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


def best_rows(rows: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Best subset per metric (overall, per strategy), next to the random baseline of its size."""

    def entry(r: Mapping[str, Any], scope: str) -> dict[str, Any]:
        rnd = _random_of(baselines, r["metric"], r["size"])
        e = {"metric": r["metric"], "scope": scope, **{k: r[k] for k in ("cell", "strategy", "size", "diversity",
                                                                          "seed", "score")},
             "random_mean": None, "random_std": None, "vs_random": None, "z_vs_random": None}
        if rnd is not None:
            e["random_mean"], e["random_std"] = rnd["mean"], rnd["std"]
            e["vs_random"] = r["score"] - rnd["mean"]
            e["z_vs_random"] = e["vs_random"] / rnd["std"] if rnd["std"] > 0 else None
        return e

    def top(g: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        return max(g, key=lambda r: r["score"])  # first of equals in canonical order

    out: dict[str, Any] = {}
    for (metric,), g in sorted(group_rows(rows, "metric").items()):
        per = {k[0]: v for k, v in group_rows(g, "strategy").items()}
        out[metric] = {"overall": entry(top(g), "overall"),
                       "per_strategy": [entry(top(per[s]), s) for s in sorted(per, key=strategy_rank)],
                       "random": [{k: b[k] for k in ("size", "n", "mean", "std")} for b in baselines
                                  if b["metric"] == metric and b["strategy"] == "random"]}
    return out


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._") or "x"


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _fmt_csv(r.get(c)) for c in columns])


def _fmt_csv(v: Any) -> Any:
    v = _r(v)
    return "" if v is None else v


def analyze(study: str | Path, prior: Prior | None = None, figures: bool = True) -> dict[str, Any]:
    """Run the analysis of ``study`` (a directory with results.jsonl); write ``study/analysis/``; return it all."""
    study = Path(study)
    prior = prior or Prior()
    rows, notes = load_results(study)
    slopes, fits = slope_rows(rows, prior)
    baselines = baseline_rows(rows)
    columns = corr_mod.metric_columns(rows)
    correlations = corr_mod.correlations(rows, columns)
    best = best_rows(rows, baselines)
    metrics = sorted({r["metric"] for r in rows})
    sizes = sorted({r["size"] for r in rows})
    strategies = sorted({r["strategy"] for r in rows}, key=strategy_rank)
    for s in slopes:
        if s["note"]:
            notes.append(f"{s['strategy']} at size {s['size']} ({s['metric']}): {s['note']}")
    for metric in metrics:
        for size in sizes:
            have = {r["strategy"] for r in rows if r["metric"] == metric and r["size"] == size}
            missing = [s for s in STRATEGIES if s not in have]
            if have and missing and len(missing) < len(STRATEGIES):
                notes.append(f"size {size} ({metric}): no results for {', '.join(missing)}")
            if have and "random" not in have:
                notes.append(f"size {size} ({metric}): no random baseline, so no reference band")

    figs: dict[str, bytes] = {}
    if figures:
        for metric in metrics:
            for size in sizes:
                sel = [r for r in rows if r["metric"] == metric and r["size"] == size]
                pts = {s: ([r["diversity"] for r in g], [r["score"] for r in g])
                       for (s,), g in group_rows((r for r in sel if r["diversity"] is not None), "strategy").items()}
                if not any(s in pts for s in STRATEGIES):
                    continue
                f = {s: fits[(metric, size, s)] for s in pts}
                title = f"score vs diversity level, size {size:,}, metric {metric}"
                figs[f"diversity_{slug(metric)}_{size}.png"] = plots.diversity_figure(
                    pts, f, _random_of(baselines, metric, size), title, metric)
            block = [c for c in correlations if c["metric"] == metric]
            if block:
                figs[f"correlations_{slug(metric)}.png"] = plots.correlation_figure(
                    block, f"post-hoc metrics vs score ({metric}), all subsets")

    summary = {"version": ANALYSIS_VERSION, "fingerprint": fingerprint(rows, prior), "n_results": len(rows),
               "metrics": metrics, "sizes": sizes, "strategies": strategies, "metric_columns": columns,
               "prior": _prior_dict(prior), "notes": notes, "with_figures": figures, "figures": sorted(figs),
               "units": "slope = change of score per unit of diversity level d in [0, 1]; *_x100 = slope * 100 "
                        "(shown as x 10^-2)",
               "files": ["slopes.csv", "slopes.json", "correlations.csv", "correlations.json", "best.json",
                         "best.csv", "baselines.csv", "baselines.json", "results.csv", "summary.json"]}
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
        write_csv(tmp / "results.csv", BASE_COLUMNS + tuple(columns), rows)
        (tmp / "figures").mkdir()
        for name, data in figs.items():
            with atomic_open(tmp / "figures" / name, "wb") as fh:
                fh.write(data)
        write_json(tmp / "summary.json", clean(summary))
    return {**clean(summary), "dir": str(out), "slopes": clean(slopes), "correlations": clean(correlations),
            "baselines": clean(baselines), "best": clean(best), "fits": fits}


def is_current(study: str | Path, prior: Prior | None = None) -> bool:
    """True when ``study/analysis`` exists, with figures, made from the current results and prior."""
    study = Path(study)
    path = study / OUT / "summary.json"
    if not path.is_file():
        return False
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    rows, _ = load_results(study)
    return summary.get("fingerprint") == fingerprint(rows, prior or Prior()) and bool(
        summary.get("with_figures")) and all(
        (study / OUT / f).is_file() for f in summary.get("files", [])) and all(
        (study / OUT / "figures" / f).is_file() for f in summary.get("figures", []))


# --------------------------------------------------------------------------------------------- synthetic data

def synthetic_results(sizes: Sequence[int] = (1000, 10_000), metric: str = "nll", seeds: Sequence[int] = (0, 1, 2),
                      levels: int = 7, random_seeds: int = 5, strategies: Sequence[str] = STRATEGIES,
                      baselines: Sequence[str] = BASELINES, seed: int = 0) -> list[dict[str, Any]]:
    """Realistic fake results: true slopes of the paper's 10K table (x 10^-2, per unit d), score noise, and
    post-hoc metrics that move with the level they control (micro moves length: the paper's confound)."""
    rng = np.random.default_rng(seed)
    if metric == "nll":
        unit, base0, noise = 1.0, -1.50, 0.010
    else:  # a win rate in points
        unit, base0, noise = 100.0, 45.0, 1.0
    out: list[dict[str, Any]] = []

    def metrics(strategy: str, d: float) -> dict[str, float]:
        side = strategy.split("-")[0] if "-" in strategy and strategy not in BASELINES else ""
        level = strategy.split("-")[-1]
        on = {s: (d if side == s else 0.5) for s in ("instruction", "response")}
        m: dict[str, float] = {}
        for s in ("instruction", "response"):
            x = on[s]
            length0 = 45.0 if s == "instruction" else 210.0
            grow = 0.7 if level == "micro" and side == s else 0.05
            m[f"m.{s}.mean_tokens"] = length0 * (0.65 + grow * x) * (1 + rng.normal(0, 0.03))
            m[f"m.{s}.distinct_2"] = 0.30 + 0.18 * x + rng.normal(0, 0.01)
            m[f"m.{s}.vendi"] = 6.0 + (14.0 if level in ("macro", "meso") and side == s else 4.0) * x + rng.normal(0, 0.4)
            m[f"m.{s}.self_bleu"] = 0.32 - 0.10 * x + rng.normal(0, 0.01)
            m[f"m.{s}.token_entropy_bits"] = 9.2 + 0.9 * x + rng.normal(0, 0.05)
            m[f"m.{s}.mean_cosine_distance"] = 0.62 + (0.2 if level in ("macro", "meso") and side == s else 0.05) * x \
                + rng.normal(0, 0.01)
            m[f"m.{s}.compression_ratio"] = 3.1 - 0.5 * x + rng.normal(0, 0.03)
            m[f"m.{s}.types_micro"] = 2500 + (5000 if level == "micro" and side == s else 800) * x + rng.normal(0, 80)
        return m

    for size in sizes:
        base = base0 + unit * 0.04 * math.log10(size / 1000)
        for strategy in strategies:
            slope = unit * 1e-2 * PAPER_SLOPES_10K.get(strategy, 0.0)
            for i in range(levels):
                d = i / (levels - 1) if levels > 1 else 0.0
                for s in seeds:
                    score = base + slope * d + rng.normal(0, unit * noise)
                    out.append({"cell": f"{strategy}/n{size}/d{d:.3f}/s{s}", "strategy": strategy, "size": size,
                                "diversity": round(d, 6), "seed": s, "metric": metric, "score": score,
                                **metrics(strategy, d)})
        for b in baselines:
            for s in range(random_seeds if b == "random" else max(1, len(seeds))):
                latent = float(rng.uniform(0.4, 0.9))
                score = base + unit * (0.01 if b == "random" else 0.015) + rng.normal(0, unit * noise)
                out.append({"cell": f"{b}/n{size}/s{s}", "strategy": b, "size": size, "diversity": None,
                            "seed": s, "metric": metric, "score": score, **metrics(b, latent)})
    return out


def write_synthetic_study(study: str | Path, name: str = "synthetic study", **kwargs: Any) -> Path:
    """Write ``results.jsonl`` and ``study.json`` of ``synthetic_results(**kwargs)`` into ``study``."""
    study = Path(study)
    rows = synthetic_results(**kwargs)
    with atomic_open(study / RESULTS) as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    spec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    write_json(study / "study.json", {"name": name, "spec": {"synthetic": True, **spec},
                                      "command": "divscope.analysis.write_synthetic_study"})
    return study
