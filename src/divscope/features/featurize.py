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

Levels are ``Featurizer`` objects (:mod:`divscope.features.base`): ``normalize(options, n_samples) -> dict``,
``identity(config) -> str`` and ``build(ws, side, texts, config, stages) -> Built``. The three levels are
registered below; another one registers with ``register_featurizer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError, MissingFeaturesError, StaleFeaturesError
from divscope.features.base import Stages, featurizer, level_names, register_featurizer
from divscope.features.incidence import SIDES, Incidence
from divscope.features.macro import MacroFeaturizer
from divscope.features.meso import MesoFeaturizer
from divscope.features.micro import MicroFeaturizer
from divscope.features.tagging import REQUEST_OPTIONS
from divscope.io.workspace import Workspace
from divscope.store.atomic import atomic_path, write_json
from divscope.store.failpoint import failpoint

CACHE_VERSION = 1
ENTRY_FILE = "entry.json"
LATEST_FILE = "latest.json"
VERIFIED_FILE = ".verified.json"  # a fingerprint check remembered (see _load_entry): a local memo of this
# machine (file signatures with inode and mtime), hidden, so it is never part of the outputs compared or shipped

for _f in (MacroFeaturizer(), MesoFeaturizer(), MicroFeaturizer()):
    register_featurizer(_f)


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


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise DivscopeError(f"unknown side {side!r}: choose instruction or response")


def features_dir(ws: Workspace, side: str, level: str) -> Path:
    return ws.path / "features" / f"{side}-{level}"


def cache_key(pool_fingerprint: str, level: str, side: str, config: dict[str, Any], identity: str) -> str:
    if level == "meso":  # the endpoint tagger's timeout, retries, concurrency: not what the features are
        config = {k: v for k, v in config.items() if k not in REQUEST_OPTIONS}
    payload = json.dumps({"v": CACHE_VERSION, "pool": pool_fingerprint, "level": level, "side": side,
                          "config": config, "identity": identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _signature(path: Path) -> list[list[Any]]:
    """(name, size, mtime_ns, inode) of the files an incidence is loaded from: any rewrite changes it."""
    out = []
    for name in ("matrix.npz", "incidence.json"):
        st = (path / name).stat()
        out.append([name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def _load_entry(path: Path, pool_fingerprint: str, n_samples: int) -> Incidence:
    """Load and verify one cache entry; any inconsistency raises ValueError (caller rebuilds).

    Recomputing the incidence's fingerprint reads every nonzero (a third of a second at 15M), so a successful
    check is remembered in ``.verified.json`` with the files' signature (``_signature``); while the signature
    and the recorded fingerprint are unchanged, later loads take the recorded fingerprint as it is."""
    try:
        entry = json.loads((path / ENTRY_FILE).read_text(encoding="utf-8"))
        signature = _signature(path)
        try:
            memo = json.loads((path / VERIFIED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = None
        trusted = memo == {"signature": signature, "fingerprint": entry.get("incidence_fingerprint")}
        inc = Incidence.load(path, verify=not trusted)
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
    if not trusted:
        with contextlib.suppress(OSError):  # a read-only cache is only slower
            write_json(path / VERIFIED_FILE, {"signature": signature, "fingerprint": inc.fingerprint})
    return inc


def _record_latest(ws: Workspace, side: str, level: str, key: str) -> None:
    write_json(features_dir(ws, side, level) / LATEST_FILE, {"key": key, "time": time.time()})


def resolve_config(ws: Workspace, level: str, side: str, **options: Any) -> tuple[dict[str, Any], str, str]:
    """(normalised config, model identity, cache key) for a request, without loading any model."""
    _check_side(side)
    level_featurizer = featurizer(level)
    pool = ws.pool
    config = level_featurizer.normalize(dict(options), len(pool))
    identity = level_featurizer.identity(config)
    return config, identity, cache_key(pool.fingerprint, level, side, config, identity)


def featurize_result(ws: Workspace | str | Path, level: str, side: str, *, rebuild: bool = False,
                     engine: Any = None, **options: Any) -> FeaturizeResult:
    """Like :func:`featurize` but also says whether it was a cache hit, where it lives and stage times.

    ``engine``: ``local`` (default) or ``ray`` (an ``backend.Backend`` for a cluster address): where the
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
    from divscope.backend import use_backend
    from divscope.io.workspace import pool_texts

    with use_backend(engine):
        with stages("read texts"):
            texts = pool_texts(ws, side)
        built = featurizer(level).build(ws, side, texts, config, stages)
    inc_config = dict(config)
    inc_config["model_identity"] = identity
    inc_config["provenance"] = built.provenance
    with stages("save"):
        inc = Incidence(built.matrix, list(built.type_names), level, side, _jsonable(inc_config),
                        pool.fingerprint)
        with atomic_path(path) as tmp:
            inc.save(tmp)
            failpoint("featurize:entry-tmp")  # the matrix written, the entry not (kill tests)
            digests = {}
            for name, arr in built.extras.items():
                np.save(tmp / name, np.asarray(arr), allow_pickle=False)
                digests[name] = _sha(tmp / name)
            write_json(tmp / ENTRY_FILE, {
                "key": key, "level": level, "side": side, "config": config, "identity": identity,
                "pool_fingerprint": pool.fingerprint, "incidence_fingerprint": inc.fingerprint,
                "extras": digests, "times": stages.times, "built_at": time.time(), "cache_version": CACHE_VERSION,
            })
        failpoint("featurize:entry-final")  # the entry is in place, latest.json not yet (kill tests)
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
    featurizer(level)  # an unknown level is a one-line error
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
        raise MissingFeaturesError(f"no {side}-{level} features in {ws.path}: run "
                            f"`divscope featurize {shlex.quote(str(ws.path))} --level {level} --side {side}` first")
    return entries[-1]


def load_incidence(ws: Workspace | str | Path, side: str, level: str, key: str | None = None) -> Incidence:
    """The cached incidence for (side, level): ``key`` if given, else the most recently featurized one.

    Raises MissingFeaturesError when there is none, StaleFeaturesError when it was built for another pool
    (re-ingested workspace) or is damaged.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    path = entry_path(ws, side, level, key)
    pool = ws.pool
    try:
        return _load_entry(path, pool.fingerprint, len(pool))
    except ValueError as e:
        raise StaleFeaturesError(f"{side}-{level} features in {path} are stale or damaged ({e}); run "
                            f"`divscope featurize {shlex.quote(str(ws.path))} --level {level} --side {side}` again") from e


def entry_path(ws: Workspace | str | Path, side: str, level: str, key: str | None = None) -> Path:
    """The cache folder of the (side, level) features of ``key``, or of the most recently featurized ones."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    return features_dir(ws, side, level) / key if key else latest_entry(ws, side, level)


def load_extra(ws: Workspace | str | Path, side: str, level: str, name: str, key: str | None = None) -> np.ndarray:
    """An extra array stored beside an incidence, e.g. ``lengths.npy`` of the latest micro features."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    path = features_dir(ws, side, level) / key if key else latest_entry(ws, side, level)
    if not (path / name).is_file():
        raise MissingFeaturesError(f"{path} has no {name}: run `divscope featurize {shlex.quote(str(ws.path))} --level {level} "
                                   f"--side {side} --rebuild`")
    return np.load(path / name, allow_pickle=False)


def clear_cache(ws: Workspace | str | Path, side: str | None = None, level: str | None = None) -> int:
    """Remove cached incidences (all, or of one side / level); returns how many entries were removed."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    removed = 0
    for s in [side] if side else SIDES:
        for lv in [level] if level else level_names():
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
