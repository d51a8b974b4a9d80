"""Byte-identity harness: the bytes divscope produced before a refactoring, recorded as sha256 digests.

``python tests/identity.py record`` (run once, on the commit *before* a change that must keep behaviour) builds a
400-pair real pool, its features at the three levels on both sides, and a selection grid over every strategy,
then writes ``tests/data/identity/digests.json`` and copies the macro and meso cache entries (and embeddings)
into ``tests/data/identity/cache/``. ``tests/test_identity.py`` rebuilds everything and compares.

Why the macro/meso entries are stored instead of rebuilt: they come from float embeddings, whose last bits
may differ between CPUs (the kernel a BLAS picks depends on the instruction set), so a digest of them would
test the machine, not divscope. The test copies them into the workspace, where the feature cache must still
accept them (their cache keys must not change: "caches stay valid"); micro features (exact integer counts)
are rebuilt and compared byte for byte, and so is every subset selected from all of them.

The digests were recorded before the engine's options existed, so the grids run with the options that reproduce
that behaviour (``LEGACY``: typeless samples included); tests/test_identity.py checks the new default separately.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "identity"
DIGESTS = DATA / "digests.json"
CACHE = DATA / "cache"
SOURCE = "builtin:sharegpt-pairs?n=400&seed=1"
SIDES = ("instruction", "response")
STORED_LEVELS = ("macro", "meso")
GRID = {"sizes": [40], "levels": [0.0, 0.5, 1.0], "seeds": [0, 1]}
MANIFEST_FIELDS = ("rows", "ids", "k", "k_min", "k_max", "types_covered", "pool_size", "eligible")
LEGACY = {"typeless": "include"}  # the recorded behaviour (divscope.select.builtin.LEGACY_OPTIONS)
# The recorded macro features were embedded on torch, the only runtime then (the default is now auto: onnx on a CPU)
LEGACY_FEATURES: dict[str, dict[str, Any]] = {"macro": {"runtime": "torch"}, "meso": {}}


def sha(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def build_pool(ws: Path) -> None:
    import divscope

    divscope.ingest(SOURCE, ws)


def features_dir(ws: Path, side: str, level: str) -> Path:
    return ws / "features" / f"{side}-{level}"


def _entry(ws: Path, side: str, level: str) -> Path:
    latest = json.loads((features_dir(ws, side, level) / "latest.json").read_text(encoding="utf-8"))
    return features_dir(ws, side, level) / latest["key"]


def micro_digests(ws: Path) -> dict[str, str]:
    """Build micro features (exact) on both sides; digests of what the cache entry holds, and its key."""
    from divscope.features.featurize import featurize

    out = {}
    for side in SIDES:
        featurize(ws, "micro", side)
        entry = _entry(ws, side, "micro")
        out[f"features/{side}-micro/key"] = entry.name
        for name in ("matrix.npz", "incidence.json", "lengths.npy"):
            out[f"features/{side}-micro/{name}"] = sha(entry / name)
    return out


def install_stored(ws: Path) -> None:
    """Copy the recorded macro/meso entries and embeddings into ``ws`` (as a cache written by an older build)."""
    for src in sorted(CACHE.iterdir()):
        shutil.copytree(src, ws / "features" / src.name, dirs_exist_ok=True)


def grid_digests(ws: Path, out: Path, options: dict[str, Any] | None = None) -> dict[str, str]:
    """Every strategy at three levels and two seeds, plus a length-controlled response-micro grid; ``options``
    (default ``LEGACY``) go to every selection."""
    from divscope.select.strategies import ALL
    from divscope.select.subsets import run_grid

    digests = {}
    runs = [("plain", {}), ("length", {"length_range": "40:400"})]
    for label, extra in runs:
        strategies = list(ALL) if label == "plain" else ["response-micro", "random"]
        manifests, _ = run_grid(ws, out / label, strategies, GRID["sizes"], GRID["levels"], GRID["seeds"], **extra,
                                **(LEGACY if options is None else options))
        for m in manifests:
            name = f"grid/{label}/{m['strategy']}/{m['file']}"
            digests[name] = sha(out / label / m["strategy"] / m["file"])
            digests[name + ":manifest"] = hashlib.sha256(
                json.dumps({k: m.get(k) for k in MANIFEST_FIELDS}, sort_keys=True).encode()).hexdigest()
    return digests


def compute(ws: Path, out: Path) -> dict[str, str]:
    """All digests for a workspace whose pool is built and whose macro/meso entries are in place."""
    import divscope
    from divscope.features.featurize import featurize_result

    digests = {"pool/fingerprint": divscope.Workspace(ws).pool.fingerprint}
    digests.update(micro_digests(ws))
    for side in SIDES:
        for level in STORED_LEVELS:  # found in the cache (stored or just built), never rebuilt here
            res = featurize_result(ws, level, side, **LEGACY_FEATURES[level])
            digests[f"features/{side}-{level}/key"] = res.key
            digests[f"features/{side}-{level}/status"] = res.status
    digests.update(grid_digests(ws, out))
    return digests


def record(work: Path) -> dict[str, Any]:
    from divscope.features.featurize import featurize

    ws = work / "ws"
    build_pool(ws)
    for side in SIDES:
        for level in STORED_LEVELS:
            featurize(ws, level, side, **LEGACY_FEATURES[level])
    if CACHE.exists():
        shutil.rmtree(CACHE)
    for side in SIDES:
        for level in STORED_LEVELS:
            entry = _entry(ws, side, level)
            shutil.copytree(entry, CACHE / f"{side}-{level}" / entry.name)
        for emb in (ws / "features" / "_embeddings" / side).iterdir():
            shutil.copytree(emb, CACHE / "_embeddings" / side / emb.name)
    digests = compute(ws, work / "grid")
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return digests


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python tests/identity.py record")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{len(record(Path(tmp)))} digests -> {DIGESTS}")
