"""One grid cell of a study: train on its subset, then run every evaluation of the spec.

After its evaluations are recorded a cell's training checkpoints are deleted (``Run.prune``: a finished run is
reused from train.json and its model) and the bytes its run folder keeps are its ``disk_bytes``.

A cell is the unit that travels: the local runner calls :func:`run_cell_safely` in turn, the Ray backend sends the
same call to a worker (``experiment.distributed``); both write into the cell's run folder.

A cell is (strategy, size, level, replicate); its selection seed is in its subset's manifest, its training seed
is ``train_seed``. The study's anchor is a cell too (:func:`anchor_cell`): the untrained model, not trained, only
evaluated, as a ``Run`` whose ``load`` gives the base model (``train.run.base_run``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divscope.analysis.results import ANCHOR  # the untrained model's row: one name for writer and reader
from divscope.errors import DivscopeError
from divscope.experiment.spec import ExperimentSpec


@dataclass
class Cell:
    id: str
    strategy: str
    size: int
    diversity: float | None
    seed: int | None  # the selection seed (None for the anchor)
    subset: Path | None  # None for the anchor
    run_dir: Path
    replicate: int = 0
    train_seed: int | None = None  # None: the spec's train.seed (and the anchor, which is not trained)
    types_covered: int | None = None  # from the manifest: types the subset covers on its strategy's own axis
    status: str = "pending"
    error: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def anchor_cell(run_dir: Path) -> Cell:
    """The untrained model's cell: size 0, no level, replicate 0, evaluated once into ``run_dir``."""
    return Cell(ANCHOR, ANCHOR, 0, None, None, None, run_dir)


def run_cell(cell: Cell, spec: ExperimentSpec) -> None:
    from divscope.evaluate.runs import evaluate_run
    from divscope.io import read_records
    from divscope.train.run import Run, base_run
    from divscope.train.sft import train

    if cell.subset is None:  # the anchor: nothing to train
        base_run(cell.run_dir, spec.train.model, spec.train.chat_template)
    else:
        records, rejects = read_records(cell.subset)
        if rejects:
            raise DivscopeError(f"{cell.subset}: {len(rejects)} invalid records")
        cell.status = "training"
        cfg = spec.train if cell.train_seed is None else spec.train.model_copy(update={"seed": cell.train_seed})
        res = train(records, cell.run_dir, cfg, source=str(cell.subset),
                    on_step=lambda step, total: setattr(cell, "status", f"training {step}/{total}"))
        cell.results["train_seconds_per_step"] = res.summary.get("seconds_per_step")
    for e in spec.evaluate:  # items are drawn with the evaluation's own seed (recorded in the result's params)
        cell.status = f"evaluating {e.name}"
        r = evaluate_run(cell.run_dir, e.eval_set, e.method, limit=e.limit, seed=e.seed, max_len=e.max_len,
                         batch_size=e.batch_size, device=e.device, **e.method_options())
        cell.results[e.name] = r["score"]
    # Evaluations recorded: the checkpoints (optimizer state) are no longer needed to resume; what stays is the
    # cell's disk use. A run shared with another cell (reuse.share_runs) is counted where it was trained.
    run = Run.open(cell.run_dir)
    run.prune()
    cell.results["disk_bytes"] = 0 if "shared_run" in cell.results else run.disk_bytes()


def run_cell_safely(cell: Cell, spec: ExperimentSpec) -> dict[str, Any]:
    """Run one cell; the outcome (results, or the error and traceback) as a dict that can travel."""
    try:
        run_cell(cell, spec)
        return {"status": "done", "results": cell.results}
    except Exception as e:  # one broken cell must not stop the study; it is reported, not hidden
        user = isinstance(e, DivscopeError)
        return {"status": "failed", "results": cell.results, "error": str(e) if user else f"{type(e).__name__}: {e}",
                "traceback": "" if user else traceback.format_exc()}
