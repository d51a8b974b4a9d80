"""Variance components and costs measured on a pilot study (the input of ``divscope plan``).

Score of a cell (strategy s, level d, selection seed a, training seed t), evaluated on m items::

    y = b0 + b1 d + S_a + T_t + (1/m) sum_j (I_j + P_cj)

* ``selection`` var(S): another subset at the same level; from cells of the same strategy, size and level (or the
  same baseline) that differ in selection seed, minus what training and prompts add;
* ``training`` var(T): another training seed on the same subset; from cells that share a subset (same selection
  seed) and differ in training seed, minus the prompt part;
* ``prompt`` var(P)/m: the item-by-cell interaction, from the per-item scores of every run scored on the same
  items (``runs/<cell>/eval/<set>.<method>.json``, ``per_item``): the residual mean square of the additive
  cell + item model. It is the part of prompt sampling that differs between cells; the item main effect var(I)/m
  (``prompt_shared``) moves every cell scored on the same items alike and cancels in a slope;
* ``residual``: the pooled residual variance of the study's own slope fits (within replicates), i.e. the total
  per-cell noise the analysis sees at the pilot's m, lack of fit included; ``slope_sd``: the between-replicate sd
  of the slope (unconstrained REML in balanced designs: var(b_r) - residual / Sxx, floored at 0).

Per-item scores are each item's own score; a cell's score may weight items differently (NLL per token), so the
prompt component is an approximation that the residual, measured directly, does not need.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis.regression import fit
from divscope.analysis.results import ANCHOR, group_rows, load_results, load_study


def _pooled_var(groups: Sequence[Sequence[float]]) -> tuple[float | None, int]:
    """Pooled within-group sample variance and its df over groups of 2 or more values."""
    ss, df = 0.0, 0
    for g in groups:
        if len(g) >= 2:
            a = np.asarray(g, dtype=np.float64)
            ss += float(((a - a.mean()) ** 2).sum())
            df += a.size - 1
    return (ss / df if df else None), df


def _sel(r: Mapping[str, Any]) -> Any:
    return r.get("selection_seed") if r.get("selection_seed") is not None else r.get("seed")


def seed_components(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Within-subset (training seeds) and between-subset (selection seeds) variances of one metric's rows.

    ``between_subsets`` is the variance of per-subset mean scores at one level: var(S) + (var(T) + prompt) / k,
    k = ``runs_per_subset`` (the training runs averaged per subset)."""
    cells = [{**r, "_sel": _sel(r)} for r in rows if r["strategy"] != ANCHOR]
    same_subset = [[r["score"] for r in g] for g in group_rows(
        [r for r in cells if r.get("train_seed") is not None], "strategy", "size", "diversity", "_sel").values()
        if len({r["train_seed"] for r in g}) >= 2]
    within, within_df = _pooled_var(same_subset)
    between_groups, runs = [], []
    for g in group_rows(cells, "strategy", "size", "diversity").values():
        by_subset = group_rows(g, "_sel")
        if len(by_subset) >= 2:
            between_groups.append([float(np.mean([r["score"] for r in v])) for v in by_subset.values()])
            runs += [len(v) for v in by_subset.values()]
    between, between_df = _pooled_var(between_groups)
    return {"within_subset": within, "within_subset_df": within_df, "between_subsets": between,
            "between_subsets_df": between_df, "runs_per_subset": float(np.mean(runs)) if runs else None}


def residual_components(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled residual variance of the slope fits, and the between-replicate slope variance, of one metric."""
    ss, df, tau2, n_tau = 0.0, 0.0, [], 0
    for g in group_rows([r for r in rows if r["diversity"] is not None], "size", "strategy").values():
        f = fit([r["diversity"] for r in g], [r["score"] for r in g], [r.get("replicate", 0) for r in g])
        if not f.inference or not math.isfinite(f.sigma):
            continue
        wdf = f.n - 2 * f.replicates
        if wdf > 0:
            ss += f.sigma**2 * wdf
            df += wdf
        if f.replicates >= 2:
            d = np.array([r["diversity"] for r in g])
            sxx = float(((np.unique(d) - np.unique(d).mean()) ** 2).sum())
            tau2.append(f.se**2 * f.replicates - f.sigma**2 / sxx)
            n_tau += 1
    return {"residual": ss / df if df else None, "residual_df": int(df),
            "slope_var": max(0.0, float(np.mean(tau2))) if tau2 else None, "slope_var_groups": n_tau}


def prompt_components(study: Path, rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """Item-by-cell interaction variance per item and item variance, from the runs' per-item scores."""
    name = metric
    scores: dict[str, dict[str, float]] = {}
    for r in rows:
        path = study / "runs" / r["cell"] / "eval" / f"{name}.json"
        try:
            per = json.loads(path.read_text(encoding="utf-8")).get("per_item") or {}
        except (OSError, ValueError):
            continue
        scores[r["cell"]] = {k: float(v) for k, v in per.items() if isinstance(v, int | float)}
    out: dict[str, Any] = {"prompt_item_var": None, "item_var": None, "items": None, "prompt_cells": len(scores)}
    if len(scores) < 2:
        return out
    common = sorted(set.intersection(*(set(v) for v in scores.values())))
    if len(common) < 2:
        return out
    Y = np.array([[scores[c][i] for i in common] for c in sorted(scores)])
    C, J = Y.shape
    resid = Y - Y.mean(axis=1, keepdims=True) - Y.mean(axis=0, keepdims=True) + Y.mean()
    item_means = Y.mean(axis=0)
    interaction = float((resid**2).sum() / ((C - 1) * (J - 1)))
    out.update(prompt_item_var=interaction, items=J,
               item_var=max(0.0, float(item_means.var(ddof=1)) - interaction / C))
    return out


def timings(study: Path, rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """Median device-seconds per training step (per token of batch x grad_accum x length; a step of a run trained
    in P processes counts P times), model load, eval seconds per item, and disk kept per run (the results row's
    ``disk_bytes``, else the run folder), from the pilot's ``runs/<cell>/train.json``, eval results and files."""
    step_tok, load, item, mb = [], [], [], []
    for r in rows:
        run = study / "runs" / r["cell"]
        try:
            t = json.loads((run / "train.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cfg = t.get("config") or {}
        if isinstance(t.get("seconds_per_step"), int | float) and cfg.get("batch_size") and cfg.get("max_len"):
            procs = (t.get("batch") or {}).get("processes", 1)
            step_tok.append(t["seconds_per_step"] * procs / (cfg["batch_size"] * cfg.get("grad_accum", 1)
                                                             * cfg["max_len"]))
        if isinstance(t.get("load_seconds"), int | float):
            load.append(float(t["load_seconds"]))
        try:
            ev = json.loads((run / "eval" / f"{metric}.json").read_text(encoding="utf-8"))
            if isinstance(ev.get("seconds_per_item"), int | float):
                item.append(float(ev["seconds_per_item"]))
        except (OSError, ValueError):
            pass
        kept = r.get("disk_bytes")
        mb.append((kept if isinstance(kept, int) else sum(p.stat().st_size for p in run.rglob("*") if p.is_file()))
                  / 1e6)

    def med(v: list[float]) -> float | None:
        return statistics.median(v) if v else None

    return {"seconds_per_token": med(step_tok), "load_seconds": med(load), "seconds_per_item": med(item),
            "run_mb": med(mb), "timed_runs": len(step_tok)}


def pilot_components(study: str | Path, metric: str | None = None) -> dict[str, Any]:
    """Every component of the pilot at ``study`` for ``metric`` (default: its only or first score metric)."""
    study = Path(study)
    rows, _ = load_results(study)
    metrics = sorted({r["metric"] for r in rows})
    metric = metric if metric in metrics else metrics[0]
    rows = [r for r in rows if r["metric"] == metric]
    out: dict[str, Any] = {"dir": str(study), "metric": metric, "cells": len(rows)}
    out.update(residual_components(rows))
    out.update(seed_components(rows))
    out.update(prompt_components(study, rows, metric))
    out.update(timings(study, rows, metric))
    spec = load_study(study).get("spec") or {}
    ev = [e for e in spec.get("evaluate") or [] if isinstance(e, dict)]
    out["pilot_items"] = out["items"] or next((e.get("limit") for e in ev if e.get("limit")), None)
    p = (out["prompt_item_var"] / out["pilot_items"]) if out["prompt_item_var"] is not None and out[
        "pilot_items"] else None
    out["prompt"] = p
    w, b = out["within_subset"], out["between_subsets"]
    out["training"] = None if w is None else max(0.0, w - (p or 0.0))
    k = out["runs_per_subset"] or 1.0
    out["selection"] = None if b is None else max(0.0, b - (w if w is not None else (p or 0.0)) / k)
    notes = []
    if out["selection"] is not None and w is None:
        notes.append("no subset trained with two training seeds: 'selection' includes training noise")
    if out["selection"] is not None and p is None:
        notes.append("no per-item scores (runs/<cell>/eval/*.json): 'selection' and 'training' include the "
                     "prompt interaction, and the residual cannot be rescaled to another number of items")
    out["notes"] = notes
    return out
