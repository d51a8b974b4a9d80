"""The 20K CPU study pool exactly as ``divscope run docs/results/archive/reproduce-cpu/spec.yaml`` (the first CPU
study; examples/reproduce-cpu.yaml uses the same pool and feature options) selects from it: the same
ingest, the same evaluation-overlap exclusion (eligible rows) and the same feature options. Shared by
``pruning_modes.py`` and ``level_spacing.py``; featurizes only the levels asked for, cached in the workspace.

    python benchmarks/study_pool.py --ws /tmp/study20k/ws --strategies all     # prepare (slow: macro, meso)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "results" / "archive" / "reproduce-cpu" / "spec.yaml"  # the pool and feature options


def study_selector(ws_path: Path, strategies: list[str], spec_path: Path = SPEC):
    """(Selector over the study's eligible rows with the study's feature options, the spec); featurizes what
    ``strategies`` need first (a cache hit once done)."""
    from divscope.experiment.spec import load_spec
    from divscope.experiment.study import eligible_rows, feature_options, featurize_study, ingest_pool
    from divscope.io.workspace import Workspace
    from divscope.select.strategies import Selector

    spec = load_spec(spec_path)
    ws = Workspace(ws_path)
    ingest_pool(spec, ws)
    eligible = eligible_rows(spec, ws)
    for strategy in strategies:
        t = time.perf_counter()
        featurize_study(spec, ws, [strategy])
        print(f"features of {strategy}: {time.perf_counter() - t:.0f} s", flush=True)
    return Selector(ws, eligible, features=feature_options(spec)), spec


def response_lengths(selector, spec) -> np.ndarray:
    """Response length in target-model tokens, per pool row."""
    from divscope.features.micro import token_lengths
    from divscope.select.lengths import target_tokenizer

    return np.asarray(token_lengths(selector.ws, "response", tokenizer=target_tokenizer(spec.train.model)))


def main() -> None:
    from divscope.select.registry import parse_strategies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ws", type=Path, default=Path("/tmp/study20k/ws"))
    ap.add_argument("--strategies", default="all")
    args = ap.parse_args()
    sel, _ = study_selector(args.ws, parse_strategies(args.strategies))
    print(f"{args.ws}: {len(sel.ids)} pairs, {len(sel.rows)} eligible")


if __name__ == "__main__":
    main()
