"""Round trips: canonical records -> every writable format -> reader -> the same records."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import divscope
from divscope.io.record import Record, Turn
from divscope.io.shapes import RESERVED_KEYS
from divscope.io.writers import write_records

text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10))
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                            max_size=3),
                          max_leaves=6)
meta_key = st.one_of(st.sampled_from(sorted(RESERVED_KEYS - {"divscope_metadata"})),
                     st.text(min_size=1, max_size=8)).filter(lambda k: k not in ("divscope_metadata", "turn_extra"))


@st.composite
def records(draw: st.DrawFn) -> Record:
    n_ex = draw(st.integers(1, 3))
    turns = [Turn("system", draw(text))] if draw(st.booleans()) else []
    for _ in range(n_ex):
        turns += [Turn("user", draw(text)), Turn("assistant", draw(text))]
    sid = draw(st.one_of(st.none(), text))
    meta = draw(st.dictionaries(meta_key, json_value, max_size=4))
    return Record.make(turns, source_id=sid, metadata=meta)


def unique_records(recs: list[Record]) -> list[Record]:
    seen_id: set[str] = set()
    seen_hash: set[str] = set()
    out = []
    for r in recs:
        if r.id in seen_id or r.content_hash in seen_hash:
            continue
        seen_id.add(r.id)
        seen_hash.add(r.content_hash)
        out.append(r)
    return out


def comparable(r: Record) -> tuple:
    return (r.id, r.conversation, r.source_id, json.dumps(r.metadata, sort_keys=True), r.content_hash)


CASES = [("alpaca", "out.json"), ("alpaca", "out.jsonl"), ("sharegpt", "out.json"), ("sharegpt", "out.jsonl"),
         ("openai", "out.jsonl"), ("parquet", "out.parquet"), ("hf", "out")]


@pytest.mark.parametrize(("fmt", "name"), CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(records(), min_size=1, max_size=6))
def test_roundtrip(fmt: str, name: str, recs: list[Record]) -> None:
    recs = unique_records(recs)
    with tempfile.TemporaryDirectory() as d:
        path = write_records(recs, Path(d) / name, fmt=fmt)
        back, rejects = divscope.read_records(path)
    assert [r.problem for r in rejects] == []
    assert [comparable(r) for r in back] == [comparable(r) for r in recs]


@pytest.mark.parametrize(("fmt", "name"), [("parquet", "out.parquet"), ("hf", "out")])
def test_metadata_key_with_nul_round_trips(tmp_path: Path, fmt: str, name: str) -> None:
    """Found by hypothesis: a metadata key holding NUL broke the HF ``datasets`` writer (CastError)."""
    recs = [Record.make([Turn("user", "0"), Turn("assistant", "0")], metadata={"\x00": False, "a\x00b": 1})]
    back, rejects = divscope.read_records(write_records(recs, tmp_path / name, fmt=fmt))
    assert rejects == [] and [comparable(r) for r in back] == [comparable(r) for r in recs]


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "openai"])
def test_columnar_shapes_and_ingest(tmp_path: Path, shape: str) -> None:
    recs = [Record.make([Turn("user", "q"), Turn("assistant", "a")], metadata={"score": 1, "tags": ["x"]}),
            Record.make([Turn("user", "q2"), Turn("assistant", "a2")], metadata={"score": "high"})]
    path = write_records(recs, tmp_path / "s.parquet", fmt="parquet", shape=shape)
    res = divscope.ingest(path, tmp_path / "ws")
    assert res.accepted == 2
    back = divscope.Workspace(tmp_path / "ws").pool.records()
    assert [r.metadata for r in back] == [{"score": 1, "tags": ["x"]}, {"score": "high"}]


def test_llamafactory_entries(tmp_path: Path) -> None:
    recs = [Record.make([Turn("system", "s"), Turn("user", "q"), Turn("assistant", "a")])]
    write_records(recs, tmp_path / "a.json", fmt="alpaca")
    write_records(recs, tmp_path / "b.json", fmt="sharegpt")
    write_records(recs, tmp_path / "c.jsonl")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert sorted(info) == ["a_json", "b_json", "c_jsonl"]
    assert info["a_json"] == {"file_name": "a.json", "formatting": "alpaca",
                         "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                     "system": "system"}}
    assert info["b_json"]["columns"] == {"messages": "conversations"}
    assert info["c_jsonl"]["tags"]["role_tag"] == "role" and info["c_jsonl"]["file_name"] == "c.jsonl"
    # The alpaca file is what LLaMA-Factory's alpaca converter expects: one JSON array of objects.
    [row] = json.loads((tmp_path / "a.json").read_text())
    assert row == {"system": "s", "instruction": "q", "input": "", "output": "a"}


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai"])
def test_exports_load_as_their_llamafactory_entry_declares(tmp_path: Path, fmt: str) -> None:
    """What LLaMA-Factory's loader does: HF datasets' JSON loader, then every declared column of every row.

    Before: an alpaca file without system prompt or history declared both (``KeyError: 'history'``), and a
    metadata key holding 4 in one record and "4" in another broke datasets 4.0's schema inference."""
    import datasets

    recs = [Record.make([Turn("user", "q1"), Turn("assistant", "a1")], metadata={"score": 4, "src": "x"}),
            Record.make([Turn("user", "q2"), Turn("assistant", "a2")], metadata={"score": "4", "src": "y"})]
    path = tmp_path / ("d.jsonl" if fmt == "openai" else "d.json")
    write_records(recs, path, fmt=fmt)
    entry = json.loads((tmp_path / "dataset_info.json").read_text())[f"d_{path.suffix[1:]}"]
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    for row in ds:
        for column in entry["columns"].values():
            assert column in row, f"{fmt}: declared column {column!r} missing"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if fmt == "openai" else \
        json.loads(path.read_text())
    for key in {k for row in rows for k in row} - RESERVED_KEYS:
        assert len({type(row.get(key)) for row in rows}) == 1, f"{key!r} changes type between rows"
    back, _ = divscope.read_records(path, fmt=fmt)
    assert [r.metadata for r in back] == [{"score": 4, "src": "x"}, {"score": "4", "src": "y"}]


def test_export_cli_and_unknown_format(tmp_path: Path) -> None:
    from divscope.cli import main

    divscope.ingest([[{"instruction": "q", "output": "a"}]], tmp_path / "ws")
    assert main(["export", str(tmp_path / "ws"), "--to", str(tmp_path / "o.json"), "--format", "alpaca"]) == 0
    assert json.loads((tmp_path / "o.json").read_text())[0]["output"] == "a"
    assert main(["export", str(tmp_path / "ws"), "--to", str(tmp_path / "o.txt")]) == 2
