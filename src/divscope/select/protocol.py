"""The strategy protocol: what every selection strategy (built in or third-party) declares and implements.

A strategy is any object with these attributes and methods; it need not inherit from anything. The
``Selector`` validates N, the seed and (for strategies that take one) the diversity level before calling
``select``, so a strategy receives clean arguments and every strategy rejects the same mistake with the same
message. Register one with ``divscope.select.registry.register_strategy`` and check it with the battery in
``divscope.select.checks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from divscope.features.incidence import Incidence
    from divscope.select.engine import Engine

RowOrder = Literal["none", "set", "sequence"]
"""What a strategy promises when the pool's rows are permuted (each row keeping its record id): ``none``
nothing; ``set`` the same samples are chosen; ``sequence`` the same samples in the same selection order."""
ROW_ORDERS: tuple[str, ...] = ("none", "set", "sequence")


@dataclass(frozen=True)
class Needs:
    """Cached features a strategy reads: an incidence of (side, level), embeddings of a side, or nothing.
    Used to featurize what a study needs and to name the fix when something is missing."""

    incidence: tuple[str, str] | None = None
    embeddings: str | None = None


class SelectionContext(Protocol):
    """What a strategy sees: the eligible sub-pool, in the order the caller gave, with lazy feature access.

    Local row i is pool row ``rows[i]`` with record id ``sample_ids[i]``; ``select`` returns local rows. Key any
    randomness to ``sample_ids`` (not to positions) to be independent of the pool's row order.
    """

    rows: np.ndarray
    sample_ids: Sequence[str]

    def incidence(self, side: str, level: str) -> Incidence:
        """The cached incidence, whole pool (for provenance; restrict with ``matrix[rows]``)."""
        ...

    def engine(self, side: str, level: str, seed: int) -> Engine:
        """The selection engine over the local rows of that incidence (cached per seed)."""
        ...

    def embeddings(self, side: str) -> np.ndarray:
        """float32 L2-normalised embeddings, one row per local row."""
        ...

    def scores(self, column: str | None) -> tuple[np.ndarray, str]:
        """A score per local row (a numeric metadata column, or the documented default) and its name."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A selection strategy.

    ``takes_level``: whether it uses the diversity level d (otherwise d is ignored and recorded as ignored).
    ``row_order``: its promise under permuted pool rows (``RowOrder``). ``seed_sensitive``: whether different
    seeds are expected to choose different subsets (False for deterministic ones, or where the seed only breaks
    ties). ``select`` returns exactly ``n`` distinct local rows in selection order and what the manifest records.
    """

    name: str
    takes_level: bool
    row_order: RowOrder
    seed_sensitive: bool

    def needs(self, **options: Any) -> Needs: ...

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]: ...
