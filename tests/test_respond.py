"""`divscope respond` against a real OpenAI-compatible HTTP server (tests/openai_server.py): regeneration,
ids/metadata/provenance, faults, failures reported, and a kill -9 midway that resumes without re-asking."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import divscope
from divscope.errors import DivscopeError
from divscope.evaluate.respond import CACHE_FILE, FAILURES_FILE, respond
from divscope.store import JsonlStore
from openai_server import (
    Fault,
    OpenAIServer,
    openai_server_fixture,  # noqa: F401 - registers the ``openai_server`` fixture
)

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def regen(messages):
    users = [m["content"] for m in messages if m["role"] == "user"]
    return f"REGEN[{len(users)}]: {users[-1]}"


def make_pool(path: Path, n: int = 6) -> Path:
    rows = [{"id": f"s{i}", "instruction": f"question {i}", "output": f"old answer {i}", "topic": f"t{i % 2}"}
            for i in range(n)]
    rows.append({"id": "multi", "system": "Be terse.", "history": [["first q", "old 1"]], "instruction": "second q",
                 "output": "old 2", "source": "somewhere"})
    rows.append({"instruction": "no id here", "output": "old no id"})  # id = content hash of the original
    divscope.ingest(rows, path)
    return path


def pool_by_id(ws: Path) -> dict:
    return {r.id: r for r in divscope.Workspace(ws).pool.records()}


def test_respond_regenerates_and_keeps_ids_metadata_provenance(openai_server, tmp_path):
    ws = make_pool(tmp_path / "ws")
    before = pool_by_id(ws)
    assert len(before) == 8
    openai_server.responder = regen
    res = respond(ws, tmp_path / "ws2", openai_server.base_url, "strong-model", client_options=FAST,
                  progress=False)
    assert res.regenerated == len(before) and res.failed == 0
    after = pool_by_id(tmp_path / "ws2")
    assert set(after) == set(before)  # ids kept, including the content-hash id of a sample that had none
    s0 = after["s0"]
    assert s0.conversation[0].content == "question 0" and s0.response == "REGEN[1]: question 0"
    assert s0.metadata["topic"] == "t0"
    prov = s0.metadata["regenerated"]
    assert prov["responder_model"] == "strong-model" and prov["endpoint"].startswith("http://127.0.0.1")
    assert prov["original_response_hash"] == hashlib.sha256(b"old answer 0").hexdigest()[:16]
    assert prov["original_content_hash"] == before["s0"].content_hash and prov["finish_reasons"] == ["stop"]
    # Multi-turn: the system prompt stays, turn 2 is asked with the regenerated turn 1 in context.
    multi = after["multi"]
    assert [t.role for t in multi.conversation] == ["system", "user", "assistant", "user", "assistant"]
    assert multi.conversation[2].content == "REGEN[1]: first q"
    assert multi.conversation[4].content == "REGEN[2]: second q"
    assert multi.metadata["source"] == "somewhere"
    second = next(b for b in openai_server.bodies if b["messages"][-1]["content"] == "second q")
    assert second["model"] == "strong-model" and second["messages"][0] == {"role": "system", "content": "Be terse."}
    assert second["messages"][2] == {"role": "assistant", "content": "REGEN[1]: first q"}
    report = json.loads((tmp_path / "ws2" / "ingest.json").read_text())
    assert report["accepted"] == len(before)
    assert report["respond"]["regenerated"] == len(before) and report["respond"]["failed"] == 0
    assert report["respond"]["requests_sent"] == len(before) + 1  # one per assistant turn
    assert (tmp_path / "ws2" / FAILURES_FILE).read_text() == ""
    assert divscope.Workspace(ws).pool.records()[0].response == "old answer 0"  # the input is untouched


def test_regenerated_pool_keeps_each_records_source(openai_server, tmp_path):
    """A pool ingested from two files: each regenerated record names its original file as its source (not
    ``<python:0>``), the pool keeps its order, and the provenance holds the original source id."""
    files = []
    for name, ids in (("a.jsonl", ("a0", "a1", "a2")), ("b.jsonl", ("b0", "b1"))):
        f = tmp_path / name
        f.write_text("".join(json.dumps({"id": i, "instruction": f"q {i}", "output": f"old {i}"}) + "\n"
                             for i in ids))
        files.append(f)
    divscope.ingest(files, tmp_path / "ws")
    before = divscope.Workspace(tmp_path / "ws").pool.records()
    assert {r.source for r in before} == {str(f) for f in files}
    openai_server.responder = regen
    respond(tmp_path / "ws", tmp_path / "ws2", openai_server.base_url, "m", client_options=FAST, progress=False)
    after = divscope.Workspace(tmp_path / "ws2").pool.records()
    assert [(r.id, r.source) for r in after] == [(r.id, r.source) for r in before]
    assert all(r.metadata["regenerated"]["original_source_id"] == r.id for r in after)
    report = json.loads((tmp_path / "ws2" / "ingest.json").read_text())
    assert report["inputs"] == [str(f) for f in files]


def test_transient_faults_are_retried(openai_server, tmp_path):
    ws = make_pool(tmp_path / "ws", n=4)
    openai_server.responder = regen
    openai_server.push(Fault.rate_limit(0), Fault.server_error(500), Fault.slow(2.0), Fault.drop(),
                       Fault.missing_fields(), Fault.invalid_json())
    res = respond(ws, tmp_path / "ws2", openai_server.base_url, "m", timeout=0.8, concurrency=2, max_retries=8,
                  client_options=FAST, progress=False)
    assert res.failed == 0 and res.regenerated == 6
    assert all(r.response.startswith("REGEN") for r in divscope.Workspace(tmp_path / "ws2").pool.records())


def test_failures_are_reported_not_dropped_and_a_rerun_retries_them(openai_server, tmp_path):
    ws = make_pool(tmp_path / "ws", n=4)

    def flaky(messages):
        last = messages[-1]["content"]
        if last == "question 2":
            return Fault.server_error(500)
        if last == "second q":
            return "   "  # an empty answer is a failure, not a sample with an empty response
        return regen(messages)

    openai_server.responder = flaky
    res = respond(ws, tmp_path / "ws2", openai_server.base_url, "m", max_retries=1, client_options=FAST,
                  progress=False)
    assert res.failed == 2 and res.regenerated == 4
    fails = {f["id"]: f for f in map(json.loads, (tmp_path / "ws2" / FAILURES_FILE).read_text().splitlines())}
    assert set(fails) == {"s2", "multi"}
    assert fails["s2"]["error_kind"] == "http_5xx" and "HTTP 500" in fails["s2"]["reason"] and fails["s2"]["turn"] == 1
    assert fails["multi"]["error_kind"] == "empty_response" and fails["multi"]["turn"] == 2
    report = json.loads((tmp_path / "ws2" / "ingest.json").read_text())["respond"]
    assert report["failed"] == 2 and report["failed_by_kind"] == {"empty_response": 1, "http_5xx": 1}
    assert set(pool_by_id(tmp_path / "ws2")) == set(pool_by_id(ws)) - {"s2", "multi"}
    # Rerun once the endpoint is healthy: only the failed requests go out (the empty answer was a success
    # for the client, so it is cached: a rerun with the same settings gets the same empty answer).
    openai_server.reset_counters()
    openai_server.responder = regen
    res2 = respond(ws, tmp_path / "ws2", openai_server.base_url, "m", max_retries=1, client_options=FAST,
                   progress=False)
    assert openai_server.requests == 1 and openai_server.bodies[0]["messages"][-1]["content"] == "question 2"
    assert res2.regenerated == 5 and res2.failed == 1
    assert "s2" in pool_by_id(tmp_path / "ws2")


def test_dead_endpoint_is_a_user_error(tmp_path):
    ws = make_pool(tmp_path / "ws", n=2)
    with OpenAIServer() as srv:
        url = srv.base_url  # a port that is closed once the server stops
    with pytest.raises(DivscopeError, match="no response could be regenerated"):
        respond(ws, tmp_path / "ws2", url, "m", max_retries=0, client_options=FAST, progress=False)
    assert len((tmp_path / "ws2" / FAILURES_FILE).read_text().splitlines()) == 4
    with pytest.raises(DivscopeError, match="another workspace"):
        respond(ws, ws, url, "m", progress=False)


def test_api_key_is_sent_but_never_written(openai_server, tmp_path, monkeypatch):
    ws = make_pool(tmp_path / "ws", n=2)
    monkeypatch.setenv("DIVSCOPE_TEST_KEY", "sk-very-secret-123")
    openai_server.responder = regen
    respond(ws, tmp_path / "ws2", openai_server.base_url, "m", api_key_env="DIVSCOPE_TEST_KEY",
            client_options=FAST, progress=False)
    assert openai_server.headers[0]["authorization"] == "Bearer sk-very-secret-123"
    for f in (tmp_path / "ws2").rglob("*"):
        if f.is_file():
            assert b"sk-very-secret-123" not in f.read_bytes(), f


@pytest.mark.slow
def test_killed_respond_resumes_without_reasking(tmp_path):
    n = 24
    rows = [{"id": f"k{i}", "instruction": f"kill question {i}", "output": f"old {i}"} for i in range(n)]
    divscope.ingest(rows, tmp_path / "ws")
    out = tmp_path / "ws2"
    with OpenAIServer(responder=regen, latency=0.25) as srv:
        code = ("import sys; from divscope.evaluate.respond_commands import respond_cmd; "
                "respond_cmd.main(sys.argv[1:])")
        args = [str(tmp_path / "ws"), "--endpoint", srv.base_url, "--model", "m", "--out", str(out),
                "--concurrency", "2"]
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True,
                                env={**os.environ, "DIVSCOPE_PROGRESS": "0"})
        deadline = time.monotonic() + 60
        cache = out / CACHE_FILE

        def cached() -> int:
            return len(JsonlStore(cache)) if cache.exists() else 0

        while cached() < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not (out / "pool.parquet").exists()  # nothing half-written: the pool comes at the end
        done = cached()
        assert 6 <= done < n
        srv.reset_counters()
        res = respond(tmp_path / "ws", out, srv.base_url, "m", concurrency=2, progress=False)
        assert srv.requests == n - done  # finished samples are never asked again
        asked = {b["messages"][-1]["content"] for b in srv.bodies}
        assert len(asked) == n - done
    assert res.regenerated == n and res.failed == 0
    assert res.report["cache_hits"] == done
    assert {r.id for r in divscope.Workspace(out).pool.records()} == {f"k{i}" for i in range(n)}
