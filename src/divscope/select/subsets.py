"""Writing subsets: the data file (any writer format) and its manifest, and the grid of many subsets.

The manifest ``<file>.manifest.json`` is written after the data file, so its presence marks a finished subset:
``grid`` skips subsets whose manifest holds the same request (``store.cached``), and a killed grid resumes where it
stopped.
Manifests hold no timestamps: the same request gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divscope._version import __version__
from divscope.io.workspace import Workspace
from divscope.io.writers import write_pool_rows
from divscope.select.builtin import ENGINE_DEFAULTS, LEGACY_OPTIONS
from divscope.select.registry import get_strategy
from divscope.select.settings import GridSettings, SelectSettings, replicate_seed
from divscope.select.strategies import Selector, Subset
from divscope.store.atomic import write_json
from divscope.store.cached import stored_result

MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def request_of(strategy: str, n: int, d: float | None, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """What a manifest's request records. The engine options count as given at their defaults when absent (the
    strategies apply them); at the value that reproduces older selections (``LEGACY_OPTIONS``) they are left out,
    so requests (and finished grids) from before they existed still match."""
    kept = {k: v for k, v in {**ENGINE_DEFAULTS, **options}.items()
            if k not in LEGACY_OPTIONS or LEGACY_OPTIONS[k] != v}
    return {"strategy": strategy, "size": n, "diversity": d, "seed": seed, "options": dict(sorted(kept.items()))}


def subset_manifest(selector: Selector, subset: Subset, request: dict[str, Any], file: str | None,
                    fmt: str | None, replicate: int | None = None) -> dict[str, Any]:
    """The manifest of ``subset`` written as ``file`` in ``fmt``; ``replicate`` is recorded when the grid has
    replicates (R > 1)."""
    ids = selector.pool.ids
    return {
        "divscope_version": __version__,
        "request": request,
        "strategy": subset.strategy,
        "diversity": subset.diversity,
        "size": subset.size,
        "seed": subset.seed,
        **({} if replicate is None else {"replicate": replicate}),
        **subset.info,
        "workspace": str(selector.ws.path.resolve()),
        "pool_fingerprint": selector.pool.fingerprint,
        "file": file,
        "format": fmt or "auto",
        "rows": [int(r) for r in subset.rows],
        "ids": [ids[r] for r in subset.rows.tolist()],
    }


def write_subset(selector: Selector, subset: Subset, path: Path, fmt: str | None, request: dict[str, Any],
                 replicate: int | None = None, build_lines: bool = False) -> dict[str, Any]:
    """The data file, then its manifest (``subset_manifest``). ``build_lines``: encode the pool's record lines
    first when they are not stored yet (``io.writers.pool_lines``: worth it for a grid, which writes many
    subsets; a single subset uses them only when stored)."""
    write_pool_rows(selector.pool, subset.rows, path, fmt=fmt, build_lines=build_lines)
    manifest = subset_manifest(selector, subset, request, path.name, fmt, replicate)
    write_json(manifest_path(path), manifest)
    return manifest


@dataclass
class Selected:
    """One selection with what its manifest needs: the selector (workspace, pool), the subset, the request."""

    selector: Selector
    subset: Subset
    request: dict[str, Any]


def select_one(ws: Workspace | str | Path, settings: SelectSettings) -> Selected:
    """The selection ``divscope select`` makes (and ``divscope.select``): the eligibility filters (length band,
    ``where``), the feature builds (``features``), the strategy, and the manifest's request."""
    from divscope.select.eligibility import eligibility, select_eligible

    s = settings
    options = s.strategy_options()
    workspace = ws if isinstance(ws, Workspace) else Workspace(ws)
    workspace.require_pool()  # a missing pool is named before any filter reads it
    elig = eligibility(workspace, length_range=s.length_range, length_side=s.length_side,
                       length_tokenizer=s.length_tokenizer, where=s.where, balance_by=s.balance_by)
    selector = Selector(workspace, elig.mask, pins=s.features)
    sub = select_eligible(selector, elig, s.strategy, s.size, s.diversity, s.seed, **options)
    req = request_of(s.strategy, s.size, s.diversity, s.seed, options) | elig.request | selector.pins.request()
    return Selected(selector, sub, req)


def refuse_ignored(strategy: str, given: list[str], spell: Callable[[str], str] | None = None) -> None:
    """An option given that the strategy ignores is an error, not a silent no-op: the user asked for something (a
    level, a threshold) that the subset would not have, while its manifest records it. ``given``: field names;
    ``spell``: how the message names one [``--option-name``]."""
    from divscope.errors import DivscopeError
    from divscope.select.settings import ignored_options

    spell = spell or (lambda n: "--" + n.replace("_", "-"))
    ignored = ignored_options(strategy, given)
    if ignored:
        raise DivscopeError(f"strategy {strategy} ignores {' '.join(spell(n) for n in ignored)}: drop "
                            f"{'it' if len(ignored) == 1 else 'them'} (docs/strategies.md lists the options each "
                            "strategy uses)")


@dataclass
class GridCell:
    strategy: str
    size: int
    diversity: float | None
    seed: int  # the selection seed (replicate r's, see ``select.settings.replicate_seed``)
    path: Path
    replicate: int = 0
    replicates: int = 1  # of this cell's strategy


def grid_cells(out: Path, strategies: list[str], sizes: list[int], levels: list[float], seeds: list[int],
               ext: str, baseline_seeds: list[int] | None = None, replicates: int = 1,
               hold_selection: bool = False, replicates_for: dict[str, int] | None = None) -> list[GridCell]:
    """Cells of the strategies that take a level first, then the others (with ``baseline_seeds``, default
    ``seeds``), each in ``replicates`` replicates (``replicates_for``: that many for the strategies it names).
    File names are ``n<N>-d<d>-s<seed>[-r<r>]`` with the base seed; ``-r<r>`` only for a strategy with
    replicates, so a grid without them keeps its names."""
    cells = []
    leveled = {s: get_strategy(s).takes_level for s in strategies}
    ordered = [s for s in strategies if leveled[s]] + [s for s in strategies if not leveled[s]]
    for strategy in ordered:
        reps = (replicates_for or {}).get(strategy, replicates)
        for size in sizes:
            for seed in seeds if leveled[strategy] else baseline_seeds or seeds:
                for d in levels if leveled[strategy] else [None]:
                    for r in range(reps):
                        level = "" if d is None else f"-d{d:.3f}"
                        name = f"n{size}{level}-s{seed}{f'-r{r}' if reps > 1 else ''}{ext}"
                        cells.append(GridCell(strategy, size, d, replicate_seed(seed, r, hold_selection),
                                              out / strategy / name, r, reps))
    return cells


def run_grid(ws: Workspace | str | Path, out: Path, strategies: list[str], sizes: list[int], levels: list[float],
             seeds: list[int], fmt: str | None = None, ext: str = ".jsonl", eligible: np.ndarray | None = None,
             length_range: Any = None, length_side: str = "response", length_tokenizer: str | None = None,
             where: str | None = None, eligible_label: str = "given rows", features: dict[str, dict[str, Any]] | None = None, baseline_seeds: list[int] | None = None,
             replicates: int = 1, hold_selection: bool = False, feature_pins: list[str] | None = None,
             balance_by: str | None = None, replicates_for: dict[str, int] | None = None,
             **options: Any) -> tuple[list[dict[str, Any]], int]:
    """Write every subset of the grid (skipping finished ones) and ``OUT/grid.json``; returns the manifests and how
    many were new.

    ``length_range`` ("MIN:MAX"): only rows whose ``length_side`` has MIN..MAX tokens of ``length_tokenizer``
    (inclusive) are selectable (length control); ``where``: only rows satisfying the expression (see
    ``select.where``); both narrow ``eligible`` (``select.eligibility``, ``eligible_label`` names it in the error
    for too few rows). ``features``: options per level; selection then uses exactly
    those cached features. ``feature_pins``: builds by key or ``OPTION=VALUE`` (``--features``; a level and side
    with several builds needs one; see ``Selector``), recorded in every request when given. ``replicates``: each
    cell R times (``replicates_for``: R per strategy named), replicate r with selection seed ``seed + 1000 r``
    (``hold_selection``: ``seed``). ``balance_by``: every cell keeps the shares of this column's values
    (``select.balance``).
    """
    from divscope.select.eligibility import eligibility, select_eligible
    from divscope.ui import progress_bar

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    ws.require_pool()
    elig = eligibility(ws, eligible, base_label=eligible_label, length_range=length_range, length_side=length_side,
                       length_tokenizer=length_tokenizer, where=where, balance_by=balance_by)
    selector = Selector(ws, elig.mask, features=features, pins=feature_pins)
    selector.check_features(strategies, **options)
    cells = grid_cells(out, strategies, sizes, levels, seeds, ext, baseline_seeds, replicates, hold_selection,
                       replicates_for)
    manifests, built = [], 0
    with progress_bar("grid", total=len(cells)) as advance:
        for c in cells:
            req = request_of(c.strategy, c.size, c.diversity, c.seed, options) | elig.request | selector.pins.request()
            done = {"request": req, "pool_fingerprint": selector.pool.fingerprint}
            manifest = stored_result(manifest_path(c.path), done, valid=lambda _, p=c.path: p.exists())
            if manifest is None:
                sub = select_eligible(selector, elig, c.strategy, c.size, c.diversity, c.seed, **options)
                manifest = write_subset(selector, sub, c.path, fmt, req, c.replicate if c.replicates > 1 else None,
                                        build_lines=True)
                built += 1
            manifests.append(manifest)
            advance()
    index = [{k: m[k] for k in ("strategy", "size", "diversity", "seed", "replicate", "k", "types_covered") if k in m}
             | {"file": str(Path(m["strategy"]) / m["file"])} for m in manifests]
    write_json(out / "grid.json", {"workspace": str(selector.ws.path.resolve()), "subsets": index})
    return manifests, built


def run_grid_settings(ws: Workspace | str | Path, out: Path, grid: GridSettings, fmt: str | None = None,
                      ext: str = ".jsonl", eligible: np.ndarray | None = None,
                      features: dict[str, dict[str, Any]] | None = None,
                      target_tokenizer: str | None = None,
                      eligible_label: str = "given rows") -> tuple[list[dict[str, Any]], int]:
    """:func:`run_grid` of a ``GridSettings`` (CLI ``grid`` and studies); ``target_tokenizer`` measures lengths
    (of the band and of ``where``'s token columns) when the settings name no ``length_tokenizer``."""
    length: dict[str, Any] = {}
    if grid.length_range is not None or grid.where is not None or grid.balance_by is not None:
        length = {"length_range": grid.length_range, "length_side": grid.length_side,
                  "length_tokenizer": grid.length_tokenizer or target_tokenizer, "where": grid.where,
                  "balance_by": grid.balance_by}
    return run_grid(ws, out, grid.strategies, grid.sizes, grid.level_values(), grid.seeds, fmt=fmt, ext=ext,
                    eligible=eligible, eligible_label=eligible_label, features=features,
                    baseline_seeds=grid.baseline_seeds,
                    replicates=grid.replicates, hold_selection=grid.hold == "selection", feature_pins=grid.features,
                    replicates_for=grid.replicates_for, **length,
                    **grid.strategy_options())
