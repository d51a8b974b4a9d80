"""Ablations as variants of one study: ``variants:`` in the spec, each run as its own sub-study.

    OUT/                         the base study (as without variants)
    OUT/variants/<name>/         one sub-study per variant: study.json, subsets/, runs/, cells/, results.jsonl,
                                 analysis/, report.html; the workspace (pool, feature cache) is OUT/ws, shared

A variant is the base spec with some ``features`` / ``selection`` keys changed (``ExperimentSpec.variant_spec``);
training and evaluation are the base's, so scores compare across variants. A variant cell whose subset file has
exactly the bytes of a subset already trained (in the base or an earlier variant) reuses that run: the same
records and settings would give the same adapter (tests/test_train.py), so it is not trained again; its status
file says which run it used. Each variant dir checks its own spec like a study dir does, so variants can be added
to a finished study and only the new ones run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from divscope.experiment.cells import ANCHOR
from divscope.experiment.reuse import finished_runs
from divscope.experiment.spec import ExperimentSpec
from divscope.io.workspace import Workspace
from divscope.ui import console

VARIANTS = "variants"


def variant_dir(out: Path, name: str) -> Path:
    return Path(out) / VARIANTS / name


def overrides(spec: ExperimentSpec, name: str) -> dict[str, Any]:
    """The keys a variant changes, flattened: ``{"features.micro.unit": "words", ...}``."""
    v = next(v for v in spec.variants if v.name == name)
    flat: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict) and obj and prefix.count(".") < 2:
            for k, x in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            flat[prefix] = obj

    walk("", {k: d for k, d in v.model_dump(mode="json", include={"features", "selection"}).items() if d})
    return flat


def run_variants(spec: ExperimentSpec, out: Path, ws: Workspace, eligible: np.ndarray, base_cells: list[Any],
                 command: str) -> list[dict[str, Any]]:
    """Run every variant of ``spec`` (resumable); returns one summary per variant."""
    from divscope.analysis.analyze import analyze
    from divscope.analysis.report import report
    from divscope.experiment.study import check_study, grid_study, write_results

    runs = finished_runs(base_cells)
    summaries = []
    for v in spec.variants:
        vspec = spec.variant_spec(v.name)
        vout = variant_dir(out, v.name)
        vout.mkdir(parents=True, exist_ok=True)
        vspec = check_study(vout, vspec, f"{command}  # variant {v.name}")
        changed = ", ".join(f"{k}={x}" for k, x in overrides(spec, v.name).items()) or "nothing"
        console.print(f"[bold]variant {v.name}[/] ({changed})")
        cells, failed, keys = grid_study(vspec, vout, ws, eligible, runs=runs, anchor=Path(out) / "runs" / ANCHOR)
        n = write_results(vout, cells, vspec, keys)
        shared = sum(1 for c in cells if "shared_run" in c.results)
        summary: dict[str, Any] = {"name": v.name, "dir": str(vout), "cells": len(cells), "evaluated": n,
                                   "failed": failed, "shared_runs": shared}
        if n:
            analyze(vout)
            summary["report"] = str(report(vout))
        runs.update({k: r for k, r in finished_runs(cells).items() if k not in runs})
        summaries.append(summary)
    return summaries
