"""Strategies and baselines on a real (small) featurized pool; subsets, manifests and grids on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import divscope
from divscope import DivscopeError
from divscope.cli import main
from divscope.select.baselines import distance_filter, k_center, random_subset
from divscope.select.settings import levels_of
from divscope.select.strategies import STRATEGIES, Selector, parse_strategies
from divscope.select.subsets import run_grid


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from divscope.features.featurize import featurize

    path = tmp_path_factory.mktemp("ws")
    divscope.ingest("builtin:sharegpt-pairs?n=400&seed=1", path)
    for side in ("instruction", "response"):
        featurize(path, "micro", side)
        featurize(path, "macro", side)
        featurize(path, "meso", side)  # offline tagger: ~5 s a side here
    return path


def test_parse_strategies() -> None:
    assert len(parse_strategies("all")) == 6
    assert parse_strategies("random,response-micro,random") == ["random", "response-micro"]
    with pytest.raises(DivscopeError, match="unknown strategy"):
        parse_strategies("response-nano")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_six_strategies_exact_and_in_pool(ws: Path, strategy: str) -> None:
    from divscope.features.featurize import featurize

    side, level = strategy.split("-")
    own = featurize(ws, level, side)  # the cached (side, level) entry, loaded by the featurize API
    sel = Selector(ws)
    covered = []
    for d in levels_of(7):
        sub = sel.select(strategy, 50, d, seed=0)
        assert len(sub.rows) == 50 == len(set(sub.rows.tolist()))
        assert sub.info["features_fingerprint"] == own.fingerprint  # the strategy's own side and level
        eng = sel.engine(*strategy.split("-"), 0)
        assert set(sub.rows.tolist()) <= set(eng.pool(sub.info["k"]).tolist())
        assert sub.info["types_covered"] == int((np.asarray(own.matrix[sub.rows].sum(axis=0)).ravel() > 0).sum())
        covered.append(sub.info["types_covered"])
    assert covered[-1] > covered[0]


def test_restricted_pool_selects_only_eligible(ws: Path) -> None:
    n = len(divscope.Workspace(ws).pool)
    eligible = np.zeros(n, bool)
    eligible[::2] = True
    sub = Selector(ws, eligible).select("response-micro", 40, 0.5, seed=0)
    assert all(r % 2 == 0 for r in sub.rows.tolist()) and len(sub.rows) == 40
    assert sub.info["eligible"] == eligible.sum()


def test_baselines(ws: Path) -> None:
    from divscope.features.macro import load_embeddings

    ids = divscope.Workspace(ws).pool.ids
    emb = np.asarray(load_embeddings(ws, "instruction"), np.float32)
    r = random_subset(ids, 30, seed=5)
    assert len(set(r.tolist())) == 30 and np.array_equal(r, random_subset(ids, 30, seed=5))
    assert not np.array_equal(r, random_subset(ids, 30, seed=6))
    kc = k_center(emb, ids, 20, seed=0)
    # Greedy farthest point: each new centre is at least as far from the earlier ones as any later centre is.
    gaps = [float((1 - emb[kc[:i]] @ emb[kc[i]]).min()) for i in range(1, 20)]
    assert all(a >= b - 1e-5 for a, b in zip(gaps, gaps[1:], strict=False))
    scores = np.arange(len(ids), dtype=float)
    dist = distance_filter(emb, scores, ids, 25, threshold=0.3, seed=0)
    sims = emb[dist] @ emb[dist].T - 2 * np.eye(25)
    assert sims.max() < 0.7 and dist[0] == len(ids) - 1  # highest score first
    with pytest.raises(DivscopeError, match="lower the threshold"):
        distance_filter(emb, scores, ids, 300, threshold=1.2, seed=0)


def test_select_cli_writes_deterministic_subset_and_manifest(ws: Path, tmp_path: Path) -> None:
    args = ["select", str(ws), "--strategy", "response-micro", "--diversity", "0.5", "--size", "60", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a.jsonl")]) == 0
    assert main([*args, "--out", str(tmp_path / "b" / "a.jsonl")]) == 0
    for name in ("a.jsonl", "a.jsonl.manifest.json"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    m = json.loads((tmp_path / "a.jsonl.manifest.json").read_text())
    for key in ("strategy", "diversity", "k", "k_min", "k_max", "pool_size", "types_covered", "seed",
                "pool_fingerprint", "features_fingerprint", "divscope_version"):
        assert key in m
    records, rejects = divscope.read_records(tmp_path / "a.jsonl")
    assert not rejects and [r.id for r in records] == m["ids"] and len(records) == 60
    assert (tmp_path / "dataset_info.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "response-micro", "--diversity", "2", "--size", "5"], "in [0, 1]"),
    (["--strategy", "response-micro", "--size", "5"], "needs --diversity"),
    (["--strategy", "response-micro", "--diversity", "0", "--size", "100000"], "choose a size N"),
    (["--strategy", "instruction-meso", "--diversity", "0", "--size", "5"], "divscope featurize"),
])
def test_select_user_errors(ws: Path, tmp_path: Path, args: list[str], message: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    if "instruction-meso" in args:  # a workspace whose meso level was never featurized
        bare = tmp_path / "bare"
        shutil.copytree(ws, bare)
        shutil.rmtree(bare / "features" / "instruction-meso")
        ws = bare
    assert main(["select", str(ws), *args, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_grid_skips_finished_subsets(ws: Path, tmp_path: Path) -> None:
    strategies = ["instruction-micro", "response-macro", "random"]
    manifests, built = run_grid(ws, tmp_path / "g", strategies, [20, 40], levels_of(3), [0])
    assert built == len(manifests) == 2 * 3 * 2 + 2
    again, built2 = run_grid(ws, tmp_path / "g", strategies, [20, 40], levels_of(3), [0])
    assert built2 == 0 and again == manifests
    index = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert len(index["subsets"]) == 14


def test_requests_record_engine_options_only_away_from_the_old_behaviour(ws: Path, tmp_path: Path) -> None:
    """``typeless: include``, ``spacing: k``, ``pruning: types`` select what divscope selected before these options
    existed, so a request with them is the request written then and a grid finished then is still finished; any
    other value (the new default ``typeless: exclude`` included) is recorded, so such a grid is selected again."""
    from divscope.select.subsets import request_of

    base = {"side": "instruction", "score_column": None, "threshold": 0.1}
    old = {**base, "typeless": "include", "spacing": "k", "pruning": "types"}
    new = {**base, "typeless": "exclude", "spacing": "coverage", "pruning": "samples"}
    assert request_of("instruction-micro", 20, 0.0, 0, old)["options"] == base
    assert request_of("instruction-micro", 20, 0.0, 0, new)["options"] == dict(sorted(new.items()))
    assert request_of("instruction-micro", 20, 0.0, 0, base)["options"] == {**base, "typeless": "exclude"}
    cells = (ws, tmp_path / "g", ["instruction-micro", "random"], [20], [0.0], [0])
    manifests, built = run_grid(*cells, typeless="include")
    assert built == 2 and all(m["request"]["options"] == {} for m in manifests)  # as written before the options
    assert run_grid(*cells, typeless="include")[1] == 0
    manifests, built = run_grid(*cells)  # the default: typeless samples excluded, another request
    assert built == 2 and all(m["request"]["options"] == {"typeless": "exclude"} for m in manifests)


def test_select_cli_takes_the_engine_options(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["select", str(ws), "-s", "instruction-micro", "-d", "0.5", "-n", "30"]
    assert main([*args, "--typeless", "include", "--spacing", "coverage", "--pruning", "samples",
                 "--out", str(tmp_path / "a.jsonl")]) == 0
    m = json.loads((tmp_path / "a.jsonl.manifest.json").read_text())
    assert (m["typeless"], m["spacing"], m["pruning"]) == ("include", "coverage", "samples")
    assert m["types_covered"] >= m["coverage_target"] and len(m["coverage_range"]) == 2
    assert m["typeless_samples"] + m["typed_samples"] == m["eligible"] == 400
    assert m["request"]["options"] == {"pruning": "samples", "score_column": None, "side": "instruction",
                                       "spacing": "coverage", "threshold": 0.1}
    assert main([*args, "--typeless", "drop", "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "--typeless" in capsys.readouterr().err
