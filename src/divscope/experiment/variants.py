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

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from divscope.experiment.spec import ExperimentSpec
from divscope.io.workspace import Workspace
from divscope.ui import console

VARIANTS = "variants"


def variant_dir(out: Path, name: str) -> Path:
    return Path(out) / VARIANTS / name


def subset_digest(path: Path) -> str:
    """sha256 of a subset's data (a file, or every file of an HF directory in name order)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def finished_runs(cells: list[Any]) -> dict[str, Path]:
    """subset digest -> run dir, for the cells whose training run is finished."""
    from divscope.train.sft import TRAIN_FILE

    out: dict[str, Path] = {}
    for c in cells:
        if (c.run_dir / TRAIN_FILE).is_file() and c.subset.exists():
            out.setdefault(subset_digest(c.subset), c.run_dir)
    return out


def share_runs(cells: list[Any], runs: dict[str, Path]) -> int:
    """Point each cell without a run of its own at a finished run of identical subset bytes; how many."""
    from divscope.train.sft import TRAIN_FILE

    shared = 0
    for c in cells:
        if (c.run_dir / TRAIN_FILE).is_file() or not c.subset.exists():
            continue
        run = runs.get(subset_digest(c.subset))
        if run is not None:
            c.run_dir = run
            c.results["shared_run"] = str(run)
            shared += 1
    return shared


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
    from divscope.experiment import runner

    runs = finished_runs(base_cells)
    summaries = []
    for v in spec.variants:
        vspec = spec.variant_spec(v.name)
        vout = variant_dir(out, v.name)
        vout.mkdir(parents=True, exist_ok=True)
        runner._check_study(vout, vspec, f"{command}  # variant {v.name}")
        changed = ", ".join(f"{k}={x}" for k, x in overrides(spec, v.name).items()) or "nothing"
        console.print(f"[bold]variant {v.name}[/] ({changed})")
        cells, failed, keys = runner._grid_study(vspec, vout, ws, eligible, runs=runs)
        n = runner._write_results(vout, cells, vspec, keys)
        shared = sum(1 for c in cells if "shared_run" in c.results)
        summary: dict[str, Any] = {"name": v.name, "dir": str(vout), "cells": len(cells), "evaluated": n,
                                   "failed": failed, "shared_runs": shared}
        if n:
            analyze(vout)
            summary["report"] = str(report(vout))
        runs.update({k: r for k, r in finished_runs(cells).items() if k not in runs})
        summaries.append(summary)
    return summaries
