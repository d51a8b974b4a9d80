"""``divscope convert``: any file format to any other, with a uniquely named LLaMA-Factory entry per output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import divscope
from divscope.io.record import Record, Turn
from divscope.io.writers import write_records

# (format, file name): every container and shape divscope writes and LLaMA-Factory reads.
FORMATS = [("alpaca", "a.json"), ("sharegpt", "s.json"), ("openai", "o.jsonl"), ("parquet", "p.parquet"),
           ("hf", "h")]
ENTRY = {"a.json": "a_json", "s.json": "s_json", "o.jsonl": "o_jsonl", "p.parquet": "p_parquet", "h": "h_hf"}


def _records() -> list[Record]:
    return [Record.make([Turn("system", "Be brief."), Turn("user", "q1"), Turn("assistant", "a1"),
                         Turn("user", "q2"), Turn("assistant", "a2")], metadata={"score": 3}),
            Record.make([Turn("user", "only one"), Turn("assistant", "turn")], source_id="x-1",
                        metadata={"score": 5})]


def _same(r: Record) -> tuple:
    return r.id, r.conversation, r.source_id, r.metadata, r.content_hash


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "divscope.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("src_fmt,src_name", FORMATS)
def test_convert_every_pair_round_trips(tmp_path: Path, src_fmt: str, src_name: str) -> None:
    recs = _records()
    src = write_records(recs, tmp_path / "in" / src_name, fmt=src_fmt, llamafactory=False)
    for fmt, name in FORMATS:
        res = divscope.convert(src, tmp_path / "out" / name, fmt=fmt)
        back, rejects = divscope.read_records(res.path)
        assert rejects == [] and res.written == 2 and res.rejected == 0, (src_name, name)
        assert [_same(r) for r in back] == [_same(r) for r in recs], f"{src_name} -> {name}"
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert sorted(info) == sorted(ENTRY.values())
    assert info["h_hf"]["file_name"] == "h/data-00000-of-00001.arrow"  # what LLaMA-Factory loads of a HF dir


def test_entries_are_unique_per_file_and_idempotent(tmp_path: Path) -> None:
    """Before: entries were keyed by stem, so best100.parquet silently replaced best100.jsonl's entry."""
    recs = _records()
    src = write_records(recs, tmp_path / "best100.jsonl")
    divscope.convert(src, tmp_path / "best100.parquet")
    divscope.convert(src, tmp_path / "best100")
    info_path = tmp_path / "dataset_info.json"
    info = json.loads(info_path.read_text())
    assert {k: v["file_name"] for k, v in info.items()} == {
        "best100_jsonl": "best100.jsonl", "best100_parquet": "best100.parquet",
        "best100_hf": "best100/data-00000-of-00001.arrow"}
    before = info_path.read_bytes()
    divscope.convert(src, tmp_path / "best100.parquet")
    assert info_path.read_bytes() == before  # rewriting a file updates its entry, adds none
    # An entry an older divscope named after the stem is updated with its file, not duplicated or dropped.
    info["best100"] = {"file_name": "best100.parquet", "formatting": "alpaca"}
    info_path.write_text(json.dumps(info))
    divscope.convert(src, tmp_path / "best100.parquet", shape="sharegpt")
    info = json.loads(info_path.read_text())
    assert info["best100"] == info["best100_parquet"] and info["best100"]["formatting"] == "sharegpt"
    assert info["best100_jsonl"]["file_name"] == "best100.jsonl"


def test_entry_collision_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    src = write_records(_records(), tmp_path / "in.jsonl", llamafactory=False)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"out_json": {"file_name": "theirs.json"}}))
    r = _cli("convert", str(src), "--to", str(tmp_path / "out.json"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "'out_json' already points at 'theirs.json'" in r.stderr
    assert not (tmp_path / "out.json").exists()
    assert json.loads((tmp_path / "dataset_info.json").read_text()) == {"out_json": {"file_name": "theirs.json"}}


def test_convert_cli_rejects_and_export_of_a_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q2"\n{"instruction": "q3", "output": "b"}\n')
    r = _cli("convert", str(src), "--to", str(tmp_path / "out.parquet"))
    assert r.returncode == 0, r.stderr
    assert "wrote 2 records" in r.stdout and "out_parquet" in r.stdout
    [rej] = [json.loads(line) for line in (tmp_path / "out.parquet.rejects.jsonl").read_text().splitlines()]
    assert (rej["file"], rej["line"]) == (str(src), 2)
    assert [r.response for r in divscope.read_records(tmp_path / "out.parquet")[0]] == ["a", "b"]
    r = _cli("export", str(src), "--to", str(tmp_path / "x.json"))  # before: "Directory ... is a file"
    assert r.returncode == 2 and "divscope convert" in r.stderr and len(r.stderr.strip().splitlines()) == 1
