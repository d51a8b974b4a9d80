"""Readers: every input container (JSON, JSONL, Parquet, HF ``datasets`` directory, Python lists) as a stream
of ``RawItem``; shapes are applied later, per record, by ``divscope.io.shapes``.

Containers stream: JSON through ``jsonstream``, Parquet by record batches, HF datasets through their
memory-mapped Arrow files, so memory does not grow with the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError, did_you_mean
from divscope.io.jsonstream import RawItem, StreamNotes, iter_json_values
from divscope.io.shapes import SHAPES

CONTAINERS = ("json", "parquet", "hf")
FORMATS = (*SHAPES, *CONTAINERS, "jsonl", "auto")
_BATCH = 1024


def detect_container(path: Path) -> str:
    """Which container a path is, from what it is on disk (not trusting extensions blindly)."""
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"
        raise DivscopeError(f"{path}: a directory, but not a Hugging Face datasets directory (save_to_disk)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1" or path.suffix.lower() == ".parquet":
        return "parquet"
    return "json"


def split_format(fmt: str | None) -> tuple[str | None, str | None]:
    """``--format`` names either a shape (alpaca/sharegpt/openai) or a container (json/jsonl/parquet/hf)."""
    if fmt in (None, "auto"):
        return None, None
    if fmt in SHAPES:
        return fmt, None
    if fmt in ("json", "jsonl"):
        return None, "json"
    if fmt in CONTAINERS:
        return None, fmt
    raise DivscopeError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}"
                        + did_you_mean(fmt, ("auto", *FORMATS)))


def iter_raw(path: Path, container: str | None = None, notes: StreamNotes | None = None) -> Iterator[RawItem]:
    """Raw items of one file or directory."""
    if not path.exists():
        raise DivscopeError(f"{path}: no such file or directory")
    container = container or detect_container(path)
    if container == "json":
        return iter_json_values(path, notes=notes)
    if container == "parquet":
        return _iter_parquet(path)
    if container == "hf":
        return _iter_hf(path)
    raise DivscopeError(f"unknown container {container!r}")


def _columnar_row(row: dict[str, Any]) -> dict[str, Any]:
    # Columnar formats cannot tell a missing column from a null: treat null as absent.
    return {k: v for k, v in row.items() if v is not None}


def _iter_parquet(path: Path) -> Iterator[RawItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DivscopeError(f"{path}: not a readable Parquet file ({e})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=_BATCH):
        for row in batch.to_pylist():
            yield _item(str(path), index, row)
            index += 1


def _iter_hf(path: Path) -> Iterator[RawItem]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DivscopeError(f"{path}: not a readable Hugging Face datasets directory ({e})") from None
    parts = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    for split, d in parts:
        name = f"{path}#{split}" if split else str(path)
        index = 0
        for batch in d.iter(batch_size=_BATCH):
            cols = list(batch)
            for i in range(len(batch[cols[0]]) if cols else 0):
                yield _item(name, index, {c: batch[c][i] for c in cols})
                index += 1


def _item(name: str, index: int, row: dict[str, Any]) -> RawItem:
    row = _columnar_row(row)
    return RawItem(name, index, None, json.dumps(row, ensure_ascii=False, default=str), value=row)


def iter_python(records: Iterable[Any], name: str = "<python>") -> Iterator[RawItem]:
    """Raw items of an in-memory list of dicts (the Python API's input)."""
    for index, obj in enumerate(records):
        try:
            raw = json.dumps(obj, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            raw = repr(obj)
        yield RawItem(name, index, None, raw, value=obj)
