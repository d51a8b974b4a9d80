"""Endpoint faults x client paths: every fault kind of the real HTTP fault server (tests/openai_server.py) against
every client path that talks to an endpoint: tagging (meso, ``build_meso``), judging (``judge_pairs``) and
regeneration (``respond``).

For each (path, fault kind):
- transient: the fault hits the first two requests; the retries absorb it and the result equals a clean run;
- persistent: one item always faults; it is retried a bounded number of times, recorded as failed with the
  fault's kind, everything else completes; once the server is healthy a rerun asks only that item and ends
  equal to a clean run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import divscope
from openai_server import Fault, OpenAIServer

pytestmark = pytest.mark.reliability

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}
# Per attempt. Generous enough that a healthy answer does not time out when the test process stalls (late in
# the full suite a healthy request once went past 0.5 s); the slow fault sleeps longer than this.
TIMEOUT = 1.5
SLOW_S = 2.5

# fault kind -> (a fault for one request, the error_kind the client records for it)
FAULTS: dict[str, tuple[Callable[[], Fault], str]] = {
    "slow": (lambda: Fault.slow(SLOW_S), "timeout"),
    "drop": (Fault.drop, "connection"),
    "429-retry-after": (lambda: Fault.rate_limit(0.2), "http_429"),
    "500": (Fault.server_error, "http_5xx"),
    "invalid-json": (Fault.invalid_json, "bad_response"),
    "missing-fields": (Fault.missing_fields, "bad_response"),
    "wrong-schema": (Fault.wrong_schema, "bad_response"),
}
PATHS = ["tagging", "judging", "regeneration"]


def _persistently(fault: str, marker: str, healthy: Callable[[list[dict]], Any]) -> Callable[[list[dict]], Any]:
    """A responder that faults on every request whose last message contains ``marker``."""
    def responder(messages: list[dict]) -> Any:
        if marker in messages[-1]["content"]:
            if fault == "slow":
                time.sleep(SLOW_S)
                return healthy(messages)
            return FAULTS[fault][0]()
        return healthy(messages)
    return responder


# ------------------------------------------------------------------------------------------ the three paths


class Tagging:
    """Meso tagging through the endpoint tagger (InsTag-style JSON replies)."""

    texts = [f"Write a short {kind} about item {i}" for i, kind in enumerate(["poem", "story", "poem", "song",
                                                                              "story", "poem"])]
    marker = "item 3"

    @staticmethod
    def healthy(messages: list[dict]) -> str:
        query = messages[-1]["content"].split("User query: ", 1)[1]
        kind = query.split()[3]
        return json.dumps([{"tag": f"write {kind}", "explanation": "x"}, {"tag": "creative writing",
                                                                           "explanation": "y"}])

    def run(self, srv: OpenAIServer, cache: Path, max_retries: int) -> tuple[Any, int, list[str]]:
        from divscope.features.meso import build_meso

        cfg = {"tagger": "endpoint", "base_url": srv.base_url, "model": "tagger", "timeout": TIMEOUT,
               "max_retries": max_retries, "max_concurrency": 2, "api_key_env": "DIVSCOPE_NO_KEY",
               "min_count": 1, "max_failure_rate": 0.5}
        m, names, prov = build_meso(self.texts, cfg, cache)
        return (names, m.toarray().tolist()), prov["tagging"]["failed_texts"], prov["tagging"]["errors"]

    def requests_for_marker(self, srv: OpenAIServer) -> int:
        return sum(self.marker in b["messages"][-1]["content"] for b in srv.bodies)


class Judging:
    """The pairwise judge (both orders per item)."""

    marker = "question 1"

    @staticmethod
    def healthy(messages: list[dict]) -> str:
        text = messages[1]["content"]
        a = text.split("[The Start of Assistant A's Answer]\n", 1)[1]
        return "Final verdict: [[A]]" if a.startswith("model") else "Final verdict: [[B]]"

    def run(self, srv: OpenAIServer, cache: Path, max_retries: int) -> tuple[Any, int, list[str]]:
        from divscope.endpoint import EndpointClient
        from divscope.evaluate.judge import Pair, judge_pairs

        client = EndpointClient(srv.base_url, "judge", timeout=TIMEOUT, max_retries=max_retries,
                                cache_path=cache / "judge.jsonl", **FAST)
        pairs = [Pair(f"p{i}", (f"question {i}",), (f"model answer {i}",), (f"reference {i}",)) for i in range(4)]
        out = judge_pairs(client, pairs, progress=None)
        s = out.summary()
        errors = [p for j in out.judgments for p in j.problems.values()]
        result = {k: s[k] for k in ("judged", "unjudged", "win_rate", "verdicts_by_order") if k in s}
        return result, s["unjudged"], errors

    def requests_for_marker(self, srv: OpenAIServer) -> int:
        return sum(self.marker in b["messages"][1]["content"] for b in srv.bodies)


class Regeneration:
    """``respond``: regenerate every response of a pool."""

    marker = "question 2"

    @staticmethod
    def healthy(messages: list[dict]) -> str:
        return "REGEN: " + messages[-1]["content"]

    def run(self, srv: OpenAIServer, cache: Path, max_retries: int) -> tuple[Any, int, list[str]]:
        from divscope.evaluate.respond import FAILURES_FILE, respond

        src = cache / "src"
        if not src.exists():
            divscope.ingest([{"id": f"s{i}", "instruction": f"question {i}", "output": f"old {i}"}
                             for i in range(5)], src)
        out = cache / "out"
        res = respond(src, out, srv.base_url, "m", timeout=TIMEOUT, max_retries=max_retries, concurrency=2,
                      client_options=FAST, progress=False)
        fails = [json.loads(x) for x in (out / FAILURES_FILE).read_text().splitlines()]
        records = [(r.id, r.messages()) for r in divscope.Workspace(out).pool.records()]
        return records, res.failed, [f"{f['error_kind']}: {f['reason']}" for f in fails]

    def requests_for_marker(self, srv: OpenAIServer) -> int:
        return sum(b["messages"][-1]["content"] == self.marker for b in srv.bodies)


CLIENTS = {"tagging": Tagging(), "judging": Judging(), "regeneration": Regeneration()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each path's result against a healthy server (what every faulted run must end equal to)."""
    out = {}
    for name, c in CLIENTS.items():
        with OpenAIServer(responder=c.healthy) as srv:
            result, failed, errors = c.run(srv, tmp_path_factory.mktemp(f"clean-{name}"), max_retries=2)
        assert failed == 0, (name, errors)
        out[name] = result
    return out


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("path", PATHS)
def test_transient_fault_is_retried_to_a_clean_result(clean, tmp_path: Path, path: str, fault: str) -> None:
    c = CLIENTS[path]
    with OpenAIServer(responder=c.healthy) as srv:
        srv.push(FAULTS[fault][0](), FAULTS[fault][0]())
        result, failed, errors = c.run(srv, tmp_path, max_retries=3)
    assert failed == 0, errors
    assert result == clean[path]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("path", PATHS)
def test_persistent_fault_is_bounded_recorded_and_resumed(clean, tmp_path: Path, path: str, fault: str) -> None:
    c = CLIENTS[path]
    kind = FAULTS[fault][1]
    with OpenAIServer(responder=c.healthy) as srv:
        srv.responder = _persistently(fault, c.marker, c.healthy)
        result, failed, errors = c.run(srv, tmp_path, max_retries=1)
        assert failed >= 1 and errors, f"{path}: the faulted item must be recorded as failed"
        per_item = 2 if path == "judging" else 1  # the judge asks both orders
        assert c.requests_for_marker(srv) == 2 * per_item  # bounded: first try + max_retries=1
        text = " ".join(errors)
        assert kind in text or {"timeout": "timed out", "connection": "onnect", "http_429": "429",
                                "http_5xx": "500", "bad_response": "response"}[kind] in text, text
        # The server recovers: a rerun asks only what failed and ends equal to a clean run.
        srv.responder = c.healthy
        srv.reset_counters()
        result, failed, errors = c.run(srv, tmp_path, max_retries=1)
        assert failed == 0, errors
        assert srv.requests == per_item and c.requests_for_marker(srv) == per_item
    assert result == clean[path]
