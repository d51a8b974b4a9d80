"""Eval prompts must never leak into a training pool: find pool samples that overlap evaluation prompts.

Criterion (as GPT-3's contamination analysis): after normalisation (lowercase, non-word characters to spaces),
a sample overlaps an eval prompt when the two are equal, or when they share an n-gram of ``n`` words (13 by
default). Prompts shorter than ``n`` words only count on equality, so short generic questions do not flag
every sample that happens to contain them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from divscope.io.evalsets import EvalItem

_NONWORD = re.compile(r"\W+")


def normalize(text: str) -> str:
    return _NONWORD.sub(" ", text.lower()).strip()


def _ngrams(words: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


@dataclass
class Overlap:
    n: int
    eval_prompts: int
    rows: list[int] = field(default_factory=list)  # pool rows that overlap
    matches: dict[int, list[str]] = field(default_factory=dict)  # pool row -> eval item ids

    def to_json(self) -> dict[str, object]:
        return {"n": self.n, "eval_prompts": self.eval_prompts, "overlapping_samples": len(self.rows),
                "examples": {str(r): self.matches[r][:3] for r in self.rows[:20]}}


def find_overlap(texts: Sequence[str], items: Sequence[EvalItem], n: int = 13) -> Overlap:
    """Which of ``texts`` (a pool's instruction side) overlap any turn of ``items``."""
    exact: dict[str, list[str]] = {}
    grams: dict[tuple[str, ...], list[str]] = {}
    for item in items:
        for turn in item.turns:
            norm = normalize(turn)
            exact.setdefault(norm, []).append(item.id)
            for g in _ngrams(norm.split(), n):
                grams.setdefault(g, []).append(item.id)
    out = Overlap(n=n, eval_prompts=len(items))
    for row, text in enumerate(texts):
        norm = normalize(text)
        hits = list(exact.get(norm, ()))
        for g in _ngrams(norm.split(), n):
            hits.extend(grams.get(g, ()))
        if hits:
            out.rows.append(row)
            out.matches[row] = sorted(set(hits))
    return out
