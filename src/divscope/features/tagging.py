"""Tagger backends for the meso level: each gives a text a few short intent tags.

One interface: ``tagger.tag(texts) -> list[list[str]]`` (plus ``tag_with_status``, which also says which texts
failed, so that failures are never cached, and ``identity()``, the JSON-able config that determines the output
and keys the per-text cache).

* ``EndpointTagger`` (``"endpoint"``): an LLM behind any OpenAI-compatible endpoint, asked with the InsTag
  prompt (Lu et al. 2023, "#InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of LLMs") for
  fine-grained intention tags as a JSON list of ``{"tag": ..., "explanation": ...}``. Replies are parsed with
  :func:`divscope.jsonrepair.extract_json` (fences, prose, trailing commas, single quotes, cut-off lists);
  requests go through :class:`divscope.endpoint.EndpointClient` (concurrency, retries, persistent cache).
* ``OfflineTagger`` (``"offline"``, the default): no server, no download. Methods (docs/meso.md has the
  measured comparison against hand-written InsTag-style references):

  - ``verb-object``: for the first sentences and the last one, the root verb (descending through "can you
    help me / I want you to ..." to the verb that carries the request) and its direct object with one compound
    modifier, lemmatised, as in Self-Instruct's analysis of its instructions ("write poem", "write unit test");
    a copular wh-question ("what is X") gives "explain X"; no object gives "verb as/about/for noun" or the
    verb alone ("continue", "summarize").
  - ``keyphrase``: KeyBERT-style: candidate phrases are the cleaned noun chunks of the parse (determiners,
    pronouns, numbers and symbols dropped, head lemmatised), scored by cosine similarity between their
    embedding and the text's embedding (all-MiniLM-L6-v2, shipped in a wheel), top ones chosen with maximal
    marginal relevance so they are not near-copies of each other.
  - ``verb-object+chunks`` (default): verb-object tags (intent) + the first ``max_keyphrases`` cleaned noun
    chunks (domain). Parser only: about 10x faster than the embedding-based methods and as close to the
    references as ``verb-object+keyphrase`` in our measurement.
  - ``verb-object+keyphrase``: verb-object tags + keyphrases.

  Long texts are truncated for tagging to their first ``head_chars`` and last ``tail_chars`` characters
  (defaults 400 + 200): the request is usually stated at the start, and when a long paste (code, an article)
  comes first it is usually stated at the end.

This module is the front door (:func:`make_tagger` and every public name); the code lives in
``tagging_offline`` (spaCy), ``tagging_endpoint`` (InsTag prompt, reply parsing) and ``tagging_common`` (the
``Tagger`` base, truncation, tag embeddings, soft-match evaluation), so each backend can be read on its own.
"""

from __future__ import annotations

import os
from typing import Any

from divscope.errors import DivscopeError
from divscope.features.tagging_common import (
    Tagger,
    dedup_tags,
    embed,
    load_embedder,
    soft_match_scores,
    tag_embedder_identity,
    truncate_for_tagging,
)
from divscope.features.tagging_endpoint import (
    INSTAG_PROMPT,
    INSTAG_SYSTEM,
    PROMPT_VERSION,
    EndpointTagger,
    instag_messages,
    parse_instag,
)
from divscope.features.tagging_offline import (
    DEFAULT_OFFLINE_METHOD,
    LEMMA_FIXES,
    OFFLINE_METHODS,
    SPACY_MODEL,
    OfflineTagger,
    load_spacy,
    mmr_select,
    noun_chunk_candidates,
    spacy_versions,
    verb_object_tags,
)


def _inside(cache_dir: str | os.PathLike[str], cache_path: str | os.PathLike[str]) -> str:
    """``cache_path`` resolved against the workspace's cache folder; an option (e.g. from a shared spec file)
    must not make a featurize run write outside the workspace it was given."""
    base = os.path.realpath(cache_dir)
    path = os.path.realpath(os.path.join(base, cache_path))
    if os.path.commonpath([base, path]) != base:
        raise DivscopeError(f"meso option cache_path={os.fspath(cache_path)!r} points outside the workspace "
                            f"cache folder {base}; give a relative name like 'endpoint-cache.jsonl' or leave it "
                            "unset")
    return path


# The options each tagger takes (besides the meso stage's own settings, MesoSettings).
TAGGER_OPTIONS: dict[str, tuple[str, ...]] = {
    "offline": ("method", "head_chars", "tail_chars", "max_verb_tags", "max_keyphrases", "min_keyphrase_score",
                "mmr_lambda", "batch_size"),
    "endpoint": ("base_url", "model", "api_key_env", "max_concurrency", "timeout", "max_retries", "max_tokens",
                 "max_chars", "max_tags", "cache_path"),
}

# How the endpoint tagger sends its requests, not what they answer: kept out of the feature cache key and the
# spec fingerprint (the tag cache's identity never held them).
REQUEST_OPTIONS = ("max_concurrency", "timeout", "max_retries")


def check_tagger_options(kind: str, options: dict[str, Any]) -> None:
    """A one-line error for an option the tagger does not take: a typo must not be ignored, and a key given as a
    value must be refused before it can be written into a cache entry or a manifest."""
    if "api_key" in options:
        raise DivscopeError("meso option api_key: divscope never takes a key as a value (it would be written into "
                            "the feature cache); put it in an environment variable and give its name with "
                            "api_key_env=NAME (default OPENAI_API_KEY)")
    unknown = sorted(set(options) - set(TAGGER_OPTIONS.get(kind, ())))
    if unknown:
        raise DivscopeError(f"unknown meso option(s) for tagger={kind}: {', '.join(unknown)}; accepted: "
                            f"{', '.join(TAGGER_OPTIONS.get(kind, ()))}")


def make_tagger(config: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> Tagger:
    """A tagger from a meso config: ``{"tagger": "offline", "method": ...}`` or ``{"tagger": "endpoint",
    "base_url": ..., "model": ..., "api_key_env": ..., "max_concurrency": ...}``."""
    kind = config.get("tagger", "offline")
    if kind == "offline":
        return OfflineTagger(**{k: config[k] for k in TAGGER_OPTIONS["offline"] if k in config})
    if kind == "endpoint":
        opts = {k: config[k] for k in TAGGER_OPTIONS["endpoint"] if k in config and k != "cache_path"}
        cache_path = config.get("cache_path")
        if cache_path is None and cache_dir is not None:
            cache_path = os.path.join(os.fspath(cache_dir), "endpoint-cache.jsonl")
        elif cache_path is not None and cache_dir is not None:
            cache_path = _inside(cache_dir, cache_path)
        return EndpointTagger(cache_path=cache_path, **opts)
    raise DivscopeError(f"unknown meso tagger {kind!r}: use tagger=offline or tagger=endpoint")


__all__ = [
    "DEFAULT_OFFLINE_METHOD", "INSTAG_PROMPT", "INSTAG_SYSTEM", "LEMMA_FIXES", "OFFLINE_METHODS", "PROMPT_VERSION",
    "REQUEST_OPTIONS", "SPACY_MODEL", "EndpointTagger", "OfflineTagger", "Tagger", "dedup_tags", "embed", "instag_messages",
    "load_embedder", "load_spacy", "make_tagger", "mmr_select", "noun_chunk_candidates", "parse_instag",
    "soft_match_scores", "spacy_versions", "tag_embedder_identity", "truncate_for_tagging", "verb_object_tags",
]
