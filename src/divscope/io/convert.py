"""Files without a workspace: read one file into validated records, and convert a file to another format.

``divscope convert`` is the same readers and writers as ingest and export, with no pool in between: records are
validated but not deduplicated (a conversion keeps what the file holds), and a record that does not validate
goes to ``<output>.rejects.jsonl`` with file, line and reason, as ingest's rejects do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.io.jsonstream import RawItem
from divscope.io.readers import iter_python, iter_raw, split_format
from divscope.io.record import Record
from divscope.io.shapes import RecordProblem, from_dict
from divscope.io.writers import entry_name, infer_format, write_records
from divscope.store.atomic import atomic_open


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


@dataclass
class ConvertResult:
    path: Path
    written: int
    rejected: int
    rejects_path: Path | None  # None when nothing was rejected
    entry: str | None  # the dataset_info.json entry written beside the output, if LLaMA-Factory reads it


def rejects_path_for(out: Path) -> Path:
    return out.with_name(out.name + ".rejects.jsonl")


def convert(source: str | os.PathLike[str], to: str | os.PathLike[str], fmt: str | None = None,
            shape: str = "openai", from_fmt: str | None = None) -> ConvertResult:
    """Read ``source`` (any input format; ``from_fmt`` names it when detection is wrong) and write it to ``to``
    as ``fmt`` (default from the extension, as export), with its LLaMA-Factory entry."""
    src, out = Path(source), Path(to)
    if src.exists() and out.exists() and src.resolve() == out.resolve():
        raise DivscopeError(f"{out}: is the input itself; write to another path")
    fmt = fmt or infer_format(out)
    records, rejects = read_records(src, from_fmt)
    if not records:
        why = f"{len(rejects)} rejected, first: {rejects[0].where}: {rejects[0].problem[1]}" if rejects else "empty"
        raise DivscopeError(f"{src}: no valid record ({why}); name the input format with --from if detection "
                            f"is wrong")
    path = write_records(records, out, fmt=fmt, shape=shape)
    rej_path = rejects_path_for(out)
    if rejects:
        with atomic_open(rej_path) as fh:
            for item in rejects:
                reason, detail = item.problem or ("", "")
                fh.write(item.reject_line(reason, detail))
    else:
        rej_path.unlink(missing_ok=True)  # an earlier run's rejects no longer describe this output
    return ConvertResult(path, len(records), len(rejects), rej_path if rejects else None, entry_name(out, fmt))
