"""``ingest --dedup near``: MinHash LSH near-copy removal on real ShareGPT pairs; ``exact`` (the default) unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import divscope
from helpers import real_pairs

N = 60


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return real_pairs(N)


def _near_copy(pairs: list[dict]) -> tuple[int, dict]:
    """(index of a long real pair, that pair with one word of its answer changed and an id of its own)."""
    k = next(i for i, p in enumerate(pairs) if len(p["messages"][-1]["content"].split()) > 150)
    words = pairs[k]["messages"][-1]["content"].split(" ")
    words[len(words) // 2] = "zebra"
    msgs = [*pairs[k]["messages"][:-1], {"role": "assistant", "content": " ".join(words)}]
    return k, {"id": "near-copy", "messages": msgs}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _rejects(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "rejects.jsonl").read_text().splitlines()]


def test_near_copy_dropped_naming_the_kept_record(tmp_path: Path, pairs: list[dict]) -> None:
    k, copy = _near_copy(pairs)
    src = _jsonl(tmp_path / "in.jsonl", [*pairs, copy])
    res = divscope.ingest(src, tmp_path / "near", dedup="near")
    assert divscope.Workspace(tmp_path / "near").pool.ids == [p["id"] for p in pairs]  # distinct ones all kept
    [rej] = _rejects(tmp_path / "near")
    assert (rej["reason"], rej["line"]) == ("near_duplicate", N + 1)
    assert rej["duplicate_of"] == {"id": pairs[k]["id"], "file": str(src), "line": k + 1, "index": k}
    assert f"of record {pairs[k]['id']!r} at {src}:{k + 1}" in rej["detail"] and 0.8 <= rej["similarity"] < 1
    assert res.report["dedup"] == {"mode": "near", "threshold": 0.8, "removed": 1}
    # The default keeps it (not the same conversation), and so does a threshold above its similarity.
    divscope.ingest(src, tmp_path / "exact")
    assert divscope.Workspace(tmp_path / "exact").pool.ids[-1] == "near-copy"
    divscope.ingest(src, tmp_path / "strict", dedup="near", near_threshold=min(1.0, rej["similarity"] + 0.05))
    assert divscope.Workspace(tmp_path / "strict").pool.ids[-1] == "near-copy"


def test_first_occurrence_kept_and_runs_identical(tmp_path: Path, pairs: list[dict]) -> None:
    k, copy = _near_copy(pairs)
    src = _jsonl(tmp_path / "in.jsonl", [copy, *pairs])  # the copy comes first: it is the one kept
    outputs = []
    for run in ("a", "b"):
        divscope.ingest(src, tmp_path / run, dedup="near")
        outputs.append([(tmp_path / run / f).read_bytes() for f in ("pool.parquet", "rejects.jsonl", "ingest.json")])
    assert outputs[0] == outputs[1]
    [rej] = _rejects(tmp_path / "a")
    assert rej["line"] == k + 2 and rej["duplicate_of"]["id"] == "near-copy" and rej["duplicate_of"]["line"] == 1
    # Seeded permutations: the same estimate in every process and on every machine (the true Jaccard is 0.957).
    assert rej["similarity"] == 0.9766
    assert divscope.Workspace(tmp_path / "a").pool.ids[0] == "near-copy"


def test_exact_default_report_and_fingerprint_unchanged(tmp_path: Path, pairs: list[dict]) -> None:
    from divscope.experiment.spec import ExperimentSpec, PoolSpec

    _, copy = _near_copy(pairs)
    res = divscope.ingest([[*pairs[:5], pairs[0], copy]], tmp_path / "ws")
    assert "dedup" not in res.report and res.accepted == 6
    assert [set(r) for r in _rejects(tmp_path / "ws")] == [{"file", "line", "index", "reason", "detail", "raw"}]
    assert ExperimentSpec().fingerprint() == "420e026b037c086f"  # as before the option existed (test_precision)
    assert ExperimentSpec(pool=PoolSpec(dedup="near")).fingerprint() != "420e026b037c086f"


def test_cli_options(tmp_path: Path, pairs: list[dict]) -> None:
    _, copy = _near_copy(pairs)
    src = _jsonl(tmp_path / "in.jsonl", [*pairs[:10], copy])
    cmd = [sys.executable, "-m", "divscope.cli", "ingest", str(src), "--out", str(tmp_path / "ws")]
    r = subprocess.run([*cmd, "--dedup", "near", "--near-threshold", "0.7"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "near_duplicate" in r.stdout, r.stderr
    assert json.loads((tmp_path / "ws" / "ingest.json").read_text())["dedup"]["threshold"] == 0.7
    r = subprocess.run([*cmd, "--dedup", "near", "--near-threshold", "1.5"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--near-threshold" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_study_reingests_when_the_dedup_setting_changes(tmp_path: Path, pairs: list[dict]) -> None:
    from divscope.experiment.spec import parse_spec
    from divscope.experiment.study import ingest_pool
    from divscope.io.workspace import Workspace

    _, copy = _near_copy(pairs)
    src = _jsonl(tmp_path / "in.jsonl", [*pairs[:20], copy])
    sizes = []
    for pool in ({}, {"dedup": "near"}, {"dedup": "near", "near_threshold": 0.99}, {}):
        ingest_pool(parse_spec({"pool": {"source": [str(src)], **pool}}), Workspace(tmp_path / "ws"))
        sizes.append(len(Workspace(tmp_path / "ws").pool))
    assert sizes == [21, 20, 21, 21]
