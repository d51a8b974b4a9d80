"""Strategies: the six (side, level) diversity strategies and the baselines, behind one call.

    select_subset(ws, "response-micro", n=1000, d=0.5, seed=0) -> Subset

The six strategies load the cached incidence of their (side, level) and run the one engine; the baselines use
the cached embeddings. Everything keys randomness to sample ids, so results do not depend on row order.
``eligible`` restricts the pool first (length control, held-out rows): selection then runs on that sub-pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.features.incidence import LEVELS, SIDES, Incidence
from divscope.io.workspace import Workspace

STRATEGIES = tuple(f"{side}-{level}" for side in SIDES for level in LEVELS)
BASELINES = ("random", "k-center", "distance")
ALL = STRATEGIES + BASELINES


@dataclass
class Subset:
    """A selection: pool rows in selection order plus everything the manifest records."""

    rows: np.ndarray
    strategy: str
    size: int
    seed: int
    diversity: float | None
    info: dict[str, Any] = field(default_factory=dict)


def parse_strategies(spec: str) -> list[str]:
    """``all`` (the six), ``baselines``, or a comma list of names."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out += STRATEGIES
        elif part == "baselines":
            out += BASELINES
        elif part in ALL:
            out.append(part)
        else:
            raise DivscopeError(f"unknown strategy {part!r}: choose from all, baselines, {', '.join(ALL)}")
    return list(dict.fromkeys(out))


def split_strategy(strategy: str) -> tuple[str, str]:
    side, _, level = strategy.partition("-")
    return side, level


class Selector:
    """Selects many subsets from one workspace, reusing loaded features and engines across calls (a grid)."""

    def __init__(self, ws: Workspace | str | Path, eligible: np.ndarray | None = None,
                 features: dict[str, dict[str, Any]] | None = None):
        """``features``: options per level (as for ``featurize``); the incidence used is then exactly the cached
        entry of those options (its cache key), not the most recently featurized one."""
        self.ws = ws if isinstance(ws, Workspace) else Workspace(ws)
        self.features = features
        self.ws.require_pool()
        self.pool = self.ws.pool
        self.ids = self.pool.ids
        n = len(self.ids)
        self.rows = np.arange(n, dtype=np.int64) if eligible is None else np.flatnonzero(eligible).astype(np.int64)
        if eligible is not None and len(eligible) != n:
            raise ValueError("eligible mask must have one entry per pool row")
        self.sub_ids = [self.ids[i] for i in self.rows]
        self._engines: dict[tuple[str, int], Any] = {}
        self._incidences: dict[str, Incidence] = {}
        self._embeddings: dict[str, np.ndarray] = {}

    def incidence(self, strategy: str) -> Incidence:
        if strategy not in self._incidences:
            from divscope.features.featurize import load_incidence

            side, level = split_strategy(strategy)
            key = self.feature_key(side, level)
            try:
                self._incidences[strategy] = load_incidence(self.ws, side, level, key=key)
            except DivscopeError as e:
                if "stale" in str(e):
                    raise
                raise DivscopeError(f"strategy {strategy} needs {side}-{level} features: run `divscope featurize "
                                    f"{self.ws.path} --level {level} --side {side}`") from None
        return self._incidences[strategy]

    def feature_key(self, side: str, level: str) -> str | None:
        """Cache key of the requested features of (side, level), or None (= the latest) when none were given."""
        if self.features is None or level not in self.features:
            return None
        from divscope.features.featurize import features_dir, resolve_config

        key = resolve_config(self.ws, level, side, **self.features[level])[2]
        if not (features_dir(self.ws, side, level) / key).is_dir():
            raise DivscopeError(f"no {side}-{level} features for these options in {self.ws.path}: run `divscope "
                                f"featurize {self.ws.path} --level {level} --side {side}` with them first")
        return key

    def engine(self, strategy: str, seed: int) -> Any:
        key = (strategy, seed)
        if key not in self._engines:
            from divscope.select.engine import Engine

            inc = self.incidence(strategy)
            if len(self.rows) != inc.n_samples:  # a restricted pool: the engine sees only eligible rows
                inc = Incidence(inc.matrix[self.rows], inc.type_names, inc.level, inc.side, inc.config,
                                inc.pool_fingerprint)
            self._engines[key] = Engine(inc, seed=seed, sample_keys=self.sub_ids)
        return self._engines[key]

    def embeddings(self, side: str) -> np.ndarray:
        if side not in self._embeddings:
            from divscope.features.macro import load_embeddings

            try:
                emb = load_embeddings(self.ws, side, compute=False)
            except DivscopeError:
                raise DivscopeError(f"this baseline needs {side} embeddings: run `divscope featurize "
                                    f"{self.ws.path} --level macro --side {side}`") from None
            self._embeddings[side] = np.asarray(emb, dtype=np.float32)[self.rows]
        return self._embeddings[side]

    def scores(self, column: str | None, side: str) -> tuple[np.ndarray, str]:
        """DEITA-style score per eligible row: a numeric metadata column, or the default documented below."""
        if column:
            vals = []
            for r in self.pool.records(self.rows.tolist()):
                v = r.metadata.get(column)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DivscopeError(f"--score-column {column!r}: record {r.id} has {v!r}, not a number")
                vals.append(float(v))
            return np.asarray(vals), column
        # Default: response length in target tokens (longer answers carry more to learn from, cf. "Long is
        # more for alignment"); characters when the micro features (which store token lengths) are absent.
        try:
            from divscope.features.featurize import load_extra

            key = self.feature_key("response", "micro")
            return np.asarray(load_extra(self.ws, "response", "micro", "lengths.npy", key=key), float)[self.rows], \
                "response_tokens"
        except DivscopeError:
            return np.asarray([len(r.response) for r in self.pool.records(self.rows.tolist())], float), \
                "response_chars"

    def select(self, strategy: str, n: int, d: float | None = None, seed: int = 0, *, side: str = "instruction",
               score_column: str | None = None, threshold: float = 0.1) -> Subset:
        from divscope.select import baselines

        info: dict[str, Any] = {"pool_total": len(self.ids), "eligible": len(self.rows)}
        if strategy in STRATEGIES:
            if d is None:
                raise DivscopeError(f"strategy {strategy} needs --diversity D in [0, 1]")
            sel = self.engine(strategy, seed).select(n, d)
            inc = self.incidence(strategy)
            info.update({"k": sel.k, "k_min": sel.k_min, "k_max": sel.k_max, "pool_size": sel.pool_size,
                         "types_covered": sel.types_covered, "features_fingerprint": inc.fingerprint,
                         "features_config": inc.config})
            local = sel.ids
        elif strategy == "random":
            local = baselines.random_subset(self.sub_ids, n, seed)
        elif strategy == "k-center":
            local = baselines.k_center(self.embeddings(side), self.sub_ids, n, seed)
            info["side"] = side
        elif strategy == "distance":
            scores, used = self.scores(score_column, side)
            local = baselines.distance_filter(self.embeddings(side), scores, self.sub_ids, n, threshold, seed)
            info.update({"side": side, "score": used, "threshold": threshold})
        else:
            raise DivscopeError(f"unknown strategy {strategy!r}: choose from {', '.join(ALL)}")
        if strategy not in STRATEGIES and d is not None:
            info["diversity_ignored"] = True
        return Subset(self.rows[np.asarray(local, dtype=np.int64)], strategy, n, seed,
                      d if strategy in STRATEGIES else None, info)


def select_subset(ws: Workspace | str | Path, strategy: str, n: int, d: float | None = None, seed: int = 0,
                  **options: Any) -> Subset:
    """One subset (see ``Selector.select`` for the options)."""
    return Selector(ws).select(strategy, n, d, seed, **options)
