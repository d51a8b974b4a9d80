"""Seeded randomness keyed to identity (type names, sample keys), never to positions: the engine's hashing.

Everything random in the engine is a pure function of the seed and of these hashes, which is why its results do
not depend on the pool's row order (docs/engine.md, "Randomness is keyed to identity").
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.select import kernels

__all__ = ["hash_strings", "key_hashes", "mix", "salts", "sample_rank", "type_rank"]


def mix(x: Any) -> np.ndarray:
    """splitmix64 finaliser, vectorised over a uint64 array (wrap-around arithmetic)."""
    return kernels.mix64(np.ascontiguousarray(np.asarray(x, dtype=np.uint64).reshape(-1)))


def hash_strings(values: Any) -> np.ndarray:
    """First 8 bytes of BLAKE2b of each value (bytes as they are, anything else as UTF-8 text)."""
    out = np.empty(len(values), np.uint64)
    for i, v in enumerate(values):
        b = v if isinstance(v, bytes | bytearray) else str(v).encode("utf-8")
        out[i] = int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
    return out


def salts(seed: int) -> np.ndarray:
    """Four 64-bit salts from ``np.random.default_rng(seed)``: type ties, sample keys, candidate order, typeless."""
    return np.random.default_rng(seed).integers(0, 2**64, size=4, dtype=np.uint64, endpoint=False)


def _rank(h: np.ndarray) -> np.ndarray:
    order = np.lexsort((np.arange(len(h)), h))
    rank = np.empty(len(h), np.int64)
    rank[order] = np.arange(len(h), dtype=np.int64)
    return rank


def type_rank(type_hash: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Seeded tie order of types: rank[t] = position of type t when sorted by mix(hash(name) ^ salt); equal hashes
    (only identical names) fall back to column order."""
    return _rank(mix(type_hash ^ salt))


# A constant that separates the sample tie order of sample pruning from the typeless fill order, both derived
# from salt 3 (a fifth salt drawn from the generator could change nothing today, but deriving keeps the four
# salts of every recorded selection exactly as they were).
_PRUNE_SAMPLES = np.uint64(0x5A3C_96E1_0F2B_7D48)


def sample_rank(sample_key_hash: np.ndarray, seed_salts: np.ndarray) -> np.ndarray:
    """Seeded tie order of samples (sample pruning): ascending ``mix(mix(key ^ salt1) ^ mix(salt3 ^ C))``; equal
    keys fall back to row order (pass unique keys)."""
    skey = mix(sample_key_hash ^ seed_salts[1])
    return _rank(mix(skey ^ mix(np.asarray([seed_salts[3] ^ _PRUNE_SAMPLES]))[0]))


def key_hashes(sample_keys: Any, n_samples: int) -> np.ndarray:
    """One uint64 per sample: integers as they are, strings/bytes hashed; default the row index."""
    if sample_keys is None:
        return np.arange(n_samples, dtype=np.uint64)
    keys = np.asarray(sample_keys)
    if keys.ndim != 1 or len(keys) != n_samples:
        raise DivscopeError(f"sample_keys must hold one key per pool row ({n_samples}), got shape {keys.shape}; "
                            "pass the pool's record ids or content hashes")
    if keys.size == 0:  # no eligible row (a filter left none): np.asarray([]) is float64, and there is nothing to key
        return np.zeros(0, dtype=np.uint64)
    if keys.dtype.kind == "u":
        return keys.astype(np.uint64)
    if keys.dtype.kind == "i":
        return keys.astype(np.int64).view(np.uint64)
    if keys.dtype.kind in "USO":
        return hash_strings(list(sample_keys))
    raise DivscopeError(f"sample_keys must be integers or strings, got dtype {keys.dtype}; "
                        "pass the pool's record ids or content hashes")
