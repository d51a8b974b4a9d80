"""A corpus of broken files: every bad record is reported with file, line and reason, every good one survives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import divscope
from divscope import DivscopeError
from divscope.io.readers import detect_container

BROKEN = Path(__file__).parent / "data" / "broken"


def rejects(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_alpaca_jsonl_mixed(tmp_path: Path) -> None:
    res = divscope.ingest(BROKEN / "alpaca_mixed.jsonl", tmp_path / "ws")
    pool = divscope.Workspace(tmp_path / "ws").pool
    assert [r.instruction for r in pool.iter_records()] == [
        "Name three primary colors.", "Translate to French\nGood morning", "You are terse.\n\nHi\n\nSum 2 and 2."]
    recs = pool.records()
    assert recs[0].metadata == {"category": "open_qa"}
    assert [t.role for t in recs[2].conversation] == ["system", "user", "assistant", "user", "assistant"]
    got = {(r["line"], r["reason"]) for r in rejects(tmp_path / "ws")}
    assert got == {(3, "malformed_json"), (4, "wrong_type"), (5, "missing_field"), (6, "empty_instruction"),
                   (7, "empty_response"), (8, "wrong_type")}
    assert res.report["read"] == 9 and res.accepted == 3 and res.rejected == 6
    bad = next(r for r in rejects(tmp_path / "ws") if r["line"] == 3)
    assert bad["raw"].startswith('{"instruction": "this line is not JSON"')
    assert bad["file"].endswith("alpaca_mixed.jsonl")


def test_sharegpt_array_with_every_turn_problem(tmp_path: Path) -> None:
    res = divscope.ingest(BROKEN / "sharegpt_bad.json", tmp_path / "ws")
    pool = divscope.Workspace(tmp_path / "ws").pool
    assert pool.ids == ["good-1", "good-2"]
    good2 = pool.records()[1]
    assert good2.system == "Be brief." and good2.response == "Four.\n\nTwelve."
    assert good2.instruction == "Be brief.\n\nTwo plus two?\n\nAnd times three?"
    by_reason = {r["reason"]: r["line"] for r in rejects(tmp_path / "ws")}
    assert by_reason == {"unknown_role": 9, "broken_turn_order": 16, "no_assistant_turn": 23,
                         "malformed_json": 29, "truncated": 46}
    assert res.report["by_source"][str(BROKEN / "sharegpt_bad.json")]["accepted"] == 2


def test_openai_duplicates_parts_and_mixed(tmp_path: Path) -> None:
    divscope.ingest(BROKEN / "openai_dups.jsonl", tmp_path / "ws")
    pool = divscope.Workspace(tmp_path / "ws").pool
    assert pool.ids == ["a", "c"]
    assert pool.records()[1].instruction == "Parts joined"
    got = {r["line"]: r["reason"] for r in rejects(tmp_path / "ws")}
    assert got == {2: "duplicate_id", 3: "duplicate_content", 5: "wrong_type", 6: "broken_turn_order",
                   7: "mixed_format", 8: "broken_turn_order"}


def test_invalid_utf8_bom_crlf(tmp_path: Path) -> None:
    good = b'{"instruction": "caf\xc3\xa9?", "output": "yes"}'
    bad = b'{"instruction": "bad \xff byte", "output": "no"}'
    also = b'{"instruction": "third", "output": "ok"}'
    path = tmp_path / "enc.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join([good, bad, also]) + b"\r\n")
    res = divscope.ingest(path, tmp_path / "ws")
    assert res.accepted == 2
    [rej] = rejects(tmp_path / "ws")
    assert rej["reason"] == "invalid_utf8" and rej["line"] == 2 and "\\xff" in rej["raw"]
    notes = res.report["by_source"][str(path)]["notes"]
    assert notes == {"bom_stripped": True, "crlf": True}
    assert divscope.Workspace(tmp_path / "ws").pool.records()[0].instruction == "café?"


def test_no_valid_record_is_an_error_and_report_is_kept(tmp_path: Path) -> None:
    with pytest.raises(DivscopeError, match="no valid record"):
        divscope.ingest(BROKEN / "all_bad.jsonl", tmp_path / "ws")
    assert not (tmp_path / "ws" / "pool.parquet").exists()
    assert len(rejects(tmp_path / "ws")) == 2
    with pytest.raises(DivscopeError, match="it is empty"):
        divscope.ingest(BROKEN / "empty.jsonl", tmp_path / "ws2")


def test_strict_fails_but_reports(tmp_path: Path) -> None:
    with pytest.raises(DivscopeError, match="--strict: 6 record"):
        divscope.ingest(BROKEN / "alpaca_mixed.jsonl", tmp_path / "ws", strict=True)
    assert not (tmp_path / "ws" / "pool.parquet").exists()
    assert json.loads((tmp_path / "ws" / "ingest.json").read_text())["rejected"] == 6


def test_forced_format(tmp_path: Path) -> None:
    with pytest.raises(DivscopeError, match="no valid record .*mixed_format"):
        divscope.ingest(BROKEN / "alpaca_mixed.jsonl", tmp_path / "ws", fmt="sharegpt")
    with pytest.raises(DivscopeError, match="unknown format"):
        divscope.ingest(BROKEN / "alpaca_mixed.jsonl", tmp_path / "ws", fmt="yaml")


def test_multiple_inputs_dedupe_across_files(tmp_path: Path) -> None:
    a = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]
    b = [{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]},
         {"messages": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]}]
    res = divscope.ingest([a, b], tmp_path / "ws")
    assert res.accepted == 3
    assert res.report["by_source"]["<python:1>"]["by_reason"] == {"duplicate_content": 1}


def test_compact_array_and_resync(tmp_path: Path) -> None:
    path = tmp_path / "compact.json"
    path.write_text('[{"instruction":"a","output":"b"},{"instruction":"c",,"output":"d"},'
                    '{"instruction":"e","output":"f"}]')
    res = divscope.ingest(path, tmp_path / "ws")
    assert [r.instruction for r in divscope.Workspace(tmp_path / "ws").pool.iter_records()] == ["a", "e"]
    assert res.report["by_reason"] == {"malformed_json": 1}


def test_small_chunks_give_same_result(tmp_path: Path) -> None:
    """The stream reader must not depend on where chunk boundaries fall."""
    from divscope.io.jsonstream import iter_json_values

    path = BROKEN / "sharegpt_bad.json"
    ref = [(i.line, i.problem and i.problem[0], i.value) for i in iter_json_values(path)]
    for chunk in (1, 7, 64):
        got = [(i.line, i.problem and i.problem[0], i.value) for i in iter_json_values(path, chunk_chars=chunk)]
        assert got == ref


def test_record_too_large_is_bounded(tmp_path: Path) -> None:
    from divscope.io.jsonstream import iter_json_values

    path = tmp_path / "big.jsonl"
    big = json.dumps({"instruction": "x" * 5000, "output": "y"})
    path.write_text('{"instruction": "a", "output": "b"}\n' + big + '\n{"instruction": "c", "output": "d"}\n')
    items = list(iter_json_values(path, chunk_chars=256, max_record_chars=1000))
    assert [i.problem[0] if i.problem else i.value["instruction"] for i in items] == ["a", "record_too_large", "c"]
    assert items[1].line == 2


def test_parquet_and_hf_inputs(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "q1", "input": None, "output": "a1", "score": 1.5},
            {"instruction": "q2", "input": "ctx", "output": "", "score": 2.0}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    assert detect_container(tmp_path / "hf") == "hf"
    for src in (tmp_path / "in.parquet", tmp_path / "hf"):
        res = divscope.ingest(src, tmp_path / f"ws-{src.name}")
        assert res.accepted == 1 and res.report["by_reason"] == {"empty_response": 1}
        [rec] = divscope.Workspace(tmp_path / f"ws-{src.name}").pool.records()
        assert rec.metadata == {"score": 1.5}
    rej = rejects(tmp_path / "ws-hf")
    assert rej[0]["file"].endswith("hf#train") and rej[0]["index"] == 1


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("hello")
    with pytest.raises(DivscopeError, match="not a readable Parquet file"):
        divscope.ingest(path, tmp_path / "ws")


def test_read_records_api() -> None:
    records, bad = divscope.read_records(BROKEN / "alpaca_mixed.jsonl")
    assert len(records) == 3 and len(bad) == 6
    assert {b.where for b in bad} >= {f"{BROKEN / 'alpaca_mixed.jsonl'}:3"}
