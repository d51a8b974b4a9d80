"""The engine's pool-derived arrays in the feature cache, and the remembered fingerprint check of an entry.

A Selector keeps the CSC view and the type / record-id hashes of an incidence in its cache entry (``engine/``),
keyed to the incidence and pool fingerprints: a later Selector takes them from there, and arrays left over from
another incidence are never used. Loading an entry remembers a passed fingerprint check (``.verified.json``) until
its files change.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import divscope
from divscope.errors import StaleFeaturesError
from divscope.features.featurize import ENTRY_FILE, VERIFIED_FILE, entry_path, featurize, load_incidence
from divscope.features.incidence import Incidence
from divscope.select import Engine, engine, kernels, seeding
from divscope.select.strategies import Selector

pytestmark = pytest.mark.usefixtures("divscope_cache")
LEVELS = (0.0, 0.5, 1.0)


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    divscope.ingest("builtin:sharegpt-pairs?n=300&seed=1", path)
    featurize(path, "micro", "response")
    return path


def _rows(ws: Path, seed: int = 0, eligible: np.ndarray | None = None) -> list[list[int]]:
    sel = Selector(ws, eligible)
    return [sel.select("response-micro", 40, d, seed).rows.tolist() for d in LEVELS]


def _fresh(ws: Path, seed: int = 0, rows: np.ndarray | None = None) -> list[list[int]]:
    """What an engine built from nothing selects (pool rows)."""
    inc = load_incidence(ws, "response", "micro")
    ids = divscope.Workspace(ws).pool.ids
    rows = np.arange(inc.n_samples) if rows is None else rows
    sub = Incidence(inc.matrix[rows], inc.type_names, inc.level, inc.side)  # the type names key the tie order
    eng = Engine(sub, seed=seed, sample_keys=[ids[i] for i in rows])
    return [rows[eng.select(40, d).ids].tolist() for d in LEVELS]


def _permuted(ws: Path) -> None:
    """Rewrite the entry with its columns permuted (same shape, same nonzeros, each type keeps its name: the same
    selections), keeping the engine arrays of the old column order in the entry."""
    entry = entry_path(ws, "response", "micro")
    inc = Incidence.load(entry)
    perm = np.random.default_rng(0).permutation(inc.n_types)
    new = Incidence(inc.matrix[:, perm], [inc.type_names[i] for i in perm], inc.level, inc.side, inc.config,
                    inc.pool_fingerprint)
    assert new.fingerprint != inc.fingerprint
    new.save(entry.parent / "new")
    for name in ("matrix.npz", "incidence.json"):
        shutil.copyfile(entry.parent / "new" / name, entry / name)
    meta = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
    (entry / ENTRY_FILE).write_text(json.dumps({**meta, "incidence_fingerprint": new.fingerprint}), encoding="utf-8")


def test_engine_arrays_come_from_the_cache_and_never_from_another_incidence(ws: Path, monkeypatch) -> None:
    first = _rows(ws)
    assert first == _fresh(ws)
    assert len(list((entry_path(ws, "response", "micro") / "engine").iterdir())) == 1

    def rebuilt(*args, **kwargs):
        raise AssertionError("rebuilt what the feature cache holds")

    seed1 = _fresh(ws, seed=1)
    with monkeypatch.context() as mp:  # a later selector neither transposes nor hashes
        for owner in (kernels, seeding, engine):
            mp.setattr(owner, "transpose" if owner is kernels else "hash_strings", rebuilt)
        assert _rows(ws) == first
        assert _rows(ws, seed=1) == seed1  # other seeds, same arrays

    _permuted(ws)  # arrays of the old column order left in the entry: keyed to the old incidence, not used
    assert _rows(ws) == first == _fresh(ws)
    assert len(list((entry_path(ws, "response", "micro") / "engine").iterdir())) == 1  # the stale one replaced


def test_sub_pools_restrict_the_cached_arrays(ws: Path) -> None:
    n = len(divscope.Workspace(ws).pool)
    mask = np.arange(n) % 3 != 0
    _rows(ws)  # fills the cache
    assert _rows(ws, eligible=mask) == _fresh(ws, rows=np.flatnonzero(mask))
    backwards = np.flatnonzero(mask)[::-1].copy()  # another order: the engine builds its own CSC
    assert _rows(ws, eligible=backwards) == _fresh(ws, rows=backwards)


def test_fingerprint_check_is_remembered_until_the_files_change(ws: Path, monkeypatch) -> None:
    entry = entry_path(ws, "response", "micro")
    inc = load_incidence(ws, "response", "micro")
    assert json.loads((entry / VERIFIED_FILE).read_text(encoding="utf-8"))["fingerprint"] == inc.fingerprint

    def recomputed(self):
        raise AssertionError("fingerprint recomputed")

    with monkeypatch.context() as mp:
        mp.setattr(Incidence, "compute_fingerprint", recomputed)
        assert load_incidence(ws, "response", "micro").fingerprint == inc.fingerprint
    # another matrix under the same incidence.json: the signature changed, the check runs and fails
    matrix = entry / "matrix.npz"
    other = Incidence(inc.matrix[:, ::-1], inc.type_names, inc.level, inc.side)
    np.savez(matrix, indptr=other.matrix.indptr.astype(np.int64), indices=other.matrix.indices.astype(np.int32),
             shape=np.asarray(other.matrix.shape, np.int64))
    with pytest.raises(StaleFeaturesError, match="fingerprint mismatch"):
        load_incidence(ws, "response", "micro")


def test_trusted_load_reads_the_same_matrix_whatever_the_npz(ws: Path) -> None:
    """A trusted load reads np.savez's stored members straight from their offsets; a compressed file (or any
    other layout) goes through np.load: the same matrix either way."""
    entry = entry_path(ws, "response", "micro")
    checked = Incidence.load(entry)
    for save in (np.savez, np.savez_compressed):
        m = checked.matrix
        save(entry / "matrix.npz", indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.int32),
             shape=np.asarray(m.shape, np.int64))
        fast = Incidence.load(entry, verify=False)
        assert fast.fingerprint == checked.fingerprint == fast.compute_fingerprint()
        assert (fast.matrix != checked.matrix).nnz == 0 and fast.matrix.indices.dtype == checked.matrix.indices.dtype
        assert fast.matrix.indptr.tolist() == checked.matrix.indptr.tolist()
    # the stored layout is read without zipfile's CRC check (verified before): a wrong CRC shows which path ran
    np.savez(entry / "matrix.npz", indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.int32),
             shape=np.asarray(m.shape, np.int64))
    raw = bytearray((entry / "matrix.npz").read_bytes())
    at = raw.find(b"PK\x01\x02")  # the first central directory record; its CRC-32 is at offset 16
    raw[at + 16:at + 20] = bytes(4)
    (entry / "matrix.npz").write_bytes(bytes(raw))
    assert (Incidence.load(entry, verify=False).matrix != checked.matrix).nnz == 0
    with pytest.raises(zipfile.BadZipFile):
        Incidence.load(entry)


def test_prunings_come_from_the_cache_for_the_whole_pool_only(ws: Path, monkeypatch) -> None:
    first = _rows(ws, seed=3)
    stored = entry_path(ws, "response", "micro") / "engine-pruning" / "types-s3"
    assert len(list(stored.iterdir())) == 1
    half = np.arange(0, 300, 2)
    expected_half = _fresh(ws, seed=5, rows=half)

    def pruned(*args, **kwargs):
        raise AssertionError("pruned again what the feature cache holds")

    with monkeypatch.context() as mp:
        mp.setattr(kernels, "prune", pruned)
        assert _rows(ws, seed=3) == first
        with pytest.raises(AssertionError, match="pruned again"):  # another seed is pruned (and stored)
            _rows(ws, seed=4)
    assert _rows(ws, seed=5, eligible=half) == expected_half  # a sub-pool prunes itself, never the pool's
    assert [p.name for p in stored.parent.iterdir()] == ["types-s3"]  # the sub-pool's pruning is not stored


def test_cached_arrays_are_a_copy_on_write_map(ws: Path) -> None:
    """A later Selector maps the stored arrays instead of reading them whole; writable in memory (numba's
    compiled signatures are for writable arrays), the file untouched when they are written to."""
    first = _rows(ws)  # fills the cache
    arrays = Selector(ws).engine_arrays("response", "micro")
    crows = arrays["crows"]
    assert isinstance(crows, np.memmap) and crows.flags.writeable
    stored = next((entry_path(ws, "response", "micro") / "engine").iterdir()) / "crows.npy"
    before = stored.read_bytes()
    crows[:] = crows[::-1].copy()
    assert stored.read_bytes() == before
    assert _rows(ws) == first
