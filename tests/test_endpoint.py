"""EndpointClient against a real HTTP server (tests/openai_server.py): retries, faults, concurrency, cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from divscope.endpoint import EndpointClient, chat_url
from divscope.errors import DivscopeError
from divscope.jsonrepair import extract_json
from divscope.store import JsonlStore
from openai_server import (
    Fault,
    OpenAIServer,
    openai_server_fixture,  # noqa: F401 - registers the ``openai_server`` fixture
)

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def make(server: OpenAIServer, **kw) -> EndpointClient:
    opts = {"timeout": 5, "max_retries": 3, **FAST, **kw}
    return EndpointClient(server.base_url, "test-model", **opts)


# -- plain requests ------------------------------------------------------------------------------------------


def test_chat_roundtrip_and_request_body(openai_server):
    c = make(openai_server, temperature=0.3, max_tokens=77, extra_params={"top_p": 0.5})
    r = c.chat(msgs("hello"))
    assert r.ok and r.text == "echo: hello" and not r.cached and r.attempts == 1
    assert r.finish_reason == "stop" and r.usage["total_tokens"] > 0
    body = openai_server.bodies[0]
    assert body["model"] == "test-model" and body["messages"] == msgs("hello")
    assert body["temperature"] == 0.3 and body["max_tokens"] == 77 and body["top_p"] == 0.5


def test_chat_many_aligned_and_deduplicated(openai_server):
    c = make(openai_server)
    reqs = [msgs(f"q{i % 5}") for i in range(20)]
    out = c.chat_many(reqs, progress=None)
    assert [r.text for r in out] == [f"echo: q{i % 5}" for i in range(20)]
    assert openai_server.requests == 5  # identical requests are sent once


@pytest.mark.parametrize("base", ["{root}", "{root}/", "{root}/v1", "{root}/v1/chat/completions"])
def test_base_url_forms(openai_server, base):
    root = f"http://127.0.0.1:{openai_server.port}"
    c = EndpointClient(base.format(root=root), "m", timeout=5)
    assert c.chat(msgs("x")).text == "echo: x"


def test_bad_base_url_is_user_error():
    with pytest.raises(DivscopeError):
        chat_url("localhost:8000")
    with pytest.raises(DivscopeError):
        EndpointClient("http://x/v1", "")


# -- faults and retries --------------------------------------------------------------------------------------


def test_slow_answer_times_out_then_retry_succeeds(openai_server):
    openai_server.push(Fault.slow(1.5))
    c = make(openai_server, timeout=0.4)
    t0 = time.monotonic()
    r = c.chat(msgs("slow"))
    assert r.ok and r.text == "echo: slow"
    assert r.attempts == 2 and "timed out" in r.history[0]
    assert time.monotonic() - t0 < 1.5  # did not wait for the slow answer


def test_429_honours_retry_after(openai_server):
    openai_server.push(Fault.rate_limit(retry_after=1))
    c = make(openai_server)
    t0 = time.monotonic()
    r = c.chat(msgs("rl"))
    waited = time.monotonic() - t0
    assert r.ok and r.attempts == 2 and "429" in r.history[0]
    assert waited >= 0.95  # backoff alone would be ~0.01 s


def test_429_retry_after_http_date(openai_server):
    from email.utils import formatdate

    openai_server.push(Fault.status(429, retry_after=formatdate(time.time() + 1.2, usegmt=True)))
    c = make(openai_server)
    t0 = time.monotonic()
    assert c.chat(msgs("d")).ok
    assert time.monotonic() - t0 >= 0.2  # an HTTP date (second resolution) is honoured too


@pytest.mark.parametrize("fault,kind", [
    (Fault.server_error(500), "http_5xx"),
    (Fault.server_error(503), "http_5xx"),
    (Fault.invalid_json(), "bad_response"),
    (Fault.missing_fields(), "bad_response"),
    (Fault.wrong_schema(), "bad_response"),
    (Fault.drop(), "connection"),
])
def test_transient_faults_are_retried(openai_server, fault, kind):
    openai_server.push(fault, fault)
    c = make(openai_server)
    r = c.chat(msgs("f"))
    assert r.ok, r.error
    assert r.text == "echo: f" and r.attempts == 3 and len(r.history) == 2
    assert openai_server.requests == 3


def test_bounded_retries_then_recorded_failure(openai_server, tmp_path):
    openai_server.responder = lambda m: Fault.server_error(500) if "bad" in m[-1]["content"] else "fine"
    c = make(openai_server, max_retries=2, cache_path=tmp_path / "cache.jsonl")
    out = c.chat_many([msgs("bad one"), msgs("good one")], progress=None)
    bad, good = out
    assert good.ok and good.text == "fine"
    assert not bad.ok and bad.text == "" and bad.attempts == 3 and bad.error_kind == "http_5xx"
    assert "HTTP 500" in bad.error and "gave up after 3 attempts" in bad.error
    assert openai_server.requests == 4
    errors = [json.loads(x) for x in (tmp_path / "cache.jsonl.errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["attempts"] == 3 and len(errors[0]["history"]) == 3
    assert "failed (http_5xx=1)" in c.failures_summary(out)
    # Failures are not cached: a rerun asks again (and only) the failed request.
    openai_server.reset_counters()
    openai_server.responder = lambda m: "recovered"
    again = make(openai_server, cache_path=tmp_path / "cache.jsonl").chat_many(
        [msgs("bad one"), msgs("good one")], progress=None)
    assert openai_server.requests == 1
    assert again[0].text == "recovered" and not again[0].cached and again[1].cached and again[1].text == "fine"


def test_client_error_not_retried(openai_server):
    openai_server.push(Fault.status(400, body='{"error": {"message": "context length exceeded"}}'))
    r = make(openai_server).chat(msgs("long"))
    assert not r.ok and r.attempts == 1 and r.error_kind == "http_4xx"
    assert "context length exceeded" in r.error and openai_server.requests == 1


def test_connection_refused_bounded():
    with OpenAIServer() as srv:
        url = srv.base_url
    c = EndpointClient(url, "m", timeout=1, max_retries=2, **FAST)
    r = c.chat(msgs("x"))
    assert not r.ok and r.error_kind == "connection" and r.attempts == 3


def test_backoff_is_seeded_exponential_with_jitter():
    c = EndpointClient("http://127.0.0.1:1/v1", "m", backoff_base=1.0, backoff_max=10.0, seed=7)
    d = [c._backoff("k", a, None) for a in range(1, 7)]
    assert d == [c._backoff("k", a, None) for a in range(1, 7)]  # deterministic
    for a, x in enumerate(d, start=1):
        base = min(10.0, 2 ** (a - 1))
        assert 0.5 * base <= x < 1.5 * base
    assert EndpointClient("http://127.0.0.1:1/v1", "m", seed=8)._backoff("k", 1, None) != d[0]
    assert c._backoff("k", 1, retry_after=5.0) >= 5.0
    assert c._backoff("k", 1, retry_after=1e6) <= c.max_retry_after


# -- concurrency ---------------------------------------------------------------------------------------------


def test_concurrency_bound_respected():
    with OpenAIServer(latency=0.15) as srv:
        c = EndpointClient(srv.base_url, "m", max_concurrency=3, timeout=5)
        out = c.chat_many([msgs(f"p{i}") for i in range(15)], progress=None)
        assert all(r.ok for r in out)
        assert srv.requests == 15
        assert srv.max_in_flight == 3  # reached, never exceeded


# -- cache ---------------------------------------------------------------------------------------------------


def test_cache_second_run_sends_zero_requests(openai_server, tmp_path):
    cache = tmp_path / "c.jsonl"
    reqs = [msgs(f"item {i}") for i in range(12)]
    first = make(openai_server, cache_path=cache).chat_many(reqs, progress=None)
    assert openai_server.requests == 12 and not any(r.cached for r in first)
    openai_server.reset_counters()
    second = make(openai_server, cache_path=cache).chat_many(reqs, progress=None)
    assert openai_server.requests == 0
    assert all(r.cached and r.attempts == 0 for r in second)
    assert [r.text for r in second] == [r.text for r in first]
    # Different params are a different request.
    make(openai_server, cache_path=cache, temperature=0.7).chat(reqs[0])
    assert openai_server.requests == 1


def test_cache_survives_truncated_last_line(openai_server, tmp_path):
    cache = tmp_path / "c.jsonl"
    reqs = [msgs(f"k{i}") for i in range(5)]
    make(openai_server, cache_path=cache).chat_many(reqs, progress=None)
    raw = cache.read_bytes()
    lines = raw.splitlines(keepends=True)
    assert len(lines) == 5
    cache.write_bytes(b"".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # a kill mid-write of the last line
    store = JsonlStore(cache)
    assert len(store) == 4 and store.corrupt_lines == 1
    openai_server.reset_counters()
    c = make(openai_server, cache_path=cache)
    out = c.chat_many(reqs, progress=None)
    assert openai_server.requests == 1  # only the entry whose line was broken
    assert [r.cached for r in out].count(True) == 4
    # The new record was not glued onto the broken fragment: everything loads again.
    store = JsonlStore(cache)
    assert len(store) == 5 and store.corrupt_lines == 1
    openai_server.reset_counters()
    make(openai_server, cache_path=cache).chat_many(reqs, progress=None)
    assert openai_server.requests == 0


def test_cache_survives_kill_9(tmp_path):
    """A child process appends to the cache while being SIGKILLed; every complete line stays usable."""
    cache = tmp_path / "c.jsonl"
    code = textwrap.dedent(f"""
        import sys
        from divscope.store import JsonlStore
        s = JsonlStore({str(cache)!r})
        print("ready", flush=True)
        i = 0
        while True:
            s.put(f"k{{i}}", {{"text": "x" * 20000}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    store = JsonlStore(cache)
    assert len(store) > 0 and store.corrupt_lines <= 1
    assert all(store.get(k)["text"] == "x" * 20000 for k in store.keys())


def test_api_key_never_on_disk_or_in_repr(openai_server, tmp_path, monkeypatch):
    secret = "sk-PLANTED-" + "9" * 24
    monkeypatch.setenv("DIVSCOPE_TEST_KEY", secret)
    cache = tmp_path / "c.jsonl"
    c = make(openai_server, cache_path=cache, api_key_env="DIVSCOPE_TEST_KEY", max_retries=1)
    # The server echoes the Authorization header back into an error body: the key must be redacted.
    openai_server.responder = lambda m: (Fault.status(401, body=f"bad key {openai_server.headers[-1]['authorization']}")
                                         if "fail" in m[-1]["content"] else "ok")
    ok = c.chat(msgs("hello"))
    bad = c.chat(msgs("fail"))
    assert ok.ok and openai_server.headers[0]["authorization"] == f"Bearer {secret}"
    assert not bad.ok and secret not in bad.error and "***" in bad.error
    assert secret not in repr(c) and secret not in json.dumps(c.describe())
    for p in tmp_path.iterdir():
        assert secret.encode() not in p.read_bytes(), p
    assert len(list(tmp_path.iterdir())) == 2  # cache + error log


def test_missing_key_env_sends_no_auth(openai_server, monkeypatch):
    monkeypatch.delenv("DIVSCOPE_NO_SUCH_KEY", raising=False)
    c = make(openai_server, api_key_env="DIVSCOPE_NO_SUCH_KEY")
    assert c.chat(msgs("x")).ok
    assert "authorization" not in openai_server.headers[0]


# -- extract_json ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ('[{"tag": "a", "explanation": "b"}]', [{"tag": "a", "explanation": "b"}]),
    ('Sure! Here are the tags:\n```json\n[{"tag": "a"}]\n```\nHope it helps', [{"tag": "a"}]),
    ("```\n{'tag': 'a', 'explanation': 'it\\'s x'}\n```", {"tag": "a", "explanation": "it's x"}),
    ('[{"tag": "a",}, {"tag": "b"},]', [{"tag": "a"}, {"tag": "b"}]),
    ("Tags: ['code generation', 'python']", ["code generation", "python"]),
    ('{"ok": true, "v": null}', {"ok": True, "v": None}),
    ('see [1]. Result: {"tag": "x"}', [1]),
    ('see [note here]. Result: {"tag": "x"}', {"tag": "x"}),
    ('[{"tag": "a", "explanation": "b"}, {"tag": "c", "expl', [{"tag": "a", "explanation": "b"}]),
    ('```json\n[{"tag": "a"}, {"tag": "b"}, {"ta', [{"tag": "a"}, {"tag": "b"}]),
    ('The user doesn\'t want [{"tag": "x"}]', [{"tag": "x"}]),
    ("no json here", None),
    ("", None),
])
def test_extract_json(text, expected):
    assert extract_json(text) == expected


def test_extract_json_default():
    assert extract_json("nothing", default=[]) == []


def test_no_stray_files_without_cache(openai_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(openai_server).chat(msgs("x"))
    assert list(Path(tmp_path).iterdir()) == []


# -- fail fast -----------------------------------------------------------------------------------------------


def test_auth_error_stops_the_batch(openai_server):
    openai_server.responder = lambda m: Fault.status(401, body='{"error": {"message": "invalid api key"}}')
    c = make(openai_server, max_concurrency=1)
    out = c.chat_many([msgs(f"x{i}") for i in range(30)], progress=None)
    assert openai_server.requests == 1
    assert out[0].error_kind == "http_4xx" and "401" in out[0].error
    assert all(r.error_kind == "aborted" and r.attempts == 0 and "401" in r.error for r in out[1:])
    assert c.stats["not_sent"] == 29
    # The next batch tries again (the flag is per call).
    openai_server.responder = lambda m: "ok"
    assert c.chat(msgs("x5")).ok


def test_dead_server_stops_after_consecutive_failures():
    with OpenAIServer() as srv:
        url = srv.base_url
    c = EndpointClient(url, "m", timeout=1, max_retries=1, max_concurrency=2, abort_after=4, **FAST)
    t0 = time.monotonic()
    out = c.chat_many([msgs(f"x{i}") for i in range(200)], progress=None)
    assert time.monotonic() - t0 < 10
    kinds = [r.error_kind for r in out]
    assert kinds.count("connection") <= 6 and kinds.count("aborted") >= 194
    assert all(not r.ok for r in out)
