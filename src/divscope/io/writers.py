"""Writers: canonical records out to alpaca, ShareGPT, OpenAI messages, Parquet or a HF ``datasets`` directory.

Each file LLaMA-Factory can read (JSON, JSONL, Parquet, and a HF directory through its Arrow shard) gets an entry
in the ``dataset_info.json`` beside it, named ``<stem>_<format>`` (``best100_jsonl``, ``best100_parquet``,
``best100_hf``), so a subset trains there without editing. An entry of that name pointing at another file is an
error, never overwritten. Every write is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError, did_you_mean
from divscope.io.record import Record
from divscope.io.shapes import RESERVED_KEYS, SHAPES, to_dict
from divscope.store.atomic import atomic_open, atomic_path, write_json

WRITE_FORMATS = (*SHAPES, "parquet", "hf")
DATASET_INFO = "dataset_info.json"
HF_SHARD = "data-00000-of-00001.arrow"  # the one shard an ``hf`` output is written as (what LLaMA-Factory loads)
_LLAMAFACTORY_EXTENSIONS = ("json", "jsonl", "parquet")  # its FILEEXT2TYPE, less csv/txt (not our formats)


def infer_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".jsonl":
        return "openai"
    if suffix == ".json":
        return "sharegpt"
    if suffix == "":
        return "hf"
    raise DivscopeError(f"{path}: cannot tell the format from the extension; pass --format "
                        f"({', '.join(WRITE_FORMATS)})")


def write_records(
    records: Iterable[Record],
    path: str | os.PathLike[str],
    fmt: str | None = None,
    shape: str = "openai",
    llamafactory: bool = True,
) -> Path:
    """Write records; ``fmt`` is a shape (JSON/JSONL by extension) or ``parquet``/``hf`` (laid out as ``shape``).

    Returns the path written.
    """
    path = Path(path)
    fmt = fmt or infer_format(path)
    if fmt not in WRITE_FORMATS:
        raise DivscopeError(f"unknown output format {fmt!r}: choose from {', '.join(WRITE_FORMATS)}"
                            + did_you_mean(fmt, WRITE_FORMATS))
    if shape not in SHAPES:
        raise DivscopeError(f"unknown shape {shape!r}: choose from {', '.join(SHAPES)}" + did_you_mean(shape, SHAPES))
    if fmt in SHAPES:
        shape = fmt
    entry = _entry_target(path, fmt) if llamafactory else None
    if entry:
        _check_entry(path.parent / DATASET_INFO, *entry)
    rows = _typed_rows(records, shape)
    if fmt in SHAPES:
        _write_json(rows, path, jsonl=path.suffix.lower() == ".jsonl" or shape == "openai")
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:
            pq.write_table(_columnar(rows), tmp, compression="zstd")
    else:
        import datasets

        with atomic_path(path) as tmp:
            datasets.Dataset(_columnar(rows)).save_to_disk(str(tmp), num_shards=1)
    if entry:
        add_llamafactory_entry(path, shape, columns={k for row in rows for k in row}, fmt=fmt)
    return path


def entry_name(path: Path, fmt: str | None = None) -> str | None:
    """The ``dataset_info.json`` entry name of an output, or None when LLaMA-Factory cannot read it."""
    target = _entry_target(Path(path), fmt or infer_format(Path(path)))
    return target[0] if target else None


def _entry_target(path: Path, fmt: str) -> tuple[str, str] | None:
    """(entry name, file_name relative to the entry's directory) for an output LLaMA-Factory reads.

    A HF directory is entered through its Arrow shard: LLaMA-Factory loads a directory entry by listing every
    file in it, and a ``save_to_disk`` directory also holds JSON state files ("File types should be identical")."""
    if fmt == "hf":
        return f"{path.name}_hf", f"{path.name}/{HF_SHARD}"
    ext = path.suffix.lower().lstrip(".")
    if ext not in _LLAMAFACTORY_EXTENSIONS:
        return None
    return f"{path.stem}_{ext}", path.name


def _read_info(info_path: Path) -> dict[str, Any]:
    if not info_path.exists():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DivscopeError(f"{info_path}: exists but is not valid JSON; fix or remove it") from None
    if not isinstance(info, dict):
        raise DivscopeError(f"{info_path}: not a JSON object of dataset entries; fix or remove it")
    return info


def _check_entry(info_path: Path, name: str, file_name: str) -> None:
    """Refuse (before anything is written) an entry name that already points at another file."""
    old = _read_info(info_path).get(name)
    if isinstance(old, dict) and old.get("file_name") != file_name:
        raise DivscopeError(f"{info_path}: entry {name!r} already points at {old.get('file_name')!r}, not "
                            f"{file_name!r}; write to another name or remove that entry")


def _write_json(rows: list[dict[str, Any]], path: Path, jsonl: bool) -> None:
    with atomic_open(path) as fh:
        if jsonl:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        fh.write("[")  # one record per line inside the array: valid JSON that still diffs and streams well
        for i, row in enumerate(rows):
            fh.write(("," if i else "") + "\n" + json.dumps(row, ensure_ascii=False))
        fh.write("\n]\n")


def _scalar_type(v: Any) -> type | None:
    return type(v) if isinstance(v, (str, int, float, bool)) else None


def _typed_rows(records: Iterable[Record], shape: str) -> list[dict[str, Any]]:
    """Rows in ``shape`` whose every metadata key holds one scalar type across the file.

    Readers that infer a schema need that: Arrow/Parquet, HF ``datasets`` and its JSON loader (datasets 4.0, which
    LLaMA-Factory pins, fails on ``score: 4`` in one row and ``"4"`` in another). Anything else (nested values,
    nulls, mixed types, names holding NUL, which a datasets schema cannot carry) travels as JSON text in
    ``divscope_metadata``, which every divscope reader unpacks back into metadata."""
    rows = [to_dict(r, shape) for r in records]
    types: dict[str, set[type | None]] = {}
    for row in rows:
        for k, v in row.items():
            if k not in RESERVED_KEYS:
                types.setdefault(k, set()).add(_scalar_type(v))
    as_column = {k for k, ts in types.items() if len(ts) == 1 and None not in ts and "\x00" not in k}
    for row in rows:
        nested = dict(row.pop("divscope_metadata", {}) or {})
        for k in list(row):
            if k in types and k not in as_column:
                nested[k] = row.pop(k)
        if nested:
            row["divscope_metadata"] = json.dumps(nested, ensure_ascii=False, sort_keys=True)
    return rows


def _columnar(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    keys = list(dict.fromkeys(k for row in rows for k in row))  # from_pylist alone only looks at the first row
    try:
        return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DivscopeError(f"cannot lay these records out as columns: {e}") from None


def add_llamafactory_entry(path: Path, shape: str, columns: set[str] | None = None, fmt: str | None = None) -> Path:
    """Add (or update) this output's entry in the ``dataset_info.json`` beside it, keeping other entries.

    Every entry already pointing at this file (one named by an older divscope, or by hand) is updated with it, so
    rewriting a file is idempotent; an entry of this name pointing at another file is an error.
    ``columns``: the keys the file holds; optional alpaca columns it lacks are not declared (LLaMA-Factory reads
    every declared column and raises ``KeyError`` on a missing one)."""
    target = _entry_target(path, fmt or infer_format(path))
    if target is None:
        raise DivscopeError(f"{path}: LLaMA-Factory reads only {', '.join(_LLAMAFACTORY_EXTENSIONS)} files and "
                            f"HF directories")
    name, file_name = target
    info_path = path.parent / DATASET_INFO
    _check_entry(info_path, name, file_name)
    info = _read_info(info_path)
    entry = llamafactory_entry(file_name, shape, columns)
    for key, old in info.items():
        if isinstance(old, dict) and old.get("file_name") == file_name:
            info[key] = entry
    info[name] = entry
    write_json(info_path, info)
    return info_path


def llamafactory_entry(file_name: str, shape: str, columns: set[str] | None = None) -> dict[str, Any]:
    if shape == "alpaca":
        cols = {"prompt": "instruction", "query": "input", "response": "output"}
        cols.update({k: k for k in ("system", "history") if columns is None or k in columns})
        return {"file_name": file_name, "formatting": "alpaca", "columns": cols}
    if shape == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations"}}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}
