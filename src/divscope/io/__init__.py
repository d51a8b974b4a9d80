"""Data in and out: the canonical record, readers, validation, writers and the workspace."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divscope.io.ingest import IngestResult, ingest
from divscope.io.jsonstream import RawItem
from divscope.io.readers import iter_python, iter_raw, split_format
from divscope.io.record import Record, Turn
from divscope.io.shapes import RecordProblem, from_dict
from divscope.io.workspace import Pool, Workspace
from divscope.io.writers import write_records


def read_records(
    source: str | os.PathLike[str] | Sequence[dict[str, Any]], fmt: str | None = None
) -> tuple[list[Record], list[RawItem]]:
    """Read one file, directory or list of dicts into validated records, without a workspace.

    Returns ``(records, rejects)``; each reject carries ``where`` and ``problem``. No deduplication: that is
    the ingest's job, across all inputs.
    """
    shape, container = split_format(fmt)
    if isinstance(source, (str, os.PathLike)):
        items = iter_raw(Path(source), container)
        name = str(source)
    else:
        items = iter_python(source)
        name = "<python>"
    records: list[Record] = []
    rejects: list[RawItem] = []
    for item in items:
        if item.problem is None:
            try:
                records.append(from_dict(item.value, shape, source=name))
                continue
            except RecordProblem as p:
                item.problem = (p.reason, p.detail)
        rejects.append(item)
    return records, rejects


__all__ = ["IngestResult", "Pool", "RawItem", "Record", "Turn", "Workspace", "ingest", "read_records",
           "write_records"]
