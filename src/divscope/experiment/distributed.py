"""Grid cells as Ray tasks (``divscope run --engine ray``).

Each cell (train + evaluate one subset) is one Ray task with declared resources (:func:`cell_resources`): where
the cluster has GPUs, as many GPUs as the cell's training processes (``train.num_processes`` with ``launcher:
accelerate``, else 1), all on one node, where ``torch.distributed`` runs inside the task; otherwise
``cpus_per_cell`` CPUs (at least one per training process). The task runs exactly the code of the local engine
(:func:`divscope.experiment.cells.run_cell_safely`) and writes into the same run folder, so results, status
files, ``analyze`` and ``report`` do not depend on the engine. That needs ``OUT`` on a filesystem every node
sees (a local cluster always does; on a real cluster, a shared mount).

Failures: a user error inside a cell (``DivscopeError``, e.g. an unreadable subset) comes back as a failed
outcome and is not retried; a crashed worker, a lost node or any other exception is retried by Ray up to
``max_retries`` times. Training resumes from its last checkpoint, so a retry does not start over. What still
fails is recorded as a failed cell, as locally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from divscope.backend import Backend, ray_init
from divscope.errors import DivscopeError
from divscope.experiment.cells import Cell, run_cell_safely
from divscope.experiment.spec import ExperimentSpec
from divscope.train.settings import TrainSettings

MAX_RETRIES = 2


class _Retry(Exception):
    """An unexpected error inside a cell: raised out of the task so that Ray retries it."""


def _cell_task(cell: Cell, spec: ExperimentSpec, cpus: int) -> dict[str, Any]:
    import os

    import torch

    if not torch.cuda.is_available():
        threads = max(1, cpus)  # the CPUs Ray granted this task, not every core of the node
        os.environ["DIVSCOPE_TRAIN_THREADS"] = str(threads)  # train() sets torch's threads from it
        torch.set_num_threads(threads)  # evaluation of an already trained cell runs without train()
    outcome = run_cell_safely(cell, spec)
    if outcome["status"] == "failed" and outcome.get("traceback"):
        raise _Retry(f"{outcome['error']}\n{outcome['traceback']}")
    return outcome


def cell_resources(train: TrainSettings, cpus: int, node_gpus: list[int], gpus_per_cell: int | None = None
                   ) -> dict[str, int]:
    """The Ray resources of one cell: ``num_gpus`` = its training processes where the cluster has GPUs (Ray hands
    the task that many GPUs of one node, in CUDA_VISIBLE_DEVICES, and the launch starts one process on each),
    else ``num_cpus`` (one per process at least). ``node_gpus``: the GPUs of each live node. A request that cannot
    be met or would not be used is refused in one line, before any task waits forever for resources."""
    procs = train.processes()
    most = max(node_gpus, default=0)
    if not most:
        if gpus_per_cell:
            raise DivscopeError(f"--cell-gpus {gpus_per_cell}: the Ray cluster has no GPU")
        return {"num_cpus": max(cpus, procs)}
    gpus = gpus_per_cell or procs
    if gpus != procs:
        raise DivscopeError(f"--cell-gpus {gpus}, but a cell trains in {procs} process(es), one per GPU: set "
                            f"train.launcher: accelerate and train.num_processes: {gpus}")
    if gpus > most:
        raise DivscopeError(f"a cell needs {gpus} GPUs on one node; the largest node of the Ray cluster has {most}")
    return {"num_cpus": cpus, "num_gpus": gpus}


def run_cells_ray(eng: Backend, spec: ExperimentSpec, cells: list[Cell], finish: Callable[[Cell, dict[str, Any]], None],
                  cpus_per_cell: int | None = None, max_retries: int = MAX_RETRIES) -> None:
    """Submit every cell, call ``finish(cell, outcome)`` in the driver as each completes (any order)."""
    ray_init(eng)
    import ray

    node_gpus = [int(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    res = cell_resources(spec.train, max(1, cpus_per_cell or eng.cpus_per_cell or 1), node_gpus, eng.gpus_per_cell)
    options: dict[str, Any] = {**res, "max_retries": max_retries, "retry_exceptions": [_Retry]}
    remote = ray.remote(_cell_task).options(**options)
    spec_ref = ray.put(spec)
    pending = {}
    for c in cells:
        pending[remote.remote(c, spec_ref, res["num_cpus"])] = c
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            c = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as e:  # retries exhausted, or the task could not run at all
                cause = getattr(e, "cause", None) or e
                msg = str(cause).split("\n", 1)[0]
                outcome = {"status": "failed", "error": msg if isinstance(cause, DivscopeError)
                           else f"{type(cause).__name__}: {msg}", "traceback": str(e)}
            finish(c, outcome)
