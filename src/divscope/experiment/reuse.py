"""Runs shared between (sub-)studies: a cell whose subset file has the same bytes and whose training seed is the
same as an already trained one's reuses that run (the same records and settings give the same adapter,
tests/test_train.py), so variants that select the same subset as the base study are not trained again. The seed
matters: with ``hold: selection`` the replicates of a cell have identical subsets but train differently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from divscope.train.run import Run


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


def run_key(cell: Any) -> str:
    """What makes two cells' training runs the same: the subset's bytes and the training seed."""
    return f"{subset_digest(cell.subset)}:seed={cell.train_seed}"


def finished_runs(cells: list[Any]) -> dict[str, Path]:
    """:func:`run_key` -> run dir, for the cells (not the anchor) whose training run is finished."""
    out: dict[str, Path] = {}
    for c in cells:
        if c.subset is not None and Run.is_finished(c.run_dir) and c.subset.exists():
            out.setdefault(run_key(c), c.run_dir)
    return out


def share_runs(cells: list[Any], runs: dict[str, Path]) -> int:
    """Point each cell without a run of its own at a finished run of the same :func:`run_key`; how many."""
    shared = 0
    for c in cells:
        if c.subset is None or Run.is_finished(c.run_dir) or not c.subset.exists():
            continue
        run = runs.get(run_key(c))
        if run is not None:
            c.run_dir = run
            c.results["shared_run"] = str(run)
            shared += 1
    return shared
