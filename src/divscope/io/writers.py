"""Writers: canonical records out to alpaca, ShareGPT, OpenAI messages, Parquet or a HF ``datasets`` directory.

Each file LLaMA-Factory can read (JSON, JSONL, Parquet, and a HF directory through its Arrow shard) gets an entry
in the ``dataset_info.json`` beside it, named ``<stem>_<format>`` (``best100_jsonl``, ``best100_parquet``,
``best100_hf``), so a subset trains there without editing. An entry of that name pointing at another file is an
error, never overwritten. Every write is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope._version import __version__
from divscope.errors import DivscopeError, did_you_mean
from divscope.io.record import Record
from divscope.io.shapes import RESERVED_KEYS, SHAPES, shape_dict, to_dict
from divscope.io.workspace import Pool
from divscope.store.atomic import atomic_open, atomic_path, write_json

WRITE_FORMATS = (*SHAPES, "parquet", "hf")
DATASET_INFO = "dataset_info.json"
HF_SHARD = "data-00000-of-00001.arrow"  # the one shard an ``hf`` output is written as (what LLaMA-Factory loads)
_LLAMAFACTORY_EXTENSIONS = ("json", "jsonl", "parquet")  # its FILEEXT2TYPE, less csv/txt (not our formats)
OPTIONAL_COLUMNS = ("system", "history")  # alpaca columns a dataset_info entry declares only when present
LINES_VERSION = 1  # of pool_lines' encoding: bump when shape_dict or _typed_rows change what a line holds


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
    path, fmt, shape, entry = _target(path, fmt, shape, llamafactory)
    rows = _typed_rows(records, shape)
    if fmt in SHAPES:
        _write_lines([json.dumps(row, ensure_ascii=False).encode() for row in rows], path, _is_jsonl(path, shape))
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


def write_pool_rows(pool: Pool, rows: Sequence[int] | np.ndarray, path: str | os.PathLike[str],
                    fmt: str | None = None, shape: str = "openai", llamafactory: bool = True,
                    build_lines: bool = True) -> Path:
    """``write_records(pool.records(rows), ...)``, byte for byte, faster: a JSON/JSONL output is a gather of the
    pool's encoded record lines (``pool_lines``; ``build_lines``: encode the pool first when they are not stored
    yet, else write as ``write_records`` does). Parquet and HF outputs go through ``write_records``."""
    path, fmt, shape, entry = _target(path, fmt, shape, llamafactory)
    lines = pool_lines(pool, shape, build=build_lines) if fmt in SHAPES else None
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if lines is None:
        return write_records(pool.records(rows.tolist()), path, fmt=fmt, shape=shape, llamafactory=llamafactory)
    exact = np.asarray(lines["exact"])[rows]
    # Rows holding a metadata key whose type varies across the pool: whether it stays a column depends on the
    # subset, so they are encoded here as write_records would (from themselves alone: only they carry such keys).
    slow_rows = rows[~exact]
    typed = _typed_rows(pool.records(slow_rows.tolist()), shape) if len(slow_rows) else []
    slow = {int(r): json.dumps(row, ensure_ascii=False).encode() for r, row in zip(slow_rows, typed, strict=True)}
    columns = {k for row in typed for k in row}
    present = int(np.bitwise_or.reduce(np.asarray(lines["flags"])[rows[exact]])) if exact.any() else 0
    columns |= {name for bit, name in enumerate(OPTIONAL_COLUMNS) if present >> bit & 1}
    offsets = np.asarray(lines["offsets"])
    blob = memoryview(lines["blob"])
    out = [slow[r] if r in slow else blob[a:b]
           for r, a, b in zip(rows.tolist(), offsets[rows].tolist(), offsets[rows + 1].tolist(), strict=True)]
    _write_lines(out, path, _is_jsonl(path, shape))
    if entry:
        add_llamafactory_entry(path, shape, columns=columns, fmt=fmt)
    return path


def pool_lines(pool: Pool, shape: str, build: bool = True) -> dict[str, np.ndarray] | None:
    """Each pool record's JSON line in ``shape`` as ``write_records`` writes it, kept in
    ``WS/cache/lines/<shape>/`` (keyed by the pool fingerprint, ``LINES_VERSION`` and the divscope version) and
    memory-mapped: ``offsets`` (int64[n + 1]) into ``blob`` (uint8), ``exact`` (bool[n]: the line holds in any
    subset; False for rows with a metadata key whose type varies across the pool) and ``flags`` (uint8[n], bit i:
    the row has ``OPTIONAL_COLUMNS[i]``). ``build``: encode and store them when absent; else None then."""
    key = f"lines-{shape}"
    if key not in pool.cache:
        from divscope.store.cached import cached_arrays, stored_arrays

        params = {"what": "record lines", "version": LINES_VERSION, "divscope_version": __version__,
                  "shape": shape, "pool_fingerprint": pool.fingerprint}
        directory = pool.path.parent / "cache" / "lines" / shape
        if build:
            pool.cache[key] = cached_arrays(directory, params, lambda: encode_pool(pool, shape), mmap=True)
        else:
            found = stored_arrays(directory, params, mmap=True)
            if found is None:
                return None
            pool.cache[key] = found
    return pool.cache[key]


def encode_pool(pool: Pool, shape: str) -> dict[str, np.ndarray]:
    """The arrays of ``pool_lines``, in one pass over the pool. Each line is encoded as if every metadata key
    of its row stayed a column; rows with a key that turns out not to (``_as_column`` over the whole pool) are
    marked inexact, and their lines are never used."""
    lines: list[bytes] = []
    keys: list[frozenset[str]] = []
    flags = np.zeros(len(pool), np.uint8)
    types: dict[str, set[type | None]] = {}
    table = pool.table.select(["source_id", "conversation", "metadata"])
    no_keys: frozenset[str] = frozenset()
    for i, (sid, messages, meta_json) in enumerate(_pool_rows(table)):
        # what to_dict(row_to_record(row), shape) gives, without building Record and Turn objects
        meta = json.loads(meta_json) if meta_json and meta_json != "{}" else None
        row_keys = no_keys
        row = shape_dict(messages, sid, meta or {}, shape)  # (moves reserved keys out of meta)
        if meta is not None:
            row_types = _key_types([row])
            for k, ts in row_types.items():
                types.setdefault(k, set()).update(ts)
            row_keys = frozenset(row_types)
            _nest(row, _as_column(row_types))
        if shape == "alpaca":
            flags[i] = sum(1 << bit for bit, name in enumerate(OPTIONAL_COLUMNS) if name in row)
        try:
            lines.append(json.dumps(row, ensure_ascii=False).encode())
        except UnicodeEncodeError:  # a lone surrogate: write_records raises on it, so must the writer of the subset
            lines.append(b"")
            row_keys = frozenset({"\x00"})  # never a column: the row is inexact
        keys.append(row_keys)
    as_column = _as_column(types)
    exact = np.fromiter((k <= as_column for k in keys), np.bool_, count=len(keys))
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    return {"offsets": offsets, "blob": np.frombuffer(b"".join(lines), np.uint8), "exact": exact, "flags": flags}


def _pool_rows(table: Any, batch_size: int = 8192) -> Iterator[tuple[str | None, list[dict[str, str]], str]]:
    for batch in table.to_batches(max_chunksize=batch_size):
        yield from zip(*(batch.column(name).to_pylist() for name in ("source_id", "conversation", "metadata")),
                       strict=True)


def _target(path: str | os.PathLike[str], fmt: str | None, shape: str, llamafactory: bool
            ) -> tuple[Path, str, str, tuple[str, str] | None]:
    """(path, format, shape, dataset_info entry or None) of an output, checked before anything is written."""
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
    return path, fmt, shape, entry


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


def _is_jsonl(path: Path, shape: str) -> bool:
    return path.suffix.lower() == ".jsonl" or shape == "openai"


def _write_lines(lines: Sequence[bytes | memoryview], path: Path, jsonl: bool) -> None:
    """One JSON line per record: JSONL, or a JSON array with one record per line (valid JSON that still diffs
    and streams well)."""
    with atomic_open(path, "wb") as fh:
        if jsonl:
            fh.write(b"\n".join(lines) + b"\n" if lines else b"")
        else:
            fh.write(b"[" + (b"\n" + b",\n".join(lines) if lines else b"") + b"\n]\n")


def _scalar_type(v: Any) -> type | None:
    return type(v) if isinstance(v, (str, int, float, bool)) else None


def _typed_rows(records: Iterable[Record], shape: str) -> list[dict[str, Any]]:
    """Rows in ``shape`` whose every metadata key holds one scalar type across the file.

    Readers that infer a schema need that: Arrow/Parquet, HF ``datasets`` and its JSON loader (datasets 4.0, which
    LLaMA-Factory pins, fails on ``score: 4`` in one row and ``"4"`` in another). Anything else (nested values,
    nulls, mixed types, names holding NUL, which a datasets schema cannot carry) travels as JSON text in
    ``divscope_metadata``, which every divscope reader unpacks back into metadata."""
    rows = [to_dict(r, shape) for r in records]
    as_column = _as_column(_key_types(rows))
    for row in rows:
        _nest(row, as_column)
    return rows


def _key_types(rows: Iterable[dict[str, Any]]) -> dict[str, set[type | None]]:
    types: dict[str, set[type | None]] = {}
    for row in rows:
        for k, v in row.items():
            if k not in RESERVED_KEYS:
                types.setdefault(k, set()).add(_scalar_type(v))
    return types


def _as_column(types: dict[str, set[type | None]]) -> set[str]:
    """The metadata keys that stay columns: one scalar type, and a name a datasets schema can carry."""
    return {k for k, ts in types.items() if len(ts) == 1 and None not in ts and "\x00" not in k}


def _nest(row: dict[str, Any], as_column: set[str]) -> None:
    nested = dict(row.pop("divscope_metadata", {}) or {})
    for k in list(row):
        if k not in RESERVED_KEYS and k not in as_column:
            nested[k] = row.pop(k)
    if nested:
        row["divscope_metadata"] = json.dumps(nested, ensure_ascii=False, sort_keys=True)


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
        cols.update({k: k for k in OPTIONAL_COLUMNS if columns is None or k in columns})
        return {"file_name": file_name, "formatting": "alpaca", "columns": cols}
    if shape == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations"}}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}
