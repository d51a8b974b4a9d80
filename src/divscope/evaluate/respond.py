"""Regenerate every response of a workspace's pool with a (strong) model behind an OpenAI-compatible endpoint.

The paper regenerated its whole pool with Llama-3.1-70B-Nemotron so that response quality is uniform and only
the instructions differ; ``divscope respond WS --endpoint URL --model NAME --out WS2`` does the same.

* **Requests**: every assistant turn is regenerated, turn by turn: turn *t* is asked with the sample's system
  prompt, its user turns and the *regenerated* answers to turns ``1..t-1`` (so a multi-turn sample stays
  coherent). All samples' turn-*t* requests go out together through the shared
  :class:`divscope.endpoint.EndpointClient` (bounded concurrency, retries with backoff, fail-fast on a dead
  endpoint).
* **Cache and resume**: answers are cached in ``WS2/cache/respond.jsonl`` (kill-safe append-only JSONL keyed
  by model, messages and parameters). A killed run started again re-asks only what was not answered yet;
  failures are not cached, so a rerun retries exactly them.
* **Output**: ``WS2`` is a normal workspace written by :func:`divscope.io.ingest` (atomic pool, report,
  rejects). Each regenerated sample keeps its id (always written as the source id, so it does not become the
  hash of the new content), its system prompt, user turns and metadata, plus ``metadata["regenerated"]``:
  responder model, endpoint URL, request parameters, original source and content hash, ``original_response_hash`` (sha256 of the
  original response text, 16 hex digits) and the finish reason of each regenerated turn.
* **Failures are reported, not dropped**: the regenerated pool holds only successfully regenerated samples.
  Every sample that failed (request failed after retries, not sent because the batch was aborted, or an empty
  answer) is listed in ``WS2/respond_failures.jsonl`` with its id, turn, reason and error kind, and counted
  in ``WS2/ingest.json`` under ``"respond"``. Answers cut off by the token limit (``finish_reason ==
  "length"``) are kept and counted there as ``truncated``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope._version import __version__
from divscope.endpoint import EndpointClient
from divscope.errors import DivscopeError
from divscope.evaluate.settings import RespondSettings
from divscope.io.ingest import ingest
from divscope.io.record import Record
from divscope.io.shapes import to_dict
from divscope.io.workspace import Workspace
from divscope.store.atomic import atomic_open, write_json

FAILURES_FILE = "respond_failures.jsonl"
CACHE_FILE = "cache/respond.jsonl"
PROVENANCE_KEY = "regenerated"


@dataclass
class RespondResult:
    workspace: Workspace
    report: dict[str, Any]

    @property
    def regenerated(self) -> int:
        return int(self.report["regenerated"])

    @property
    def failed(self) -> int:
        return int(self.report["failed"])


_R = {k: f.default for k, f in RespondSettings.model_fields.items()}  # the defaults: RespondSettings (one source)


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def respond(ws: str | os.PathLike[str], out: str | os.PathLike[str], endpoint: str, model: str,
            api_key_env: str | None = _R["api_key_env"], concurrency: int = _R["concurrency"],
            max_tokens: int = _R["max_tokens"], temperature: float = _R["temperature"],
            timeout: float = _R["timeout"], max_retries: int = _R["max_retries"], limit: int | None = None,
            client_options: dict[str, Any] | None = None, progress: bool = True) -> RespondResult:
    """Regenerate the responses of ``ws``'s pool into the workspace ``out`` (see the module docstring).

    ``client_options`` go to :class:`EndpointClient` as they are (e.g. ``backoff_base``, ``abort_after``).
    """
    src = Workspace(ws)
    pool = src.pool
    dst = Workspace(out)
    if dst.path.resolve() == src.path.resolve():
        raise DivscopeError("--out must be another workspace than the input: the original pool is kept")
    records = pool.records() if not limit else pool.records(list(range(min(limit, len(pool)))))
    if not records:
        raise DivscopeError(f"{src.path}: the pool is empty")
    dst.path.mkdir(parents=True, exist_ok=True)
    client = EndpointClient(endpoint, model, api_key_env=api_key_env, max_concurrency=concurrency,
                            timeout=timeout, max_retries=max_retries, cache_path=dst.path / CACHE_FILE,
                            temperature=temperature, max_tokens=max_tokens, **(client_options or {}))
    try:
        return _respond(src, dst, records, client, progress)
    finally:
        client.close()


def _respond(src: Workspace, dst: Workspace, records: list[Record], client: EndpointClient,
             progress: bool) -> RespondResult:
    pool = src.pool
    t0 = time.perf_counter()
    new_turns: list[list[str]] = [[] for _ in records]
    finish: list[list[str | None]] = [[] for _ in records]
    failures: dict[int, dict[str, Any]] = {}
    n_turns = max(sum(t.role == "assistant" for t in r.conversation) for r in records)
    for t in range(n_turns):
        todo, requests = [], []
        for i, r in enumerate(records):
            if i in failures:
                continue
            msgs = _request(r, t, new_turns[i])
            if msgs is None:
                continue
            todo.append(i)
            requests.append(msgs)
        if not todo:
            continue
        label = "respond" if n_turns == 1 else f"respond turn {t + 1}"
        results = client.chat_many(requests, progress=label if progress else None)
        for i, res in zip(todo, results, strict=True):
            if not res.ok:
                failures[i] = {"id": records[i].id, "turn": t + 1, "reason": res.error,
                               "error_kind": res.error_kind, "attempts": res.attempts}
            elif not res.text.strip():
                failures[i] = {"id": records[i].id, "turn": t + 1, "reason": "the endpoint answered an empty "
                               "response", "error_kind": "empty_response", "attempts": res.attempts}
            else:
                new_turns[i].append(res.text)
                finish[i].append(res.finish_reason)
    seconds = time.perf_counter() - t0
    rows = [_row(r, new_turns[i], finish[i], client, src) for i, r in enumerate(records) if i not in failures]
    fail_rows = [failures[i] for i in sorted(failures)]
    with atomic_open(dst.path / FAILURES_FILE) as fh:
        for row in fail_rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    if not rows:
        first = "; ".join(dict.fromkeys(str(f["reason"]) for f in fail_rows[:3]))
        raise DivscopeError(f"no response could be regenerated: {len(fail_rows)} samples failed (listed in "
                            f"{dst.path / FAILURES_FILE}): {first}")
    res = ingest(_by_source(rows, [r.source for i, r in enumerate(records) if i not in failures]), dst.path)
    kinds = Counter(f["error_kind"] or "?" for f in fail_rows)
    report = {
        "requested": len(records), "regenerated": len(rows), "failed": len(fail_rows),
        "failed_by_kind": dict(sorted(kinds.items())), "failures_file": FAILURES_FILE,
        "truncated": sum(1 for f in finish if "length" in f),
        "source_workspace": str(src.path), "source_fingerprint": pool.fingerprint,
        "responder": client.describe(), "requests_sent": client.stats["requests_sent"],
        "cache_hits": client.stats["cache_hits"], "cache": CACHE_FILE, "seconds": round(seconds, 2),
        "divscope_version": __version__,
    }
    full = dict(res.report)
    full["respond"] = report
    write_json(dst.report_path, full)
    return RespondResult(dst, {**report, "accepted": res.accepted, "rejected": res.rejected})


class _Rows(list):  # type: ignore[type-arg]
    """Rows of one original source: ingest names them after it (``source_name``), not ``<python:i>``."""

    def __init__(self, source: str):
        super().__init__()
        self.source_name = source


def _by_source(rows: list[dict[str, Any]], sources: list[str]) -> list[_Rows]:
    """``rows`` cut into runs of consecutive rows from one original source (the pool's order is kept)."""
    runs: list[_Rows] = []
    for row, source in zip(rows, sources, strict=True):
        if not runs or runs[-1].source_name != source:
            runs.append(_Rows(source))
        runs[-1].append(row)
    return runs


def _request(r: Record, t: int, answers: list[str]) -> list[dict[str, str]] | None:
    """Messages asking for assistant turn ``t`` (0-based) of ``r``, or None when it has no such turn."""
    msgs: list[dict[str, str]] = []
    seen = 0
    for turn in r.conversation:
        if turn.role == "assistant":
            if seen == t:
                return msgs
            msgs.append({"role": "assistant", "content": answers[seen]})
            seen += 1
        else:
            msgs.append({"role": turn.role, "content": turn.content})
    return None


def _row(r: Record, answers: list[str], finish: list[str | None], client: EndpointClient,
         src: Workspace) -> dict[str, Any]:
    """The regenerated sample as an OpenAI-shape dict that ingest reads back into the same id and metadata."""
    conv = []
    k = 0
    for turn in r.conversation:
        if turn.role == "assistant":
            conv.append({"role": "assistant", "content": answers[k]})
            k += 1
        else:
            conv.append(turn.to_dict())
    new = Record(id=r.id, conversation=r.conversation, source=r.source, source_id=r.id,
                 metadata={k: v for k, v in r.metadata.items() if k != PROVENANCE_KEY}, content_hash=r.content_hash)
    row = to_dict(new, "openai")
    row["messages"] = conv
    row[PROVENANCE_KEY] = {
        "responder_model": client.model, "endpoint": client.url, "params": client.params,
        "original_response_hash": _sha16(r.response), "original_content_hash": r.content_hash,
        "original_source": r.source, "original_source_id": r.source_id, "original_workspace": str(src.path), "finish_reasons": finish,
    }
    return row


def failures_path(out: str | os.PathLike[str]) -> Path:
    return Path(out) / FAILURES_FILE
