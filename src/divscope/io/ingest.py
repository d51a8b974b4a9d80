"""Ingest: inputs of any format -> validated canonical pool in a workspace, with nothing lost.

Every record either lands in ``pool.parquet`` or in ``rejects.jsonl`` with file, line (or record index), reason
and raw text. Records stream through in batches, so memory stays bounded by the batch and the id/hash sets.
All three outputs are written under temporary names and renamed at the end: a killed ingest leaves no
half-written pool behind.

``repair=True`` repairs what breaks the turn grammar (``divscope.io.repair``) instead of rejecting it; without
it, the report says how many rejects a repair would keep (``repair.would_keep``), counted exactly: every record
is also run, with its repair, against a second set of ids and hashes, as the repairing ingest would see them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.io import builtin
from divscope.io.jsonstream import RawItem, StreamNotes
from divscope.io.neardup import Kept, NearIndex, Signer
from divscope.io.readers import iter_python, iter_raw, split_format
from divscope.io.record import Record
from divscope.io.repair import REPAIRABLE
from divscope.io.settings import IngestSettings
from divscope.io.shapes import RecordProblem, detect_shape, from_dict, repaired_from_dict
from divscope.io.workspace import POOL_SCHEMA, Workspace, fingerprint_rows, records_to_table
from divscope.io.writers import pool_lines
from divscope.settings import parse
from divscope.store.atomic import atomic_open, atomic_path, write_json
from divscope.ui import progress_bar

BATCH = 4096
Input = str | os.PathLike[str] | Sequence[dict[str, Any]]


@dataclass
class SourceStats:
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)
    repaired: int = 0  # with repair: records in the pool after repair; without: rejects a repair would keep
    repairs: Counter[str] = field(default_factory=Counter)  # those records by repair kind
    accepted_with_repair: int = 0  # without repair: the pool size a repairing ingest would reach

    def to_json(self, repair: bool) -> dict[str, Any]:
        return {"read": self.read, "accepted": self.accepted, "rejected": self.rejected,
                "by_reason": dict(sorted(self.by_reason.items())), "notes": self.notes,
                "repair": _repair_json(repair, self.repaired, self.repairs, self.accepted_with_repair)}


def _repair_json(enabled: bool, n: int, kinds: Counter[str], accepted_with_repair: int) -> dict[str, Any]:
    """With repair: how many records were repaired, by kind. Without: how many rejects a repair would keep, by
    the kinds it would apply, and the pool size it would reach (a repaired record can also take the place of
    a later duplicate, so that is not always accepted + would_keep)."""
    if enabled:
        return {"enabled": True, "repaired": n, "by_kind": dict(sorted(kinds.items()))}
    return {"enabled": False, "would_keep": n, "by_kind": dict(sorted(kinds.items())),
            "accepted_with_repair": accepted_with_repair}


@dataclass
class _Seen:
    """The ids and content hashes in a pool so far (and with ``--dedup near`` their MinHash signatures): what
    deduplication checks against."""

    ids: set[str] = field(default_factory=set)
    hashes: dict[str, str] = field(default_factory=dict)
    near: NearIndex | None = None

    def problem(self, rec: Record) -> tuple[str, str] | tuple[str, str, dict[str, Any]] | None:
        if rec.content_hash in self.hashes:
            return "duplicate_content", f"same conversation as record {self.hashes[rec.content_hash]!r}"
        if rec.id in self.ids:
            return "duplicate_id", f"id {rec.id!r} was already used by a different record"
        if self.near is not None and (hit := self.near.match(rec)):
            kept, jaccard = hit
            return ("near_duplicate", f"near copy (estimated Jaccard {jaccard:.2f}) of record {kept.id!r} at "
                    f"{kept.where}", {"duplicate_of": {"id": kept.id, "file": kept.file, "line": kept.line,
                                                       "index": kept.index}, "similarity": round(jaccard, 4)})
        return None

    def add(self, rec: Record, item: RawItem) -> None:
        self.ids.add(rec.id)
        self.hashes[rec.content_hash] = rec.id
        if self.near is not None:
            self.near.add(rec, Kept(rec.id, item.file, item.line, item.index))


@dataclass
class _Run:
    """One ingest's state across its inputs: the pool's dedup sets, and the repairing ingest's (shadow) when
    counting what a repair would keep."""

    repair: bool
    seen: _Seen = field(default_factory=_Seen)
    shadow: _Seen | None = None
    id_pairs: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def start(settings: IngestSettings) -> _Run:
        if settings.dedup == "exact":
            return _Run(settings.repair, shadow=None if settings.repair else _Seen())
        sign = Signer()
        near = NearIndex(settings.near_threshold, sign)
        shadow = None if settings.repair else _Seen(near=NearIndex(settings.near_threshold, sign))
        return _Run(settings.repair, seen=_Seen(near=near), shadow=shadow)


@dataclass
class IngestResult:
    workspace: Workspace
    report: dict[str, Any]

    @property
    def accepted(self) -> int:
        return int(self.report["accepted"])

    @property
    def rejected(self) -> int:
        return int(self.report["rejected"])


def _source_name(inp: Input, i: int) -> str:
    """A path's name, else the records' ``source_name`` attribute (records read back from a pool keep their
    original source, e.g. ``divscope respond``), else ``<python:i>``."""
    if isinstance(inp, (str, os.PathLike)):
        return str(inp)
    return str(getattr(inp, "source_name", "") or f"<python:{i}>")


def _open_input(inp: Input, name: str, fmt: str | None, notes: StreamNotes) -> tuple[Iterator[RawItem], str | None]:
    shape, container = split_format(fmt)
    if builtin.is_builtin(inp):
        if container:
            raise DivscopeError(f"{name}: --format {fmt} does not apply to a builtin source")
        items, builtin_shape = builtin.iter_builtin(str(inp), notes)
        return items, shape or builtin_shape
    if isinstance(inp, (str, os.PathLike)):
        return iter_raw(Path(inp), container, notes), shape
    if isinstance(inp, Sequence):
        return iter_python(inp, name), shape
    raise DivscopeError(f"cannot read input of type {type(inp).__name__}: give a path, a builtin: name or a list of dicts")


def ingest(
    inputs: Input | Sequence[Input],
    out: str | os.PathLike[str],
    fmt: str | None = None,
    **options: Any,
) -> IngestResult:
    """Read, validate and deduplicate ``inputs`` into the workspace ``out``.

    ``options`` are ``IngestSettings`` fields: ``strict`` (fail when anything is rejected), ``repair`` (repair
    broken turn order instead of rejecting, see ``divscope.io.repair``), ``dedup`` (``exact``, or ``near`` to
    also drop near copies at ``near_threshold``, see ``divscope.io.neardup``).
    Raises ``DivscopeError`` when an input yields no valid record, or with ``strict`` when anything was
    rejected; the report and rejects file are written either way, so the user can see why.
    """
    settings: IngestSettings = parse(IngestSettings, options, "ingest")
    strict = settings.strict
    if isinstance(inputs, (str, os.PathLike)) or (
        isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], dict)
    ):
        inputs = [inputs]  # type: ignore[list-item]
    if not inputs:
        raise DivscopeError("no input given")
    ws = Workspace(out)
    ws.path.mkdir(parents=True, exist_ok=True)
    per_source: dict[str, SourceStats] = {}
    run = _Run.start(settings)
    error: str | None = None
    with atomic_open(ws.rejects_path) as rej, progress_bar("ingest") as advance:
        try:
            with atomic_path(ws.pool_path) as pool_tmp:
                writer = pq.ParquetWriter(pool_tmp, POOL_SCHEMA, compression="zstd")
                try:
                    for i, inp in enumerate(inputs):  # type: ignore[arg-type]
                        _ingest_one(inp, _source_name(inp, i), fmt, per_source, run, writer, rej, advance)
                finally:
                    writer.close()
                error = _problem(per_source, strict, ws)
                if error:
                    raise _Abort
        except _Abort:
            ws.pool_path.unlink(missing_ok=True)  # never leave an older pool beside this run's report
    report = _report(per_source, fmt, settings, fingerprint_rows(run.id_pairs))
    write_json(ws.report_path, report)
    if error:
        raise DivscopeError(error)
    # The default output shape's record lines (io.writers.pool_lines): the first grid then only gathers them.
    pool_lines(ws.pool, "openai")
    return IngestResult(ws, report)


class _Abort(Exception):
    """Abandon the pool file (and only it) when the ingest as a whole fails."""


def _ingest_one(inp: Input, name: str, fmt: str | None, per_source: dict[str, SourceStats], run: _Run,
                writer: pq.ParquetWriter, rej: Any, advance: Any) -> None:
    stats = per_source.setdefault(name, SourceStats())
    notes = StreamNotes()
    items, shape = _open_input(inp, name, fmt, notes)
    shadow_shape = shape
    batch: list[Record] = []
    for item in items:
        stats.read += 1
        advance()
        parsed, repairs = _parse(item, name, shape, run.repair)
        rec = parsed
        if isinstance(parsed, Record) and (dup := run.seen.problem(parsed)):
            rec = dup
        if run.shadow is not None:  # what the repairing ingest would do with this item
            if shadow_shape == shape and (isinstance(parsed, Record) or parsed[0] not in REPAIRABLE):
                alt, alt_repairs = parsed, []
            else:
                alt, alt_repairs = _parse(item, name, shadow_shape, True)
            if isinstance(alt, Record) and not run.shadow.problem(alt):
                run.shadow.add(alt, item)
                stats.accepted_with_repair += 1
                if shadow_shape is None:
                    shadow_shape = detect_shape(item.value)
                if not isinstance(rec, Record):  # a reject here that the repairing ingest keeps
                    stats.repaired += 1
                    stats.repairs.update(alt_repairs)
        if isinstance(rec, Record):
            if shape is None:
                shape = detect_shape(item.value)  # the first good record fixes the file's shape
            stats.accepted += 1
            if repairs:
                stats.repaired += 1
                stats.repairs.update(repairs)
            run.seen.add(rec, item)
            run.id_pairs.append((rec.id, rec.content_hash))
            batch.append(rec)
            if len(batch) >= BATCH:
                writer.write_table(records_to_table(batch))
                batch = []
        else:
            reason, detail, *extra = rec
            stats.rejected += 1
            stats.by_reason[reason] += 1
            rej.write(item.reject_line(reason, detail, **(extra[0] if extra else {})))
    if batch:
        writer.write_table(records_to_table(batch))
    stats.notes = {k: v for k, v in (("bom_stripped", notes.bom), ("crlf", notes.crlf),
                                     ("unclosed_array", notes.unclosed_array), *notes.extra.items()) if v}


def _parse(item: RawItem, source: str, shape: str | None, repair: bool) -> tuple[Record | tuple[str, str], list[str]]:
    """The item's record (and the repairs applied to it), or its problem."""
    if item.problem:
        return item.problem, []
    try:
        return from_dict(item.value, shape, source=source), []
    except RecordProblem as p:
        if not (repair and p.reason in REPAIRABLE):
            return (p.reason, p.detail), []
    try:
        rec = repaired_from_dict(item.value, shape, source=source)
    except RecordProblem as p:
        return (p.reason, p.detail), []
    return rec, list(rec.metadata.get("repairs", []))


def _report(per_source: dict[str, SourceStats], fmt: str | None, settings: IngestSettings,
            fingerprint: str) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for s in per_source.values():
        reasons.update(s.by_reason)
        kinds.update(s.repairs)
    return {
        "divscope_version": __version__,
        "inputs": list(per_source),
        "format": fmt or "auto",
        "strict": settings.strict,
        "read": sum(s.read for s in per_source.values()),
        "accepted": sum(s.accepted for s in per_source.values()),
        "rejected": sum(s.rejected for s in per_source.values()),
        "by_reason": dict(sorted(reasons.items())),
        "repair": _repair_json(settings.repair, sum(s.repaired for s in per_source.values()), kinds,
                               sum(s.accepted_with_repair for s in per_source.values())),
        "by_source": {k: v.to_json(settings.repair) for k, v in per_source.items()},
        "pool_fingerprint": fingerprint,
        # Only when near: a pool deduplicated exactly (the default) keeps the report it always had.
        **({"dedup": {"mode": "near", "threshold": settings.near_threshold,
                      "removed": int(reasons["near_duplicate"])}} if settings.dedup == "near" else {}),
    }


# What to do when a whole input is rejected, by its most common reason (the error line names the fix).
_FIXES = {
    "malformed_json": "is it JSON, JSONL or Parquet? convert it, or name the container with --format",
    "unknown_format": "records must be alpaca, ShareGPT or OpenAI-messages objects (docs/data.md); "
                      "name the shape with --format if detection is wrong",
    "mixed_format": "one file holds one record shape; split it or name the shape with --format",
    "invalid_utf8": "convert the file to UTF-8",
    "truncated": "the file ends mid-record; copy it again",
    "record_too_large": "records are capped in size; split the record or raise max_record_chars",
}


def _problem(per_source: dict[str, SourceStats], strict: bool, ws: Workspace) -> str | None:
    for name, s in per_source.items():
        if s.accepted == 0:
            why = ", ".join(f"{k}: {v}" for k, v in s.by_reason.most_common(3)) or "it is empty"
            top = s.by_reason.most_common(1)[0][0] if s.by_reason else ""
            fix = _FIXES.get(top, "give a file with at least one record" if not top else
                             "the rejects file says what is wrong with each record")
            if s.repaired:  # without --repair: that many of them a repair would keep
                fix = f"--repair would keep {s.repaired:,} of them (docs/data.md#repair)"
            return f"{name}: no valid record ({why}); {fix}; see {ws.rejects_path}"
    total = sum(s.rejected for s in per_source.values())
    if strict and total:
        return f"--strict: {total} record(s) rejected; see {ws.rejects_path}"
    return None
