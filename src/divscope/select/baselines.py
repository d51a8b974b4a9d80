"""Baselines behind the same interface as the engine: ``random``, ``k-center``, ``distance``.

All randomness is keyed to sample identity (a seeded hash of the id), so, like the engine, a result does not
depend on the pool's row order except through the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from divscope.errors import DivscopeError
from divscope.select.arguments import check_n, check_seed


def id_rank(ids: Sequence[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random key per id (uint64), independent of position."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(f"{seed}\x00{i}".encode(), digest_size=8).digest(),
                                       "little") for i in ids), dtype=np.uint64, count=len(ids))


Strata = tuple[np.ndarray, np.ndarray]  # (value label per row, quota per value): ``select.balance``


def random_subset(ids: Sequence[str], n: int, seed: int, strata: Strata | None = None) -> np.ndarray:
    """N rows uniformly at random: the N smallest seeded id hashes, in that order. ``strata``: stratified, the
    q_v smallest hashes of each value v (the first N of the hash order whose value is under its quota)."""
    n, seed = check_n(n, len(ids)), check_seed(seed)
    order = np.argsort(id_rank(ids, seed), kind="stable")
    if strata is not None:
        from divscope.select.balance import take

        return take(order, *strata)
    return order[:n].astype(np.int64)


def k_center(emb: np.ndarray, ids: Sequence[str], n: int, seed: int, block: int = 8192,
             strata: Strata | None = None) -> np.ndarray:
    """Greedy farthest-point selection (Gonzalez' 2-approximation of k-center) in cosine distance.

    Starts from the sample with the smallest seeded id hash; each step adds the sample farthest from everything
    chosen so far (ties: smallest seeded hash). ``emb`` rows must be L2-normalised. O(n_samples * N * dim).
    ``strata``: a sample whose value has reached its quota is no longer a candidate (nor is the start).
    """
    n, seed = check_n(n, len(ids)), check_seed(seed)
    x = np.ascontiguousarray(emb, dtype=np.float32)
    rank = id_rank(ids, seed)
    tiebreak = np.argsort(np.argsort(rank, kind="stable"), kind="stable").astype(np.float64)
    mind = np.full(len(x), np.inf, dtype=np.float64)
    if strata is not None:
        labels, left = strata[0], strata[1].copy()
        mind[left[labels] == 0] = -np.inf
        cur = int(np.argmin(np.where(mind > -np.inf, tiebreak, np.inf)))
    else:
        cur = int(np.argmin(tiebreak))
    chosen = [cur]
    mind[cur] = -np.inf
    for _ in range(n - 1):
        if strata is not None:
            left[labels[cur]] -= 1
            if left[labels[cur]] == 0:
                mind[labels == labels[cur]] = -np.inf
        for b in range(0, len(x), block):
            d = 1.0 - x[b : b + block] @ x[cur]
            np.minimum(mind[b : b + block], d, out=mind[b : b + block])
        # Farthest, ties by seeded rank: lexicographic on (distance desc, rank asc).
        best = np.flatnonzero(mind == mind.max())
        cur = int(best[np.argmin(tiebreak[best])])
        chosen.append(cur)
        mind[cur] = -np.inf
    return np.asarray(chosen, dtype=np.int64)


def distance_filter(emb: np.ndarray, scores: np.ndarray, ids: Sequence[str], n: int, threshold: float,
                    seed: int, block: int = 256, strata: Strata | None = None) -> np.ndarray:
    """DEITA-style: walk samples by score (high first; ties by seeded hash) and keep one when its cosine distance
    to the nearest kept sample exceeds ``threshold``; stop at N. ``strata``: a sample whose value has reached its
    quota is passed over (and not kept).

    Batched: a block of candidates is compared with all kept rows in one product; the few survivors are then
    checked in order against the ones accepted earlier in the same block.
    """
    n, seed = check_n(n, len(ids)), check_seed(seed)
    if not 0.0 <= threshold < 2.0:
        raise DivscopeError("--threshold is a cosine distance in [0, 2)")
    x = np.ascontiguousarray(emb, dtype=np.float32)
    rank = id_rank(ids, seed)
    order = np.lexsort((rank, -np.asarray(scores, dtype=np.float64)))
    kept = np.empty((n, x.shape[1]), dtype=np.float32)
    rows: list[int] = []
    limit = 1.0 - threshold  # keep iff max cosine similarity to kept < 1 - threshold
    if strata is not None:
        labels, left = strata[0], strata[1].copy()
    for b in range(0, len(order), block):
        cand = order[b : b + block]
        if strata is not None:
            cand = cand[left[labels[cand]] > 0]
        if rows and len(cand):
            sim = (x[cand] @ kept[: len(rows)].T).max(axis=1)
            cand = cand[sim < limit]
        first_new = len(rows)  # rows accepted before this block were checked in the product above
        for r in cand:
            if strata is not None and left[labels[r]] == 0:
                continue
            if len(rows) > first_new and float((kept[first_new : len(rows)] @ x[r]).max()) >= limit:
                continue
            kept[len(rows)] = x[r]
            rows.append(int(r))
            if strata is not None:
                left[labels[r]] -= 1
            if len(rows) == n:
                return np.asarray(rows, dtype=np.int64)
    quota = " within the --balance-by quotas" if strata is not None else ""
    raise DivscopeError(f"only {len(rows)} samples are farther apart than --threshold {threshold}{quota}; "
                        f"lower the threshold or the size")
