"""``ingest --repair``: every repair kind on the record shapes real exports have, counted, recorded, deterministic;
without it, the report says exactly how many rejects a repair would keep."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import divscope
from divscope.cli import main
from divscope.io.builtin import iter_builtin
from divscope.io.repair import REPAIRABLE, REPAIRS, first_alternating_run, repair_turns
from divscope.io.workspace import Workspace


def sharegpt(rid: str, *turns: tuple[str, str]) -> dict[str, Any]:
    return {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}


def openai(rid: str, *turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"id": rid, "messages": [{"role": r, "content": c} for r, c in turns], **extra}


# kind -> (a record that only this repair saves, the reason it is rejected without it, the repaired turns)
CASES: dict[str, tuple[dict[str, Any], str, list[tuple[str, str]]]] = {
    "role_alias": (  # OpenAI messages written with ShareGPT / Gemini role names
        openai("alias-1", ("human", "What is 2+2?"), ("gpt", "4."), ("User", "And 3+3?"), ("model", "6.")),
        "unknown_role",
        [("user", "What is 2+2?"), ("assistant", "4."), ("user", "And 3+3?"), ("assistant", "6.")]),
    "strip_empty": (  # an exported empty system prompt
        openai("empty-1", ("system", ""), ("user", "Name a prime."), ("assistant", "7.")),
        "empty_content",
        [("user", "Name a prime."), ("assistant", "7.")]),
    "drop_leading_assistant": (  # a ShareGPT continuation chunk (id ..._1) that opens mid-answer
        sharegpt("QWJhYvA_1", ("gpt", "...and that is the end of the list."), ("human", "Now sort it."),
                 ("gpt", "Sorted: a, b, c.")),
        "broken_turn_order",
        [("user", "Now sort it."), ("assistant", "Sorted: a, b, c.")]),
    "merge_consecutive": (  # a question sent in two messages
        sharegpt("i6IyJda_0", ("human", "Here is my code:"), ("human", "print(1/0)"), ("gpt", "It divides by zero.")),
        "broken_turn_order",
        [("user", "Here is my code:\n\nprint(1/0)"), ("assistant", "It divides by zero.")]),
    "drop_trailing_user": (  # a conversation cut off after the user's last question
        openai("trail-1", ("user", "Hi"), ("assistant", "Hello!"), ("user", "Are you there?")),
        "broken_turn_order",
        [("user", "Hi"), ("assistant", "Hello!")]),
}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def rejects(ws: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (ws / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_kind_has_a_case() -> None:
    assert sorted(CASES) == sorted(REPAIRS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_repair_kind_on_a_real_record_shape(kind: str, tmp_path: Path) -> None:
    record, reason, want = CASES[kind]
    src = write_jsonl(tmp_path / f"{kind}.jsonl", [record])
    with pytest.raises(divscope.DivscopeError, match="--repair would keep 1"):
        divscope.ingest(src, tmp_path / "plain")
    [rej] = rejects(tmp_path / "plain")
    assert rej["reason"] == reason and rej["line"] == 1
    plain = json.loads((tmp_path / "plain" / "ingest.json").read_text())
    assert plain["repair"] == {"enabled": False, "would_keep": 1, "by_kind": {kind: 1}, "accepted_with_repair": 1}

    res = divscope.ingest(src, tmp_path / "fixed", repair=True)
    assert res.report["repair"] == {"enabled": True, "repaired": 1, "by_kind": {kind: 1}}
    [rec] = Workspace(tmp_path / "fixed").pool.records()
    assert [(t.role, t.content) for t in rec.conversation] == want
    assert rec.id == record["id"] + "#repaired" and rec.metadata["repaired_from"] == record["id"]
    assert rec.metadata["repairs"] == [kind]


def test_real_sharegpt_chunk_combines_repairs_in_order(tmp_path: Path) -> None:
    """A ShareGPT record as the dump has them: opens with the assistant, an empty turn, a question in two
    parts, an unanswered question at the end; no id, so the id is the repaired content's hash."""
    rec = {"conversations": [{"from": "gpt", "value": "(continued) ... so that is step 3."},
                             {"from": "human", "value": "Thanks. One more:"}, {"from": "gpt", "value": " "},
                             {"from": "human", "value": "What is step 4?"}, {"from": "gpt", "value": "Step 4: test."},
                             {"from": "human", "value": "ok"}]}
    src = write_jsonl(tmp_path / "chunk.jsonl", [rec])
    divscope.ingest(src, tmp_path / "ws", repair=True)
    [got] = Workspace(tmp_path / "ws").pool.records()
    assert [t.content for t in got.conversation] == ["Thanks. One more:\n\nWhat is step 4?", "Step 4: test."]
    assert got.metadata["repairs"] == ["strip_empty", "drop_leading_assistant", "merge_consecutive",
                                       "drop_trailing_user"]
    assert got.id == got.content_hash and got.metadata["repaired_from"] != got.id


MIXED = [  # one ShareGPT file: a file holds one record shape
    CASES["drop_leading_assistant"][0],
    sharegpt("QWJhYvA_0", ("human", "Now sort it."), ("gpt", "Sorted: a, b, c.")),  # a repaired twin above: dup
    CASES["merge_consecutive"][0],
    sharegpt("ok-1", ("human", "Capital of France?"), ("gpt", "Paris.")),
    sharegpt("lost-1", ("gpt", "Only an answer.")),                     # nothing left after the repair
    sharegpt("tool-1", ("human", "Weather?"), ("tool", "{\"t\": 3}"), ("gpt", "3 degrees.")),  # unknown role
    sharegpt("sys-1", ("human", "Hi"), ("system", "Be brief."), ("gpt", "Hi.")),  # system mid-way: no repair
    sharegpt("trail-1", ("human", "Hi"), ("gpt", "Hello!"), ("human", "Are you there?")),
    sharegpt("trail-1", ("human", "Hi"), ("gpt", "Hello!"), ("human", "Are you there?")),  # the same twice
]


def test_would_keep_is_what_repair_keeps_and_rejects_stay(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", MIXED)
    plain = divscope.ingest(src, tmp_path / "plain", fmt="json").report
    fixed = divscope.ingest(src, tmp_path / "fixed", fmt="json", repair=True).report
    assert plain["accepted"] == 2 and fixed["accepted"] == 4  # QWJhYvA_0 loses its place to its repaired twin
    assert plain["repair"]["accepted_with_repair"] == fixed["accepted"]
    kept = {r["line"] for r in rejects(tmp_path / "plain")} - {r["line"] for r in rejects(tmp_path / "fixed")}
    assert plain["repair"]["would_keep"] == fixed["repair"]["repaired"] == len(kept) == 3
    assert plain["repair"]["by_kind"] == fixed["repair"]["by_kind"] == {
        "drop_leading_assistant": 1, "drop_trailing_user": 1, "merge_consecutive": 1}
    got = {r["line"]: (r["reason"], r["file"]) for r in rejects(tmp_path / "fixed")}
    assert got == {2: ("duplicate_content", str(src)), 5: ("no_assistant_turn", str(src)),
                   6: ("unknown_role", str(src)), 7: ("broken_turn_order", str(src)),
                   9: ("duplicate_content", str(src))}
    assert "after repairs: drop_leading_assistant" in rejects(tmp_path / "fixed")[1]["detail"]


def test_valid_records_are_never_touched(tmp_path: Path) -> None:
    good = [sharegpt("ok-1", ("human", "Capital of France?"), ("gpt", "Paris.")),
            openai("ok-2", ("system", "Be brief."), ("user", "2+2?"), ("assistant", "4."), repairs=["mine"])]
    for i, rec in enumerate(good):
        src = write_jsonl(tmp_path / f"good{i}.jsonl", [rec])
        a = divscope.ingest(src, tmp_path / f"a{i}")
        b = divscope.ingest(src, tmp_path / f"b{i}", repair=True)
        assert (tmp_path / f"a{i}" / "pool.parquet").read_bytes() == (tmp_path / f"b{i}" / "pool.parquet").read_bytes()
        assert a.report["pool_fingerprint"] == b.report["pool_fingerprint"] and b.report["repair"]["repaired"] == 0


def _builtin_slice(path: Path, n: int) -> Path:
    items, _ = iter_builtin("builtin:sharegpt")
    path.write_text("".join(it.raw + "\n" for it in itertools.islice(items, n)), encoding="utf-8")
    return path


def test_builtin_slice_repair_is_exact_deterministic_and_leaves_only_the_unsavable(tmp_path: Path) -> None:
    src = _builtin_slice(tmp_path / "sharegpt-600.jsonl", 600)
    plain = divscope.ingest(src, tmp_path / "plain").report
    runs = [divscope.ingest(src, tmp_path / f"fixed{i}", repair=True).report for i in range(2)]
    for name in ("pool.parquet", "rejects.jsonl", "ingest.json"):
        assert (tmp_path / "fixed0" / name).read_bytes() == (tmp_path / "fixed1" / name).read_bytes(), name
    fixed = runs[0]
    assert plain["by_reason"]["broken_turn_order"] > 150  # the slice has the dump's continuation chunks
    assert fixed["accepted"] == plain["repair"]["accepted_with_repair"] > plain["accepted"] + 150
    assert fixed["repair"]["repaired"] == plain["repair"]["would_keep"]
    assert "broken_turn_order" not in fixed["by_reason"]
    for rej in rejects(tmp_path / "fixed0"):  # only what no repair saves, each with file and line
        assert rej["file"] == str(src) and rej["line"] >= 1
        assert rej["reason"] not in REPAIRABLE or "after repairs" in rej["detail"]
    for rec in Workspace(tmp_path / "fixed0").pool.iter_records():
        if "repairs" in rec.metadata:
            assert rec.id == rec.metadata["repaired_from"] + "#repaired"


def test_cli_repair_flag_and_would_keep_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "mixed.jsonl", MIXED)
    assert main(["ingest", str(src), "--out", str(tmp_path / "plain")]) == 0
    out = capsys.readouterr().out
    assert "--repair would keep 3 of the 7 rejected records (pool: 4)" in out
    assert main(["ingest", str(src), "--out", str(tmp_path / "fixed"), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repairs applied" in out and "merge_consecutive" in out
    assert json.loads((tmp_path / "fixed" / "ingest.json").read_text())["repair"]["repaired"] == 3


def test_spec_pool_repair(tmp_path: Path) -> None:
    from divscope.experiment.spec import parse_spec

    assert parse_spec({"pool": {"source": "a,b.json", "repair": True}}).pool.source == ["a,b.json"]
    assert parse_spec({"pool": {"repair": True}}).pool.repair is True
    assert parse_spec({}).fingerprint() != parse_spec({"pool": {"repair": True}}).fingerprint()
    with pytest.raises(divscope.DivscopeError, match="pool.repair"):
        parse_spec({"pool": {"repair": "sometimes"}})


def test_repair_policies_only_remove_or_join() -> None:
    """Nothing is invented: every repaired content is a turn's content or several joined."""
    turns = [("assistant", "a0"), ("user", ""), ("user", "u1"), ("user", "u2"), ("assistant", "a1"),
             ("system", "s"), ("user", "u3")]
    fixed, applied = repair_turns(turns)
    assert fixed == [("user", "u1\n\nu2"), ("assistant", "a1"), ("system", "s")]
    assert applied == ["strip_empty", "drop_leading_assistant", "merge_consecutive", "drop_trailing_user"]
    assert first_alternating_run(turns) == []  # the builtin view cuts at the first break: no exchange left
    assert first_alternating_run([("system", "s"), *turns[2:]]) == []
    assert first_alternating_run([("system", "s"), ("user", "u"), ("assistant", "a"), ("assistant", "b")]) == [
        ("system", "s"), ("user", "u"), ("assistant", "a")]


def test_builtin_conversations_bytes_unchanged_by_the_shared_repair_code() -> None:
    """``builtin:conversations`` uses ``first_alternating_run``; its first 2,000 records are the bytes the view
    gave before the refactoring (digest recorded with the earlier code)."""
    items, shape = iter_builtin("builtin:conversations")
    h = hashlib.sha256()
    for it in itertools.islice(items, 2000):
        h.update(it.raw.encode() + b"\n")
    assert shape == "openai"
    assert h.hexdigest() == "a8797591bb5303d94a55b93ee17d3ac8ba2189b42080017d659653651a4337a1"
