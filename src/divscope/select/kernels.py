"""Compiled inner loops of the selection engine (numba ``@njit(cache=True)``).

numba is an optional dependency (the ``features`` extra). Without it the same functions run as plain Python:
identical results, only much slower, and the first call of a kernel in a process says so once
(``NumbaMissingWarning``, naming ``pip install numba``). Every function here works on plain arrays (CSR/CSC index
arrays, int64 keys); the meaning of the arrays is documented in ``engine.py`` and ``docs/engine.md``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np


class NumbaMissingWarning(RuntimeWarning):
    """The selection engine runs its kernels as plain Python because numba is not installed."""


NUMBA_MISSING = ("numba is not installed: the selection engine runs its kernels as plain Python (same results, "
                 "tens of times slower on large pools); pip install numba (or divscope[features])")

try:  # pragma: no cover - exercised implicitly
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - tests/test_engine.py runs this branch in a subprocess
    HAVE_NUMBA = False
    _warned = False

    def _warn_once() -> None:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(NUMBA_MISSING, NumbaMissingWarning, stacklevel=3)

    def _plain(f):
        @functools.wraps(f)
        def run(*args, **kwargs):
            _warn_once()
            return f(*args, **kwargs)

        return run

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return _plain(args[0])
        return _plain

    prange = range


# ----------------------------------------------------------------------------------------------------------
# Binary min-heap helpers on parallel arrays (keys: int64, vals: int64). ``pos`` (when not None-like) maps a
# value to its slot for decrease-key; the lazy heap of the sampler does not need it.
# ----------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _sift_up_indexed(keys, vals, pos, i):
    k = keys[i]
    v = vals[i]
    while i > 0:
        p = (i - 1) >> 1
        if keys[p] <= k:
            break
        keys[i] = keys[p]
        vals[i] = vals[p]
        pos[vals[i]] = i
        i = p
    keys[i] = k
    vals[i] = v
    pos[v] = i


@njit(cache=True)
def _sift_down_indexed(keys, vals, pos, i, size):
    k = keys[i]
    v = vals[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and keys[c + 1] < keys[c]:
            c += 1
        if keys[c] >= k:
            break
        keys[i] = keys[c]
        vals[i] = vals[c]
        pos[vals[i]] = i
        i = c
    keys[i] = k
    vals[i] = v
    pos[v] = i


@njit(cache=True)
def _sift_down(keys, vals, i, size):
    k = keys[i]
    v = vals[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and keys[c + 1] < keys[c]:
            c += 1
        if keys[c] >= k:
            break
        keys[i] = keys[c]
        vals[i] = vals[c]
        i = c
    keys[i] = k
    vals[i] = v


@njit(cache=True)
def prune(indptr, indices, cindptr, crows, counts, tie_rank, occurring):
    """Reverse greedy pruning, one pass over the nonzeros.

    ``indptr/indices``: CSR (sample -> types); ``cindptr/crows``: CSC (type -> samples); ``counts[t]``: column
    counts; ``tie_rank[t]``: seeded tie order (a permutation of 0..n_types-1); ``occurring[t]``: count > 0.

    Repeatedly removes the remaining type with the smallest (remaining carriers, tie_rank) and every sample
    that carries it. An indexed binary heap keyed by ``count * n_types + tie_rank`` gives the minimum; counts
    only decrease, so every decrement is a sift-up (decrease-key).

    Returns ``(order, removal_step, leave_step)``: ``order[i]`` = the type removed at step i (length k_max);
    ``removal_step[t]`` = its step, -1 for types that never occur; ``leave_step[s]`` = the step at which sample
    s left, ``k_max`` for typeless samples (they never leave).
    """
    n_types = counts.shape[0]
    n_samples = indptr.shape[0] - 1
    k_max = 0
    for t in range(n_types):
        if occurring[t]:
            k_max += 1
    cnt = counts.astype(np.int64).copy()
    keys = np.empty(k_max, np.int64)
    vals = np.empty(k_max, np.int64)
    pos = np.full(n_types, -1, np.int64)
    size = 0
    for t in range(n_types):
        if occurring[t]:
            keys[size] = cnt[t] * n_types + tie_rank[t]
            vals[size] = t
            pos[t] = size
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift_down_indexed(keys, vals, pos, i, size)

    removal_step = np.full(n_types, -1, np.int64)
    leave_step = np.full(n_samples, k_max, np.int64)
    left = np.zeros(n_samples, np.bool_)
    order = np.empty(k_max, np.int64)
    for step in range(k_max):
        t = vals[0]
        order[step] = t
        removal_step[t] = step
        pos[t] = -1
        size -= 1
        if size > 0:
            keys[0] = keys[size]
            vals[0] = vals[size]
            pos[vals[0]] = 0
            _sift_down_indexed(keys, vals, pos, 0, size)
        for j in range(cindptr[t], cindptr[t + 1]):
            s = crows[j]
            if left[s]:
                continue
            left[s] = True
            leave_step[s] = step
            for q in range(indptr[s], indptr[s + 1]):
                u = indices[q]
                if removal_step[u] >= 0:
                    continue  # u is t itself or already removed
                cnt[u] -= 1
                p = pos[u]
                keys[p] -= n_types
                _sift_up_indexed(keys, vals, pos, p)
    return order, removal_step, leave_step


@njit(cache=True)
def prune_samples(indptr, indices, cindptr, crows, counts, sample_rank):
    """Paper-literal pruning: repeatedly remove the remaining (typed) sample whose removal loses the fewest
    remaining types, ties by ``sample_rank`` (a seeded permutation of the rows); one pass over the nonzeros.

    ``loss[s]`` = the types of s of which s is the last remaining carrier. Removing s decrements its types'
    counts: a count reaching 0 is a lost type; a count reaching 1 adds one to the loss of the last carrier (found
    by one scan of the column, once per type in the whole run). Losses only grow, so a lazy min-heap keyed by
    ``loss * n_samples + sample_rank`` suffices: a popped entry whose key is stale is put back with its current key.

    Returns ``(removal_step, leave_step)`` in the encoding of ``prune`` (docs/engine.md, "Sample pruning"):
    with R = the number of types remaining just before a sample (or a type's last carrier) was removed,
    ``leave_step[s] = k_max - R`` (``k_max`` for typeless samples) and ``removal_step[t] = k_max - R`` (-1 for
    types that never occur), so that pool(k) = {s : leave_step[s] >= k_max - k} is the set of samples remaining
    at the first moment when at most k types remain, and its types are {t : removal_step[t] >= k_max - k}.
    """
    n_types = counts.shape[0]
    n_samples = indptr.shape[0] - 1
    k_max = 0
    for t in range(n_types):
        if counts[t] > 0:
            k_max += 1
    cnt = counts.astype(np.int64).copy()
    loss = np.zeros(n_samples, np.int64)
    typed = 0
    for s in range(n_samples):
        if indptr[s + 1] > indptr[s]:
            typed += 1
        for q in range(indptr[s], indptr[s + 1]):
            if cnt[indices[q]] == 1:
                loss[s] += 1
    keys = np.empty(typed, np.int64)
    vals = np.empty(typed, np.int64)
    size = 0
    for s in range(n_samples):
        if indptr[s + 1] > indptr[s]:
            keys[size] = sample_rank[s]  # loss 0 or more: set below
            keys[size] += loss[s] * n_samples
            vals[size] = s
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(keys, vals, i, size)

    removed = np.zeros(n_samples, np.bool_)
    leave_step = np.full(n_samples, k_max, np.int64)
    removal_step = np.full(n_types, -1, np.int64)
    r = k_max
    while size > 0:
        s = vals[0]
        cur = loss[s] * n_samples + sample_rank[s]
        if keys[0] != cur:  # stale: loss[s] grew since the entry was pushed
            keys[0] = cur
            _sift_down(keys, vals, 0, size)
            continue
        size -= 1
        if size > 0:
            keys[0] = keys[size]
            vals[0] = vals[size]
            _sift_down(keys, vals, 0, size)
        removed[s] = True
        leave_step[s] = k_max - r
        lost = 0
        for q in range(indptr[s], indptr[s + 1]):
            u = indices[q]
            cnt[u] -= 1
            if cnt[u] == 0:
                removal_step[u] = k_max - r
                lost += 1
            elif cnt[u] == 1:
                for j in range(cindptr[u], cindptr[u + 1]):
                    if not removed[crows[j]]:
                        loss[crows[j]] += 1
                        break
        r -= lost
    return removal_step, leave_step


@njit(cache=True)
def mix64(z):
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic); same as ``seeding.mix``."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def sort_column(cindptr, crows, crows_sorted, skey, tkey, t):
    """Write type t's CSC segment of ``crows`` (rows ascending) into the same segment of ``crows_sorted``,
    ordered by ``mix64(skey[s] ^ tkey[t])``, ascending; stable, so samples with equal keys keep ascending row
    order. Only the segments of types the sampler picks are ever written (``crows_sorted`` starts empty)."""
    a = cindptr[t]
    b = cindptr[t + 1]
    if b - a < 2:
        for i in range(a, b):
            crows_sorted[i] = crows[i]
        return
    seg = crows[a:b]
    prio = mix64(skey[seg] ^ tkey[t])
    o = np.argsort(prio, kind="mergesort")
    for i in range(b - a):
        crows_sorted[a + i] = seg[o[i]]


@njit(cache=True)
def sample(indptr, indices, cindptr, crows, crows_sorted, is_sorted, skey, tkey, removal_step, leave_step,
           tie_rank, threshold, n, typeless_sorted, stratum, quota):
    """Type-aware sampling from pool(k), with ``threshold = k_max - k``.

    A sample s is in the pool iff ``leave_step[s] >= threshold``; the pool's types are those with
    ``removal_step >= threshold``. Each type's carriers are walked in its seeded candidate order (the CSC segment
    of ``crows_sorted``, written from ``crows`` by ``sort_column`` the first time the type is picked and flagged in
    ``is_sorted``; both persist across calls with the same seed). A pointer per type skips samples outside the
    pool or already chosen: a uniform choice among the unchosen candidates, see docs/engine.md. A lazy min-heap
    keyed by ``c[t] * n_types + tie_rank[t]`` holds each live type once: a popped entry whose key is stale (c[t]
    grew since it was pushed) is pushed back with its current key. When no type has candidates left, the rest
    comes from ``typeless_sorted`` (typeless samples, in seeded order; they are in every pool).

    Quotas (``--balance-by``): ``stratum[s]`` is sample s's value and ``quota[v]`` how many samples of value v
    may be chosen; a sample whose value has reached its quota is skipped like a chosen one. An empty ``stratum``
    means no quotas (the loop then never reads it: the unbalanced path stays as fast as before).

    Returns ``(ids, c)``: chosen rows in selection order (length n, or fewer if the pool is too small: the
    caller checks feasibility first) and the per-type counts of chosen carriers.
    """
    n_types = removal_step.shape[0]
    n_samples = leave_step.shape[0]
    c = np.zeros(n_types, np.int64)
    chosen = np.zeros(n_samples, np.bool_)
    left = quota.copy()
    balanced = stratum.shape[0] > 0
    ptr = cindptr[:-1].copy()
    live = 0
    for t in range(n_types):
        if removal_step[t] >= threshold:
            live += 1
    keys = np.empty(live, np.int64)
    vals = np.empty(live, np.int64)
    size = 0
    for t in range(n_types):
        if removal_step[t] >= threshold:
            keys[size] = tie_rank[t]
            vals[size] = t
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _sift_down(keys, vals, i, size)

    ids = np.empty(n, np.int64)
    m = 0
    while m < n and size > 0:
        t = vals[0]
        key = keys[0]
        cur = c[t] * n_types + tie_rank[t]
        if key != cur:  # stale: c[t] grew since the entry was pushed
            keys[0] = cur
            _sift_down(keys, vals, 0, size)
            continue
        # walk t's candidate list to its next unchosen pool sample
        if not is_sorted[t]:
            sort_column(cindptr, crows, crows_sorted, skey, tkey, t)
            is_sorted[t] = True
        j = ptr[t]
        end = cindptr[t + 1]
        while j < end:
            s = crows_sorted[j]
            if leave_step[s] >= threshold and not chosen[s] and (not balanced or left[stratum[s]] > 0):
                break
            j += 1
        if j >= end:  # no candidate left: drop t
            ptr[t] = end
            size -= 1
            if size > 0:
                keys[0] = keys[size]
                vals[0] = vals[size]
                _sift_down(keys, vals, 0, size)
            continue
        s = crows_sorted[j]
        ptr[t] = j + 1
        chosen[s] = True
        if balanced:
            left[stratum[s]] -= 1
        ids[m] = s
        m += 1
        for q in range(indptr[s], indptr[s + 1]):
            c[indices[q]] += 1
        keys[0] = c[t] * n_types + tie_rank[t]
        _sift_down(keys, vals, 0, size)
    i = 0
    while m < n and i < typeless_sorted.shape[0]:
        s = typeless_sorted[i]
        if not balanced or left[stratum[s]] > 0:
            if balanced:
                left[stratum[s]] -= 1
            ids[m] = s
            m += 1
        i += 1
    return ids[:m], c


# ----------------------------------------------------------------------------------------------------------
# Building the CSC view (type -> samples) of the CSR incidence, and restricting it to a sub-pool.
# ----------------------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def transpose(indptr, indices, n_cols, n_chunks):
    """CSC of a CSR pattern: ``(cindptr int64[n_cols + 1], crows int32[nnz])``, rows ascending in every column
    (what ``scipy.sparse.csr_matrix.tocsc`` + ``sort_indices`` give).

    A counting sort in ``n_chunks`` row chunks run in parallel: each chunk counts its column entries, a prefix
    sum over (column, chunk) gives every chunk its slot in every column, and each chunk fills its slots in row
    order; chunks are in row order, so every column comes out ascending."""
    n_rows = indptr.shape[0] - 1
    n_chunks = max(1, min(n_chunks, n_rows))
    bounds = np.empty(n_chunks + 1, np.int64)
    for c in range(n_chunks + 1):
        bounds[c] = n_rows * c // n_chunks
    counts = np.zeros((n_chunks, n_cols), np.int64)
    for c in prange(n_chunks):
        for r in range(bounds[c], bounds[c + 1]):
            for q in range(indptr[r], indptr[r + 1]):
                counts[c, indices[q]] += 1
    cindptr = np.empty(n_cols + 1, np.int64)
    total = 0
    for t in range(n_cols):
        cindptr[t] = total
        for c in range(n_chunks):
            k = counts[c, t]
            counts[c, t] = total
            total += k
    cindptr[n_cols] = total
    crows = np.empty(total, np.int32)
    for c in prange(n_chunks):
        slot = counts[c]
        for r in range(bounds[c], bounds[c + 1]):
            for q in range(indptr[r], indptr[r + 1]):
                t = indices[q]
                crows[slot[t]] = r
                slot[t] += 1
    return cindptr, crows


@njit(cache=True)
def restrict_columns(cindptr, crows, local):
    """The CSC of a row subset: ``local[s]`` = the new row id of pool row s, -1 where s is left out. The
    subset's row ids must increase with the pool's (a sorted subset), so columns stay ascending."""
    n_cols = cindptr.shape[0] - 1
    out_ptr = np.empty(n_cols + 1, np.int64)
    out = np.empty(crows.shape[0], np.int32)
    m = 0
    for t in range(n_cols):
        out_ptr[t] = m
        for j in range(cindptr[t], cindptr[t + 1]):
            r = local[crows[j]]
            if r >= 0:
                out[m] = r
                m += 1
    out_ptr[n_cols] = m
    return out_ptr, out[:m].copy()
