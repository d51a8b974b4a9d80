"""The nine built-in strategies: six (side, level) diversity strategies running the one engine, and the
baselines ``random``, ``k-center`` and ``distance`` (DESIGN.md). ``divscope.select.registry`` registers them.

Options every selection call may carry (a grid passes the same ones to every strategy; each takes what it
uses): ``side`` (k-center / distance: whose embeddings, default instruction), ``score_column`` and
``threshold`` (distance), ``typeless``, ``spacing`` and ``pruning`` (the six diversity strategies: the engine's
options, docs/engine.md). ``balance`` (a ``select.balance.Strata``, given by the selector with ``--balance-by``)
is honoured by all nine: each passes its labels and quotas to its pick loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from divscope.features.incidence import LEVELS, SIDES
from divscope.select import baselines
from divscope.select.protocol import Needs, RowOrder, SelectionContext

# The baselines' option defaults, declared once: ``SelectOptions`` (CLI and spec) takes them from here.
DEFAULT_SIDE = "instruction"
DEFAULT_THRESHOLD = 0.1
# The engine's options, as the six diversity strategies default them (DESIGN.md: typeless samples are not
# eligible by default; the paper's spacing and the one-pass type pruning).
DEFAULT_TYPELESS = "exclude"
DEFAULT_SPACING = "k"
DEFAULT_PRUNING = "types"
ENGINE_DEFAULTS = {"typeless": DEFAULT_TYPELESS, "spacing": DEFAULT_SPACING, "pruning": DEFAULT_PRUNING}
# The values under which a selection is what it was before these options existed. A manifest's request records
# an option only away from this value, so manifests written before stay valid where the behaviour is unchanged.
LEGACY_OPTIONS = {"typeless": "include", "spacing": "k", "pruning": "types"}


def _strata(options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(label per local row, quota per value) of the ``balance`` option (``select.balance.Strata``), or None."""
    balance = options.get("balance")
    return None if balance is None else balance.pick_arrays()


class DiversityStrategy:
    """``<side>-<level>``: the cached incidence of (side, level) through the engine at level d."""

    takes_level = True
    row_order: RowOrder = "sequence"  # the engine keys all randomness to type names and record ids
    seed_sensitive = True

    def __init__(self, side: str, level: str) -> None:
        self.side, self.level = side, level
        self.name = f"{side}-{level}"

    def needs(self, **options: Any) -> Needs:
        return Needs(incidence=(self.side, self.level))

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        from divscope.select.engine import QuotaError

        engine = context.engine(self.side, self.level, seed)
        balance = options.get("balance")
        try:
            sel = engine.select(n, d, seed, **{k: options.get(k, v) for k, v in ENGINE_DEFAULTS.items()},
                                **({} if balance is None else {"strata": balance.pick_arrays()}))
        except QuotaError as e:
            name = f"--balance-by {balance.column} value {balance.values[e.value]!r}"
            raise QuotaError(e.value, e.need, e.have, e.axis, name) from None
        inc = context.incidence(self.side, self.level)
        info = {"k": sel.k, "k_min": sel.k_min, "k_max": sel.k_max, "pool_size": sel.pool_size,
                "types_covered": sel.types_covered, "features_fingerprint": inc.fingerprint,
                "features_config": inc.config, "typeless": sel.typeless, "typeless_samples": engine.n_typeless,
                "typed_samples": engine.n_samples - engine.n_typeless, "spacing": sel.spacing,
                "pruning": sel.pruning}
        if sel.coverage_target is not None:
            info |= {"coverage_target": sel.coverage_target, "coverage_range": list(sel.coverage_range or ())}
        return sel.ids, info


class RandomStrategy:
    """N rows uniformly at random (the N smallest seeded hashes of the record ids)."""

    name = "random"
    takes_level = False
    row_order: RowOrder = "sequence"
    seed_sensitive = True

    def needs(self, **options: Any) -> Needs:
        return Needs()

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return baselines.random_subset(context.sample_ids, n, seed, _strata(options)), {}


class _EmbeddingStrategy:
    """A baseline that reads the sentence embeddings of one side (``side``)."""

    takes_level = False
    row_order: RowOrder = "sequence"

    def needs(self, **options: Any) -> Needs:
        return Needs(embeddings=options.get("side", DEFAULT_SIDE))


class KCenterStrategy(_EmbeddingStrategy):
    """Greedy farthest point on the embeddings of ``side``; the seed picks the start (and breaks ties)."""

    name = "k-center"
    seed_sensitive = True

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        side = options.get("side", DEFAULT_SIDE)
        return baselines.k_center(context.embeddings(side), context.sample_ids, n, seed,
                                  strata=_strata(options)), {"side": side}


class DistanceStrategy(_EmbeddingStrategy):
    """DEITA-style walk by score, keeping samples farther than ``threshold`` from every kept one. Deterministic
    up to ties: the seed only orders samples of equal score."""

    name = "distance"
    seed_sensitive = False

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        side = options.get("side", DEFAULT_SIDE)
        threshold = options.get("threshold", DEFAULT_THRESHOLD)
        scores, used = context.scores(options.get("score_column"))
        local = baselines.distance_filter(context.embeddings(side), scores, context.sample_ids, n, threshold, seed,
                                          strata=_strata(options))
        return local, {"side": side, "score": used, "threshold": threshold}


BUILTIN = (*(DiversityStrategy(side, level) for side in SIDES for level in LEVELS),
           RandomStrategy(), KCenterStrategy(), DistanceStrategy())
