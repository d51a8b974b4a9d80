"""The one client for OpenAI-compatible chat-completions endpoints (vLLM, llama.cpp server, OpenAI, ...).

Tagging (meso level), LLM judging and response regeneration all go through :class:`EndpointClient`:

* **Endpoint**: ``base_url`` may be the server root (``http://host:8000``), the API root
  (``http://host:8000/v1``, the OpenAI convention) or the full ``.../chat/completions`` URL.
* **API key**: read only from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``), at request time. It is never stored on the client, never written to the cache or the
  error log, and is redacted from every error message. A missing variable means "send no Authorization
  header" (a local vLLM / llama.cpp server needs none).
* **Concurrency**: at most ``max_concurrency`` requests in flight (a thread pool over one shared
  ``httpx.Client`` whose connection pool has the same bound).
* **Retries**: timeouts, connection errors (refused, reset, dropped without a response), HTTP 408/409/429
  and 5xx, and malformed replies (a body that is not JSON or lacks ``choices[0].message.content``) are retried
  with exponential backoff ``min(backoff_max, backoff_base * 2**(attempt-1))`` times a jitter factor in
  [0.5, 1.5) drawn from a generator seeded by ``(seed, request key, attempt)`` (deterministic, independent of
  thread timing). A 429/503 ``Retry-After`` header (seconds or HTTP date) is honoured: the wait is at least
  that long (capped at ``max_retry_after``). Other 4xx answers (400 context too long, 401, 404 ...) are not
  retried. At most ``max_retries + 1`` attempts per request; what still fails comes back as a
  :class:`Result` with ``.error`` set (and, with a cache, one line in ``<cache>.errors.jsonl``).
* **Fail fast**: within one ``chat_many`` call, an HTTP 401/403/404 (wrong key, URL or model) or
  ``abort_after`` (default 20) consecutive requests that failed for good stop the batch: requests not yet sent
  come back with ``error_kind="aborted"`` instead of each spending its retries on a dead server.
* **Cache**: with ``cache_path``, every successful answer is appended to a JSONL file (one ``write`` of one
  line, then ``flush`` + ``fsync``) keyed by ``sha256(model, messages, params)``. The file survives ``kill -9``
  at any point: a half-written last line is detected on load and ignored (and a newline is appended before
  the next record, so it never corrupts a later one). A rerun never re-asks a cached request; failures are
  not cached, so a rerun retries exactly them. Identical requests within one batch are sent once. The cache is
  a :class:`divscope.store.JsonlStore`; ``divscope.jsonrepair.extract_json`` parses replies that hold JSON.
* **Ctrl-C**: requests run on daemon threads; an interrupt (or any exception) in the calling thread cancels
  the batch: requests not yet sent are dropped, retry waits end, open connections are closed (the server sees
  the client go away) and the exception propagates at once, without waiting for requests in flight. Answers
  that arrived before it are in the cache already.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import queue
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from divscope.errors import DivscopeError
from divscope.store.jsonl import JsonlStore
from divscope.ui import err_console, progress_bar

if TYPE_CHECKING:
    import httpx

Messages = list[dict[str, Any]]

RETRY_STATUS = frozenset({408, 409, 429})
# Above this share of replies that hold nothing usable (no JSON for a tagger, no verdict for a judge): a warning.
UNPARSEABLE_WARN_RATE = 0.2


def check_parsed(what: str, unparseable: int, total: int, example: str = "", hint: str = "") -> None:
    """Say how many of ``total`` answered replies held nothing usable: all of them is an error (the model does
    not follow the prompt: nothing it said is a result), more than ``UNPARSEABLE_WARN_RATE`` a one-line warning
    on stderr."""
    if not total or not unparseable:
        return
    rate = unparseable / total
    tail = f"; {hint}" if hint else ""
    if unparseable >= total:
        seen = " ".join(example.split())[:120]
        raise DivscopeError(f"{what}: none of the {total} replies could be parsed (first reply: {seen!r}){tail}")
    if rate > UNPARSEABLE_WARN_RATE:
        err_console.print(f"warning: {what}: {unparseable} of {total} replies ({rate:.0%}) could not be parsed"
                          f"{tail}", markup=False)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """Outcome of one chat request.

    ``text`` is the assistant content ("" when the request failed); ``error`` is ``None`` on success, else a
    one-line description of the final failure; ``error_kind`` one of ``timeout``, ``connection``,
    ``http_429``, ``http_5xx``, ``http_4xx``, ``bad_response``, ``aborted`` (not sent: the batch stopped
    early, see "fail fast"); ``cached`` is True when the answer came from
    the cache (no request sent); ``attempts`` is how many HTTP requests this call made (0 when cached);
    ``history`` lists the error of every failed attempt.
    """

    text: str = ""
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    error_kind: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    key: str = ""
    logprobs: dict[str, Any] | None = None  # choices[0].logprobs when the request asked for them
    history: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class _AttemptError(Exception):
    def __init__(self, kind: str, message: str, retry: bool, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry = retry
        self.retry_after = retry_after


# --------------------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------------------


def chat_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url:
        raise DivscopeError("endpoint base_url is empty: pass e.g. --base-url http://localhost:8000/v1")
    if not re.match(r"^https?://", url):
        raise DivscopeError(f"endpoint base_url {url!r} must start with http:// or https://")
    if url.endswith("/chat/completions"):
        return url
    if re.search(r"/v\d+[a-z]*$", url):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def request_key(model: str, messages: Messages, params: dict[str, Any]) -> str:
    """The cache key: sha256 of the canonical JSON of (model, messages, params)."""
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class EndpointClient:
    """Concurrent, retrying, caching client for one model behind an OpenAI-compatible endpoint.

    Parameters: ``base_url``, ``model``; ``api_key_env`` (name of the environment variable holding the key,
    ``None`` for no key); ``max_concurrency``; ``timeout`` (seconds per attempt); ``max_retries`` (retries
    after the first attempt); ``cache_path`` (JSONL file, ``None`` for no cache); ``temperature``,
    ``max_tokens`` and ``extra_params`` (e.g. ``{"top_p": 0.9, "stop": [...]}``) are sent with every request
    and are part of the cache key; ``seed`` seeds the backoff jitter; ``backoff_base``/``backoff_max`` and
    ``max_retry_after`` shape the waits; ``abort_after`` (None: never) is the fail-fast bound.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout: float = 60, max_retries: int = 5,
                 cache_path: str | os.PathLike[str] | None = None, temperature: float = 0.0,
                 max_tokens: int = 1024, extra_params: dict[str, Any] | None = None, seed: int = 0,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, max_retry_after: float = 300.0,
                 abort_after: int | None = 20):
        if not model:
            raise DivscopeError("endpoint model name is empty: pass the model the server serves (e.g. --model)")
        if max_concurrency < 1:
            raise DivscopeError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise DivscopeError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url
        self.url = chat_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_params = dict(extra_params or {})
        self.seed = seed
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._cache = JsonlStore(self.cache_path) if self.cache_path is not None else None
        self._errlog_lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self.stats = {"requests_sent": 0, "cache_hits": 0, "succeeded": 0, "failed": 0, "not_sent": 0}
        self._stats_lock = threading.Lock()
        self.abort_after = abort_after
        self._consecutive_failures = 0
        self._abort_reason: str | None = None
        self._cancel = threading.Event()

    # -- identity -------------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"EndpointClient(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"max_concurrency={self.max_concurrency}, cache_path={str(self.cache_path)!r})")

    @property
    def params(self) -> dict[str, Any]:
        """Request parameters other than model and messages (part of the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra_params}

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for provenance (no key, no secrets)."""
        return {"url": self.url, "model": self.model, "params": self.params, "api_key_env": self.api_key_env}

    def key_for(self, messages: Messages) -> str:
        return request_key(self.model, messages, self.params)

    @property
    def cache_corrupt_lines(self) -> int:
        return self._cache.corrupt_lines if self._cache is not None else 0

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        return key or None

    def _redact(self, text: str) -> str:
        key = self._api_key()
        if key and key in text:
            text = text.replace(key, "***")
        return text

    def _client(self) -> httpx.Client:
        import httpx  # here, not at import: every CLI command imports this module, few send requests

        with self._http_lock:
            if self._http is None:
                limits = httpx.Limits(max_connections=self.max_concurrency,
                                      max_keepalive_connections=self.max_concurrency)
                self._http = httpx.Client(timeout=httpx.Timeout(self.timeout), limits=limits)
            return self._http

    def close(self) -> None:
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> EndpointClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _attempt(self, messages: Messages) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model, "messages": messages, **self.params}
        import httpx

        with self._stats_lock:
            self.stats["requests_sent"] += 1
        try:
            resp = self._client().post(self.url, json=body, headers=headers)
        except httpx.TimeoutException as e:
            raise _AttemptError("timeout", f"timed out after {self.timeout:g}s ({type(e).__name__})", True) from e
        except httpx.TransportError as e:
            raise _AttemptError("connection", f"connection error: {type(e).__name__}: {e}", True) from e
        status = resp.status_code
        if status != 200:
            snippet = " ".join(self._redact(resp.text)[:300].split())  # redact, then cut: no key prefix
            retry_after = _parse_retry_after(resp.headers.get("retry-after"))
            if status == 429:
                raise _AttemptError("http_429", f"HTTP 429 rate limited: {snippet}", True, retry_after)
            if status >= 500:
                raise _AttemptError("http_5xx", f"HTTP {status}: {snippet}", True, retry_after)
            if status in RETRY_STATUS:
                raise _AttemptError("http_4xx", f"HTTP {status}: {snippet}", True, retry_after)
            raise _AttemptError("http_4xx", f"HTTP {status} (not retried): {snippet}", False)
        try:
            data = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            snippet = " ".join(self._redact(resp.text)[:200].split())
            raise _AttemptError("bad_response", f"response body is not JSON: {snippet!r}", True) from e
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise _AttemptError("bad_response",
                                f"response lacks choices[0].message.content: {self._redact(str(data))[:200]!r}", True) from e
        if not isinstance(content, str):
            raise _AttemptError("bad_response", f"choices[0].message.content is {type(content).__name__}, "
                                "not a string", True)
        return {"text": content, "finish_reason": choice.get("finish_reason"), "usage": data.get("usage"),
                "served_model": data.get("model"), "logprobs": choice.get("logprobs")}

    def _backoff(self, key: str, attempt: int, retry_after: float | None) -> float:
        rng = random.Random(f"{self.seed}:{key}:{attempt}")
        delay = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1))) * (0.5 + rng.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def _run_one(self, key: str, messages: Messages, cancel: threading.Event | None = None) -> Result:
        cancel = cancel if cancel is not None else threading.Event()
        res = Result(key=key)
        if self._abort_reason is not None:
            res.error = f"not sent: {self._abort_reason}"
            res.error_kind = "aborted"
            with self._stats_lock:
                self.stats["not_sent"] += 1
            return res
        for attempt in range(1, self.max_retries + 2):
            if cancel.is_set():
                res.error = "cancelled"
                res.error_kind = "aborted"
                break
            res.attempts = attempt
            try:
                out = self._attempt(messages)
            except _AttemptError as e:
                msg = self._redact(str(e))
                res.history.append(msg)
                res.error_kind = e.kind
                if not e.retry or attempt > self.max_retries:
                    suffix = "" if not e.retry else f" (gave up after {attempt} attempts)"
                    res.error = msg + suffix
                    break
                if cancel.wait(self._backoff(key, attempt, e.retry_after)):
                    res.error = "cancelled"
                    res.error_kind = "aborted"
                    break
                continue
            res.text = out["text"]
            res.finish_reason = out["finish_reason"]
            res.usage = out["usage"]
            res.logprobs = out["logprobs"]
            res.error = None
            res.error_kind = None
            if self._cache is not None:
                rec = {"text": res.text, "finish_reason": res.finish_reason, "usage": res.usage,
                       "served_model": out["served_model"], "t": round(time.time(), 3)}
                if res.logprobs is not None:
                    rec["logprobs"] = res.logprobs
                self._cache.put(key, rec)
            break
        with self._stats_lock:
            self.stats["succeeded" if res.ok else "failed"] += 1
            if res.ok:
                self._consecutive_failures = 0
            else:
                self._consecutive_failures += 1
                if self._abort_reason is None:
                    if res.error_kind == "http_4xx" and re.match(r"HTTP (401|403|404)\b", res.error or ""):
                        self._abort_reason = f"the endpoint answered {res.error}"
                    elif self.abort_after and self._consecutive_failures >= self.abort_after:
                        self._abort_reason = (f"{self._consecutive_failures} requests in a row failed, "
                                              f"last: {res.error}")
        if not res.ok:
            self._log_error(res)
        return res

    def _log_error(self, res: Result) -> None:
        if self.cache_path is None:
            return
        path = self.cache_path.with_name(self.cache_path.name + ".errors.jsonl")
        rec = {"key": res.key, "model": self.model, "url": self.url, "error": res.error,
               "error_kind": res.error_kind, "attempts": res.attempts, "history": res.history,
               "t": round(time.time(), 3)}
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._errlog_lock, open(path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    # -- public API -----------------------------------------------------------------------------------------

    def cached(self, messages: Messages) -> Result | None:
        """The cached answer for ``messages``, or None (sends nothing)."""
        if self._cache is None:
            return None
        key = self.key_for(messages)
        rec = self._cache.get(key)
        if rec is None:
            return None
        return Result(text=rec.get("text", ""), cached=True, attempts=0, finish_reason=rec.get("finish_reason"),
                      usage=rec.get("usage"), key=key, logprobs=rec.get("logprobs"))

    def chat(self, messages: Messages) -> Result:
        """One request (through the cache); never raises for endpoint failures: check ``result.error``."""
        return self.chat_many([messages], progress=None)[0]

    def chat_many(self, requests: Sequence[Messages], progress: str | None = "endpoint") -> list[Result]:
        """Answer every message list; results are aligned with ``requests``.

        Cached answers are returned without a request; identical uncached requests are sent once; the rest run
        with at most ``max_concurrency`` in flight. ``progress`` is the progress-bar description (None: no bar).
        """
        results: list[Result | None] = [None] * len(requests)
        pending: dict[str, tuple[Messages, list[int]]] = {}
        for i, messages in enumerate(requests):
            _check_messages(messages, i)
            hit = self.cached(messages)
            if hit is not None:
                results[i] = hit
                continue
            key = self.key_for(messages)
            if key in pending:
                pending[key][1].append(i)
            else:
                pending[key] = (messages, [i])
        self._abort_reason = None
        self._consecutive_failures = 0
        n_hits = sum(r is not None for r in results)
        with self._stats_lock:
            self.stats["cache_hits"] += n_hits
        if pending:
            bar = progress_bar(progress or "", total=len(requests)) if progress else _null_bar()
            with bar as advance:
                if n_hits:
                    advance(n_hits)
                for res, idxs in self._run_all(pending):
                    for j, i in enumerate(idxs):
                        results[i] = res if j == 0 else _copy_result(res, duplicate=True)
                    advance(len(idxs))
        return [r if r is not None else Result(error="internal: no result", error_kind="bad_response")
                for r in results]

    def _run_all(self, pending: dict[str, tuple[Messages, list[int]]]) -> Any:
        """Yield ``(result, indices)`` as requests finish, at most ``max_concurrency`` in flight.

        Workers are daemon threads fed from a queue: when the caller is interrupted (Ctrl-C raises
        KeyboardInterrupt here) the batch is cancelled and the exception propagates without waiting for requests
        in flight (a thread pool's exit would join them: up to ``timeout`` x attempts per request)."""
        cancel = self._cancel = threading.Event()  # this batch's: workers of an interrupted one stay stopped
        todo: queue.SimpleQueue[tuple[str, Messages, list[int]] | None] = queue.SimpleQueue()
        done: queue.SimpleQueue[tuple[Result, list[int]]] = queue.SimpleQueue()
        for key, (msgs, idxs) in pending.items():
            todo.put((key, msgs, idxs))
        n_workers = min(self.max_concurrency, len(pending))
        for _ in range(n_workers):
            todo.put(None)

        def work() -> None:
            while not cancel.is_set():
                job = todo.get()
                if job is None:
                    return
                key, msgs, idxs = job
                try:
                    res = self._run_one(key, msgs, cancel)
                except Exception as e:  # a bug must reach the caller, not kill the worker silently
                    res = Result(key=key, error=f"internal: {type(e).__name__}: {e}", error_kind="bad_response")
                done.put((res, idxs))

        for w in range(n_workers):
            threading.Thread(target=work, name=f"divscope-endpoint-{w}", daemon=True).start()
        try:
            for _ in range(len(pending)):
                while True:
                    try:
                        item = done.get(timeout=0.25)  # a bounded wait: a signal is handled promptly
                        break
                    except queue.Empty:
                        continue
                yield item
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Stop the batch in progress: nothing more is sent, retry waits end, open connections are closed."""
        self._cancel.set()
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            try:
                http.close()
            except Exception:  # noqa: BLE001 - closing under requests in flight: best effort
                pass

    def failures_summary(self, results: Sequence[Result], limit: int = 5) -> str:
        """A one-line summary of failed results (count by kind + first errors), for user-facing messages."""
        bad = [r for r in results if not r.ok]
        if not bad:
            return "no failures"
        kinds: dict[str, int] = {}
        for r in bad:
            kinds[r.error_kind or "?"] = kinds.get(r.error_kind or "?", 0) + 1
        first = "; ".join(dict.fromkeys(r.error or "" for r in bad[:limit]))
        kinds_s = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
        return f"{len(bad)}/{len(results)} requests to {self.url} failed ({kinds_s}): {first}"


def _copy_result(res: Result, duplicate: bool) -> Result:
    return Result(text=res.text, error=res.error, cached=res.cached, attempts=0 if duplicate else res.attempts,
                  error_kind=res.error_kind, finish_reason=res.finish_reason, usage=res.usage, key=res.key,
                  history=list(res.history), logprobs=res.logprobs)


def _check_messages(messages: Any, i: int) -> None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                  for m in messages):
        raise TypeError(f"request {i}: expected a list of {{'role': ..., 'content': ...}} dicts, "
                        f"got {type(messages).__name__}")


class _null_bar:
    def __enter__(self) -> Any:
        return lambda n=1: None

    def __exit__(self, *exc: Any) -> None:
        return None
