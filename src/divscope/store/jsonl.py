"""A kill-safe, append-only JSONL key -> record store: the resumable cache of every long loop over items.

Endpoint replies, generated answers, meso tags and lemmas are cached here one record at a time, so a killed run
keeps what it finished and a rerun does only the rest. It needs no endpoint: it is storage, at the bottom layer.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class JsonlStore:
    """An append-only JSONL key -> record map that survives ``kill -9`` at any point.

    Each record is one line ``{"key": ..., ...}`` written with a single ``write`` under an exclusive
    ``flock``, then flushed and fsynced. On load, a line that is not complete JSON (the half-written last line
    of a killed run) is ignored and counted in ``corrupt_lines``; if the file does not end in a newline one is
    appended before the next record. Later records for the same key win. Thread-safe; several processes may
    append to the same file (the lock serialises their writes).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        self.corrupt_lines = 0
        self._needs_newline = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        if not raw:
            return
        self._needs_newline = not raw.endswith(b"\n")
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.corrupt_lines += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                self._data[rec["key"]] = rec
            else:
                self.corrupt_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.put_many([(key, record)])

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Append several records with one write + fsync (all lines, or a detectable partial last one)."""
        lines = []
        recs = []
        for key, record in items:
            rec = {"key": key, **{k: v for k, v in record.items() if k != "key"}}
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
            recs.append(rec)
        if not lines:
            return
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            with open(self.path, "ab") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    if self._needs_newline or self._tail_is_partial(fh):
                        fh.write(b"\n")
                        self._needs_newline = False
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            for rec in recs:
                self._data[rec["key"]] = rec

    @staticmethod
    def _tail_is_partial(fh: Any) -> bool:
        """True when another writer left the file without a final newline (checked under the lock)."""
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return False
        with open(fh.name, "rb") as rd:
            rd.seek(size - 1)
            return rd.read(1) != b"\n"
