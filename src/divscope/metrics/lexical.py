"""Lexical metrics of one side of a subset: distinct-n, compression ratio, Self-BLEU, target-token statistics.

Every function takes plain texts (or token counts) and is deterministic; sampling decisions (which texts enter
Self-BLEU) are made by the caller (:mod:`divscope.metrics.card`) and passed in as the texts themselves.
Definitions and the reasons for each choice are in docs/metrics.md.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

COMPRESSION = "zlib"
COMPRESSION_LEVEL = 9
BLEU_ORDER = 4


# ----------------------------------------------------------------------------------------------- distinct-n

def word_ids(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace words of the lowercased texts as one flat int64 id array, plus the word count of each text."""
    split = [t.lower().split() for t in texts]
    lens = np.fromiter((len(w) for w in split), np.int64, count=len(split))
    words = list(chain.from_iterable(split))
    index = {w: i for i, w in enumerate(dict.fromkeys(words))}  # first-seen order, C-speed dict passes
    return np.fromiter(map(index.__getitem__, words), np.int64, count=len(words)), lens


def distinct_n(texts: Sequence[str], ns: Sequence[int] = (1, 2, 3)) -> dict[int, dict[str, Any]]:
    """Distinct-n over the whole set: unique n-grams / total n-grams, for each n in ``ns``.

    Words are ``text.lower().split()``; n-grams never cross the boundary between two texts. Returns, per n,
    ``{"ratio": float | None, "unique": int, "total": int}`` (ratio None when there is no n-gram at all).

    Vectorised: n-grams of order n are numbered by re-indexing the pairs (id of the (n-1)-gram starting at p,
    id of the word at p+n-1) with ``np.unique``; every key is below (#distinct (n-1)-grams) * (#distinct words)
    <= total_words**2, so it fits an int64.
    """
    flat, lens = word_ids(texts)
    total_words = len(flat)
    out: dict[int, dict[str, Any]] = {}
    if total_words == 0:
        return {n: {"ratio": None, "unique": 0, "total": 0} for n in ns}
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    doc = np.repeat(np.arange(len(lens)), lens)
    remaining = lens[doc] - (np.arange(total_words) - starts[doc])  # words from position p to its text's end
    width = int(flat.max()) + 1
    cur = flat.copy()  # id of the n-gram starting at each position (-1: none)
    for n in range(1, max(ns) + 1):
        if n > 1:
            valid = np.flatnonzero(remaining >= n)
            keys = cur[valid] * width + flat[valid + n - 1]
            uniq, inv = np.unique(keys, return_inverse=True)
            cur = np.full(total_words, -1, np.int64)
            cur[valid] = inv
            unique, total = len(uniq), len(valid)
        else:
            unique, total = len(np.unique(flat)), total_words
        if n in ns:
            out[n] = {"ratio": unique / total if total else None, "unique": int(unique), "total": int(total)}
    return out


# ----------------------------------------------------------------------------------------------- compression

def compression_ratio(texts: Sequence[str]) -> tuple[float | None, int]:
    """zlib (level 9) compressed size / raw size of the UTF-8 texts joined by ``\\n``; also the raw size.

    Lower = more redundant. None for an empty side.
    """
    raw = "\n".join(texts).encode("utf-8")
    if not raw:
        return None, 0
    return len(zlib.compress(raw, COMPRESSION_LEVEL)) / len(raw), len(raw)


# ----------------------------------------------------------------------------------------------- Self-BLEU

def _bleu_metric() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(smooth_method="exp", effective_order=True)  # = sacrebleu.sentence_bleu's defaults


def self_bleu_scores(texts: Sequence[str]) -> np.ndarray:
    """Sentence BLEU (sacrebleu, 0-100) of each text as hypothesis against all the *other* texts as references.

    Identical, number for number, to ``sacrebleu.sentence_bleu(texts[i], texts[:i] + texts[i+1:])`` (13a
    tokenizer, exp smoothing, effective order), but each text is tokenized and its n-grams counted once: the
    multi-reference clip count max_{j != i} c_j(g) is the largest count of g if text i does not hold it, else
    the second largest (one pass over all n-grams instead of m sentence_bleu calls over m-1 references each).
    The reference length is the closest other length (ties: the shorter), as sacrebleu chooses it.
    """
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    m = len(texts)
    if m < 2:
        return np.zeros(0, np.float64)
    metric = _bleu_metric()
    counters: list[Counter] = []
    lens = np.zeros(m, np.int64)
    for i, t in enumerate(texts):
        cnt, lens[i] = extract_all_word_ngrams(metric.tokenizer(t.rstrip()), 1, BLEU_ORDER)
        counters.append(cnt)
    best1: dict[tuple[str, ...], int] = {}
    best2: dict[tuple[str, ...], int] = {}
    holder: dict[tuple[str, ...], int] = {}
    for j, cnt in enumerate(counters):
        for g, c in cnt.items():
            b = best1.get(g, 0)
            if c > b:
                best2[g] = b
                best1[g] = c
                holder[g] = j
            elif c > best2.get(g, 0):
                best2[g] = c
    # closest other length, ties to the shorter one: minimise |diff| * (max_len + 1) + ref_len
    diff = np.abs(lens[:, None] - lens[None, :]) * (int(lens.max()) + 1) + lens[None, :]
    np.fill_diagonal(diff, np.iinfo(np.int64).max)
    ref_len = lens[np.argmin(diff, axis=1)]
    scores = np.zeros(m, np.float64)
    for i, cnt in enumerate(counters):
        correct = [0] * BLEU_ORDER
        total = [0] * BLEU_ORDER
        for g, c in cnt.items():
            o = len(g) - 1
            total[o] += c
            ref = best2.get(g, 0) if holder[g] == i else best1[g]
            correct[o] += min(c, ref)
        scores[i] = metric.compute_bleu(correct, total, int(lens[i]), int(ref_len[i]), smooth_method="exp",
                                        effective_order=True, max_ngram_order=BLEU_ORDER).score
    return scores


def self_bleu(texts: Sequence[str]) -> float | None:
    """Mean of :func:`self_bleu_scores` (0-100); None with fewer than two texts."""
    scores = self_bleu_scores(texts)
    return float(scores.mean()) if len(scores) else None


# ----------------------------------------------------------------------------------------------- tokens

@dataclass
class TokenStats:
    """Target-token statistics of one side: per-text lengths and the unigram counts over the whole side."""

    lengths: np.ndarray
    counts: np.ndarray  # occurrences per token id (length >= the largest id + 1)
    source: str  # "workspace" (cached token counts of the pool) | "tokenized" (this call)

    @property
    def mean_length(self) -> float | None:
        return float(self.lengths.mean()) if len(self.lengths) else None

    @property
    def entropy_bits(self) -> float | None:
        return entropy_bits(self.counts)


def entropy_bits(counts: np.ndarray) -> float | None:
    """Shannon entropy (bits) of the distribution given by non-negative counts; None when they sum to zero."""
    c = np.asarray(counts, np.float64)
    c = c[c > 0]
    total = c.sum()
    if total <= 0:
        return None
    p = c / total
    h = float(-(p * np.log2(p)).sum())
    return 0.0 if math.isclose(h, 0.0, abs_tol=1e-12) else h


def tokenize_stats(texts: Sequence[str], tokenizer: Any) -> TokenStats:
    """Lengths and unigram counts of ``texts`` in the target tokenizer (no special tokens, no truncation),
    with the same batched Rust encoding the micro featurizer uses."""
    from divscope.features.micro import BATCH, TokenizeTask

    task = TokenizeTask(tokenizer)
    task.setup()
    texts = list(texts)
    parts = [task(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    width = max((int(p[1].max()) + 1 for p in parts if len(p[1])), default=1)
    counts = np.zeros(width, np.int64)
    for _, indices, data, _ in parts:
        counts += np.bincount(indices, weights=data, minlength=width).astype(np.int64)
    lengths = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
    return TokenStats(lengths, counts, "tokenized")
