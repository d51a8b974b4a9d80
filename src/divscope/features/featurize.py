"""``featurize(ws, level, side, **options) -> Incidence`` with a content-addressed cache in the workspace.

Cache layout (one folder per built incidence)::

    WS/features/<side>-<level>/<key>/matrix.npz        Incidence.save
    WS/features/<side>-<level>/<key>/incidence.json
    WS/features/<side>-<level>/<key>/<extras>          e.g. lengths.npy (micro), labels.npy (macro)
    WS/features/<side>-<level>/<key>/entry.json        key inputs, sha256 of every extra file, build times
    WS/features/<side>-<level>/latest.json             the entry featurized most recently (built or reused)

``key = sha256(pool fingerprint, level, side, normalised options, model/tokenizer identity)``. The identity is
computed from model files without loading the model, so a cache hit loads no model at all. An entry appears by
one directory rename (``atomic_path``), so a killed build leaves no entry; an entry whose matrix fingerprint,
extra-file hash, pool fingerprint or row count does not check out is treated as absent and rebuilt.

Levels are plugged in through ``LEVELS``: each maps to a module path imported lazily, which must define
``normalize(options, n_samples) -> dict``, ``identity(config) -> str`` and
``build(ws, side, texts, config, stages) -> Built``. ``meso`` goes through :mod:`divscope.features.meso`'s
``build_meso(texts, config, cache_dir)`` via the adapter at the bottom of this file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from divscope.errors import DivscopeError
from divscope.features.incidence import Incidence
from divscope.io.atomic import atomic_path, write_json
from divscope.io.workspace import Workspace

LEVEL_NAMES = ("macro", "meso", "micro")
SIDE_NAMES = ("instruction", "response")
CACHE_VERSION = 1
ENTRY_FILE = "entry.json"
LATEST_FILE = "latest.json"

# level -> "module:attribute prefix" (imported only when that level is used)
LEVELS: dict[str, str] = {
    "micro": "divscope.features.micro",
    "macro": "divscope.features.macro",
    "meso": "divscope.features.featurize:_MesoAdapter",
}


@dataclass
class Built:
    """What a level's ``build`` returns: the incidence parts plus extra arrays stored beside it."""

    matrix: sp.csr_matrix
    type_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class Stages:
    """Wall time per named stage, in order (``with stages("tokenize"): ...``)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class FeaturizeResult:
    incidence: Incidence
    path: Path
    key: str
    status: str  # "hit" | "built" | "rebuilt"
    times: dict[str, float]
    note: str = ""

    @property
    def cache_hit(self) -> bool:
        return self.status == "hit"


def _level_module(level: str) -> Any:
    if level not in LEVELS:
        raise DivscopeError(f"unknown level {level!r}: choose one of {', '.join(LEVEL_NAMES)}")
    target = LEVELS[level]
    mod_name, _, attr = target.partition(":")
    mod = importlib.import_module(mod_name)
    return getattr(mod, attr) if attr else mod


def _check_side(side: str) -> None:
    if side not in SIDE_NAMES:
        raise DivscopeError(f"unknown side {side!r}: choose instruction or response")


def features_dir(ws: Workspace, side: str, level: str) -> Path:
    return ws.path / "features" / f"{side}-{level}"


def cache_key(pool_fingerprint: str, level: str, side: str, config: dict[str, Any], identity: str) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "pool": pool_fingerprint, "level": level, "side": side,
                          "config": config, "identity": identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_entry(path: Path, pool_fingerprint: str, n_samples: int) -> Incidence:
    """Load and verify one cache entry; any inconsistency raises ValueError (caller rebuilds)."""
    try:
        entry = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
        inc = Incidence.load(path)
        for name, digest in entry.get("extras", {}).items():
            if _sha(path / name) != digest:
                raise ValueError(f"{path / name}: hash mismatch")
    except ValueError:
        raise
    except Exception as e:  # missing file, bad zip, bad json: all mean "not a usable entry"
        raise ValueError(f"{path}: unreadable cache entry ({e.__class__.__name__}: {e})") from e
    if inc.pool_fingerprint != pool_fingerprint or inc.n_samples != n_samples:
        raise ValueError(f"{path}: built for another pool")
    if entry.get("incidence_fingerprint") != inc.fingerprint:
        raise ValueError(f"{path}: entry/incidence fingerprint mismatch")
    return inc


def _record_latest(ws: Workspace, side: str, level: str, key: str) -> None:
    write_json(features_dir(ws, side, level) / LATEST_FILE, {"key": key, "time": time.time()})


def resolve_config(ws: Workspace, level: str, side: str, **options: Any) -> tuple[dict[str, Any], str, str]:
    """(normalised config, model identity, cache key) for a request, without loading any model."""
    _check_side(side)
    mod = _level_module(level)
    pool = ws.pool
    config = mod.normalize(dict(options), len(pool))
    identity = mod.identity(config)
    return config, identity, cache_key(pool.fingerprint, level, side, config, identity)


def featurize_result(ws: Workspace | str | Path, level: str, side: str, *, rebuild: bool = False,
                     engine: Any = None, **options: Any) -> FeaturizeResult:
    """Like :func:`featurize` but also says whether it was a cache hit, where it lives and stage times.

    ``engine``: ``local`` (default) or ``ray`` (an ``executor.Engine`` for a cluster address): where the
    per-sample work runs. It is not part of the cache key: both engines build the same bytes.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    stages = Stages()
    with stages("resolve"):
        config, identity, key = resolve_config(ws, level, side, **options)
        pool = ws.pool
        n = len(pool)
        path = features_dir(ws, side, level) / key
    status, note = "built", ""
    if path.exists() and not rebuild:
        try:
            with stages("load"):
                inc = _load_entry(path, pool.fingerprint, n)
            _record_latest(ws, side, level, key)
            return FeaturizeResult(inc, path, key, "hit", stages.times)
        except ValueError as e:
            status, note = "rebuilt", str(e)
    from divscope.features.executor import pool_texts, use_engine

    mod = _level_module(level)
    with use_engine(engine):
        with stages("read texts"):
            texts = pool_texts(ws, side)
        built = mod.build(ws, side, texts, config, stages)
    inc_config = dict(config)
    inc_config["model_identity"] = identity
    inc_config["provenance"] = built.provenance
    with stages("save"):
        inc = Incidence(built.matrix, list(built.type_names), level, side, _jsonable(inc_config),
                        pool.fingerprint)
        with atomic_path(path) as tmp:
            inc.save(tmp)
            digests = {}
            for name, arr in built.extras.items():
                np.save(tmp / name, np.asarray(arr), allow_pickle=False)
                digests[name] = _sha(tmp / name)
            write_json(tmp / ENTRY_FILE, {
                "key": key, "level": level, "side": side, "config": config, "identity": identity,
                "pool_fingerprint": pool.fingerprint, "incidence_fingerprint": inc.fingerprint,
                "extras": digests, "times": stages.times, "built_at": time.time(), "cache_version": CACHE_VERSION,
            })
        _record_latest(ws, side, level, key)
    return FeaturizeResult(inc, path, key, status, stages.times, note)


def featurize(ws: Workspace | str | Path, level: str, side: str, **options: Any) -> Incidence:
    """Features of ``level`` (macro | meso | micro) for ``side`` (instruction | response), cached in ``ws``.

    Options per level: micro ``tokenizer, unit, low, high, lowercase``; macro ``embedder, min_cluster_size,
    min_samples, noise, reduce, pca_dims, seed, impl``; meso: whatever ``build_meso`` accepts.
    ``rebuild=True`` ignores the cache; ``engine="ray"`` runs the per-sample work on a Ray cluster.
    """
    return featurize_result(ws, level, side, **options).incidence


def list_entries(ws: Workspace | str | Path, side: str, level: str) -> list[Path]:
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    d = features_dir(ws, side, level)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (p / ENTRY_FILE).is_file()), key=lambda p: (p / ENTRY_FILE).stat().st_mtime)


def latest_entry(ws: Workspace | str | Path, side: str, level: str) -> Path:
    """The cache folder of the most recently featurized (side, level) incidence."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    _check_side(side)
    if level not in LEVEL_NAMES:
        raise DivscopeError(f"unknown level {level!r}: choose one of {', '.join(LEVEL_NAMES)}")
    d = features_dir(ws, side, level)
    latest = d / LATEST_FILE
    if latest.is_file():
        try:
            key = json.loads(latest.read_text(encoding="utf-8"))["key"]
            if (d / key / ENTRY_FILE).is_file():
                return d / key
        except (ValueError, KeyError):
            pass
    entries = list_entries(ws, side, level)
    if not entries:
        raise DivscopeError(f"no {side}-{level} features in {ws.path}: run "
                            f"`divscope featurize {ws.path} --level {level} --side {side}` first")
    return entries[-1]


def load_incidence(ws: Workspace | str | Path, side: str, level: str, key: str | None = None) -> Incidence:
    """The cached incidence for (side, level): ``key`` if given, else the most recently featurized one.

    Raises DivscopeError when there is none, or when it was built for another pool (re-ingested workspace).
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    path = features_dir(ws, side, level) / key if key else latest_entry(ws, side, level)
    pool = ws.pool
    try:
        return _load_entry(path, pool.fingerprint, len(pool))
    except ValueError as e:
        raise DivscopeError(f"{side}-{level} features in {path} are stale or damaged ({e}); run "
                            f"`divscope featurize {ws.path} --level {level} --side {side}` again") from e


def load_extra(ws: Workspace | str | Path, side: str, level: str, name: str, key: str | None = None) -> np.ndarray:
    """An extra array stored beside an incidence, e.g. ``lengths.npy`` of the latest micro features."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    path = features_dir(ws, side, level) / key if key else latest_entry(ws, side, level)
    if not (path / name).is_file():
        raise DivscopeError(f"{path} has no {name}")
    return np.load(path / name, allow_pickle=False)


def clear_cache(ws: Workspace | str | Path, side: str | None = None, level: str | None = None) -> int:
    """Remove cached incidences (all, or of one side / level); returns how many entries were removed."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    removed = 0
    for s in [side] if side else SIDE_NAMES:
        for lv in [level] if level else LEVEL_NAMES:
            d = features_dir(ws, s, lv)
            if d.is_dir():
                removed += len(list_entries(ws, s, lv))
                shutil.rmtree(d)
    return removed


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ------------------------------------------------------------------------------------------------- meso

class _MesoAdapter:
    """Bridges the registry to ``divscope.features.meso.build_meso(texts, config, cache_dir)``.

    The meso module is imported only when the meso level is used. Options are passed through as given
    (after JSON normalisation); if the module defines ``normalize_config(options, n_samples)`` or
    ``config_identity(config)`` (e.g. the tagger model's identity), they are used for the cache key.
    """

    @staticmethod
    def _module() -> Any:
        try:
            return importlib.import_module("divscope.features.meso")
        except ModuleNotFoundError as e:
            if e.name == "divscope.features.meso":
                raise DivscopeError("the meso level is not available in this build "
                                    "(divscope.features.meso is missing)") from e
            raise

    @classmethod
    def normalize(cls, options: dict[str, Any], n_samples: int) -> dict[str, Any]:
        mod = cls._module()
        options = {k: v for k, v in options.items() if v is not None}
        if hasattr(mod, "normalize_config"):
            options = mod.normalize_config(options, n_samples)
        return _jsonable(options)

    @classmethod
    def identity(cls, config: dict[str, Any]) -> str:
        mod = cls._module()
        if hasattr(mod, "config_identity"):
            return str(mod.config_identity(config))
        return f"meso:{getattr(mod, 'VERSION', getattr(mod, '__version__', '0'))}"

    @classmethod
    def build(cls, ws: Workspace, side: str, texts: list[str], config: dict[str, Any], stages: Stages) -> Built:
        mod = cls._module()
        with stages("tag+cluster"):
            matrix, names, prov = mod.build_meso(texts, dict(config), ws.subdir("cache", "meso"))
        prov = dict(prov or {})
        prov.pop("run", None)  # cache hits and timings of this build: not part of what the features are
        return Built(sp.csr_matrix(matrix), list(names), prov)


def level_module(level: str) -> Any:
    """The registry entry for ``level`` (imports it)."""
    return _level_module(level)

