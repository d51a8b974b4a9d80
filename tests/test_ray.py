"""The Ray engine gives the same bytes as the local one: featurization (all three levels) and a two-cell grid,
on a local 2-CPU Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

POOL = "builtin:sharegpt-pairs?n=160&seed=11"

TWO_CELLS = {
    "name": "two-cells",
    "pool": {"source": POOL},
    "selection": {"strategies": ["response-micro"], "levels": 2, "sizes": [6]},
    "train": {"max_steps": 2, "batch_size": 3, "max_len": 48},  # 2 steps, both at lr > 0
    "evaluate": [{"eval_set": "alpaca_eval", "method": "nll", "limit": 3, "max_len": 64}],
}


@pytest.fixture(scope="module")
def ray_engine():
    from divscope.backend import Backend, ray_init

    eng = Backend("ray", num_cpus=2)
    ray_init(eng)
    yield eng
    ray.shutdown()


def _entry_files(path: Path) -> dict[str, bytes]:
    # entry.json holds build times; everything that *is* the features is compared byte for byte
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "entry.json"}


def _same_but_dir(a: Path, b: Path, rel: Path) -> bool:
    """Same bytes, except that manifests and cards name their own study folder (and hash that name)."""
    x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
    if not rel.name.endswith(".json"):
        return x == y
    jx, jy = (json.loads(t.replace(str(d).encode(), b"OUT")) for t, d in ((x, a), (y, b)))
    for j in (jx, jy):
        j.pop("input_sha256", None)
    return jx == jy


@pytest.mark.slow
def test_ray_featurization_is_byte_identical(tmp_path: Path, ray_engine) -> None:
    from divscope.features.featurize import featurize_result
    from divscope.io.ingest import ingest

    for name in ("local", "ray"):
        ingest([POOL], tmp_path / name)
    for level in ("micro", "macro", "meso"):
        local = featurize_result(tmp_path / "local", level, "response")
        remote = featurize_result(tmp_path / "ray", level, "response", engine=ray_engine)
        assert remote.status == "built" and remote.key == local.key
        assert _entry_files(remote.path) == _entry_files(local.path), level
        assert remote.incidence.n_types > 0
    # The ray-built cache is a normal cache: the local engine reuses it.
    again = featurize_result(tmp_path / "ray", "micro", "response")
    assert again.status == "hit"


@pytest.mark.slow
def test_ray_grid_of_two_cells_matches_local(tmp_path: Path, ray_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from divscope.experiment.runner import run_study
    from divscope.experiment.spec import parse_spec

    spec = parse_spec(TWO_CELLS)
    # a Ray cell trains on the CPUs granted to it (1 by default); the local run is given as many threads, since
    # CPU float reductions, hence the trained bytes, depend on the thread count
    monkeypatch.setenv("DIVSCOPE_TRAIN_THREADS", "1")
    local = run_study(spec, tmp_path / "local")
    remote = run_study(spec, tmp_path / "ray", engine=ray_engine)
    assert local["cells"] == remote["cells"] == 3 and local["failed"] == remote["failed"] == 0  # + the anchor
    rows = [json.loads(x) for x in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    local_rows = [json.loads(x) for x in (tmp_path / "local" / "results.jsonl").read_text().splitlines()]
    # disk_bytes counts train.json and eval results, whose wall times are written with as many digits as they have
    for a, b in zip(rows, local_rows, strict=True):
        assert abs(a.pop("disk_bytes") - b.pop("disk_bytes")) <= 64
    assert rows == local_rows
    assert len(rows) == 3 and all(isinstance(r["score"], float) for r in rows) and rows[0]["cell"] == "base"
    assert rows[1]["score"] != rows[2]["score"]  # the two cells trained different models
    subsets = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "subsets").rglob("*")
                     if p.is_file())
    assert subsets
    for rel in subsets:
        assert _same_but_dir(tmp_path / "ray", tmp_path / "local", rel), rel
    for name in ("analysis/slopes.csv", "analysis/correlations.csv"):
        if (tmp_path / "local" / name).is_file():
            assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    status = json.loads(next((tmp_path / "ray" / "cells").iterdir()).read_text())
    assert status["status"] == "done"
