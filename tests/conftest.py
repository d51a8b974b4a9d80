"""Fixtures shared by several test modules (plain helper functions are in tests/helpers.py).

- ``divscope_cache``: opt-in (``pytestmark = pytest.mark.usefixtures("divscope_cache")``), module-scoped
  ``$DIVSCOPE_CACHE`` in one temp folder for the whole session, so model conversions happen once per session
  and the user's own cache is not touched by the modules that ask for it.
- ``pool_dir`` / ``ws``: the real-data pool of ``helpers.POOL_N`` samples, ingested once per session; ``ws`` is a
  fresh copy of it for each test (modules that need another workspace define their own ``ws``).
- ``tiny_run``: a LoRA run trained for one step, trained once per session and copied fresh for each module.

Hypothesis draws the same examples on every run (profile ``deterministic``), so a red CI is reproducible and
never a new random draw; ``HYPOTHESIS_PROFILE=explore pytest`` draws fresh examples to hunt for new bugs.

Progress is off in tests (``DIVSCOPE_PROGRESS=0``, subprocesses inherit it), so stderr holds only what a test
checks; tests/test_progress.py turns the plain lines and the bar on where it tests them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

import divscope
from divscope.io.workspace import Workspace
from helpers import POOL_N, real_pairs

os.environ.setdefault("DIVSCOPE_PROGRESS", "0")

settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(scope="module")
def divscope_cache(tmp_path_factory: pytest.TempPathFactory):
    """One divscope model cache per test session (the GGUF->HF tokenizer conversion happens once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "divscope-cache"))
        yield


@pytest.fixture(scope="session")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the pool of the first ``POOL_N`` real pairs (ingested once per session; do not modify)."""
    base = tmp_path_factory.getbasetemp() / f"features-pool-{POOL_N}"
    if not (base / "pool.parquet").exists():
        divscope.ingest(real_pairs(POOL_N), base)
    return base


@pytest.fixture()
def ws(pool_dir: Path, tmp_path: Path) -> Workspace:
    """A fresh workspace per test holding a copy of the shared pool."""
    shutil.copy(pool_dir / "pool.parquet", tmp_path / "pool.parquet")
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def _trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run trained for one step on four builtin samples (max_len 64); ``tiny_run`` hands out copies.

    Training uses one torch thread here: on the shared 2-core machine, two threads that spin-wait for each other
    made this single step take ~35 s instead of a few (train() sets threads to the core count itself).
    """
    import torch

    from divscope.train.settings import TrainSettings
    from divscope.train.sft import train

    ws = tmp_path_factory.mktemp("ws")
    divscope.ingest("builtin:demo", ws)
    run = tmp_path_factory.mktemp("run") / "run"
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        torch.set_num_threads(1)
        mp.setattr(torch, "set_num_threads", lambda n: None)
        train(divscope.Workspace(ws).pool.records()[:4], run,
              TrainSettings(max_steps=1, batch_size=2, max_len=64, save_steps=100, seed=0))
    torch.set_num_threads(before)
    return run


@pytest.fixture(scope="module")
def tiny_run(_trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy, per module, of a LoRA run trained for one step (its eval/ caches start empty)."""
    run = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(_trained_run, run)
    return run


@pytest.fixture(scope="session")
def compare_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid of all nine built-in strategies (size 24, levels 0 / 0.5 / 1, baselines with seeds 0-2) over 160
    real pairs featurized at every level on both sides, with its metric cards (about 90 s of CPU, once per
    session; tests/test_compare.py and the compare page's browser test read it, do not modify it)."""
    from divscope.analysis.compare import compare
    from divscope.features.featurize import featurize
    from divscope.select.registry import ALL
    from divscope.select.subsets import run_grid

    base = tmp_path_factory.mktemp("compare-grid")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIVSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "divscope-cache"))
        divscope.ingest(real_pairs(160), base / "ws")
        for side in ("instruction", "response"):
            for level in ("micro", "macro", "meso"):
                featurize(base / "ws", level, side)
        run_grid(base / "ws", base / "grid", list(ALL), [24], [0.0, 0.5, 1.0], [0], baseline_seeds=[0, 1, 2])
        compare(base / "grid")  # writes every card
    return base / "grid"
