"""Runs shared between (sub-)studies: a cell whose subset file has the same bytes as an already trained one reuses
that run (the same records and settings give the same adapter, tests/test_train.py), so variants that select the
same subset as the base study are not trained again.
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


def finished_runs(cells: list[Any]) -> dict[str, Path]:
    """subset digest -> run dir, for the cells whose training run is finished."""
    out: dict[str, Path] = {}
    for c in cells:
        if Run.is_finished(c.run_dir) and c.subset.exists():
            out.setdefault(subset_digest(c.subset), c.run_dir)
    return out


def share_runs(cells: list[Any], runs: dict[str, Path]) -> int:
    """Point each cell without a run of its own at a finished run of identical subset bytes; how many."""
    shared = 0
    for c in cells:
        if Run.is_finished(c.run_dir) or not c.subset.exists():
            continue
        run = runs.get(subset_digest(c.subset))
        if run is not None:
            c.run_dir = run
            c.results["shared_run"] = str(run)
            shared += 1
    return shared
