"""Ablations and controls of a study with variants (and/or length control): the tables the paper backs its
main result with, computed from what the runner wrote.

    build(DIR) -> dict      base study DIR plus DIR/variants/<name>/ (see divscope.experiment.variants)
    write(DIR) -> dict      the same, written to DIR/ablations/ (built aside and swapped in whole)

Tables:

* ``slopes``: per study (base, each variant), strategy, size and score metric: the calibrated slope of the score
  on d (``analyze.slope_rows``: x 10^-2, sd, 90% interval, P(slope > 0)), beside the slope of mean response / instruction length (target tokens per unit
  d) over the same subsets, so a reader sees whether length or diversity moved; with the micro band and the
  tokenizer/unit of that study.
* ``bands``: per study and micro strategy: unit, tokenizer, vocabulary, low/high thresholds, and how many token
  types fall below / inside / above the band (types per band), samples left without a type, the length band.
* ``lengths``: every evaluated subset: study, strategy, d, seed, score, mean response and instruction tokens.
* ``predictors``: every post-hoc metric of the metric card (all computed before any training: token entropy,
  length, Self-BLEU, distinct-n, Vendi, types covered, ...) against the score that training later measured,
  over the subsets of every study pooled (a subset trained once and shared by several studies counts once):
  Pearson r and Spearman rho with two-sided p and Benjamini-Hochberg q over the columns, and in how many studies
  the within-study Spearman has the pooled sign. Micro type counts are pooled only over studies that count them
  in the same unit (``types_micro[words]``, ``types_micro[llama2]``, ...). Sorted by |Spearman|: the top rows are
  the metrics worth trusting before paying for training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis import correlation as corr_mod
from divscope.analysis.analyze import slope_rows
from divscope.analysis.regression import fit
from divscope.analysis.results import (
    ANCHOR,
    clean,
    group_rows,
    load_results,
    load_study,
    strategy_rank,
    write_csv,
)
from divscope.store.atomic import atomic_path, write_json

OUT = "ablations"
VARIANTS = "variants"
SLOPE_COLUMNS = ("study", "changes", "metric", "strategy", "size", "model", "n", "n_levels", "replicates",
                 "slope_x100", "sd_x100", "ci_low_x100", "ci_high_x100", "p_positive", "length_slope_response", "length_slope_instruction", "mean_response_tokens",
                 "unit", "tokenizer", "low", "high", "types_mid", "length_range", "note")
BAND_COLUMNS = ("study", "strategy", "side", "unit", "tokenizer", "vocab_size", "low", "high", "types_below",
                "types_mid", "types_above", "samples_without_type", "mean_types_per_sample", "length_range",
                "eligible")
LENGTH_COLUMNS = ("study", "strategy", "size", "diversity", "seed", "metric", "score", "mean_response_tokens",
                  "mean_instruction_tokens", "types_covered")
PREDICTOR_COLUMNS = ("metric", "column", "n", "pearson_r", "pearson_p", "pearson_q", "spearman_rho", "spearman_p",
                     "spearman_q", "studies_same_sign", "studies", "note")


def studies(study: str | Path) -> list[dict[str, Any]]:
    """The base study and its variants with results, each ``{name, dir, changes, description}``: those the
    study's spec lists, in its order (a variant removed from the spec is left out), else every variant folder."""
    study = Path(study)
    info = load_study(study)
    spec = info.get("spec") if isinstance(info.get("spec"), dict) else {}
    out = [{"name": "base", "dir": study, "changes": "", "description": ""}]
    listed = [v for v in spec.get("variants") or [] if isinstance(v, dict) and v.get("name")]
    names = [v["name"] for v in listed]
    vdir = study / VARIANTS
    if "variants" not in spec and vdir.is_dir():  # no spec to say which: every variant directory
        names += sorted(p.name for p in vdir.iterdir() if p.is_dir())
    by_name = {v["name"]: v for v in listed}
    for name in names:
        d = vdir / name
        if not (d / "results.jsonl").is_file():
            continue
        v = by_name.get(name, {})
        out.append({"name": name, "dir": d, "changes": _changes(v), "description": v.get("description", "")})
    return out


def _changes(variant: Mapping[str, Any]) -> str:
    flat: list[str] = []

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict) and obj and prefix.count(".") < 2:
            for k, x in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            flat.append(f"{prefix}={json.dumps(obj)}")

    walk("", {k: variant.get(k) for k in ("features", "selection") if variant.get(k)})
    return ", ".join(flat)


def has_ablations(study: str | Path) -> bool:
    """True when the study has variants with results, or selected under length control."""
    st = studies(study)
    if len(st) > 1:
        return True
    spec = load_study(study).get("spec") or {}
    return bool(isinstance(spec, dict) and (spec.get("selection") or {}).get("length_range"))


def _manifests(study_dir: Path) -> dict[str, dict[str, Any]]:
    """strategy -> one manifest of that strategy (features config, length request, eligible count)."""
    out: dict[str, dict[str, Any]] = {}
    sub = study_dir / "subsets"
    if not sub.is_dir():
        return out
    for path in sorted(sub.glob("*/*.manifest.json")):
        strategy = path.parent.name
        if strategy in out:
            continue
        try:
            out[strategy] = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
    return out


def _length_text(m: Mapping[str, Any]) -> str:
    ln = (m.get("request") or {}).get("length")
    if not ln:
        return ""
    lo, hi = ln["range"]
    return f"{'' if lo is None else lo}:{'' if hi is None else hi} {ln['side']} tokens ({ln['tokenizer']})"


def _band(study: str, strategy: str, m: Mapping[str, Any]) -> dict[str, Any]:
    cfg = m.get("features_config") or {}
    prov = cfg.get("provenance") or {}
    return {"study": study, "strategy": strategy, "side": strategy.split("-")[0], "unit": cfg.get("unit"),
            "tokenizer": cfg.get("tokenizer") or ("str.split" if cfg.get("unit") == "words" else None),
            "vocab_size": prov.get("vocab_size"), "low": cfg.get("low"), "high": cfg.get("high"),
            "types_below": prov.get("types_below"), "types_mid": prov.get("types_mid"),
            "types_above": prov.get("types_above"), "samples_without_type": prov.get("samples_without_type"),
            "mean_types_per_sample": prov.get("mean_types_per_sample"), "length_range": _length_text(m),
            "eligible": m.get("eligible")}


def _length_slope(g: Sequence[Mapping[str, Any]], column: str) -> float | None:
    pts = [(r["diversity"], r[column], r.get("replicate", 0)) for r in g if isinstance(r.get(column), int | float)]
    if len({d for d, _, _ in pts}) < 2:
        return None
    f = fit([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts])
    return f.slope if f.ok else None


def _identity(r: Mapping[str, Any]) -> str:
    """Rows of one trained subset shared by several studies (the random baselines) count once.

    Their score and text metrics are equal, but ``types_*`` columns count types under each study's own
    featurizer (words, another tokenizer, another band), so they are left out of the identity.
    """
    return json.dumps({k: v for k, v in r.items()
                       if k in ("score", "metric") or (k.startswith("m.") and ".types_" not in k)},
                      sort_keys=True)


def predictor_rows(per_study: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Each pre-training metric column vs score: pooled Pearson/Spearman with BH q over the columns, and
    within-study sign agreement. Unit-dependent columns are split by unit first, so each is pooled only over the
    studies that count it in the same unit."""
    tagged = [{**r, "_study": name} for name, rows in per_study.items() for r in rows
              if r.get("strategy") != ANCHOR]
    tagged = corr_mod.split_units(tagged)
    pooled: dict[str, dict[str, Any]] = {}
    for r in tagged:  # a shared subset keeps its first study's values, plus the unit columns of the others
        kept = pooled.setdefault(_identity(r), dict(r))
        for k, v in r.items():
            kept.setdefault(k, v)
    all_rows = list(pooled.values())
    columns = corr_mod.metric_columns(all_rows)
    out = []
    for metric in sorted({r["metric"] for r in all_rows}):
        block = []
        g = [r for r in all_rows if r["metric"] == metric]
        for col in columns:
            x = [corr_mod.as_number(r.get(col)) for r in g]
            if not any(math.isfinite(v) for v in x):
                continue
            c = corr_mod.correlate(x, [r["score"] for r in g])
            signs = []
            for name in per_study:
                sg = [r for r in tagged if r["_study"] == name and r["metric"] == metric]
                cs = corr_mod.correlate([corr_mod.as_number(r.get(col)) for r in sg], [r["score"] for r in sg])
                if cs["spearman_rho"] is not None:
                    signs.append(np.sign(cs["spearman_rho"]))
            pooled_sign = np.sign(c["spearman_rho"]) if c["spearman_rho"] is not None else 0
            block.append({"metric": metric, "column": col, "n": c["n"], "pearson_r": c["pearson_r"],
                          "pearson_p": c["pearson_p"], "spearman_rho": c["spearman_rho"],
                          "spearman_p": c["spearman_p"],
                          "studies_same_sign": int(sum(1 for s in signs if pooled_sign and s == pooled_sign)),
                          "studies": len(signs), "note": c["note"]})
        for test in ("pearson", "spearman"):
            for c, q in zip(block, corr_mod.bh_qvalues([c[f"{test}_p"] for c in block]), strict=True):
                c[f"{test}_q"] = q
        block.sort(key=lambda c: (c["spearman_rho"] is None, -abs(c["spearman_rho"] or 0.0), c["column"]))
        out.extend(block)
    return out


def build(study: str | Path) -> dict[str, Any]:
    """Every ablation table of ``study`` (a base study directory, with or without variants)."""
    st = studies(study)
    slopes, bands, lengths, notes = [], [], [], []
    per_study: dict[str, list[dict[str, Any]]] = {}
    for s in st:
        try:
            rows, _ = load_results(s["dir"])
        except Exception as e:  # a variant without a readable results file is reported, not fatal
            notes.append(f"{s['name']}: no results ({e})")
            continue
        per_study[s["name"]] = rows
        manifests = _manifests(Path(s["dir"]))
        for strategy, m in sorted(manifests.items(), key=lambda kv: strategy_rank(kv[0])):
            if strategy.endswith("-micro"):
                bands.append(_band(s["name"], strategy, m))
        srows, _ = slope_rows(rows)
        groups = group_rows((r for r in rows if r["diversity"] is not None), "metric", "size", "strategy")
        for sr in srows:
            g = groups[(sr["metric"], sr["size"], sr["strategy"])]
            m = manifests.get(sr["strategy"], {})
            cfg = m.get("features_config") or {}
            resp = [r["m.response.mean_tokens"] for r in g if isinstance(r.get("m.response.mean_tokens"), int | float)]
            slopes.append({"study": s["name"], "changes": s["changes"], **{k: sr[k] for k in (
                "metric", "strategy", "size", "model", "n", "n_levels", "replicates", "slope_x100", "sd_x100",
                "ci_low_x100", "ci_high_x100", "p_positive", "note")},
                "length_slope_response": _length_slope(g, "m.response.mean_tokens"),
                "length_slope_instruction": _length_slope(g, "m.instruction.mean_tokens"),
                "mean_response_tokens": float(np.mean(resp)) if resp else None,
                "unit": cfg.get("unit"), "tokenizer": cfg.get("tokenizer") or (
                    "str.split" if cfg.get("unit") == "words" else None),
                "low": cfg.get("low"), "high": cfg.get("high"),
                "types_mid": (cfg.get("provenance") or {}).get("types_mid"), "length_range": _length_text(m)})
        for r in rows:
            lengths.append({"study": s["name"], **{k: r[k] for k in ("strategy", "size", "diversity", "seed",
                                                                     "metric", "score")},
                            "mean_response_tokens": r.get("m.response.mean_tokens"),
                            "mean_instruction_tokens": r.get("m.instruction.mean_tokens"),
                            "types_covered": r.get("types_covered")})
    return clean({"studies": [{"name": s["name"], "dir": str(s["dir"]), "changes": s["changes"],
                                "description": s["description"], "results": len(per_study.get(s["name"], []))}
                               for s in st],
                   "slopes": slopes, "bands": bands, "lengths": lengths,
                   "predictors": predictor_rows(per_study), "notes": notes,
                   "units": "slope_x100: score change per unit of d x 100 (sd: the posterior t's scale; ci: central "
                            "90% interval); length_slope_*: change of mean length in target tokens per unit of d"})


def write(study: str | Path) -> dict[str, Any]:
    """``build`` and write ``study/ablations/`` (ablations.json, slopes/bands/lengths/predictors .csv)."""
    study = Path(study)
    res = build(study)
    with atomic_path(study / OUT) as tmp:
        tmp.mkdir()
        write_json(tmp / "ablations.json", res)
        write_csv(tmp / "slopes.csv", SLOPE_COLUMNS, res["slopes"])
        write_csv(tmp / "bands.csv", BAND_COLUMNS, res["bands"])
        write_csv(tmp / "lengths.csv", LENGTH_COLUMNS, res["lengths"])
        write_csv(tmp / "predictors.csv", PREDICTOR_COLUMNS, res["predictors"])
    return res
