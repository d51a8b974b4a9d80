"""Embedding metrics of one side of a subset: mean pairwise cosine distance and the Vendi score.

Both take a (m, d) array of embeddings of the sampled texts (the caller samples, see
:mod:`divscope.metrics.card`), L2-normalise them in float64 and never build a Python loop over pairs:

* mean pairwise cosine distance over the m(m-1)/2 unordered pairs, from the identity
  sum_{i != j} cos(e_i, e_j) = ||sum_i e_i||^2 - sum_i ||e_i||^2  (O(m d), no m x m matrix);
* Vendi score (Friedman & Dieng, 2023) with the cosine-similarity kernel K = E E^T: exp of the Shannon entropy
  (nats) of the eigenvalues of K/m. The nonzero eigenvalues of E E^T / m are those of E^T E / m (d x d), so
  the eigen-decomposition costs O(m d^2 + d^3) whatever m is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def normalized(emb: np.ndarray) -> np.ndarray:
    """Rows L2-normalised in float64 (stored float16 embeddings are only approximately unit length);
    an all-zero row stays zero."""
    x = np.asarray(emb, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def mean_cosine_distance(emb: np.ndarray) -> float | None:
    """Mean of 1 - cos(e_i, e_j) over all unordered pairs i < j of the rows; None with fewer than two rows."""
    x = normalized(emb)
    m = len(x)
    if m < 2:
        return None
    s = x.sum(axis=0)
    off_diagonal = float(s @ s) - float((x * x).sum())
    return 1.0 - off_diagonal / (m * (m - 1))


def vendi_score(emb: np.ndarray) -> float | None:
    """exp(-sum lambda_i log lambda_i) over the eigenvalues of K/m, K_ij = cos(e_i, e_j); None for no row.

    1 when every row points the same way, m for m orthogonal rows (the "effective number" of distinct items).
    """
    x = normalized(emb)
    m = len(x)
    if m == 0:
        return None
    small = x.T @ x / m if x.shape[1] < m else x @ x.T / m
    lam = _eigvalsh_one_thread(small)
    lam = lam[lam > 1e-12]  # clip round-off negatives; 0 log 0 = 0
    if len(lam) == 0:
        return None
    lam = lam / lam.sum()  # trace(K)/m = 1 for unit rows; renormalise away round-off
    return float(np.exp(-(lam * np.log(lam)).sum()))


def _eigvalsh_one_thread(a: np.ndarray) -> np.ndarray:
    """Eigenvalues of a small symmetric matrix with one BLAS thread: multi-threaded OpenBLAS takes ~1.5 s instead
    of ~20 ms on a 384 x 384 matrix when the cores are busy (measured on a shared 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return np.linalg.eigvalsh(a)
    with threadpool_limits(1, user_api="blas"):
        return np.linalg.eigvalsh(a)


def embed_sample(texts: Sequence[str], embedder: str | Any = None, runtime: str = "torch") -> np.ndarray:
    """Embeddings of texts that are not in a workspace cache: the workspace's model and truncation
    (:func:`divscope.features.macro.embed_texts`), stored as float16 like the workspace's, so a subset read from
    a file and the same subset read by pool row give (up to batching round-off) the same numbers."""
    from divscope.features.macro import embed_texts

    return embed_texts(list(texts), embedder, description="metrics: embed", runtime=runtime).astype(np.float16)
