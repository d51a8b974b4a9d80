"""Writing pool rows from the pool's encoded record lines (``io.writers.write_pool_rows``), and opening a pool.

A subset written through the cached lines must be byte-identical to ``write_records`` of the same records, in
every JSON shape and container, including rows whose metadata keys change type across the pool (their column or
``divscope_metadata`` placement depends on the subset) and the ``dataset_info.json`` entry (alpaca declares
``system`` / ``history`` only when some row has them).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divscope.io import writers
from divscope.io.record import Record, Turn
from divscope.io.workspace import POOL_MEMO, Pool, Workspace, fingerprint_rows, records_to_table
from divscope.io.writers import write_pool_rows, write_records
from test_io_roundtrip import records, unique_records

JSON_CASES = [("alpaca", "out.json"), ("alpaca", "out.jsonl"), ("sharegpt", "out.json"), ("sharegpt", "out.jsonl"),
              ("openai", "out.jsonl"), ("openai", "out.json"), (None, "out.jsonl"), (None, "out.json")]


def _pool(ws: Path, recs: list[Record]) -> Pool:
    ws.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_to_table(recs), ws / "pool.parquet")
    return Workspace(ws).pool


def _same_output(pool: Pool, rows: list[int], out: Path, fmt: str | None, name: str) -> bytes:
    """Both writers into two folders; asserts the files and dataset_info.json are byte-identical."""
    a = write_records(pool.records(rows), out / "a" / name, fmt=fmt)
    b = write_pool_rows(pool, np.asarray(rows, np.int64), out / "b" / name, fmt=fmt)
    assert b.read_bytes() == a.read_bytes()
    info = [(p.parent / writers.DATASET_INFO) for p in (a, b)]
    assert info[0].exists() and info[1].read_bytes() == info[0].read_bytes()
    return b.read_bytes()


def _mixed() -> list[Record]:
    """score is an int in rows 0-2 and text in row 3 (which also has a NUL key and a list); row 4 has neither
    (a reserved key nested, a clean one), row 5 only a reserved key; row 1 has a system turn, row 2 history
    (alpaca) and a null."""
    def rec(i: int, system: bool = False, turns: int = 1, **meta: object) -> Record:
        conv = [Turn("system", "be brief")] if system else []
        for t in range(turns):
            conv += [Turn("user", f"q{i}.{t} é"), Turn("assistant", f"a{i}.{t} ✓")]
        return Record.make(conv, source_id=f"r{i}", metadata=meta)

    return [rec(0, score=1), rec(1, system=True, score=2), rec(2, turns=2, score=3, note=None),
            rec(3, score="high", tags=["x"], **{"a\x00b": 1}), rec(4, lang="en", **{"id": "meta-id"}),
            rec(5, history=None)]


@pytest.mark.parametrize(("fmt", "name"), JSON_CASES)
def test_pool_rows_write_what_write_records_writes(tmp_path: Path, fmt: str | None, name: str) -> None:
    pool = _pool(tmp_path / "ws", _mixed())
    for i, rows in enumerate([[0, 1], [0, 3], [3, 0, 2], [4, 2, 1, 0, 3], [1], [5, 4], []]):
        _same_output(pool, rows, tmp_path / f"out{i}", fmt, name)
    lines = writers.pool_lines(pool, "alpaca" if fmt == "alpaca" else "sharegpt" if fmt == "sharegpt" else "openai")
    assert np.asarray(lines["exact"]).tolist() == [False, False, False, False, True, True]  # score varies across the pool


def test_score_is_a_column_exactly_when_the_subset_agrees_on_its_type(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "ws", _mixed())
    agree = json.loads(_same_output(pool, [0, 1], tmp_path / "agree", "openai", "s.jsonl").splitlines()[0])
    mixed = json.loads(_same_output(pool, [0, 3], tmp_path / "mixed", "openai", "s.jsonl").splitlines()[0])
    assert agree["score"] == 1 and "divscope_metadata" not in agree
    assert "score" not in mixed and json.loads(mixed["divscope_metadata"]) == {"score": 1}


def test_alpaca_entry_declares_system_and_history_only_when_present(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "ws", _mixed())
    declared = {}
    for rows in ([0, 4], [1, 4], [2, 4]):  # row 4 alone (exact): neither; row 1: system; row 2: history
        out = tmp_path / "-".join(map(str, rows))
        _same_output(pool, rows, out, "alpaca", "s.json")
        info = json.loads((out / "b" / writers.DATASET_INFO).read_text(encoding="utf-8"))
        declared[tuple(rows)] = sorted(set(info["s_json"]["columns"]) & {"system", "history"})
    assert declared == {(0, 4): [], (1, 4): ["system"], (2, 4): ["history"]}
    pool4 = _pool(tmp_path / "ws4", [Record.make([Turn("system", "s"), Turn("user", "u"), Turn("assistant", "a"),
                                                  Turn("user", "u2"), Turn("assistant", "a2")], source_id="x")])
    _same_output(pool4, [0], tmp_path / "exact", "alpaca", "s.json")  # an exact row's flags declare both
    info = json.loads((tmp_path / "exact" / "b" / writers.DATASET_INFO).read_text(encoding="utf-8"))
    assert {"system", "history"} <= set(info["s_json"]["columns"])


@pytest.mark.parametrize(("fmt", "name"), JSON_CASES[:5])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(records(), min_size=1, max_size=8), data=st.data())
def test_pool_rows_property(fmt: str, name: str, recs: list[Record], data: st.DataObject) -> None:
    recs = unique_records(recs)
    rows = data.draw(st.lists(st.integers(0, len(recs) - 1), unique=True, max_size=len(recs)))
    with tempfile.TemporaryDirectory() as d:
        _same_output(_pool(Path(d) / "ws", recs), rows, Path(d), fmt, name)


def test_lines_are_stored_and_later_writes_decode_no_exact_record(tmp_path: Path, monkeypatch) -> None:
    recs = [Record.make([Turn("user", f"q{i}"), Turn("assistant", f"a{i}")], metadata={"n": i}) for i in range(20)]
    ws = tmp_path / "ws"
    pool = _pool(ws, recs)
    assert write_pool_rows(pool, [3, 1], tmp_path / "first.jsonl", build_lines=False)  # nothing stored: not built
    assert not (ws / "cache").exists()
    expected = write_records(pool.records([5, 2, 9]), tmp_path / "expected.jsonl").read_bytes()
    write_pool_rows(pool, [0], tmp_path / "build.jsonl")
    assert len(list((ws / "cache" / "lines" / "openai").iterdir())) == 1

    def decoded(*args, **kwargs):
        raise AssertionError("decoded pool records although their lines are stored")

    monkeypatch.setattr(Pool, "records", decoded)
    monkeypatch.setattr(Pool, "iter_records", decoded)
    again = Workspace(ws).pool  # a later process: the stored lines, memory-mapped
    assert write_pool_rows(again, [5, 2, 9], tmp_path / "later.jsonl", build_lines=False).read_bytes() == expected


def test_lines_of_a_rewritten_pool_are_not_reused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    old = [Record.make([Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]) for i in range(5)]
    write_pool_rows(_pool(ws, old), [0, 1], tmp_path / "old.jsonl")
    new = [Record.make([Turn("user", f"new q{i}"), Turn("assistant", f"a{i}")]) for i in range(5)]
    pool = _pool(ws, new)
    got = write_pool_rows(pool, [0, 1], tmp_path / "new.jsonl").read_bytes()
    assert got == write_records(new[:2], tmp_path / "expected.jsonl").read_bytes() and b"new q0" in got


def test_pool_fingerprint_is_remembered_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    ws = tmp_path / "ws"
    recs = [Record.make([Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]) for i in range(5)]
    truth = fingerprint_rows((r.id, r.content_hash) for r in recs)
    assert _pool(ws, recs).fingerprint == truth
    memo = json.loads((ws / POOL_MEMO).read_text(encoding="utf-8"))
    (ws / POOL_MEMO).write_text(json.dumps({**memo, "fingerprint": "remembered"}), encoding="utf-8")
    assert Workspace(ws).pool.fingerprint == "remembered"  # taken as it is: the ids and hashes are not read
    other = recs[:4]
    assert _pool(ws, other).fingerprint == fingerprint_rows((r.id, r.content_hash) for r in other)


def test_a_pool_replaced_after_opening_leaves_no_memo_of_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    recs = [Record.make([Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]) for i in range(5)]
    opened = _pool(ws, recs)
    pq.write_table(records_to_table(recs[:3]), ws / "new.parquet")
    (ws / "new.parquet").replace(ws / "pool.parquet")  # replaced (as ingest does) before the first one fingerprints
    replaced = Workspace(ws).pool
    assert opened.fingerprint == fingerprint_rows((r.id, r.content_hash) for r in recs)  # what it opened
    assert replaced.fingerprint == fingerprint_rows((r.id, r.content_hash) for r in recs[:3])
