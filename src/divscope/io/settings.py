"""The ingest stage's settings: what ``divscope ingest`` takes besides its inputs, and the spec's ``pool:``
section (``PoolSpec`` extends this object with the sources)."""

from __future__ import annotations

from divscope.settings import Settings, setting


class IngestSettings(Settings):
    strict: bool = setting(False, "Fail (exit 2, no pool written) if any record is rejected.")
    repair: bool = setting(
        False, "Repair conversations that break the turn order instead of rejecting them: normalise role "
               "aliases, strip empty turns, drop a leading assistant turn, merge consecutive turns of one role, "
               "drop a trailing user turn (docs/data.md#repair). Repaired records get a new id and keep the "
               "old one in metadata.repaired_from.")
