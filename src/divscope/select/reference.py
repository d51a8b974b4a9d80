"""The engine's specification read literally, recomputing everything at every step in plain numpy.

Used by the tests (the engine must give *identical* pruning orders and selections for every option) and by the
benchmark (the speed-up it reports). Far too slow for real pools: each pruning step recounts every carrier, each
pick recounts every chosen count and candidate set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.errors import DivscopeError
from divscope.select.engine import PRUNINGS, SPACINGS, TYPELESS, check_option, coverage_k, level_to_k
from divscope.select.seeding import hash_strings, key_hashes, mix, salts, sample_rank, type_rank

__all__ = ["reference_prune", "reference_prune_samples", "reference_select", "reference_select_levels"]


def reference_prune(matrix: sp.spmatrix, tie_rank: np.ndarray, max_steps: int | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Type pruning. Returns ``(order, leave_step)``, recomputing every remaining type's carrier count at each
    step. ``max_steps`` stops early (benchmark timing only; the result is then partial)."""
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


def reference_prune_samples(matrix: sp.spmatrix, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample pruning, literally: while typed samples remain, compute for each the number of remaining types it
    alone still carries (what its removal loses), remove the one with the fewest (ties: ``rank``), and record the
    number R of types remaining just before. Returns ``(removal_step, leave_step)`` in the engine's encoding
    (``k_max - R``; typeless samples ``k_max``, types that never occur -1)."""
    m = sp.csr_matrix(matrix, dtype=np.bool_)
    n_samples, n_types = m.shape
    counts = np.bincount(m.indices, minlength=n_types).astype(np.int64)
    k_max = int(np.count_nonzero(counts))
    remaining = np.diff(m.indptr) > 0
    leave_step = np.full(n_samples, k_max, np.int64)
    removal_step = np.full(n_types, -1, np.int64)
    while remaining.any():
        counts = np.bincount(m[remaining].indices, minlength=n_types).astype(np.int64)
        r = int(np.count_nonzero(counts))
        loss = m @ (counts == 1).astype(np.int64)
        key = np.where(remaining, loss * n_samples + rank, np.iinfo(np.int64).max)
        s = int(np.argmin(key))
        remaining[s] = False
        leave_step[s] = k_max - r
        after = np.bincount(m[remaining].indices, minlength=n_types)
        removal_step[(counts > 0) & (after == 0)] = k_max - r
    return removal_step, leave_step


def reference_select(matrix: sp.spmatrix, n: int, d: float, seed: int = 0, sample_keys: Any = None,
                     type_names: list[str] | None = None, **options: str) -> tuple[np.ndarray, int, int, int, int]:
    """The whole specification, literally: reference pruning, then picks that recompute every type's chosen
    count and candidate set at each step. Returns ``(ids, k, k_min, k_max, types_covered)``. ``options``:
    ``typeless``, ``pruning``, ``spacing`` as for the engine (the engine's defaults)."""
    return reference_select_levels(matrix, n, [d], seed, sample_keys, type_names, **options)[0]


def reference_select_levels(matrix: sp.spmatrix, n: int, levels: list[float], seed: int = 0,
                            sample_keys: Any = None, type_names: list[str] | None = None, typeless: str = "exclude",
                            pruning: str = "types", spacing: str = "k",
                            ) -> list[tuple[np.ndarray, int, int, int, int]]:
    """``reference_select`` for several levels sharing one reference pruning."""
    typeless = check_option("typeless", typeless, TYPELESS)
    pruning, spacing = check_option("pruning", pruning, PRUNINGS), check_option("spacing", spacing, SPACINGS)
    m = sp.csr_matrix(matrix, dtype=np.bool_)
    m.sum_duplicates()
    m.eliminate_zeros()
    n_samples, n_types = m.shape
    names = type_names if type_names is not None else [str(i) for i in range(n_types)]
    seed_salts = salts(seed)
    type_hash = hash_strings(names)
    key_hash = key_hashes(sample_keys, n_samples)
    tie_rank = type_rank(type_hash, seed_salts[0])
    if pruning == "types":
        order, leave_step = reference_prune(m, tie_rank)
        removal_step = np.full(n_types, -1, np.int64)
        removal_step[order] = np.arange(len(order))
    else:
        removal_step, leave_step = reference_prune_samples(m, sample_rank(key_hash, seed_salts))
    k_max = int(np.count_nonzero(removal_step >= 0))
    typeless_rows = np.diff(m.indptr) == 0
    eligible = ~typeless_rows if typeless == "exclude" else np.ones(n_samples, np.bool_)
    pool_sizes = np.array([np.count_nonzero(eligible & (leave_step >= k_max - k)) for k in range(k_max + 1)])
    if n > pool_sizes[-1]:
        raise DivscopeError(f"cannot select {n} samples from {pool_sizes[-1]} eligible samples")
    k_min = int(np.flatnonzero(pool_sizes >= n)[0])
    skey = mix(key_hash ^ seed_salts[1])
    tkey = mix(type_hash ^ seed_salts[2])
    csc = m.tocsc()

    def at(k: int) -> tuple[np.ndarray, int]:
        return _reference_sample(m, csc, n, k, k_max, removal_step, leave_step, eligible,
                                 tie_rank, skey, tkey, seed_salts)

    out = []
    for d in levels:
        if spacing == "k":
            k = level_to_k(d, k_min, k_max)
        else:
            lo = at(k_min)[1]
            k = coverage_k(lambda kk: at(kk)[1], level_to_k(d, lo, max(lo, at(k_max)[1])), k_min, k_max)
        ids, covered = at(k)
        out.append((ids, k, k_min, k_max, covered))
    return out


def _reference_sample(m, csc, n, k, k_max, removal_step, leave_step, eligible, tie_rank, skey, tkey, seed_salts):
    n_samples, n_types = m.shape
    in_pool = eligible & (leave_step >= k_max - k)
    pool_types = removal_step >= k_max - k
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
        prio = mix(skey[rows] ^ tkey[t])
        s = int(rows[np.lexsort((rows, prio))[0]])
        chosen[s] = True
        ids.append(s)
    c = np.bincount(m[chosen].indices, minlength=n_types)
    if len(ids) < n:
        tl = np.flatnonzero((np.diff(m.indptr) == 0) & in_pool)
        tl = tl[np.lexsort((tl, mix(skey[tl] ^ seed_salts[3])))]
        ids.extend(int(s) for s in tl[: n - len(ids)])
    return np.asarray(ids, np.int64), int(np.count_nonzero(c))
