"""Selecting subsets from a workspace: the ``Selector`` (the context every strategy runs in) and its dispatch.

    select_subset(ws, "response-micro", n=1000, d=0.5, seed=0) -> Subset

Strategies live in the registry (``divscope.select.registry``: the six (side, level) strategies, ``random``,
``k-center``, ``distance``, and any registered by a third party). The selector validates N, the seed and the
level once for all of them, gives them the eligible sub-pool with lazy, cached access to its features, and maps
their local rows back to pool rows. ``eligible`` restricts the pool first (length control, held-out rows).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from divscope.errors import DivscopeError, MissingFeaturesError
from divscope.features.incidence import Incidence
from divscope.io.workspace import Workspace
from divscope.select.arguments import check_d, check_n, check_seed
from divscope.select.balance import BalanceColumn
from divscope.select.registry import (  # noqa: F401
    ALL,
    BASELINES,
    STRATEGIES,
    get_strategy,
    parse_strategies,
    strategy_names,
)

if TYPE_CHECKING:
    from divscope.select.engine import Engine, PruningStore

@dataclass
class Subset:
    """A selection: pool rows in selection order plus everything the manifest records."""

    rows: np.ndarray
    strategy: str
    size: int
    seed: int
    diversity: float | None
    info: dict[str, Any] = field(default_factory=dict)


def split_strategy(strategy: str) -> tuple[str, str]:
    side, _, level = strategy.partition("-")
    return side, level


class Selector:
    """Selects many subsets from one workspace, reusing loaded features and engines across calls (a grid).

    It is the ``SelectionContext`` of every strategy (``divscope.select.protocol``): ``rows`` and
    ``sample_ids`` describe the eligible sub-pool, ``incidence`` / ``engine`` / ``embeddings`` / ``scores``
    load what a strategy asks for, once.
    """

    def __init__(self, ws: Workspace | str | Path, eligible: np.ndarray | None = None,
                 features: dict[str, dict[str, Any]] | None = None, pins: list[str] | None = None):
        """``eligible``: a boolean mask over the pool rows, or distinct pool row indices (the sub-pool in the
        order the strategies see it). ``features``: options per level (as for ``featurize``); the incidence
        used is then exactly the cached entry of those options (its cache key). ``pins``: feature builds by key
        (a unique prefix) or ``OPTION=VALUE`` (``--features``, :class:`divscope.features.builds.FeaturePins`):
        a (level, side) with several builds must be pinned to one (a key pin wins over ``features``)."""
        from divscope.features.builds import FeaturePins

        self.ws = ws if isinstance(ws, Workspace) else Workspace(ws)
        self.features = features
        self.ws.require_pool()
        self.pool = self.ws.pool
        self.pins = FeaturePins(self.ws, pins)
        self.ids = self.pool.ids
        self.rows = _eligible_rows(eligible, len(self.ids))
        self.sample_ids = [self.ids[i] for i in self.rows]
        self._engines: dict[tuple[str, str], Engine] = {}
        self._arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._incidences: dict[tuple[str, str], Incidence] = {}
        self._embeddings: dict[str, np.ndarray] = {}
        self._balance: dict[str, BalanceColumn] = {}

    def incidence(self, side: str, level: str) -> Incidence:
        """The cached incidence of (side, level), whole pool; MissingFeaturesError / StaleFeaturesError."""
        if (side, level) not in self._incidences:
            from divscope.features.featurize import load_incidence

            key = self.feature_key(side, level)
            self._incidences[(side, level)] = load_incidence(self.ws, side, level, key=key)
        return self._incidences[(side, level)]

    def feature_key(self, side: str, level: str) -> str | None:
        """Cache key of the features of (side, level) to use: the pinned build, the entry of the ``features``
        options, or the one build of the current pool; None (= the latest, whose loading names the problem) when
        there is none. Several builds and no pin: AmbiguousFeaturesError."""
        if (side, level) in self.pins.keys or self.features is None or level not in self.features:
            build = self.pins.build(side, level)
            return None if build is None else build.key
        from divscope.features.featurize import features_dir, resolve_config

        key = resolve_config(self.ws, level, side, **self.features[level])[2]
        if not (features_dir(self.ws, side, level) / key).is_dir():
            raise MissingFeaturesError(f"no {side}-{level} features for these options in {self.ws.path}: run "
                                       f"`divscope featurize {shlex.quote(str(self.ws.path))} --level {level} --side {side}` with "
                                       "them first")
        return key

    def check_features(self, strategies: list[str], **options: Any) -> None:
        """Raise AmbiguousFeaturesError now, before any subset is written, where one of ``strategies`` reads a
        (level, side) with several builds and no pin (what it declares it reads: ``Strategy.needs``)."""
        for name in strategies:
            needs = get_strategy(name).needs(**options)
            if needs.incidence:
                side, level = needs.incidence
                if self.features is None or level not in self.features:
                    self.pins.build(side, level)
            if needs.embeddings and not (self.features and "macro" in self.features):
                self.pins.embedding_source(needs.embeddings)

    def engine(self, side: str, level: str, seed: int) -> Engine:
        """The engine over the eligible rows of the (side, level) incidence, keyed to record ids: one per (side,
        level), shared by every seed (``Engine.for_seed``)."""
        key = (side, level)
        if key not in self._engines:
            self._engines[key] = self._new_engine(side, level)
        return self._engines[key].for_seed(seed)

    def _new_engine(self, side: str, level: str) -> Engine:
        from divscope.select.engine import Engine, restrict_arrays

        inc = self.incidence(side, level)
        arrays = self.engine_arrays(side, level)
        store = None
        if len(self.rows) != inc.n_samples or np.any(self.rows != np.arange(inc.n_samples)):
            arrays = restrict_arrays(arrays, self.rows, inc.n_samples)
            sub = hashlib.sha256(inc.fingerprint.encode() + self.rows.tobytes()).hexdigest()[:16]
            inc = Incidence(inc.matrix[self.rows], inc.type_names, inc.level, inc.side, inc.config,
                            inc.pool_fingerprint, sub)
        else:  # the whole pool: its prunings are kept beside its engine arrays
            store = self._pruning_store(side, level)
        try:
            return Engine(inc, sample_keys=self.sample_ids, arrays=arrays, pruning_store=store)
        except ValueError:  # pragma: no cover - arrays of another incidence in the cache: rebuild them
            return Engine(inc, sample_keys=self.sample_ids)

    def _engine_params(self, side: str, level: str) -> dict[str, Any]:
        return {"incidence_fingerprint": self.incidence(side, level).fingerprint,
                "pool_fingerprint": self.pool.fingerprint, "sample_keys": "record ids"}

    def _pruning_store(self, side: str, level: str) -> PruningStore:
        """An engine's pruning (seed, mode) over the whole pool, kept in the features' cache entry under
        ``engine-pruning/<mode>-s<seed>/`` and keyed like the engine arrays (one entry per seed and mode)."""
        from divscope.features.featurize import entry_path
        from divscope.store.cached import cached_arrays

        root = entry_path(self.ws, side, level, self.feature_key(side, level)) / "engine-pruning"
        base = {"what": "engine pruning", "version": 1, **self._engine_params(side, level)}
        return lambda seed, mode, compute: cached_arrays(root / f"{mode}-s{seed}",
                                                         {**base, "seed": seed, "mode": mode}, compute)

    def engine_arrays(self, side: str, level: str) -> dict[str, np.ndarray]:
        """The engine's seed-independent arrays (CSC view, type and record-id hashes) over the whole pool, kept
        in the features' cache entry under ``engine/`` and keyed to the incidence and pool fingerprints."""
        from divscope.features.featurize import entry_path
        from divscope.select.engine import Engine
        from divscope.store.cached import cached_arrays

        if (side, level) in self._arrays:
            return self._arrays[(side, level)]
        inc = self.incidence(side, level)
        params = {"what": "engine arrays", "version": 1, **self._engine_params(side, level)}
        # copy-on-write memory map: a cached grid reads the 60 MB CSC rows of a 117K pool in 4 ms, not 0.14 s
        arrays = cached_arrays(entry_path(self.ws, side, level, self.feature_key(side, level)) / "engine", params,
                               lambda: Engine(inc, sample_keys=self.ids).arrays(), mmap="c")
        self._arrays[(side, level)] = arrays
        return arrays

    def embeddings(self, side: str) -> np.ndarray:
        if side not in self._embeddings:
            from divscope.features import embed_runtime
            from divscope.features.macro import load_embeddings

            if (side, "macro") not in self.pins.keys and self.features and "macro" in self.features:
                embedder, runtime = None, embed_runtime.resolve(self.features["macro"].get("runtime"))  # the study's
            else:  # those of the side's macro build (one, or pinned); what auto resolves to when there is none
                embedder, runtime = self.pins.embedding_source(side) or (None, embed_runtime.resolve())
            emb = load_embeddings(self.ws, side, embedder, compute=False, runtime=runtime)
            self._embeddings[side] = np.asarray(emb, dtype=np.float32)[self.rows]
        return self._embeddings[side]

    def scores(self, column: str | None) -> tuple[np.ndarray, str]:
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
        except MissingFeaturesError:
            return np.asarray([len(r.response) for r in self.pool.records(self.rows.tolist())], float), \
                "response_chars"

    def select(self, strategy: str, n: int, d: float | None = None, seed: int = 0, *,
               balance: str | BalanceColumn | None = None, **options: Any) -> Subset:
        """Exactly ``n`` rows chosen by the registered ``strategy``; ``options`` go to the strategy (built-ins:
        ``side``, ``score_column``, ``threshold``; see ``divscope.select.builtin``). ``balance``: a column (name,
        or ``select.balance.balance_column``) whose values keep their eligible shares within one sample
        (``--balance-by``); the strategy gets the quotas as its ``balance`` option, and the manifest's
        ``balance`` records them with the counts achieved."""
        s = get_strategy(strategy)
        n, seed = check_n(n, len(self.rows)), check_seed(seed)
        level = check_d(d, s.name) if s.takes_level else None  # d is recorded as given, passed as a float
        strata = None
        if balance is not None:
            from divscope.select.balance import balance_column, stratify

            if isinstance(balance, BalanceColumn):
                column = balance
            else:  # a name: read once per selector
                column = self._balance.get(balance) or self._balance.setdefault(balance, balance_column(self.ws,
                                                                                                        balance))
            strata = stratify(column, self.rows, n)
            options = {**options, "balance": strata}
        try:
            local, extra = s.select(self, n, level, seed, **options)
        except MissingFeaturesError as e:
            raise MissingFeaturesError(f"strategy {s.name} needs features: {e}") from None
        local = np.asarray(local, dtype=np.int64).reshape(-1)
        if len(local) and (local.min() < 0 or local.max() >= len(self.rows)):  # would wrap or fail silently
            raise IndexError(f"strategy {s.name} returned rows outside its pool of {len(self.rows)}")
        info: dict[str, Any] = {"pool_total": len(self.ids), "eligible": len(self.rows), **extra}
        if not s.takes_level and d is not None:
            info["diversity_ignored"] = True
        if strata is not None:
            if len(local) != n or not np.array_equal(strata.selected(local), strata.quotas):
                raise DivscopeError(f"strategy {s.name} does not honour --balance-by (its subset misses the quotas "
                                    "of the balance option; docs/strategies.md)")
            info["balance"] = strata.report(local)
        return Subset(self.rows[local], s.name, n, seed, d if s.takes_level else None, info)


def _eligible_rows(eligible: np.ndarray | None, n: int) -> np.ndarray:
    """Pool rows of the sub-pool: all rows, those of a boolean mask, or the given distinct row indices."""
    if eligible is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(eligible)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise ValueError("eligible mask must have one entry per pool row")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or (len(arr) and (arr.min() < 0 or arr.max() >= n)) \
            or len(np.unique(arr)) != len(arr):
        raise ValueError(f"eligible rows must be distinct integers in [0, {n})")
    return arr.astype(np.int64)


def select_subset(ws: Workspace | str | Path, strategy: str, n: int, d: float | None = None, seed: int = 0,
                  **options: Any) -> Subset:
    """One subset (see ``Selector.select`` for the options)."""
    return Selector(ws).select(strategy, n, d, seed, **options)
