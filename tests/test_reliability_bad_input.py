"""Bad input for every reader (JSON, JSONL, Parquet, HF datasets directory) and for the YAML spec.

Two kinds of case, each a parametrised test id (docs/reliability.md counts them):
- record-level damage: the valid records all land in the pool, each bad one is in rejects.jsonl with its file,
  line (or index) and reason; nothing valid is lost;
- whole-input damage: ``divscope`` exits 2 with one line ``error: <place>: ... <fix>``.
Plus bounded memory on a huge record, and output paths that cannot escape the chosen directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import divscope
from divscope.cli import main
from divscope.errors import DivscopeError

pytestmark = pytest.mark.reliability

GOOD = [{"id": f"g{i}", "instruction": f"question {i}", "output": f"answer {i}"} for i in range(3)]
GOOD_LINES = [json.dumps(g) for g in GOOD]


def _jsonl(lines: list[str], end: str = "\n") -> bytes:
    return (end.join(lines) + end).encode()


def _parquet_with_bad_row(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [*GOOD, {"id": "bad", "instruction": "", "output": "no question"}]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _hf_with_bad_row(path: Path) -> None:
    import datasets

    datasets.Dataset.from_list([*GOOD, {"id": "bad", "instruction": "q", "output": ""}]).save_to_disk(str(path))


# id -> (file name, writer of the file's content, --format, {reason: count} expected in rejects)
RECORD_CASES: dict[str, tuple[str, Callable[[Path], None], str | None, dict[str, int]]] = {
    "jsonl-truncated-last-line": ("a.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES) + b'{"id": "x", "instr'),
                                  None, {"truncated": 1}),
    "json-array-truncated": ("a.json", lambda p: p.write_bytes(("[" + ",".join(GOOD_LINES) + ', {"id": "x"').encode()),
                             None, {"truncated": 1}),
    "json-array-unclosed": ("a.json", lambda p: p.write_bytes(("[" + ",".join(GOOD_LINES)).encode()), None, {}),
    "jsonl-malformed-line": ("a.jsonl", lambda p: p.write_bytes(_jsonl([GOOD_LINES[0], "{not json}", *GOOD_LINES[1:]])),
                             None, {"malformed_json": 1}),
    "latin1-record": ("a.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES) + '{"id": "l", "instruction": "caf\u00e9", '
                                                         '"output": "x"}\n'.encode("latin-1")),
                      None, {"invalid_utf8": 1}),
    "utf16-file": ("a.jsonl", lambda p: p.write_bytes(("\n".join(GOOD_LINES) + "\n").encode("utf-16")), None, {}),
    "utf32-file": ("a.jsonl", lambda p: p.write_bytes(("\n".join(GOOD_LINES) + "\n").encode("utf-32")), None, {}),
    "utf8-bom-crlf": ("a.jsonl", lambda p: p.write_bytes(b"\xef\xbb\xbf" + _jsonl(GOOD_LINES, "\r\n")), None, {}),
    "mixed-formats-one-file": ("a.jsonl", lambda p: p.write_bytes(_jsonl([
        *GOOD_LINES, json.dumps({"id": "s", "conversations": [{"from": "human", "value": "hi"},
                                                             {"from": "gpt", "value": "yo"}]}),
        json.dumps({"id": "o", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})])),
        None, {"mixed_format": 2}),
    "unknown-keys-kept": ("a.jsonl", lambda p: p.write_bytes(_jsonl([json.dumps({**g, "weird": {"a": [1]}, "score": 3})
                                                                     for g in GOOD])), None, {}),
    "wrong-types": ("a.jsonl", lambda p: p.write_bytes(_jsonl([
        *GOOD_LINES, json.dumps({"id": "w1", "instruction": 5, "output": "x"}),
        json.dumps({"id": "w2", "instruction": "q", "output": ["x"]}),
        json.dumps({"id": "w3", "instruction": "q", "output": "a", "history": "not a list"})])),
        None, {"wrong_type": 3}),
    "non-object-values": ("a.jsonl", lambda p: p.write_bytes(_jsonl([*GOOD_LINES, "[1, 2]", "null", '"text"', "42"])),
                          None, {"wrong_type": 4}),
    "duplicates": ("a.jsonl", lambda p: p.write_bytes(_jsonl([*GOOD_LINES, GOOD_LINES[1], json.dumps(
        {"id": "g0", "instruction": "another", "output": "record"})])),
        None, {"duplicate_content": 1, "duplicate_id": 1}),
    "forced-shape-rejects-others": ("a.jsonl", lambda p: p.write_bytes(_jsonl([*GOOD_LINES, json.dumps(
        {"id": "o", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})])),
        "alpaca", {"mixed_format": 1}),
    "parquet-bad-row": ("a.parquet", _parquet_with_bad_row, None, {"empty_instruction": 1}),
    "hf-bad-row": ("hfdir", _hf_with_bad_row, None, {"empty_response": 1}),
}


@pytest.mark.parametrize("case", list(RECORD_CASES))
def test_record_damage_loses_no_valid_record(tmp_path: Path, case: str) -> None:
    name, write, fmt, reasons = RECORD_CASES[case]
    src = tmp_path / name
    write(src)
    res = divscope.ingest(src, tmp_path / "ws", fmt=fmt)
    ids = {r.id for r in res.workspace.pool.records()}
    want = {g["id"] for g in GOOD}
    assert want <= ids, f"valid records lost: {want - ids}"
    rejects = [json.loads(x) for x in res.workspace.rejects_path.read_text(encoding="utf-8").splitlines()]
    got: dict[str, int] = {}
    for r in rejects:
        got[r["reason"]] = got.get(r["reason"], 0) + 1
        assert r["file"].startswith(str(src)) and (r["line"] is not None or r["index"] is not None)
        assert r["detail"] and r["raw"]
    if case == "wrong-types" and "missing_field" in got:  # a wrong-typed field may also read as absent
        got["wrong_type"] = got.get("wrong_type", 0) + got.pop("missing_field")
    assert got == reasons
    assert res.accepted + res.rejected == res.report["read"]
    if case == "unknown-keys-kept":
        assert all(r.metadata["weird"] == {"a": [1]} and r.metadata["score"] == 3
                   for r in res.workspace.pool.records())


def _cli(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capfd.readouterr().err


# id -> (file name, content writer, extra CLI args, words the one-line error must contain: place and fix)
FILE_CASES: dict[str, tuple[str, Callable[[Path], None] | None, tuple[str, ...], tuple[str, ...]]] = {
    "empty-file": ("e.jsonl", lambda p: p.write_bytes(b""), (), ("e.jsonl", "empty", "at least one record")),
    "blank-file": ("b.jsonl", lambda p: p.write_bytes(b"\n \n\t\n"), (), ("b.jsonl", "empty")),
    "binary-garbage": ("g.jsonl", lambda p: p.write_bytes(bytes(range(256)) * 8), (), ("g.jsonl", "--format")),
    "csv-file": ("c.csv", lambda p: p.write_text("instruction,output\nq,a\n"), (), ("c.csv", "convert it")),
    "json-object-not-records": ("o.json", lambda p: p.write_text(json.dumps({"data": GOOD})), (),
                                ("o.json", "alpaca, ShareGPT or OpenAI")),
    "all-latin1": ("l.jsonl", lambda p: p.write_bytes('{"instruction": "caf\u00e9", "output": "s\u00ed"}\n'
                                                      .encode("latin-1")), (), ("l.jsonl", "UTF-8")),
    "parquet-truncated": ("t.parquet", None, (), ("t.parquet", "not a readable Parquet file")),
    "directory-not-hf": ("d", lambda p: p.mkdir(), (), ("d", "not a Hugging Face datasets directory")),
    "missing-path": ("nothere.jsonl", lambda p: None, (), ("nothere.jsonl", "no such file")),
    "forced-parquet-on-jsonl": ("f.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES)), ("--format", "parquet"),
                                ("f.jsonl", "not a readable Parquet file")),
    "forced-hf-on-jsonl": ("h.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES)), ("--format", "hf"),
                           ("h.jsonl", "Hugging Face datasets directory")),
    "forced-shape-matches-nothing": ("s.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES)), ("--format", "openai"),
                                     ("s.jsonl", "no valid record")),
    "unknown-format-name": ("u.jsonl", lambda p: p.write_bytes(_jsonl(GOOD_LINES)), ("--format", "xml"),
                            ("unknown format", "choose from")),
    "strict-with-a-reject": ("r.jsonl", lambda p: p.write_bytes(_jsonl([*GOOD_LINES, "{bad"])), ("--strict",),
                             ("--strict", "rejects.jsonl")),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_whole_input_damage_is_one_line_naming_place_and_fix(tmp_path: Path, capfd, case: str) -> None:
    name, write, extra, words = FILE_CASES[case]
    src = tmp_path / name
    if write is None:  # a Parquet file cut in half
        divscope.ingest(GOOD, tmp_path / "full")
        data = (tmp_path / "full" / "pool.parquet").read_bytes()
        src.write_bytes(data[: len(data) // 2])
    else:
        write(src)
    rc, err = _cli(capfd, "ingest", str(src), "--out", str(tmp_path / "ws"), *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_huge_record_keeps_memory_bounded(tmp_path: Path) -> None:
    """Records over the 64M-character cap are rejected as too large while the valid records around them are
    kept, and the reader's peak memory does not grow with the record: past twice the cap the skipped text is
    dropped, so a 132 MB and a 200 MB record cost the same."""
    code = ("import resource, sys; from divscope.io.ingest import ingest; r = ingest(sys.argv[1], sys.argv[2]); "
            "print(r.accepted, r.rejected, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak(mb: int) -> int:
        src = tmp_path / f"huge{mb}.jsonl"
        with open(src, "wb") as fh:
            fh.write(_jsonl(GOOD_LINES[:2]))
            fh.write(b'{"id": "huge", "instruction": "')
            block = b"x" * (1 << 20)
            for _ in range(mb):
                fh.write(block)
            fh.write(b'", "output": "y"}\n')
            fh.write(_jsonl(GOOD_LINES[2:]))
        ws = tmp_path / f"ws{mb}"
        out = subprocess.run([sys.executable, "-c", code, str(src), str(ws)], capture_output=True, text=True,
                             timeout=600, check=True).stdout.split()
        src.unlink()
        assert (int(out[0]), int(out[1])) == (3, 1)
        rej = json.loads((ws / "rejects.jsonl").read_text())
        assert rej["reason"] == "record_too_large" and rej["line"] == 3 and len(rej["raw"]) < 1 << 17
        return int(out[2]) * 1024

    small, large = peak(132), peak(200)
    assert large - small < 32 << 20, f"peak grew by {(large - small) >> 20} MB for a record 68 MB longer"


# ------------------------------------------------------------------------------------------------- YAML spec

# id -> (spec text or bytes, words the one-line error must contain besides the file name)
SPEC_CASES: dict[str, tuple[str | bytes, tuple[str, ...]]] = {
    "empty": ("", ("empty spec", "name:")),
    "top-level-list": ("- a\n- b\n", ("top level must be a mapping",)),
    "unknown-key": ("name: x\nselection:\n  colour: red\n", ("selection.colour", "unknown key", "spelling")),
    "unknown-top-key": ("name: x\npoool: {}\n", ("poool", "unknown key")),
    "wrong-type": ("train:\n  max_steps: many\n", ("train.max_steps", "integer")),
    "wrong-type-list": ("selection:\n  sizes: lots\n", ("selection.sizes",)),
    "out-of-range": ("selection:\n  sizes: [-5]\n", ("selection.sizes", ">= 1")),
    "yaml-syntax": ("name: x\nselection: [unclosed\n", (":3:", "not valid YAML")),
    "tab-indent": ("name: x\nselection:\n\tsizes: [1]\n", (":3:", "not valid YAML")),
    "duplicate-key": ("name: x\nname: y\n", (":2:", "given twice")),
    "python-object-tag": ("name: !!python/object/apply:os.system ['echo PWNED']\n", (":1:", "not valid YAML")),
    "latin1": ("name: caf\u00e9\n".encode("latin-1"), ("UTF-8",)),
    "utf16": ("name: x\n".encode("utf-16"), ("UTF-8",)),
    "binary": (bytes(range(256)), ("UTF-8",)),
    "variant-name-escapes": ("variants:\n  - name: ../../escape\n", ("variants.0.name", "pattern")),
    "unknown-strategy": ("selection:\n  strategies: [instruction-nano]\n", ("selection.strategies",)),
    "truncated": ("name: x\nselection:\n  sizes: [10, 2", (":3:", "not valid YAML")),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_spec_is_one_line_naming_place_and_fix(tmp_path: Path, case: str) -> None:
    from divscope.experiment.spec import load_spec

    text, words = SPEC_CASES[case]
    path = tmp_path / "spec.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DivscopeError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    if case == "python-object-tag":
        assert not (tmp_path / "PWNED").exists()


def test_spec_missing_file_and_directory(tmp_path: Path) -> None:
    from divscope.experiment.spec import load_spec

    for p in (tmp_path / "nope.yaml", tmp_path):
        with pytest.raises(DivscopeError, match="no such spec file"):
            load_spec(p)


# ------------------------------------------------------------------------------- paths outside the output dir


@pytest.mark.parametrize("cache_path", ["../../outside.jsonl", "/tmp/divscope-outside.jsonl", "a/../../b.jsonl"])
def test_meso_cache_path_cannot_leave_the_workspace(tmp_path: Path, cache_path: str) -> None:
    from divscope.features.meso import build_meso

    cache = tmp_path / "ws" / "features" / "meso-cache"
    cache.mkdir(parents=True)
    cfg = {"tagger": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m", "cache_path": cache_path}
    with pytest.raises(DivscopeError, match="outside the workspace"):
        build_meso(["write a poem"], cfg, cache)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_eval_set_name_cannot_leave_the_run(tmp_path: Path) -> None:
    from divscope.evaluate.runs import result_path

    for name in ("../../../etc/passwd", "/abs/path.json", "..", "a/../../b"):
        p = result_path(tmp_path / "run", name, "nll").resolve()
        assert p.parent == (tmp_path / "run" / "eval").resolve(), p


def test_grid_strategy_name_cannot_leave_the_output(tmp_path: Path, capfd) -> None:
    rc, err = _cli(capfd, "grid", str(tmp_path), "--sizes", "4", "--strategies", "../../x", "--out",
                   str(tmp_path / "g"))
    assert rc == 2 and "../../x" in err and not (tmp_path.parent / "x").exists()


def test_a_symlink_under_a_final_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    """Writers rename into place: a planted link at an output's name cannot redirect the write elsewhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.parquet"
    target.write_bytes(b"do not touch")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pool.parquet").symlink_to(target)
    (ws / "ingest.json").symlink_to(outside / "report.json")
    divscope.ingest(GOOD, ws)
    assert target.read_bytes() == b"do not touch" and not (outside / "report.json").exists()
    assert not (ws / "pool.parquet").is_symlink() and len(divscope.Workspace(ws).pool) == 3
