"""Endpoint meso tagger: InsTag-style tags from an LLM behind an OpenAI-compatible endpoint, and the parsing of
its replies (Lu et al. 2023, "#InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of LLMs").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from divscope.errors import DivscopeError
from divscope.features.tagging_common import UNPARSEABLE, Tagger, dedup_tags, truncate_for_tagging

INSTAG_SYSTEM = "You are a helpful assistant."
# The InsTag tagging prompt (Lu et al. 2023), asking for a JSON list.
INSTAG_PROMPT = ("Please identify tags of user intentions in the following user query and provide an explanation "
                 "for each tag. Please respond in the JSON format [{{\"tag\": str, \"explanation\": str}}, ...].\n"
                 "User query: {query}")
PROMPT_VERSION = 1


def instag_messages(text: str, max_chars: int = 4000) -> list[dict[str, str]]:
    query = text.strip()
    if len(query) > max_chars:
        query = truncate_for_tagging(query, max_chars * 2 // 3, max_chars - max_chars * 2 // 3)
    return [{"role": "system", "content": INSTAG_SYSTEM},
            {"role": "user", "content": INSTAG_PROMPT.format(query=query)}]


def parse_instag(reply: str) -> list[str] | None:
    """Tags from an InsTag-style reply; None when the reply holds no usable JSON.

    Accepts a list of ``{"tag": ...}`` objects (the asked format), a single such object, ``{"tags": [...]}``,
    a list of strings, and objects whose tag key is spelled differently (``Tag``, ``name``, ``label``).
    """
    from divscope.jsonrepair import extract_json

    data = extract_json(reply)
    if data is None:
        return None
    if isinstance(data, dict):
        for k in ("tags", "Tags", "intentions", "result", "results"):
            if isinstance(data.get(k), list):
                data = data[k]
                break
        else:
            data = [data]
    tags: list[str] = []
    for item in data:
        val: Any = None
        if isinstance(item, str):
            val = item
        elif isinstance(item, dict):
            for k in ("tag", "Tag", "TAG", "name", "label", "intent", "intention"):
                if isinstance(item.get(k), str):
                    val = item[k]
                    break
        if isinstance(val, str) and val.strip():
            tags.append(val.strip())
    return tags


class EndpointTagger(Tagger):
    """InsTag-style tagging by an LLM behind an OpenAI-compatible endpoint (through ``EndpointClient``)."""

    name = "endpoint"

    def __init__(self, client: Any = None, *, base_url: str | None = None, model: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", max_concurrency: int = 8,
                 cache_path: str | os.PathLike[str] | None = None, timeout: float = 60, max_retries: int = 5,
                 max_tokens: int = 512, max_chars: int = 4000, max_tags: int = 10):
        from divscope.endpoint import EndpointClient

        if client is None:
            if not base_url or not model:
                raise DivscopeError("the endpoint tagger needs base_url and model "
                                    "(e.g. tagger=endpoint, base_url=http://localhost:8000/v1, model=...)")
            client = EndpointClient(base_url, model, api_key_env=api_key_env, max_concurrency=max_concurrency,
                                    timeout=timeout, max_retries=max_retries, cache_path=cache_path,
                                    temperature=0.0, max_tokens=max_tokens)
        self.client = client
        self.max_chars = max_chars
        self.max_tags = max_tags
        self.unparseable = 0
        self.last_results: list[Any] = []

    def identity(self) -> dict[str, Any]:
        return {"tagger": "endpoint", "prompt_version": PROMPT_VERSION, "model": self.client.model,
                "params": self.client.params, "max_chars": self.max_chars, "max_tags": self.max_tags}

    def tag_with_status(self, texts: Sequence[str], progress: str | None = None
                        ) -> tuple[list[list[str]], list[str | None]]:
        results = self.client.chat_many([instag_messages(t or "", self.max_chars) for t in texts],
                                        progress=progress)
        self.last_results = results
        tags: list[list[str]] = []
        errors: list[str | None] = []
        for r in results:
            if not r.ok:
                tags.append([])
                errors.append(r.error)
                continue
            parsed = parse_instag(r.text)
            if parsed is None:  # answered, but no JSON: typeless, and not cached as a tagging result
                self.unparseable += 1
                tags.append([])
                errors.append(f"{UNPARSEABLE}: {' '.join(r.text.split())[:120]!r}")
                continue
            tags.append(dedup_tags(parsed)[: self.max_tags])
            errors.append(None)
        return tags, errors
