"""The ingest stage's settings: what ``divscope ingest`` takes besides its inputs, and the spec's ``pool:``
section (``PoolSpec`` extends this object with the sources)."""

from __future__ import annotations

from typing import Literal

from divscope.settings import Settings, setting


class IngestSettings(Settings):
    strict: bool = setting(False, "Fail (exit 2, no pool written) if any record is rejected.")
    repair: bool = setting(
        False, "Repair conversations that break the turn order instead of rejecting them: normalise role "
               "aliases, strip empty turns, drop a leading assistant turn, merge consecutive turns of one role, "
               "drop a trailing user turn (docs/data.md#repair). Repaired records get a new id and keep the "
               "old one in metadata.repaired_from.")
    dedup: Literal["exact", "near"] = setting(
        "exact", "Duplicate removal: exact (the same conversation) or near (also near copies: MinHash LSH over word "
                 "5-shingles; a record whose estimated Jaccard similarity to an earlier one reaches "
                 "--near-threshold is dropped, and its line in rejects.jsonl names the record it copies; "
                 "docs/data.md#near-duplicates).")
    near_threshold: float = setting(
        0.8, "--dedup near: the estimated Jaccard similarity of word 5-shingles at which a record counts as a "
             "near copy of an earlier one.", gt=0.0, le=1.0)
