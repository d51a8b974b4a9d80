"""Data in and out: the canonical record, readers, validation, writers and the workspace."""

from __future__ import annotations

from divscope.io.convert import ConvertResult, convert, read_records
from divscope.io.ingest import IngestResult, ingest
from divscope.io.jsonstream import RawItem
from divscope.io.record import Record, Turn
from divscope.io.workspace import Pool, Workspace
from divscope.io.writers import write_records

__all__ = ["ConvertResult", "IngestResult", "Pool", "RawItem", "Record", "Turn", "Workspace", "convert", "ingest",
           "read_records", "write_records"]
