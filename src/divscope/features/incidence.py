"""``Incidence``: the one object every featurizer returns and the selection engine consumes.

A boolean sample x type matrix (CSR, rows aligned with the pool), a readable name per type, and how it was made.
Nothing downstream needs to know whether the types are clusters, tags or tokens.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.store.atomic import atomic_path, write_json

LEVELS = ("macro", "meso", "micro")
_HASH_CHUNK = 1 << 22
SIDES = ("instruction", "response")


@dataclass(frozen=True)
class Incidence:
    matrix: sp.csr_matrix
    type_names: list[str]
    level: str
    side: str
    config: dict[str, Any] = field(default_factory=dict)
    pool_fingerprint: str = ""
    fingerprint: str = ""

    def __post_init__(self) -> None:
        # Canonical boolean CSR with the narrowest index type, copying only what needs to change: at a
        # million samples the matrix is the largest object in memory (benchmarks/scaling.py).
        m = self.matrix
        if not isinstance(m, sp.csr_matrix):
            m = sp.csr_matrix(m)
        if m.dtype != np.bool_:
            m = m.astype(np.bool_)
        if max(m.nnz, *m.shape) < 2**31 and (m.indices.dtype != np.int32 or m.indptr.dtype != np.int32):
            m = sp.csr_matrix((m.data, m.indices.astype(np.int32), m.indptr.astype(np.int32)), shape=m.shape,
                              copy=False)
        m.sum_duplicates()
        if not m.data.all():  # (a pass over the data is cheaper than scipy's over the index arrays)
            m.eliminate_zeros()
        m.sort_indices()
        object.__setattr__(self, "matrix", m)
        if m.shape[1] != len(self.type_names):
            raise ValueError(f"matrix has {m.shape[1]} columns but {len(self.type_names)} type names")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.compute_fingerprint())

    @property
    def n_samples(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_types(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def name(self) -> str:
        """Strategy-style name, e.g. ``response-micro``."""
        return f"{self.side}-{self.level}"

    def compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.level, self.side, self.config, self.pool_fingerprint], sort_keys=True,
                            default=str).encode())
        m = self.matrix
        for arr in (np.asarray(m.shape, np.int64), m.indptr, m.indices):
            for start in range(0, len(arr), _HASH_CHUNK):  # the int64 bytes, a slice at a time (no full copy)
                h.update(arr[start:start + _HASH_CHUNK].astype(np.int64).tobytes())
        h.update("\x00".join(self.type_names).encode())
        return h.hexdigest()[:16]

    def types_per_sample(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    def save(self, directory: str | Path) -> Path:
        """Write ``matrix.npz`` + ``incidence.json`` into ``directory`` atomically (a directory rename)."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            m = self.matrix
            np.savez(tmp / "matrix.npz", indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.int32),
                     shape=np.asarray(m.shape, np.int64))
            write_json(tmp / "incidence.json", {
                "level": self.level, "side": self.side, "config": self.config,
                "pool_fingerprint": self.pool_fingerprint, "fingerprint": self.fingerprint,
                "type_names": self.type_names,
            })
        return directory

    @staticmethod
    def load(directory: str | Path, verify: bool = True) -> Incidence:
        """The incidence saved in ``directory``; ``verify``: recompute its fingerprint and compare it with the
        recorded one (ValueError if they differ); without, the recorded fingerprint is taken as it is."""
        directory = Path(directory)
        meta = json.loads((directory / "incidence.json").read_text(encoding="utf-8"))
        z = _read_npz(directory / "matrix.npz", checked=verify)
        shape = tuple(int(x) for x in z["shape"])
        indices, indptr = z["indices"], z["indptr"]
        if max(len(indices), *shape) < 2**31:  # int32 like indices, or scipy widens both to int64
            indptr = indptr.astype(np.int32)
        m = sp.csr_matrix((np.ones(len(indices), np.bool_), indices, indptr), shape=shape, copy=False)
        if not verify:  # as saved: the canonical matrix whose fingerprint was checked before
            m.has_canonical_format = True
        inc = Incidence(m, meta["type_names"], meta["level"], meta["side"], meta["config"],
                        meta["pool_fingerprint"], "" if verify else meta["fingerprint"])
        if inc.fingerprint != meta["fingerprint"]:
            raise ValueError(f"{directory}: incidence fingerprint mismatch (corrupted cache entry)")
        return inc


def _read_npz(path: Path, checked: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``. ``checked=False``: members stored uncompressed (as ``np.savez`` writes them) are
    read straight from their offsets, without zipfile's CRC pass (the caller has verified the file before and
    knows it unchanged); anything else goes through ``np.load``."""
    if not checked:
        try:
            out = {}
            with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
                for info in zf.infolist():
                    if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                        raise ValueError(info.filename)
                    fh.seek(info.header_offset)
                    header = fh.read(30)
                    if header[:4] != b"PK\x03\x04":
                        raise ValueError(info.filename)
                    name_len, extra_len = struct.unpack("<HH", header[26:30])
                    fh.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(fh)
                    shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                             else np.lib.format.read_array_header_2_0)(fh)
                    if fortran or dtype.hasobject:
                        raise ValueError(info.filename)
                    count = int(np.prod(shape))
                    arr = np.fromfile(fh, dtype=dtype, count=count)
                    if arr.size != count:
                        raise ValueError(info.filename)
                    out[info.filename[:-4]] = arr.reshape(shape)
            return out
        except (ValueError, OSError, zipfile.BadZipFile):
            pass
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}
