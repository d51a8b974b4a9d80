"""One grid cell of a study: train on its subset, then run every evaluation of the spec.

A cell is the unit that travels: the local runner calls :func:`run_cell_safely` in turn, the Ray backend sends the
same call to a worker (``experiment.distributed``); both write into the cell's run folder.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.experiment.spec import ExperimentSpec


@dataclass
class Cell:
    id: str
    strategy: str
    size: int
    diversity: float | None
    seed: int
    subset: Path
    run_dir: Path
    status: str = "pending"
    error: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def run_cell(cell: Cell, spec: ExperimentSpec) -> None:
    from divscope.evaluate.runs import evaluate_run
    from divscope.io import read_records
    from divscope.train.sft import train

    records, rejects = read_records(cell.subset)
    if rejects:
        raise DivscopeError(f"{cell.subset}: {len(rejects)} invalid records")
    cell.status = "training"
    res = train(records, cell.run_dir, spec.train, source=str(cell.subset))
    cell.results["train_seconds_per_step"] = res.summary.get("seconds_per_step")
    for e in spec.evaluate:  # items are drawn with the evaluation's own seed (recorded in the result's params)
        cell.status = f"evaluating {e.name}"
        r = evaluate_run(cell.run_dir, e.eval_set, e.method, limit=e.limit, seed=e.seed, max_len=e.max_len,
                         batch_size=e.batch_size, device=e.device, **e.method_options())
        cell.results[e.name] = r["score"]


def run_cell_safely(cell: Cell, spec: ExperimentSpec) -> dict[str, Any]:
    """Run one cell; the outcome (results, or the error and traceback) as a dict that can travel."""
    try:
        run_cell(cell, spec)
        return {"status": "done", "results": cell.results}
    except Exception as e:  # one broken cell must not stop the study; it is reported, not hidden
        user = isinstance(e, DivscopeError)
        return {"status": "failed", "results": cell.results, "error": str(e) if user else f"{type(e).__name__}: {e}",
                "traceback": "" if user else traceback.format_exc()}
