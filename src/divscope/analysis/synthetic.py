"""A realistic fake study (tests, demos): the paper's slopes, score noise, replicates, an untrained anchor."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.analysis.regression import PAPER_SLOPES_10K
from divscope.analysis.results import ANCHOR, BASELINES, RESULTS, STRATEGIES
from divscope.store.atomic import atomic_open, write_json


def _metrics(rng: np.random.Generator, strategy: str, d: float) -> dict[str, float]:
    """Post-hoc metrics that move with the level they control (micro moves length: the paper's confound)."""
    side = strategy.split("-")[0] if "-" in strategy and strategy not in BASELINES else ""
    level = strategy.split("-")[-1]
    m: dict[str, float] = {}
    for s in ("instruction", "response"):
        x = d if side == s else 0.5
        length0 = 45.0 if s == "instruction" else 210.0
        grow = 0.7 if level == "micro" and side == s else 0.05
        own = level in ("macro", "meso") and side == s
        m[f"m.{s}.mean_tokens"] = length0 * (0.65 + grow * x) * (1 + rng.normal(0, 0.03))
        m[f"m.{s}.distinct_2"] = 0.30 + 0.18 * x + rng.normal(0, 0.01)
        m[f"m.{s}.vendi"] = 6.0 + (14.0 if own else 4.0) * x + rng.normal(0, 0.4)
        m[f"m.{s}.self_bleu"] = 0.32 - 0.10 * x + rng.normal(0, 0.01)
        m[f"m.{s}.token_entropy_bits"] = 9.2 + 0.9 * x + rng.normal(0, 0.05)
        m[f"m.{s}.mean_cosine_distance"] = 0.62 + (0.2 if own else 0.05) * x + rng.normal(0, 0.01)
        m[f"m.{s}.compression_ratio"] = 3.1 - 0.5 * x + rng.normal(0, 0.03)
        m[f"m.{s}.types_micro"] = 2500 + (5000 if level == "micro" and side == s else 800) * x + rng.normal(0, 80)
    return m


def synthetic_results(sizes: Sequence[int] = (1000, 10_000), metric: str = "nll", seeds: Sequence[int] = (0, 1, 2),
                      levels: int = 7, random_seeds: int = 5, strategies: Sequence[str] = STRATEGIES,
                      baselines: Sequence[str] = BASELINES, seed: int = 0, anchor: bool = True,
                      unit: str | None = "smollm2") -> list[dict[str, Any]]:
    """Rows of a fake study: true slopes of the paper's 10K table (x 10^-2 per unit d), one replicate per entry
    of ``seeds`` (its seed drives selection and training; a small shared shift per replicate), score noise, and
    the untrained model's row when ``anchor``."""
    rng = np.random.default_rng(seed)
    unit_, base0, noise = (1.0, -1.50, 0.010) if metric == "nll" else (100.0, 45.0, 1.0)  # nll, or points
    out: list[dict[str, Any]] = []
    tag = {} if unit is None else {"unit": unit}
    if anchor:
        out.append({"cell": "base", "strategy": ANCHOR, "size": min(sizes), "diversity": None, "seed": 0,
                    "replicate": 0, "metric": metric, "score": base0 - unit_ * 0.05, **tag})
    for size in sizes:
        base = base0 + unit_ * 0.04 * math.log10(size / 1000)
        for strategy in strategies:
            slope = unit_ * 1e-2 * PAPER_SLOPES_10K.get(strategy, 0.0)
            side, _, level = strategy.partition("-")
            for s in seeds:
                shift = rng.normal(0, unit_ * noise * 0.5)
                for i in range(levels):
                    d = i / (levels - 1) if levels > 1 else 0.0
                    score = base + shift + slope * d + rng.normal(0, unit_ * noise)
                    m = _metrics(rng, strategy, d)
                    out.append({"cell": f"{strategy}/n{size}/d{d:.3f}/r{s}", "strategy": strategy, "size": size,
                                "diversity": round(d, 6), "seed": s, "replicate": s, "selection_seed": s,
                                "train_seed": s, "eval_seed": 0, "metric": metric, "score": score, **tag,
                                "types_covered": m.get(f"m.{side}.types_{level}", round(10 + 50 * d)), **m})
        for b in baselines:
            for s in range(random_seeds if b == "random" else max(1, len(seeds))):
                latent = float(rng.uniform(0.4, 0.9))
                score = base + unit_ * (0.01 if b == "random" else 0.015) + rng.normal(0, unit_ * noise)
                out.append({"cell": f"{b}/n{size}/s{s}", "strategy": b, "size": size, "diversity": None,
                            "seed": s, "replicate": s, "selection_seed": s, "train_seed": s, "eval_seed": 0,
                            "metric": metric, "score": score, **tag, **_metrics(rng, b, latent)})
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
