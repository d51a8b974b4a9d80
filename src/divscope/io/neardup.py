"""Near-duplicate detection for ingest (``--dedup near``): MinHash LSH over word shingles, as Data-Juicer's
``document_minhash_deduplicator`` and most SFT pipelines do it.

A record's text is every turn's content, lowercased and split into words (``\\w+``); its shingles are the runs of
``SHINGLE`` consecutive words (a shorter record is one shingle). Signatures are ``PERMUTATIONS`` seeded MinHash
permutations (datasketch, ``affine32`` scheme, fixed seed), so the same input gives the same signatures on every
run. LSH proposes candidates among the records kept so far; a candidate counts only if its estimated Jaccard
similarity reaches the threshold, and the record is then a near copy of the most similar one (the earliest on a
tie). The first occurrence in input order is always the one kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from divscope.io.record import Record

SHINGLE = 5
PERMUTATIONS = 128
SEED = 1
LSH_MAX_THRESHOLD = 0.9
_WORD = re.compile(r"\w+")


def shingles(text: str, k: int = SHINGLE) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + k]).encode("utf-8") for i in range(len(words) - k + 1)}


def record_text(rec: Record) -> str:
    return "\n".join(t.content for t in rec.conversation)


class Signer:
    """MinHash signatures of records, with the permutations drawn once; remembers the last few records' (the
    pool's check and the repairing ingest's shadow check sign the same record back to back)."""

    def __init__(self) -> None:
        from datasketch import MinHash

        self._minhash = MinHash
        self._template = MinHash(num_perm=PERMUTATIONS, seed=SEED, scheme="affine32")
        self._recent: dict[str, Any] = {}

    def __call__(self, rec: Record) -> Any:
        sig = self._recent.get(rec.content_hash)
        if sig is None:
            sig = self._minhash(num_perm=PERMUTATIONS, seed=SEED, scheme="affine32",
                                permutations=self._template.permutations)
            sig.update_batch(sorted(shingles(record_text(rec))))
            if len(self._recent) >= 4:
                self._recent.clear()
            self._recent[rec.content_hash] = sig
        return sig


@dataclass(frozen=True)
class Kept:
    """A record in the pool, as a near copy's reject names it."""

    id: str
    file: str
    line: int | None
    index: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}[{self.index}]"


class NearIndex:
    """The kept records' signatures, queried for each new record."""

    def __init__(self, threshold: float, signer: Signer) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.sign = signer
        # Above 0.9 datasketch's banding runs out of bands (b < 2 at 0.99); the candidates it proposes at 0.9
        # are a superset, and the Jaccard check below applies the threshold asked for.
        self.lsh = MinHashLSH(threshold=min(threshold, LSH_MAX_THRESHOLD), num_perm=PERMUTATIONS)
        self.kept: list[Kept] = []
        self.signatures: list[Any] = []

    def match(self, rec: Record) -> tuple[Kept, float] | None:
        """The kept record ``rec`` nearly copies (and the estimated Jaccard similarity), or None."""
        sig = self.sign(rec)
        best: tuple[float, int] | None = None
        for key in self.lsh.query(sig):
            j = float(sig.jaccard(self.signatures[key]))
            if j >= self.threshold and (best is None or (j, -key) > (best[0], -best[1])):
                best = (j, key)
        return None if best is None else (self.kept[best[1]], best[0])

    def add(self, rec: Record, where: Kept) -> None:
        key = len(self.kept)
        sig = self.sign(rec)
        self.lsh.insert(key, sig, check_duplication=False)
        self.kept.append(where)
        self.signatures.append(sig)
