"""A real, scriptable OpenAI-compatible HTTP server for tests (no mocks).

``OpenAIServer`` runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (random free port) in a background thread
and implements ``POST /v1/chat/completions`` (also ``/chat/completions``) with the real response schema::

    {"id": "chatcmpl-...", "object": "chat.completion", "created": 1700000000, "model": <request model>,
     "choices": [{"index": 0, "message": {"role": "assistant", "content": ...}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": ..., "completion_tokens": ..., "total_tokens": ...}}

and ``GET /v1/models``.

Behaviour is scripted with:

* ``responder(messages) -> str``: the assistant content (default: echo the last user message). It may also
  return a :class:`Fault` to fail that particular request (content-dependent faults), or a dict
  ``{"content": str, "logprobs": {...}, "finish_reason": str}`` (``choices[0].logprobs`` and the finish reason
  in the reply).
* ``faults``: a FIFO list of :class:`Fault` (or ``None`` = answer normally) consumed one per request in arrival
  order, e.g. ``server.push(Fault.rate_limit(1), Fault.server_error())``; when empty, requests are answered.
* ``latency``: seconds every request sleeps before answering (to hold requests in flight).

Faults: ``Fault.slow(s)`` (sleep ``s`` then answer normally, for client timeouts), ``Fault.status(code,
retry_after=None, body=...)``, ``Fault.rate_limit(retry_after)`` (429 + Retry-After), ``Fault.server_error(500)``,
``Fault.invalid_json()`` (200 with a non-JSON body), ``Fault.missing_fields()`` (200, JSON without ``choices``),
``Fault.wrong_schema()`` (200, ``choices`` of the wrong shape/type), ``Fault.drop()`` (close the connection
without sending a response).

Counters (thread-safe): ``requests`` (received), ``answered`` (normal 200 answers), ``in_flight``,
``max_in_flight`` (most simultaneous requests seen), ``bodies`` (parsed request bodies, in arrival order),
``headers`` (request headers, same order). ``reset_counters()`` clears them.

Usage::

    from openai_server import Fault, OpenAIServer
    from openai_server import openai_server_fixture  # noqa: F401 - registers the ``openai_server`` fixture

    def test_x(openai_server):
        openai_server.responder = lambda msgs: '[{"tag": "x", "explanation": "y"}]'
        client = EndpointClient(openai_server.base_url, "test-model")

or, without pytest: ``with OpenAIServer() as srv: ...``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Fault:
    kind: str  # slow | status | invalid_json | missing_fields | wrong_schema | drop
    seconds: float = 0.0
    code: int = 500
    retry_after: str | None = None
    body: str | None = None

    @staticmethod
    def slow(seconds: float) -> Fault:
        return Fault("slow", seconds=seconds)

    @staticmethod
    def status(code: int, retry_after: float | str | None = None, body: str | None = None) -> Fault:
        return Fault("status", code=code, retry_after=None if retry_after is None else str(retry_after), body=body)

    @staticmethod
    def rate_limit(retry_after: float | str | None = 1) -> Fault:
        return Fault.status(429, retry_after, '{"error": {"message": "Rate limit reached", "type": "rate_limit"}}')

    @staticmethod
    def server_error(code: int = 500) -> Fault:
        return Fault.status(code, None, '{"error": {"message": "internal error", "type": "server_error"}}')

    @staticmethod
    def invalid_json() -> Fault:
        return Fault("invalid_json")

    @staticmethod
    def missing_fields() -> Fault:
        return Fault("missing_fields")

    @staticmethod
    def wrong_schema() -> Fault:
        return Fault("wrong_schema")

    @staticmethod
    def drop() -> Fault:
        return Fault("drop")


def echo_responder(messages: list[dict[str, Any]]) -> str:
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


class OpenAIServer:
    def __init__(self, responder: Callable[[list[dict[str, Any]]], Any] | None = None, latency: float = 0.0):
        self.responder = responder or echo_responder
        self.latency = latency
        self._faults: deque[Fault | None] = deque()
        self._lock = threading.Lock()
        self.reset_counters()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting --------------------------------------------------------------------------------------------

    def push(self, *faults: Fault | None) -> None:
        """Queue faults for the next requests, in arrival order (``None`` = answer that request normally)."""
        with self._lock:
            self._faults.extend(faults)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0
            self.answered = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.bodies: list[dict[str, Any]] = []
            self.headers: list[dict[str, str]] = []

    # -- lifecycle --------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The API root in the OpenAI convention (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- request accounting ---------------------------------------------------------------------------------

    def _enter(self, body: dict[str, Any] | None, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.bodies.append(body if body is not None else {})
            self.headers.append(headers)
            return self._faults.popleft() if self._faults else None

    def _leave(self, answered: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if answered:
                self.answered += 1


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        srv = self.owner
        fault = srv._enter(body, {k.lower(): v for k, v in self.headers.items()})
        answered = False
        try:
            if body is None or not isinstance(body.get("messages"), list):
                self._send(400, b'{"error": {"message": "invalid request body", "type": "invalid_request_error"}}')
                return
            if srv.latency:
                time.sleep(srv.latency)
            messages = body["messages"]
            if fault is None:
                out = srv.responder(messages)
                if isinstance(out, Fault):
                    fault = out
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.seconds)
                out = srv.responder(messages)
                fault = out if isinstance(out, Fault) else None
            if fault is not None:
                self._fault(fault)
                return
            extra: dict[str, Any] = {}
            if isinstance(out, dict):
                extra = {k: out[k] for k in ("logprobs", "finish_reason") if k in out}
                out = out["content"]
            content = str(out)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            completion_tokens = len(content.split())
            payload = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "test-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop", **extra}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
            self._send(200, json.dumps(payload).encode("utf-8"))
            answered = True
        finally:
            srv._leave(answered)

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            self._send(fault.code, (fault.body or '{"error": {"message": "error"}}').encode(), extra=extra)
        elif fault.kind == "invalid_json":
            self._send(200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"role": "assist')
        elif fault.kind == "missing_fields":
            self._send(200, json.dumps({"id": "chatcmpl-x", "object": "chat.completion",
                                        "created": int(time.time()), "model": "test-model"}).encode())
        elif fault.kind == "wrong_schema":
            self._send(200, json.dumps({"id": "chatcmpl-x", "object": "chat.completion",
                                        "choices": {"text": "not a list of choices"},
                                        "usage": {}}).encode())
        elif fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")


@pytest.fixture(name="openai_server")
def openai_server_fixture():
    """A started :class:`OpenAIServer` (echo responder, no faults), stopped after the test."""
    srv = OpenAIServer().start()
    try:
        yield srv
    finally:
        srv.stop()
