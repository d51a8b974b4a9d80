""""Computed already?": one helper for every stage that keeps its result in a JSON file beside its work.

A stored result is reused only when the parameters it was computed with match the ones asked for now; they are
stored inside the result itself (top-level keys, so files written before this helper existed stay valid) and
compared by the digest of their canonical JSON. A result is written atomically, so a killed run leaves the old
result or none, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from divscope.store.atomic import atomic_path, write_json


def params_digest(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``params`` (key order and tuple/list spelling do not matter)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def stored_result(path: Path, params: dict[str, Any], valid: Callable[[dict[str, Any]], bool] | None = None
                  ) -> dict[str, Any] | None:
    """The result stored at ``path`` if it was computed with ``params`` (and passes ``valid``), else None."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict):
        return None
    if params_digest({k: stored.get(k) for k in params}) != params_digest(params):
        return None
    return stored if valid is None or valid(stored) else None


def cached_result(path: str | Path, params: dict[str, Any], compute: Callable[[], dict[str, Any]], *,
                  valid: Callable[[dict[str, Any]], bool] | None = None, force: bool = False) -> dict[str, Any]:
    """The result at ``path`` when computed with ``params``; otherwise ``compute()``, stored with ``params``.

    ``valid(result)``: a further condition for reuse (e.g. a judge run marked incomplete, a data file missing);
    ``force``: compute again whatever is stored.
    """
    path = Path(path)
    hit = None if force else stored_result(path, params, valid)
    if hit is not None:
        return hit
    result = {**compute(), **params}
    write_json(path, result)
    return result


def stored_arrays(directory: str | Path, params: dict[str, Any],
                  mmap: bool | str = False) -> dict[str, np.ndarray] | None:
    """The named arrays ``cached_arrays`` keeps in ``directory`` for ``params``, or None when there are none
    (or they are unreadable). ``mmap``: memory-mapped, so only the pages used are read: True read-only, ``"c"``
    copy-on-write (writable in memory, the file untouched: for arrays a numba kernel takes, whose compiled
    signatures are for writable arrays, or that are sorted in place)."""
    entry = Path(directory) / params_digest(params)[:20]
    try:
        names = json.loads((entry / "arrays.json").read_text(encoding="utf-8"))["names"]
        return {name: np.load(entry / f"{name}.npy", allow_pickle=False, mmap_mode=("r" if mmap is True else mmap) if mmap else None)
                for name in names}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_arrays(directory: str | Path, params: dict[str, Any],
                  compute: Callable[[], dict[str, np.ndarray]], mmap: bool | str = False) -> dict[str, np.ndarray]:
    """Named arrays kept in ``directory/<digest of params>/`` (one ``.npy`` per array), else ``compute()``d and
    stored there, replacing what ``directory`` held for other params.

    For derived data that is only ever a speed-up (its params digest names everything it depends on): an
    unreadable entry is computed again, and a store that cannot be written (a read-only workspace) is skipped.
    ``mmap``: stored arrays come back memory-mapped (see ``stored_arrays``).
    """
    directory = Path(directory)
    entry = directory / params_digest(params)[:20]
    stored = stored_arrays(directory, params, mmap)
    if stored is not None:
        return stored
    arrays = compute()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            if old.is_dir() and old.name != entry.name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        with atomic_path(entry) as tmp:
            tmp.mkdir()
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
            write_json(tmp / "arrays.json", {"names": sorted(arrays), **params})
    except OSError:
        pass
    return arrays
