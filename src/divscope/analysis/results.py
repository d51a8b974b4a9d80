"""Reading a study's ``results.jsonl`` into validated rows, and the small helpers every analysis table uses.

A row (one evaluated subset, or the untrained model)::

    {"cell": "response-micro/n64-d0.833-r1", "strategy": "response-micro", "size": 64, "diversity": 0.833,
     "seed": 0, "replicate": 1, "selection_seed": 1, "train_seed": 1, "eval_seed": 0, "types_covered": 1204,
     "unit": "smollm2", "metric": "alpaca_eval.nll", "score": -2.13, "m.response.mean_tokens": 269.5, ...}

Keys added with replicates (``replicate``, ``*_seed``, ``types_covered``, ``unit``) are optional, so older
studies still load: a row without ``replicate`` takes its ``seed`` (the old format's one seed per cell; 0 when
absent), a diversity row without ``types_covered`` takes ``m.<side>.types_<level>`` of its own axis, and a row
without ``unit`` takes the study's micro unit from ``study.json`` when given. ``strategy: "base"`` (diversity
null) is the untrained model: an anchor, not a subset.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.store.atomic import atomic_open

STRATEGIES = tuple(f"{side}-{level}" for side in ("instruction", "response") for level in ("macro", "meso", "micro"))
BASELINES = ("random", "k-center", "distance")
ANCHOR = "base"  # the untrained model's row
RESULTS = "results.jsonl"
SEEDS = ("selection_seed", "train_seed", "eval_seed")
BASE_COLUMNS = ("cell", "strategy", "size", "diversity", "seed", "replicate", *SEEDS, "types_covered", "unit",
                "metric", "score")


def strategy_rank(s: str) -> tuple[int, str]:
    order = (ANCHOR, *STRATEGIES, *BASELINES)
    return (order.index(s), "") if s in order else (len(order), s)


def _row_key(r: Mapping[str, Any]) -> tuple:
    d = r["diversity"]
    return (strategy_rank(r["strategy"]), r["size"], r["metric"], -1.0 if d is None else d, r["replicate"],
            r["seed"], r["cell"])


def _bad(path: Path, lineno: int, why: str) -> DivscopeError:
    return DivscopeError(f"{path}:{lineno}: {why}; fix or delete that line and rerun")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> int | None:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def study_unit(study: str | Path) -> str | None:
    """The unit micro types are counted in, from ``study.json``'s spec: "words", or the tokenizer's name (None
    when unknown; an unreadable study.json is reported by ``load_study`` where it matters, not here)."""
    try:
        spec = load_study(study).get("spec") or {}
    except DivscopeError:
        return None
    micro = ((spec if isinstance(spec, dict) else {}).get("features") or {}).get("micro") or {}
    if not isinstance(micro, dict):
        return None
    if micro.get("unit") == "words":
        return "words"
    return micro.get("tokenizer") if isinstance(micro.get("tokenizer"), str) else None


def _row(obj: dict[str, Any], path: Path, lineno: int, unit: str | None) -> dict[str, Any] | None:
    for k in ("cell", "strategy", "metric"):
        if not isinstance(obj.get(k), str) or not obj[k]:
            raise _bad(path, lineno, f"field {k!r} missing or not a non-empty string")
    anchor = obj["strategy"] == ANCHOR  # the untrained model: no subset, so size 0 and no selection seed
    size = _int(obj.get("size"))
    if size is None or size < (0 if anchor else 1):
        raise _bad(path, lineno, "field 'size' missing or not a positive integer")
    d = obj.get("diversity")
    if d is not None and not (_finite(d) and 0.0 <= d <= 1.0):
        raise _bad(path, lineno, "field 'diversity' must be a number in [0, 1] or null")
    seed = _int(obj.get("seed", 0) if not (anchor and obj.get("seed") is None) else 0)
    if seed is None:
        raise _bad(path, lineno, "field 'seed' must be an integer")
    rep = _int(obj.get("replicate", seed))
    if rep is None:
        raise _bad(path, lineno, "field 'replicate' must be an integer")
    score = obj.get("score")
    if score is None or not _finite(score):
        return None
    row = {"cell": obj["cell"], "strategy": obj["strategy"], "size": size,
           "diversity": None if d is None else float(d), "seed": seed, "replicate": rep,
           **{k: _int(obj.get(k)) for k in SEEDS}, "types_covered": None,
           "unit": obj["unit"] if isinstance(obj.get("unit"), str) and obj["unit"] else unit,
           "metric": obj["metric"], "score": float(score), "disk_bytes": _int(obj.get("disk_bytes"))}
    for k, v in obj.items():
        if k.startswith("m."):
            row[k] = float(v) if _finite(v) else None
    tc = obj.get("types_covered")
    if _finite(tc):
        row["types_covered"] = float(tc)
    elif row["strategy"] in STRATEGIES and row["diversity"] is not None:
        side, _, level = row["strategy"].partition("-")
        row["types_covered"] = row.get(f"m.{side}.types_{level}")
    return row


def load_results(study: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated rows of ``study/results.jsonl`` in canonical order, and notes on what was skipped."""
    study = Path(study)
    path = study / RESULTS if study.is_dir() or not study.suffix else study
    if not path.is_file():
        raise DivscopeError(f"no results file at {path}: run the experiment first (it writes {RESULTS}) "
                            "or pass the study directory that holds it")
    unit = study_unit(path.parent)
    notes: list[str] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    replaced = skipped = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad(path, lineno, f"not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise _bad(path, lineno, "expected a JSON object")
            row = _row(obj, path, lineno, unit)
            if row is None:
                skipped += 1
                continue
            key = (row["cell"], row["metric"])
            replaced += key in rows
            rows[key] = row
    if not rows:
        raise DivscopeError(f"{path} holds no scored result: run the experiment's evaluation step first")
    if replaced:
        notes.append(f"{replaced} repeated (cell, metric) line(s): the last one of each was kept")
    if skipped:
        notes.append(f"{skipped} line(s) without a finite score were skipped")
    return sorted(rows.values(), key=_row_key), notes


def load_study(study: str | Path) -> dict[str, Any]:
    """``study.json`` if present (name, spec, command, optional date), else ``{}``."""
    path = Path(study) / "study.json"
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DivscopeError(f"{path}: not valid JSON ({e}); fix or delete it") from None
    return obj if isinstance(obj, dict) else {}


def _r(v: Any, digits: int = 12) -> Any:
    """Stable floats for the outputs: 12 significant digits, non-finite as None."""
    if isinstance(v, float | np.floating):
        f = float(v)
        return float(f"{f:.{digits}g}") if math.isfinite(f) else None
    return v


def clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return _r(obj)


def group_rows(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._") or "x"


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _fmt_csv(r.get(c)) for c in columns])


def _fmt_csv(v: Any) -> Any:
    v = _r(v)
    return "" if v is None else v
