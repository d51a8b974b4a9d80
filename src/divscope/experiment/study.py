"""The stages of one (sub-)study, each skipped when its output exists for the same inputs.

``check_study`` (the spec a folder was started with), ingest, eligible rows (evaluation overlap removed),
featurize, grid, metric cards, then train + evaluate every cell (here, or as Ray tasks) and evaluate the
untrained model (the anchor, ``runs/base``), and ``results.jsonl``.
``experiment.runner`` strings them together for the base study; ``experiment.variants`` for each ablation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.experiment.cells import ANCHOR, Cell, anchor_cell, run_cell_safely
from divscope.experiment.spec import ExperimentSpec, parse_spec, stored_spec
from divscope.io.workspace import Workspace
from divscope.store.atomic import atomic_open, write_json
from divscope.store.cached import cached_result
from divscope.ui import console, table


def ingest_pool(spec: ExperimentSpec, ws: Workspace) -> None:
    from divscope.io.ingest import ingest

    rep = ws.report()
    dedup = {"mode": "near", "threshold": spec.pool.near_threshold} if spec.pool.dedup == "near" else {}
    if ws.pool_path.exists() and rep.get("inputs") == spec.pool.source and rep.get("format") == (
            spec.pool.format or "auto") and rep.get("repair", {}).get("enabled", False) == spec.pool.repair and \
            {k: v for k, v in rep.get("dedup", {}).items() if k != "removed"} == dedup:
        return
    ingest(spec.pool.source, ws.path, fmt=spec.pool.format, strict=spec.pool.strict, repair=spec.pool.repair,
           dedup=spec.pool.dedup, near_threshold=spec.pool.near_threshold)


def eligible_rows(spec: ExperimentSpec, ws: Workspace) -> np.ndarray:
    """Pool rows that overlap no evaluation prompt (cached in ``WS/eligible.json``): eval never leaks in."""
    from divscope.io.contamination import find_overlap
    from divscope.io.evalsets import load_eval_set

    sets = sorted(set(spec.pool.exclude_eval_overlap))
    pool = ws.pool

    def compute() -> dict[str, Any]:
        texts = pool.texts("instruction")
        excluded: set[int] = set()
        per_set = {}
        for name in sets:
            ov = find_overlap(texts, load_eval_set(name))
            excluded.update(ov.rows)
            per_set[name] = ov.to_json()
        return {"excluded_rows": sorted(excluded), "per_set": per_set}

    found = cached_result(ws.path / "eligible.json", {"sets": sets, "pool_fingerprint": pool.fingerprint}, compute)
    mask = np.ones(len(pool), bool)
    mask[found["excluded_rows"]] = False
    return mask


def feature_options(spec: ExperimentSpec) -> dict[str, dict[str, Any]]:
    """The featurize options of each level, as the spec gives them (the selection uses exactly these)."""
    from divscope.features.settings import level_options

    return {level: level_options(level, getattr(spec.features, level)) for level in ("macro", "meso", "micro")}


def featurize_study(spec: ExperimentSpec, ws: Workspace, strategies: list[str]) -> None:
    from divscope.features.featurize import featurize
    from divscope.models import ensure_vocab
    from divscope.select.registry import get_strategy

    options = feature_options(spec)
    for strategy in strategies:  # what each one declares it reads (a registered third-party one too)
        needs = get_strategy(strategy).needs(side=spec.selection.side)
        if needs.incidence:
            side, level = needs.incidence
            if level == "micro" and spec.features.micro.unit == "tokens":
                ensure_vocab(spec.features.micro.tokenizer)
            featurize(ws, level, side, **options.get(level, {}))
        if needs.embeddings:
            featurize(ws, "macro", needs.embeddings, **options["macro"])


def cells_of(spec: ExperimentSpec, out: Path, manifests: list[dict[str, Any]]) -> list[Cell]:
    """One cell per subset; replicate r trains with ``selection.train_seed(train.seed, r)``."""
    cells = []
    for m in manifests:
        subset = out / "subsets" / m["strategy"] / m["file"]
        cid = f"{m['strategy']}/{Path(m['file']).stem}"
        r = int(m.get("replicate", 0))
        cells.append(Cell(cid, m["strategy"], m["size"], m["diversity"], m["seed"], subset, out / "runs" / cid,
                          replicate=r, train_seed=spec.selection.train_seed(spec.train.seed, r),
                          types_covered=m.get("types_covered")))
    return cells


def unit_of(spec: ExperimentSpec, strategy: str) -> str | None:
    """The unit a micro strategy counts types in (its tokenizer, or "words"); None for other strategies."""
    from divscope.select.registry import get_strategy

    if strategy == ANCHOR:
        return None
    incidence = get_strategy(strategy).needs(side=spec.selection.side).incidence
    if not incidence or incidence[1] != "micro":
        return None
    micro = spec.features.micro
    return "words" if micro.unit == "words" else micro.tokenizer


def metric_columns(subset: Path, keys: dict[tuple[str, str], str] | None = None) -> dict[str, float]:
    """The card's main metrics per side, plus types covered per level, as ``m.<side>.<name>`` columns.

    Types covered are counted in the features the study selected with (``keys``: (side, level) -> cache key),
    else in the most recently featurized ones."""
    from divscope.metrics.card import MAIN_METRICS

    path = subset.with_name(subset.name + ".metrics.json")
    if not path.is_file():
        return {}
    card = json.loads(path.read_text(encoding="utf-8"))
    flat: dict[str, float] = {}
    for side in ("instruction", "response"):
        block = card.get(side) or {}
        for name in MAIN_METRICS:
            if isinstance(block.get(name), (int, float)):
                flat[f"m.{side}.{name}"] = float(block[name])
        for cov in block.get("types_covered", []):
            want = (keys or {}).get((side, cov["level"]))
            if (cov.get("key") == want) if want else cov.get("latest"):
                flat[f"m.{side}.types_{cov['level']}"] = float(cov["covered"])
    return flat


def write_results(out: Path, cells: list[Cell], spec: ExperimentSpec,
                   keys: dict[tuple[str, str], str] | None = None) -> int:
    """One row per evaluated cell (the anchor's first): its coordinates, every seed, the primary score, the other
    evaluations' scores (``eval.<set>.<method>``) and the subset's metrics (``m.<side>.<metric>``).

    ``seed`` = ``selection_seed``; the anchor has neither, nor a training seed (null). ``types_covered``: the
    subset's covered types on its strategy's own axis (null for baselines); ``unit``: what a micro strategy
    counts (tokenizer name or "words"), else null. ``disk_bytes``: what the cell's run folder keeps once its
    checkpoints are deleted (0 for a run shared with another cell; null for a cell evaluated before it was kept).
    """
    primary = spec.primary_eval()
    rows = []
    for c in cells:
        if primary.name not in c.results:
            continue
        row = {"cell": c.id, "strategy": c.strategy, "size": c.size, "diversity": c.diversity, "seed": c.seed,
               "replicate": c.replicate, "selection_seed": c.seed,
               "train_seed": None if c.subset is None else spec.train.seed if c.train_seed is None else c.train_seed,
               "eval_seed": primary.seed,
               "types_covered": c.types_covered, "unit": unit_of(spec, c.strategy),
               "metric": primary.name, "score": c.results[primary.name], "disk_bytes": c.results.get("disk_bytes")}
        row.update({f"eval.{k}": v for k, v in sorted(c.results.items()) if k != primary.name and "." in k})
        if c.subset is not None:
            row.update(metric_columns(c.subset, keys))
        rows.append(row)
    with atomic_open(out / "results.jsonl") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    return len(rows)


class Board:
    """The live table of cells (rich Live on a terminal; plain lines otherwise)."""

    def __init__(self, cells: list[Cell]):
        self.cells = cells
        self.live: Any = None

    def render(self) -> Any:
        counts: dict[str, int] = {}
        for c in self.cells:
            key = c.status.split()[0]
            counts[key] = counts.get(key, 0) + 1
        active = [c for c in self.cells if c.status not in ("pending", "done", "failed")]
        rows = [(c.id, c.status) for c in active] + [(c.id, c.status) for c in self.cells if c.status == "failed"]
        title = "cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        return table(title, ["cell", "status"], rows or [("-", "-")])

    def __enter__(self) -> Board:
        from rich.live import Live

        from divscope.ui import show_progress

        if show_progress():
            # re-rendered at each refresh: a training cell's status moves with its steps ("training 40/100")
            self.live = Live(get_renderable=self.render, console=console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def update(self, cell: Cell | None = None) -> None:
        if self.live is not None:
            self.live.update(self.render())
        elif cell is not None and cell.status in ("done", "failed"):
            console.print(f"[{sum(c.status in ('done', 'failed') for c in self.cells)}/{len(self.cells)}] "
                          f"{cell.id}: {cell.status}{' - ' + cell.error if cell.error else ''}")

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(*exc)


def resolve_runtimes(spec: ExperimentSpec, stored: ExperimentSpec | None = None) -> ExperimentSpec:
    """``spec`` with its ``auto`` embedding runtimes (features.macro, metrics) made concrete: the stored study's
    (a study continues on the runtime it started with), else the one that runs here (``embed_runtime.resolve``:
    onnx without CUDA, torch with it). The resolved spec is the one stored and fingerprinted."""
    from divscope.features import embed_runtime

    if spec.features.macro.runtime != "auto" and spec.metrics.runtime != "auto":
        return spec

    def pick(current: str, old: str | None) -> str:
        if current != "auto":
            return current
        return old if old not in (None, "auto") else embed_runtime.resolve()

    data = spec.model_dump(mode="json")
    data["features"]["macro"]["runtime"] = pick(spec.features.macro.runtime,
                                                stored.features.macro.runtime if stored else None)
    data["metrics"]["runtime"] = pick(spec.metrics.runtime, stored.metrics.runtime if stored else None)
    resolved = ExperimentSpec.model_validate(data)
    kept = stored is not None and stored.features.macro.runtime != "auto"
    console.print(f"embedding runtime: {resolved.features.macro.runtime} (auto: "
                  f"{'the one this study started with' if kept else 'what runs fastest here'})")
    return resolved


def check_study(out: Path, spec: ExperimentSpec, command: str) -> ExperimentSpec:
    """Record ``spec`` in ``out/study.json``, or check that it is the study the folder holds; returns the spec to
    run (its ``auto`` runtimes resolved: :func:`resolve_runtimes`)."""
    path = out / "study.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        # The stored spec is read again by this version, so options added since (at their defaults) do not
        # make a study written by an older version look like another study.
        # Variants are sub-studies with their own check (variants/<name>/study.json), so adding one continues
        # the study; the stored spec is then updated to the one now run.
        # A stored spec lacking an option whose default changed behaviour was run with the old value (stored_spec).
        hint = ""
        try:
            stored = parse_spec(stored_spec(old.get("spec")), str(path))
        except DivscopeError:
            stored = None
        spec = resolve_runtimes(spec, stored)
        same = stored is not None and stored.fingerprint(variants=False) == spec.fingerprint(variants=False)
        if stored is not None and stored.selection.typeless != spec.selection.typeless:
            hint = (f" (it selected with typeless: {stored.selection.typeless}; to continue it, set "
                    f"`typeless: {stored.selection.typeless}` under selection:)")
        elif stored is not None and (stored.features.macro.runtime, stored.metrics.runtime) != \
                (spec.features.macro.runtime, spec.metrics.runtime):
            hint = (f" (it embedded with runtime {stored.features.macro.runtime}; to continue it, set `runtime: "
                    f"{stored.features.macro.runtime}` under features: macro: and metrics:, or leave both at auto)")
        if stored is None or not same:
            raise DivscopeError(f"{out} holds another study (its spec differs){hint}; use a new --out or the same "
                                "spec")
        if stored.fingerprint() != spec.fingerprint():
            write_json(path, {**old, "spec": spec.model_dump(mode="json"), "spec_fingerprint": spec.fingerprint()})
        return spec
    spec = resolve_runtimes(spec)
    write_json(path, {"name": spec.name, "spec": spec.model_dump(mode="json"),
                      "spec_fingerprint": spec.fingerprint(), "command": command,
                      "divscope_version": __version__})
    return spec


def grid_study(spec: ExperimentSpec, out: Path, ws: Workspace, eligible: np.ndarray,
                runs: dict[str, Path] | None = None, anchor: Path | None = None
                ) -> tuple[list[Cell], int, dict[tuple[str, str], str]]:
    """featurize -> grid -> metric cards -> train + evaluate, for one (sub-)study whose files go to ``out``.

    ``runs``: finished training runs by ``reuse.run_key`` (variants): a cell whose subset file has the same bytes
    and training seed reuses that run instead of training again. ``anchor``: the run folder of the untrained
    model (default ``out/runs/base``; variants share the base study's). Returns the cells (the anchor first),
    how many failed, and the feature cache keys.
    """
    from divscope.select.lengths import target_tokenizer
    from divscope.select.subsets import run_grid_settings

    sel = spec.selection
    console.print("featurize")
    featurize_study(spec, ws, sel.strategies)
    console.print("grid")
    manifests, _ = run_grid_settings(ws, out / "subsets", sel, eligible=eligible, features=feature_options(spec),
                                     target_tokenizer=target_tokenizer(spec.train.model),
                                     eligible_label="no evaluation overlap")
    cells = [anchor_cell(anchor or out / "runs" / ANCHOR), *cells_of(spec, out, manifests)]
    if runs:
        from divscope.experiment.reuse import share_runs

        share_runs(cells, runs)
    console.print("metrics")
    metric_cards(cells, spec)
    failed = train_and_evaluate(out, spec, cells)
    return cells, failed, feature_keys(spec, ws, manifests)


def feature_keys(spec: ExperimentSpec, ws: Workspace, manifests: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(side, level) -> cache key of the features this study selected with."""
    from divscope.features.featurize import resolve_config
    from divscope.select.registry import get_strategy

    options = feature_options(spec)
    keys = {}
    for strategy in sorted({m["strategy"] for m in manifests}):
        incidence = get_strategy(strategy).needs(side=spec.selection.side).incidence
        if incidence:
            side, level = incidence
            keys[(side, level)] = resolve_config(ws, level, side, **options.get(level, {}))[2]
    return keys


def metric_cards(cells: list[Cell], spec: ExperimentSpec) -> None:
    """Every subset's card, with the spec's metric settings (its own seed, recorded in the card)."""
    from divscope.metrics.card import Resources, card_for_path
    from divscope.ui import track

    res = Resources()
    for c in track([c for c in cells if c.subset is not None], "metric cards"):
        card_for_path(c.subset, resources=res, **spec.metrics.model_dump())


def train_and_evaluate(out: Path, spec: ExperimentSpec, cells: list[Cell], engine: Any = None) -> int:
    """Train and evaluate every cell, here one at a time or as Ray tasks; a failed cell is recorded, not fatal."""
    from divscope.backend import as_backend, current_backend

    status_dir = out / "cells"
    status_dir.mkdir(exist_ok=True)
    eng = current_backend() if engine is None else as_backend(engine)
    with Board(cells) as board:
        if eng.name == "ray" and cells:
            from divscope.experiment.distributed import run_cells_ray

            run_cells_ray(eng, spec, cells, lambda c, outcome: finish_cell(status_dir, c, outcome, board))
        else:
            for c in cells:
                finish_cell(status_dir, c, run_cell_safely(c, spec), board)
    return sum(c.status == "failed" for c in cells)


def finish_cell(status_dir: Path, c: Cell, outcome: dict[str, Any], board: Board) -> None:
    c.results = dict(outcome.get("results") or {})
    c.status, c.error = outcome["status"], outcome.get("error", "")
    sfile = status_dir / (c.id.replace("/", "__") + ".json")
    if c.status == "done":
        write_json(sfile, {"cell": c.id, "status": "done", "results": c.results})
    else:
        write_json(sfile, {"cell": c.id, "status": "failed", "error": c.error,
                           "traceback": outcome.get("traceback", "")})
    board.update(c)
