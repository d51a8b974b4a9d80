"""The selection engine: reverse greedy pruning + type-aware sampling (DESIGN.md, "The engine").

One implementation for every level: it sees only the boolean sample x type incidence, never tokens, tags or
clusters. ``docs/engine.md`` documents every decision the design leaves open (rounding, tie order, what
"uniform" means, typeless fill, how results are independent of the pool's row order) and the complexity.

    engine = Engine(incidence, seed=0, sample_keys=None)
    engine.k_range(n)          -> (k_min, k_max)
    engine.pool(k)             -> row ids of pool(k)
    engine.select(n, d, seed)  -> Selection

Randomness. Everything random is a pure function of ``seed`` and of the *identity* of types (their names) and
samples (``sample_keys``, default the row index), never of positions: ``np.random.default_rng(seed)`` draws
four 64-bit salts, and

* the tie order of types is the order of ``mix(hash(name) ^ salt_type)``;
* type t's candidate order is the order of ``mix(skey[s] ^ tkey[t])`` with ``skey = mix(key ^ salt_sample)``,
  ``tkey = mix(hash(name) ^ salt_candidate)``: an independent pseudo-random permutation per type;
* typeless samples are taken in the order of ``mix(skey[s] ^ salt_typeless)``.

``mix`` is the splitmix64 finaliser (a bijection of 64-bit integers with full avalanche), ``hash`` is the first 8
bytes of BLAKE2b. So permuting the rows (and their keys with them) permutes nothing in the result except the
row numbers: the chosen *samples*, and the order they are chosen in, are the same.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.errors import DivscopeError
from divscope.select import kernels
from divscope.select.arguments import check_d, check_n, check_seed

__all__ = ["Engine", "Selection", "level_to_k", "reference_prune", "reference_select", "reference_select_levels"]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised over a uint64 array (wrap-around arithmetic)."""
    return kernels.mix64(np.ascontiguousarray(np.asarray(x, dtype=np.uint64).reshape(-1)))


def _hash_strings(values) -> np.ndarray:
    out = np.empty(len(values), np.uint64)
    for i, v in enumerate(values):
        b = v if isinstance(v, bytes | bytearray) else str(v).encode("utf-8")
        out[i] = int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
    return out


def _salts(seed: int) -> np.ndarray:
    """Four 64-bit salts from ``np.random.default_rng(seed)``: type ties, sample keys, candidate order, typeless."""
    return np.random.default_rng(seed).integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)


def level_to_k(d: float, k_min: int, k_max: int) -> int:
    """k = round(k_min + d * (k_max - k_min)), rounding halves *up* (floor(x + 0.5)), never Python's banker's
    rounding. A tolerance of 1e-9 absorbs binary floating error, so levels like d = 1/6 with a span of 3 land on
    the intended half-up integer. The result is clamped to [k_min, k_max]."""
    d = check_d(d)
    x = k_min + d * (k_max - k_min)
    return int(min(k_max, max(k_min, math.floor(x + 0.5 + 1e-9))))


def _type_rank(type_hash: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Seeded tie order: rank[t] = position of type t when sorted by mix(hash(name) ^ salt); equal hashes (only
    identical names) fall back to column order."""
    h = _mix(type_hash ^ salt)
    order = np.lexsort((np.arange(len(h)), h))
    rank = np.empty(len(h), np.int64)
    rank[order] = np.arange(len(h), dtype=np.int64)
    return rank


@dataclass(frozen=True)
class Selection:
    """One selected subset. ``ids`` are row indices of the pool, in selection order."""

    ids: np.ndarray
    k: int
    k_min: int
    k_max: int
    d: float
    n: int
    seed: int
    types_covered: int
    pool_size: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ids"] = [int(i) for i in self.ids]
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return a == b

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class _Pruning:
    seed: int
    tie_rank: np.ndarray      # int64[n_types]
    order: np.ndarray         # int64[k_max]: type removed at each step
    removal_step: np.ndarray  # int64[n_types], -1 for types that never occur
    leave_step: np.ndarray    # int64[n_samples], k_max for typeless samples
    pool_sizes: np.ndarray    # int64[k_max + 1]: |pool(k)|

    @property
    def k_max(self) -> int:
        return len(self.order)


def _coerce_matrix(incidence: Any) -> tuple[sp.csr_matrix, list[str]]:
    matrix = getattr(incidence, "matrix", None)
    if matrix is not None and hasattr(incidence, "type_names"):
        return matrix, list(incidence.type_names)
    if sp.issparse(incidence) or isinstance(incidence, np.ndarray):
        m = sp.csr_matrix(incidence, dtype=np.bool_)
        m.sum_duplicates()
        m.eliminate_zeros()
        m.sort_indices()
        return m, [str(i) for i in range(m.shape[1])]
    raise TypeError(f"Engine needs an Incidence (or a sparse/dense sample x type matrix), got {type(incidence)}")


def _key_hashes(sample_keys: Any, n_samples: int) -> np.ndarray:
    if sample_keys is None:
        return np.arange(n_samples, dtype=np.uint64)
    keys = np.asarray(sample_keys)
    if keys.ndim != 1 or len(keys) != n_samples:
        raise DivscopeError(f"sample_keys must hold one key per pool row ({n_samples}), got shape {keys.shape}; "
                            "pass the pool's record ids or content hashes")
    if keys.dtype.kind == "u":
        return keys.astype(np.uint64)
    if keys.dtype.kind == "i":
        return keys.astype(np.int64).view(np.uint64)
    if keys.dtype.kind in "USO":
        return _hash_strings(list(sample_keys))
    raise DivscopeError(f"sample_keys must be integers or strings, got dtype {keys.dtype}; "
                        "pass the pool's record ids or content hashes")


class Engine:
    """Reverse greedy pruning + type-aware sampling over one incidence.

    The pruning order (per seed) and the seeded candidate orders are computed once, lazily, and cached on the
    object; every ``select`` after that is one pass over the nonzeros of pool(k).
    """

    def __init__(self, incidence: Any, seed: int = 0, sample_keys: Any = None) -> None:
        m, names = _coerce_matrix(incidence)
        self.seed = check_seed(seed)
        self.n_samples = int(m.shape[0])
        self.n_types = int(m.shape[1])
        self.type_names = names
        self._indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
        self._indices = np.ascontiguousarray(m.indices, dtype=np.int32)  # type ids (n_types < 2**31)
        self._counts = np.bincount(self._indices, minlength=self.n_types).astype(np.int64)
        self._cindptr: np.ndarray | None = None
        self._crows: np.ndarray | None = None
        self._type_hash = _hash_strings(names)
        self._key_hash = _key_hashes(sample_keys, self.n_samples)
        self._typeless = np.flatnonzero(np.diff(self._indptr) == 0).astype(np.int64)
        self._prunings: dict[int, _Pruning] = {}
        self._candidates: dict[int, tuple] = {}

    # -- cached structures ---------------------------------------------------------------------------------

    def _csc(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cindptr is None:
            csr = sp.csr_matrix((np.ones(len(self._indices), np.bool_), self._indices, self._indptr),
                                shape=(self.n_samples, self.n_types))
            csc = csr.tocsc()
            csc.sort_indices()
            self._cindptr = np.ascontiguousarray(csc.indptr, dtype=np.int64)
            self._crows = np.ascontiguousarray(csc.indices, dtype=np.int32)  # row ids (n_samples < 2**31)
        return self._cindptr, self._crows  # type: ignore[return-value]

    def _pruning(self, seed: int | None = None) -> _Pruning:
        seed = self.seed if seed is None else check_seed(seed)
        pr = self._prunings.get(seed)
        if pr is None:
            cindptr, crows = self._csc()
            tie_rank = _type_rank(self._type_hash, _salts(seed)[0])
            order, removal_step, leave_step = kernels.prune(
                self._indptr, self._indices, cindptr, crows, self._counts, tie_rank, self._counts > 0)
            k_max = len(order)
            hist = np.bincount(leave_step, minlength=k_max + 1)
            pool_sizes = np.cumsum(hist[::-1]).astype(np.int64)
            pr = _Pruning(seed, tie_rank, order, removal_step, leave_step, pool_sizes)
            self._prunings[seed] = pr
        return pr

    def _candidate_order(self, seed: int) -> tuple:
        """Seeded candidate state for ``seed``: (crows_sorted, is_sorted, skey, tkey, typeless_sorted). Columns of
        ``crows_sorted`` are put in candidate order lazily (first pick of the type) and stay sorted for every
        later level; the two most recent seeds are kept."""
        got = self._candidates.get(seed)
        if got is None:
            _, crows = self._csc()
            salts = _salts(seed)
            skey = _mix(self._key_hash ^ salts[1])
            tkey = _mix(self._type_hash ^ salts[2])
            tl = self._typeless
            typeless_sorted = tl[np.lexsort((tl, _mix(skey[tl] ^ salts[3])))] if len(tl) else tl
            got = (crows.copy(), np.zeros(self.n_types, np.bool_), skey, tkey, typeless_sorted)
            if len(self._candidates) >= 2:
                self._candidates.pop(next(iter(self._candidates)))
            self._candidates[seed] = got
        return got

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def k_max(self) -> int:
        """Number of types that occur (column count > 0)."""
        return int(np.count_nonzero(self._counts))

    def removal_order(self, seed: int | None = None) -> np.ndarray:
        """Type ids in the order the pruning removes them (the last k form pool(k)'s types)."""
        return self._pruning(seed).order.copy()

    def pool_sizes(self, seed: int | None = None) -> np.ndarray:
        """``|pool(k)|`` for k = 0..k_max (non-decreasing; the last entry is the pool size)."""
        return self._pruning(seed).pool_sizes.copy()

    def k_range(self, n: int, seed: int | None = None) -> tuple[int, int]:
        """(k_min, k_max) for size ``n``: k_min is the smallest k with |pool(k)| >= n."""
        n = check_n(n)
        pr = self._pruning(seed)
        check_n(n, int(pr.pool_sizes[-1]))  # |pool(k_max)| = every sample (typeless ones included)
        k_min = int(np.searchsorted(pr.pool_sizes, n, side="left"))
        return k_min, pr.k_max

    def pool(self, k: int, seed: int | None = None) -> np.ndarray:
        """Row ids (ascending) of pool(k): the samples whose types all lie among the last k remaining types."""
        pr = self._pruning(seed)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= int(k) <= pr.k_max:
            raise DivscopeError(f"k must be an integer in [0, {pr.k_max}] (the number of occurring types), "
                                f"got {k!r}")
        return np.flatnonzero(pr.leave_step >= pr.k_max - int(k)).astype(np.int64)

    def select(self, n: int, d: float, seed: int | None = None) -> Selection:
        """Exactly ``n`` distinct samples at diversity level ``d`` in [0, 1]."""
        n = check_n(n)
        d = check_d(d)
        seed = self.seed if seed is None else check_seed(seed)
        k_min, k_max = self.k_range(n, seed)
        k = level_to_k(d, k_min, k_max)
        pr = self._pruning(seed)
        crows_sorted, is_sorted, skey, tkey, typeless_sorted = self._candidate_order(seed)
        cindptr, _ = self._csc()
        ids, c = kernels.sample(self._indptr, self._indices, cindptr, crows_sorted, is_sorted, skey, tkey,
                                 pr.removal_step, pr.leave_step, pr.tie_rank, k_max - k, n, typeless_sorted)
        if len(ids) != n:  # pragma: no cover - excluded by k_range
            raise AssertionError(f"engine bug: chose {len(ids)} of {n} from a pool of {pr.pool_sizes[k]}")
        return Selection(ids=ids, k=k, k_min=k_min, k_max=k_max, d=d, n=n, seed=seed,
                         types_covered=int(np.count_nonzero(c)), pool_size=int(pr.pool_sizes[k]))


# ------------------------------------------------------------------------------------------------------------
# Straightforward reference implementation: the specification read literally, recomputing coverage at every
# step in plain numpy. Used by the tests (identical pruning order and selection) and by the benchmark.
# ------------------------------------------------------------------------------------------------------------


def reference_prune(matrix: sp.spmatrix, tie_rank: np.ndarray, max_steps: int | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(order, leave_step)``, recomputing every remaining type's carrier count at each step.
    ``max_steps`` stops early (benchmark timing only; the result is then partial)."""
    m = sp.csr_matrix(matrix, dtype=np.bool_)
    n_samples, n_types = m.shape
    csc = m.tocsc()
    remaining_types = np.bincount(m.indices, minlength=n_types) > 0
    k_max = int(remaining_types.sum())
    remaining_samples = np.ones(n_samples, np.bool_)
    leave_step = np.full(n_samples, k_max, np.int64)
    order = np.empty(k_max, np.int64)
    for step in range(k_max if max_steps is None else min(k_max, max_steps)):
        counts = np.bincount(m[remaining_samples].indices, minlength=n_types).astype(np.int64)
        key = np.where(remaining_types, counts * n_types + tie_rank, np.iinfo(np.int64).max)
        t = int(np.argmin(key))
        order[step] = t
        remaining_types[t] = False
        rows = csc.indices[csc.indptr[t]:csc.indptr[t + 1]]
        rows = rows[remaining_samples[rows]]
        leave_step[rows] = step
        remaining_samples[rows] = False
    return order, leave_step


def reference_select(matrix: sp.spmatrix, n: int, d: float, seed: int = 0, sample_keys: Any = None,
                     type_names: list[str] | None = None) -> tuple[np.ndarray, int, int, int, int]:
    """The whole specification, literally: reference pruning, then picks that recompute every type's chosen
    count and candidate set at each step. Returns ``(ids, k, k_min, k_max, types_covered)``."""
    return reference_select_levels(matrix, n, [d], seed, sample_keys, type_names)[0]


def reference_select_levels(matrix: sp.spmatrix, n: int, levels: list[float], seed: int = 0,
                            sample_keys: Any = None, type_names: list[str] | None = None,
                            ) -> list[tuple[np.ndarray, int, int, int, int]]:
    """``reference_select`` for several levels sharing one reference pruning."""
    m = sp.csr_matrix(matrix, dtype=np.bool_)
    m.sum_duplicates()
    m.eliminate_zeros()
    n_samples, n_types = m.shape
    names = type_names if type_names is not None else [str(i) for i in range(n_types)]
    salts = _salts(seed)
    type_hash = _hash_strings(names)
    tie_rank = _type_rank(type_hash, salts[0])
    order, leave_step = reference_prune(m, tie_rank)
    k_max = len(order)
    pool_sizes = np.array([np.count_nonzero(leave_step >= k_max - k) for k in range(k_max + 1)])
    if n > n_samples:
        raise DivscopeError(f"cannot select {n} samples from a pool of {n_samples}")
    k_min = int(np.flatnonzero(pool_sizes >= n)[0])
    skey = _mix(_key_hashes(sample_keys, n_samples) ^ salts[1])
    tkey = _mix(type_hash ^ salts[2])
    csc = m.tocsc()
    return [_reference_sample(m, csc, n, level_to_k(d, k_min, k_max), k_min, k_max, order, leave_step,
                              tie_rank, skey, tkey, salts) for d in levels]


def _reference_sample(m, csc, n, k, k_min, k_max, order, leave_step, tie_rank, skey, tkey, salts):
    n_samples, n_types = m.shape
    in_pool = leave_step >= k_max - k
    pool_types = np.zeros(n_types, np.bool_)
    pool_types[order[k_max - k:]] = True
    chosen = np.zeros(n_samples, np.bool_)
    ids: list[int] = []
    while len(ids) < n:
        c = np.bincount(m[chosen].indices, minlength=n_types).astype(np.int64)
        has = pool_types & (np.bincount(m[in_pool & ~chosen].indices, minlength=n_types) > 0)
        if not has.any():
            break
        key = np.where(has, c * n_types + tie_rank, np.iinfo(np.int64).max)
        t = int(np.argmin(key))
        rows = csc.indices[csc.indptr[t]:csc.indptr[t + 1]].astype(np.int64)
        rows = rows[in_pool[rows] & ~chosen[rows]]
        prio = _mix(skey[rows] ^ tkey[t])
        s = int(rows[np.lexsort((rows, prio))[0]])
        chosen[s] = True
        ids.append(s)
    c = np.bincount(m[chosen].indices, minlength=n_types)
    if len(ids) < n:
        tl = np.flatnonzero(np.diff(m.indptr) == 0)
        tl = tl[np.lexsort((tl, _mix(skey[tl] ^ salts[3])))]
        ids.extend(int(s) for s in tl[: n - len(ids)])
    covered = int(np.count_nonzero(c))
    return np.asarray(ids, np.int64), k, k_min, k_max, covered
