"""The workspace: one directory per pool, holding the canonical pool and everything derived from it.

    WS/pool.parquet     canonical records (schema below), in ingest order
    WS/ingest.json      what was read, accepted and rejected, per reason and per source
    WS/rejects.jsonl    every rejected record with file, line, reason and its raw text
    WS/features/...     featurizer caches (later stages)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from divscope.errors import DivscopeError
from divscope.io.record import Record, Turn
from divscope.store.atomic import write_json

POOL_FILE = "pool.parquet"
INGEST_FILE = "ingest.json"
REJECTS_FILE = "rejects.jsonl"

POOL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("content_hash", pa.string()),
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("conversation", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("metadata", pa.string()),  # JSON object: extra columns of any type survive a fixed schema
])


def records_to_table(records: Sequence[Record]) -> pa.Table:
    return pa.Table.from_pydict({
        "id": [r.id for r in records],
        "content_hash": [r.content_hash for r in records],
        "source": [r.source for r in records],
        "source_id": [r.source_id for r in records],
        "conversation": [r.messages() for r in records],
        "metadata": [json.dumps(r.metadata, ensure_ascii=False, sort_keys=True) for r in records],
    }, schema=POOL_SCHEMA)


def row_to_record(row: dict[str, Any]) -> Record:
    return Record(
        id=row["id"],
        conversation=tuple(Turn(t["role"], t["content"]) for t in row["conversation"]),
        source=row["source"],
        source_id=row["source_id"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        content_hash=row["content_hash"],
    )


def fingerprint_rows(pairs: Iterable[tuple[str, str]]) -> str:
    """Pool identity: ids and content hashes in order (what every cache key builds on)."""
    h = hashlib.sha256()
    for rid, ch in pairs:
        h.update(f"{rid}\x00{ch}\n".encode())
    return h.hexdigest()[:16]


POOL_MEMO = ".pool.verified.json"  # the pool fingerprint remembered with pool.parquet's size/mtime/inode: a local
# memo of this machine, hidden, like the features' .verified.json


def file_signature(st: os.stat_result) -> list[int]:
    """(size, mtime_ns, inode) of a file's stat: any rewrite (atomic or in place) changes it."""
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class Pool:
    """Read access to ``pool.parquet``; rows are addressed by position, the order every Incidence uses.

    Opening reads only the file's footer; columns are read (memory-mapped) when first asked for, the whole table
    only by what needs every column (``table``, ``records``). ``cache`` keeps data derived from the pool for the
    life of this object (the writers' encoded record lines)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        source = pa.memory_map(str(self.path))
        self._signature = file_signature(os.fstat(source.fileno()))  # of the file opened, whatever replaces it
        self._file = pq.ParquetFile(source)
        self.cache: dict[str, Any] = {}

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    @cached_property
    def table(self) -> pa.Table:
        return self._file.read()

    def column(self, name: str) -> pa.ChunkedArray:
        """One column, without reading the others (unless the whole table is read already)."""
        if "table" in self.__dict__:
            return self.table.column(name)
        return self._file.read(columns=[name]).column(name)

    @cached_property
    def ids(self) -> list[str]:
        return self.column("id").to_pylist()

    @cached_property
    def fingerprint(self) -> str:
        """``fingerprint_rows`` of the pool; remembered in ``.pool.verified.json`` beside it with the file's
        signature, so later opens of the unchanged file read neither the ids nor the content hashes for it."""
        memo_path = self.path.with_name(POOL_MEMO)
        signature = self._signature
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
            if memo["signature"] == signature and isinstance(memo["fingerprint"], str):
                return memo["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        fp = fingerprint_rows(zip(self.ids, self.column("content_hash").to_pylist(), strict=True))
        with contextlib.suppress(OSError):  # a read-only workspace is only slower
            write_json(memo_path, {"signature": signature, "fingerprint": fp})  # true of the file opened, always
        return fp

    def iter_records(self, batch_size: int = 4096) -> Iterator[Record]:
        for batch in self.table.to_batches(max_chunksize=batch_size):
            for row in batch.to_pylist():
                yield row_to_record(row)

    def records(self, rows: Sequence[int] | None = None) -> list[Record]:
        table = self.table if rows is None else self.table.take(pa.array(rows, pa.int64()))
        return [row_to_record(r) for r in table.to_pylist()]

    def texts(self, side: str) -> list[str]:
        """The instruction or response side of every sample (DESIGN.md's derived views)."""
        return [r.side(side) for r in self.iter_records()]


class Workspace:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def pool_path(self) -> Path:
        return self.path / POOL_FILE

    @property
    def report_path(self) -> Path:
        return self.path / INGEST_FILE

    @property
    def rejects_path(self) -> Path:
        return self.path / REJECTS_FILE

    def subdir(self, *parts: str) -> Path:
        p = self.path.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def require_pool(self) -> None:
        if not self.pool_path.exists():
            raise DivscopeError(f"{self.path}: no pool here; run `divscope ingest INPUT --out {shlex.quote(str(self.path))}` first")

    @cached_property
    def pool(self) -> Pool:
        self.require_pool()
        return Pool(self.pool_path)

    def report(self) -> dict[str, Any]:
        if not self.report_path.exists():
            return {}
        return json.loads(self.report_path.read_text(encoding="utf-8"))


def pool_texts(ws: Workspace, side: str) -> list[str]:
    """The ``side`` texts of every pool row, read by Ray Data from ``pool.parquet`` on the ray engine."""
    from divscope.backend import cpu_actors, current_backend, ray_init

    eng = current_backend()
    if eng.name != "ray":
        return ws.pool.texts(side)
    ray_init(eng)
    import ray.data

    ds = ray.data.read_parquet(str(ws.pool_path), columns=["id", "content_hash", "source", "source_id",
                                                             "conversation", "metadata"])
    ds = ds.map_batches(_SideTexts, fn_constructor_args=(side,), batch_format="pyarrow", batch_size=4096,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpu_actors()))
    texts = [row["text"] for row in ds.iter_rows()]
    if len(texts) != len(ws.pool):
        raise DivscopeError(f"ray read {len(texts)} rows of {ws.pool_path}, expected {len(ws.pool)}")
    return texts


class _SideTexts:
    def __init__(self, side: str):
        self.side = side

    def __call__(self, batch: Any) -> dict[str, list[str]]:
        return {"text": [row_to_record(r).side(self.side) for r in batch.to_pylist()]}
