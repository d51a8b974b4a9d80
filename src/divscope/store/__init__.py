"""Storage at the bottom layer: atomic writes, the kill-safe JSONL store, and "computed already?" results."""

from divscope.store.atomic import atomic_open, atomic_path, write_json
from divscope.store.jsonl import JsonlStore

__all__ = ["JsonlStore", "atomic_open", "atomic_path", "write_json"]
