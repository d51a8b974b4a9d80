"""``divscope stats``: what is in a pool, at a glance (sizes, sources, turns, lengths, ingest rejects)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from divscope.io.workspace import Workspace
from divscope.ui import table, track

_PCTS = (50, 90, 99)


def _dist(values: list[int]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": 0.0, **{f"p{p}": 0.0 for p in _PCTS}, "max": 0.0}
    return {"mean": float(a.mean()), **{f"p{p}": float(np.percentile(a, p)) for p in _PCTS}, "max": float(a.max())}


def pool_stats(ws_path: str | Path) -> dict[str, Any]:
    """Counts and distributions; lengths in characters and whitespace words (tokens come with features)."""
    ws = Workspace(ws_path)
    pool = ws.pool
    turns: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    lengths: dict[str, list[int]] = {f"{side}_{unit}": [] for side in ("instruction", "response")
                                     for unit in ("chars", "words")}
    with_system = 0
    for r in track(pool.iter_records(), "stats", total=len(pool)):
        turns[r.n_turns // 2] += 1
        sources[r.source] += 1
        with_system += r.system is not None
        for side in ("instruction", "response"):
            text = r.side(side)
            lengths[f"{side}_chars"].append(len(text))
            lengths[f"{side}_words"].append(len(text.split()))
    rep = ws.report()
    return {
        "records": len(pool),
        "pool_fingerprint": pool.fingerprint,
        "sources": dict(sources),
        "exchanges": {str(k): v for k, v in sorted(turns.items())},
        "with_system": with_system,
        "lengths": {k: _dist(v) for k, v in lengths.items()},
        "ingest": {k: rep.get(k) for k in ("read", "accepted", "rejected", "by_reason")} if rep else {},
    }


def render_stats(st: dict[str, Any]) -> list[Any]:
    out = [table("pool", ["", "value"], [("records", st["records"]), ("with system prompt", st["with_system"]),
                                         ("fingerprint", st["pool_fingerprint"])]
                 + [(f"source {k}", v) for k, v in st["sources"].items()])]
    out.append(table("exchanges per sample", ["exchanges", "samples"], list(st["exchanges"].items())))
    cols = ["length", "mean", *[f"p{p}" for p in _PCTS], "max"]
    out.append(table("lengths", cols, [(k, *v.values()) for k, v in st["lengths"].items()]))
    ing = st.get("ingest") or {}
    if ing.get("by_reason"):
        out.append(table(f"ingest: {ing['accepted']:,} accepted, {ing['rejected']:,} rejected",
                         ["reason", "records"], sorted(ing["by_reason"].items())))
    return out
