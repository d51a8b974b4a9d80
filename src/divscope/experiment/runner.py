"""``divscope run``: a whole study from one spec, resumable at any point.

    OUT/study.json              the spec, its fingerprint and the command (a rerun must match it)
    OUT/ws/                     the workspace: pool, features, eligible rows (eval overlap removed)
    OUT/subsets/<strategy>/...  the grid: subset files, manifests, metric cards
    OUT/runs/<cell>/            one training run per subset (+ eval/), resumable from checkpoints
    OUT/cells/<cell>.json       status of each cell: done, or failed with the error
    OUT/results.jsonl           one row per evaluated cell (rebuilt from the runs at the end)
    OUT/analysis/, OUT/report.html

Every stage writes atomically and is skipped when its output exists for the same inputs, so a kill at any
point followed by the same command continues where it stopped and ends with the same report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from divscope.experiment.spec import ExperimentSpec
from divscope.experiment.study import check_study, eligible_rows, grid_study, ingest_pool, write_results
from divscope.io.workspace import Workspace
from divscope.ui import console

STAGES = ("ingest", "featurize", "grid", "metrics", "train", "evaluate", "analyze", "report")


def run_study(spec: ExperimentSpec, out: str | os.PathLike[str], command: str = "divscope run",
              engine: Any = None) -> dict[str, Any]:
    """Run (or continue) the study and its variants; returns a summary with the report path.

    ``engine``: ``local`` (default) or ``ray`` / an ``backend.Backend``: featurization runs on Ray Data and
    every cell is a Ray task. The engine is not part of the study: a study started on one continues on the
    other, with the same files.
    """
    from divscope.backend import use_backend

    with use_backend(engine):
        return _run_study(spec, Path(out), command)


def _run_study(spec: ExperimentSpec, out: Path, command: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    spec = check_study(out, spec, command)  # auto runtimes resolved
    ws = Workspace(out / "ws")
    console.print(f"[bold]{spec.name}[/]: ingest")
    ingest_pool(spec, ws)
    eligible = eligible_rows(spec, ws)
    console.print(f"eligible pool rows: {int(eligible.sum()):,} of {len(eligible):,} "
                  f"({int((~eligible).sum())} overlap evaluation prompts and are excluded)")
    cells, failed, keys = grid_study(spec, out, ws, eligible)
    n = write_results(out, cells, spec, keys)
    summary: dict[str, Any] = {"cells": len(cells), "evaluated": n, "failed": failed}
    if spec.variants:
        from divscope.experiment.variants import run_variants

        summary["variants"] = run_variants(spec, out, ws, eligible, cells, command)
        summary["failed"] += sum(v["failed"] for v in summary["variants"])
    if n:
        from divscope.analysis.analyze import analyze
        from divscope.analysis.report import report

        console.print("analyze + report")
        analyze(out)
        summary["report"] = str(report(out))
    return summary
