"""The selection engine: reverse greedy pruning + type-aware sampling (DESIGN.md, "The engine").

One implementation for every level: it sees only the boolean sample x type incidence, never tokens, tags or
clusters. ``docs/engine.md`` documents every decision the design leaves open (rounding, tie order, what
"uniform" means, typeless samples, coverage spacing, sample pruning, row-order independence) and the complexity.

    engine = Engine(incidence, seed=0, sample_keys=None, typeless="exclude", pruning="types", spacing="k")
    engine.k_range(n)          -> (k_min, k_max)
    engine.pool(k)             -> row ids of pool(k)
    engine.select(n, d, seed)  -> Selection          (every option can be overridden per call)

Options: ``typeless`` (exclude: samples without a type are in no pool; include: in every pool, filled last),
``pruning`` (types: remove the type with the fewest carriers; samples: the paper-literal removal of the sample
that loses the fewest types), ``spacing`` (k: k linear in d; coverage: types covered linear in d, by bisection).
Randomness is a pure function of the seed and of type names / sample keys (``divscope.select.seeding``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.errors import DivscopeError
from divscope.select import kernels
from divscope.select.arguments import check_d, check_n, check_seed
from divscope.select.seeding import hash_strings, key_hashes, mix, salts, sample_rank, type_rank

__all__ = ["ENGINE_ARRAYS", "PRUNINGS", "PRUNING_ARRAYS", "QuotaError", "SPACINGS", "TYPELESS", "Engine",
           "Selection", "check_option", "coverage_k", "level_to_k", "restrict_arrays"]

TYPELESS = ("exclude", "include")
SPACINGS = ("k", "coverage")
PRUNINGS = ("types", "samples")


def check_option(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """An engine option's value, or a one-line DivscopeError naming the choices."""
    if not isinstance(value, str) or value not in allowed:
        raise DivscopeError(f"{name} must be one of {', '.join(allowed)}, got {value!r}; pass e.g. "
                            f"--{name} {allowed[0]}")
    return value


def level_to_k(d: float, k_min: int, k_max: int) -> int:
    """k = round(k_min + d * (k_max - k_min)), rounding halves *up* (floor(x + 0.5)), never Python's banker's
    rounding. A tolerance of 1e-9 absorbs binary floating error, so levels like d = 1/6 with a span of 3 land on
    the intended half-up integer. The result is clamped to [k_min, k_max]."""
    d = check_d(d)
    x = k_min + d * (k_max - k_min)
    return int(min(k_max, max(k_min, math.floor(x + 0.5 + 1e-9))))


def coverage_k(covered: Callable[[int], int], target: int, k_min: int, k_max: int) -> int:
    """The k of a coverage target, by bisection over [k_min, k_max] with the real sampler (``covered(k)``).

    k_min if ``covered(k_min) >= target``; otherwise the bisection keeps ``covered(a) < target <= covered(b)``
    (it needs ``covered(k_max) >= target``) and returns b when ``b = a + 1``: a k whose coverage reaches the
    target while that of k - 1 does not. Types covered is not monotone in k, so this is *a* crossing, not always
    the first; but the probes depend only on the comparisons, so the k found is non-decreasing in the target.
    """
    if covered(k_min) >= target:
        return k_min
    a, b = k_min, k_max
    while b - a > 1:
        mid = (a + b) // 2
        if covered(mid) >= target:
            b = mid
        else:
            a = mid
    return b


@dataclass(frozen=True)
class Selection:
    """One selected subset. ``ids`` are row indices of the pool, in selection order. ``coverage_target`` and
    ``coverage_range`` (types covered at k_min and k_max) are set under coverage spacing only."""

    ids: np.ndarray
    k: int
    k_min: int
    k_max: int
    d: float
    n: int
    seed: int
    types_covered: int
    pool_size: int
    typeless: str = "exclude"
    spacing: str = "k"
    pruning: str = "types"
    coverage_target: int | None = None
    coverage_range: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ids"] = [int(i) for i in self.ids]
        if self.coverage_range is not None:
            out["coverage_range"] = list(self.coverage_range)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class _Pruning:
    seed: int
    mode: str
    tie_rank: np.ndarray      # int64[n_types]
    order: np.ndarray         # int64[k_max]: types by removal step (ties: tie_rank)
    removal_step: np.ndarray  # int64[n_types], -1 for types that never occur
    leave_step: np.ndarray    # int64[n_samples], k_max for typeless samples
    pool_sizes: np.ndarray    # int64[k_max + 1]: |pool(k)|, typeless samples included

    @property
    def k_max(self) -> int:
        return len(self.order)


Strata = tuple[np.ndarray, np.ndarray]  # (label per sample, quota per label): ``divscope.select.balance``


class QuotaError(DivscopeError):
    """Label ``value`` needs ``need`` samples, but only ``have`` of them carry a type (typeless ones excluded)."""

    def __init__(self, value: int, need: int, have: int, axis: str = "", name: str | None = None) -> None:
        self.value, self.need, self.have, self.axis = value, need, have, axis
        super().__init__(f"cannot balance: {name or f'label {value}'} needs {need} samples but only {have} of them "
                         f"carry a type{axis} (typeless samples are excluded); pass --typeless include or balance "
                         "by another column")


def _check_strata(strata: Strata, n_samples: int, n: int) -> Strata:
    labels = np.ascontiguousarray(strata[0], np.int64)
    quota = np.ascontiguousarray(strata[1], np.int64)
    if labels.shape != (n_samples,) or (n_samples and (labels.min() < 0 or labels.max() >= len(quota))) \
            or int(quota.sum()) != n or (quota < 0).any():
        raise ValueError("strata: one label in [0, len(quotas)) per sample, and non-negative quotas summing to n")
    return labels, quota


def _strata_key(strata: Strata) -> bytes:
    return hashlib.blake2b(strata[0].tobytes() + b"|" + strata[1].tobytes(), digest_size=16).digest()


def _coerce_matrix(incidence: Any) -> tuple[sp.csr_matrix, list[str], str]:
    matrix = getattr(incidence, "matrix", None)
    if matrix is not None and hasattr(incidence, "type_names"):
        label = f"{getattr(incidence, 'side', '')}-{getattr(incidence, 'level', '')}".strip("-")
        return matrix, list(incidence.type_names), label
    if sp.issparse(incidence) or isinstance(incidence, np.ndarray):
        m = sp.csr_matrix(incidence, dtype=np.bool_)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        return m, [str(i) for i in range(m.shape[1])], ""
    raise TypeError(f"Engine needs an Incidence (or a sparse/dense sample x type matrix), got {type(incidence)}")


# What an engine derives from its incidence and sample keys alone, whatever the seed: the CSC view and the
# identity hashes. ``Engine.arrays()`` gives them, ``Engine(..., arrays=...)`` takes them back (the Selector
# keeps them in the feature cache, beside the incidence they were built from).
ENGINE_ARRAYS = ("cindptr", "crows", "type_hash", "key_hash")
# What one pruning (seed, mode) computes: a pure function of the incidence, the sample keys, the seed and the mode.
PRUNING_ARRAYS = ("tie_rank", "order", "removal_step", "leave_step", "pool_sizes")
PruningStore = Callable[[int, str, Callable[[], dict[str, np.ndarray]]], dict[str, np.ndarray]]


def _threads() -> int:
    try:
        import numba

        return int(numba.get_num_threads())
    except ImportError:  # pragma: no cover - plain-Python kernels
        return 1


def restrict_arrays(arrays: dict[str, np.ndarray], rows: np.ndarray, n_pool: int) -> dict[str, np.ndarray]:
    """The engine arrays of the sub-pool ``rows`` (distinct pool rows) from those of the whole pool. The CSC is
    filtered in one pass when ``rows`` ascend; otherwise it is left out (the engine builds it)."""
    rows = np.asarray(rows, np.int64)
    out = {"type_hash": arrays["type_hash"], "key_hash": np.ascontiguousarray(arrays["key_hash"][rows])}
    if len(rows) < 2 or bool(np.all(rows[1:] > rows[:-1])):
        local = np.full(n_pool, -1, np.int64)
        local[rows] = np.arange(len(rows), dtype=np.int64)
        out["cindptr"], out["crows"] = kernels.restrict_columns(arrays["cindptr"], arrays["crows"], local)
    return out


class Engine:
    """Reverse greedy pruning + type-aware sampling over one incidence.

    The pruning (per seed and mode) and the seeded candidate orders are computed once, lazily, and cached on the
    object; every ``select`` after that is one pass over the nonzeros of pool(k) (coverage spacing: a few).
    ``for_seed(s)`` is a view with another default seed that shares all of it (one engine serves every seed).

    ``arrays``: the seed-independent arrays (``ENGINE_ARRAYS``, from ``arrays()`` of an engine over the same
    incidence and sample keys), so that they are not rebuilt; any left out are computed.
    ``pruning_store(seed, mode, compute)``: where a pruning's arrays (``PRUNING_ARRAYS``) are kept between
    processes; it returns the stored arrays of this incidence, sample keys, seed and mode, or ``compute()``'s
    (the ``Selector`` keeps them in the feature cache).
    """

    def __init__(self, incidence: Any, seed: int = 0, sample_keys: Any = None, *, typeless: str = "exclude",
                 pruning: str = "types", spacing: str = "k", arrays: dict[str, np.ndarray] | None = None,
                 pruning_store: PruningStore | None = None) -> None:
        m, names, self.label = _coerce_matrix(incidence)
        self._pruning_store = pruning_store
        arrays = arrays or {}
        self.seed = check_seed(seed)
        self.typeless = check_option("typeless", typeless, TYPELESS)
        self.pruning = check_option("pruning", pruning, PRUNINGS)
        self.spacing = check_option("spacing", spacing, SPACINGS)
        self.n_samples = int(m.shape[0])
        self.n_types = int(m.shape[1])
        self.type_names = names
        self._indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(m.indices, dtype=np.int32)  # type ids (n_types < 2**31)
        if "cindptr" in arrays and "crows" in arrays:
            self._cindptr = np.ascontiguousarray(arrays["cindptr"], dtype=np.int64)
            self._crows = np.ascontiguousarray(arrays["crows"], dtype=np.int32)  # row ids (n_samples < 2**31)
            if len(self._cindptr) != self.n_types + 1 or len(self._crows) != len(self._indices):
                raise ValueError("engine arrays do not fit the incidence (CSC of another matrix)")
        else:
            self._cindptr, self._crows = kernels.transpose(self._indptr, self._indices, self.n_types, _threads())
        self._counts = np.diff(self._cindptr)
        self._type_hash = arrays["type_hash"] if "type_hash" in arrays else hash_strings(names)
        self._key_hash = arrays["key_hash"] if "key_hash" in arrays else key_hashes(sample_keys, self.n_samples)
        if len(self._type_hash) != self.n_types or len(self._key_hash) != self.n_samples:
            raise ValueError("engine arrays do not fit the incidence (hashes of another pool)")
        self._typeless = np.flatnonzero(np.diff(self._indptr) == 0).astype(np.int64)
        self._prunings: dict[tuple[int, str], _Pruning] = {}
        self._candidates: dict[int, tuple] = {}
        self._covered: dict[tuple, dict[int, int]] = {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The seed-independent arrays (``ENGINE_ARRAYS``): what ``Engine(..., arrays=...)`` takes back."""
        return {"cindptr": self._cindptr, "crows": self._crows, "type_hash": self._type_hash,
                "key_hash": self._key_hash}

    def for_seed(self, seed: int) -> Engine:
        """This engine with another default seed, sharing every cached pruning and candidate order."""
        view = copy.copy(self)
        view.seed = check_seed(seed)
        return view

    # -- cached structures ---------------------------------------------------------------------------------

    def _csc(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cindptr, self._crows

    def _pruning(self, seed: int | None = None, pruning: str | None = None) -> _Pruning:
        seed = self.seed if seed is None else check_seed(seed)
        mode = self.pruning if pruning is None else check_option("pruning", pruning, PRUNINGS)
        pr = self._prunings.get((seed, mode))
        if pr is None:
            arrays = None
            if self._pruning_store is not None:
                arrays = self._pruning_store(seed, mode, lambda: self._prune(seed, mode))
                if len(arrays["removal_step"]) != self.n_types or len(arrays["leave_step"]) != self.n_samples:
                    arrays = None  # pragma: no cover - a store of another incidence: compute it here
            arrays = self._prune(seed, mode) if arrays is None else arrays
            pr = _Pruning(seed, mode, **{name: arrays[name] for name in PRUNING_ARRAYS})
            self._prunings[(seed, mode)] = pr
        return pr

    def _prune(self, seed: int, mode: str) -> dict[str, np.ndarray]:
        cindptr, crows = self._csc()
        seed_salts = salts(seed)
        tie_rank = type_rank(self._type_hash, seed_salts[0])
        if mode == "types":
            order, removal_step, leave_step = kernels.prune(
                self._indptr, self._indices, cindptr, crows, self._counts, tie_rank, self._counts > 0)
        else:
            removal_step, leave_step = kernels.prune_samples(
                self._indptr, self._indices, cindptr, crows, self._counts,
                sample_rank(self._key_hash, seed_salts))
            occurring = np.flatnonzero(removal_step >= 0)
            order = occurring[np.lexsort((tie_rank[occurring], removal_step[occurring]))].astype(np.int64)
        k_max = len(order)
        hist = np.bincount(leave_step, minlength=k_max + 1)
        pool_sizes = np.cumsum(hist[::-1]).astype(np.int64)
        return {"tie_rank": tie_rank, "order": order, "removal_step": removal_step, "leave_step": leave_step,
                "pool_sizes": pool_sizes}

    def _candidate_order(self, seed: int) -> tuple:
        """Seeded candidate state for ``seed``: (crows_sorted, is_sorted, skey, tkey, typeless_sorted). Columns of
        ``crows_sorted`` (allocated empty) are written in candidate order lazily (first pick of the type) and stay
        sorted for every later level; the two most recent seeds are kept."""
        got = self._candidates.get(seed)
        if got is None:
            _, crows = self._csc()
            seed_salts = salts(seed)
            skey = mix(self._key_hash ^ seed_salts[1])
            tkey = mix(self._type_hash ^ seed_salts[2])
            tl = self._typeless
            typeless_sorted = tl[np.lexsort((tl, mix(skey[tl] ^ seed_salts[3])))] if len(tl) else tl
            got = (np.empty_like(crows), np.zeros(self.n_types, np.bool_), skey, tkey, typeless_sorted)
            if len(self._candidates) >= 2:
                self._candidates.pop(next(iter(self._candidates)))
            self._candidates[seed] = got
        return got

    def _typeless_mode(self, typeless: str | None) -> str:
        return self.typeless if typeless is None else check_option("typeless", typeless, TYPELESS)

    def _sample(self, n: int, k: int, seed: int, typeless: str, pruning: str,
                strata: Strata | None = None) -> tuple[np.ndarray, np.ndarray]:
        pr = self._pruning(seed, pruning)
        crows_sorted, is_sorted, skey, tkey, typeless_sorted = self._candidate_order(seed)
        if typeless == "exclude":
            typeless_sorted = typeless_sorted[:0]
        cindptr, crows = self._csc()
        if strata is None:  # no stratum labels: no quotas
            stratum, quota = np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            stratum, quota = strata
        return kernels.sample(self._indptr, self._indices, cindptr, crows, crows_sorted, is_sorted, skey, tkey,
                              pr.removal_step, pr.leave_step, pr.tie_rank, pr.k_max - k, n, typeless_sorted,
                              stratum, quota)

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def k_max(self) -> int:
        """Number of types that occur (column count > 0)."""
        return int(np.count_nonzero(self._counts))

    @property
    def n_typeless(self) -> int:
        """Samples that carry no type (excluded from every pool, or in every pool, by ``typeless``)."""
        return len(self._typeless)

    def removal_order(self, seed: int | None = None, pruning: str | None = None) -> np.ndarray:
        """Type ids in the order the pruning removes them (the last k form pool(k)'s types). Sample pruning loses
        several types at once at times: those are ordered by the seeded tie order."""
        return self._pruning(seed, pruning).order.copy()

    def pool_sizes(self, seed: int | None = None, *, typeless: str | None = None,
                   pruning: str | None = None) -> np.ndarray:
        """``|pool(k)|`` for k = 0..k_max (non-decreasing; the last entry is the number of eligible samples)."""
        sizes = self._pruning(seed, pruning).pool_sizes.copy()
        return sizes - self.n_typeless if self._typeless_mode(typeless) == "exclude" else sizes

    def k_range(self, n: int, seed: int | None = None, *, typeless: str | None = None,
                pruning: str | None = None, strata: Strata | None = None) -> tuple[int, int]:
        """(k_min, k_max) for size ``n``: k_min is the smallest k with |pool(k)| >= n; with ``strata`` (label per
        sample, quota per value), the smallest k whose pool holds at least its quota of every value."""
        n = check_n(n, self.n_samples)
        sizes = self.pool_sizes(seed, typeless=typeless, pruning=pruning)
        what = f" on the {self.label} axis" if self.label else ""
        if n > sizes[-1]:
            raise DivscopeError(f"cannot select {n} samples: only {int(sizes[-1])} of the {self.n_samples} eligible "
                                f"samples carry a type{what} ({self.n_typeless} typeless samples are excluded); pass "
                                "--typeless include, a smaller --size, or a wider --length-range")
        k_min, k_max = int(np.searchsorted(sizes, n, side="left")), len(sizes) - 1
        if strata is not None:
            k_min = max(k_min, self._quota_k(seed, pruning, self._typeless_mode(typeless), strata, what))
        return k_min, k_max

    def _quota_k(self, seed: int | None, pruning: str | None, typeless: str, strata: Strata, what: str) -> int:
        """The smallest k whose pool(k) holds ``quota[v]`` samples of every value v: a sample is in pool(k) iff
        ``leave_step >= k_max - k``, so value v needs k >= k_max - (its quota-th largest leave_step)."""
        pr = self._pruning(seed, pruning)
        labels, quota = strata
        inside = np.ones(self.n_samples, np.bool_)
        if typeless == "exclude":
            inside[self._typeless] = False
        lab, steps = labels[inside], pr.leave_step[inside]
        have = np.bincount(lab, minlength=len(quota))
        short = np.flatnonzero(have < quota)
        if len(short):
            v = int(short[0])
            raise QuotaError(v, int(quota[v]), int(have[v]), what)
        order = np.lexsort((-steps, lab))  # by value, then leave step descending
        start = np.concatenate(([0], np.cumsum(have)[:-1]))
        need = np.flatnonzero(quota > 0)
        if not len(need):
            return 0
        qth = steps[order[start[need] + quota[need] - 1]]  # each value's quota-th largest leave step
        return max(0, pr.k_max - int(qth.min()))

    def pool(self, k: int, seed: int | None = None, *, typeless: str | None = None,
             pruning: str | None = None) -> np.ndarray:
        """Row ids (ascending) of pool(k): under type pruning, the samples whose types all lie among the last k
        remaining types; under sample pruning, the samples remaining when at most k types remain."""
        pr = self._pruning(seed, pruning)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= int(k) <= pr.k_max:
            raise DivscopeError(f"k must be an integer in [0, {pr.k_max}] (the number of occurring types), "
                                f"got {k!r}")
        inside = pr.leave_step >= pr.k_max - int(k)
        if self._typeless_mode(typeless) == "exclude":
            inside[self._typeless] = False
        return np.flatnonzero(inside).astype(np.int64)

    def types_covered_at(self, n: int, k: int, seed: int | None = None, *, typeless: str | None = None,
                         pruning: str | None = None, strata: Strata | None = None) -> int:
        """Types covered by the sampler's n samples from pool(k) (memoised: coverage spacing probes it)."""
        seed = self.seed if seed is None else check_seed(seed)
        mode = self.pruning if pruning is None else check_option("pruning", pruning, PRUNINGS)
        tl = self._typeless_mode(typeless)
        key = (seed, mode, tl, n) if strata is None else (seed, mode, tl, n, _strata_key(strata))
        memo = self._covered.setdefault(key, {})
        if len(self._covered) > 8:
            self._covered.pop(next(iter(self._covered)))
        if k not in memo:
            memo[k] = int(np.count_nonzero(self._sample(n, k, seed, tl, mode, strata)[1]))
        return memo[k]

    def coverage_range(self, n: int, seed: int | None = None, *, typeless: str | None = None,
                       pruning: str | None = None, strata: Strata | None = None) -> tuple[int, int]:
        """(types covered at k_min, at k_max, but never below the first): the span coverage spacing divides."""
        opts = {"typeless": typeless, "pruning": pruning, "strata": strata}
        k_min, k_max = self.k_range(n, seed, **opts)
        lo = self.types_covered_at(n, k_min, seed, **opts)
        return lo, max(lo, self.types_covered_at(n, k_max, seed, **opts))

    def select(self, n: int, d: float, seed: int | None = None, *, spacing: str | None = None,
               typeless: str | None = None, pruning: str | None = None, strata: Strata | None = None) -> Selection:
        """Exactly ``n`` distinct samples at diversity level ``d`` in [0, 1]. ``strata`` = (label per sample,
        quota per label), quotas summing to n (``--balance-by``): k_min is the smallest k whose pool meets every
        quota, and the sampler passes over samples whose label has reached its quota."""
        n = check_n(n)
        d = check_d(d)
        seed = self.seed if seed is None else check_seed(seed)
        spacing = self.spacing if spacing is None else check_option("spacing", spacing, SPACINGS)
        tl = self._typeless_mode(typeless)
        mode = self.pruning if pruning is None else check_option("pruning", pruning, PRUNINGS)
        if strata is not None:
            strata = _check_strata(strata, self.n_samples, n)
        k_min, k_max = self.k_range(n, seed, typeless=tl, pruning=mode, strata=strata)
        target = span = None
        if spacing == "k":
            k = level_to_k(d, k_min, k_max)
        else:
            span = self.coverage_range(n, seed, typeless=tl, pruning=mode, strata=strata)
            target = level_to_k(d, *span)
            k = coverage_k(lambda kk: self.types_covered_at(n, kk, seed, typeless=tl, pruning=mode, strata=strata),
                           target, k_min, k_max)
        ids, c = self._sample(n, k, seed, tl, mode, strata)
        pool_size = int(self.pool_sizes(seed, typeless=tl, pruning=mode)[k])
        if len(ids) != n:  # pragma: no cover - excluded by k_range
            raise AssertionError(f"engine bug: chose {len(ids)} of {n} from a pool of {pool_size}")
        return Selection(ids=ids, k=k, k_min=k_min, k_max=k_max, d=d, n=n, seed=seed,
                         types_covered=int(np.count_nonzero(c)), pool_size=pool_size, typeless=tl, spacing=spacing,
                         pruning=mode, coverage_target=target, coverage_range=span)
