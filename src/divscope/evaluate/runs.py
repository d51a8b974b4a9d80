"""Evaluate a training run: pick the held-out items, load the fine-tuned model, score, cache the result.

Results go to ``RUN/eval/<set>.<method>.json`` (atomic); asking again with the same settings reads the file
instead of recomputing (unless it is marked ``"complete": false``: a judge run with failed requests, which a
rerun completes from the caches). Items that overlap the run's training data are never scored (``held-out``).
``judge`` and ``ifeval`` also write per-item details to ``RUN/eval/<set>.<method>.items.jsonl``; their
generated answers are cached in ``RUN/eval/generations.jsonl`` and judge replies in
``RUN/eval/cache/judge.jsonl``. Scores are higher-is-better: ``nll`` -mean NLL, ``judge`` the win rate against
the references as a fraction in [0, 1], ``ifeval`` prompt-level strict accuracy in [0, 1]. The methods are
:class:`divscope.evaluate.base.Evaluator` objects looked up by name in :mod:`divscope.evaluate.registry`, where
another one can be registered; each result also maps every scored item id to its score (``per_item``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from divscope._version import __version__
from divscope.evaluate.base import EvalOutcome, check_options
from divscope.evaluate.judge_prompts import judge_prompt_for
from divscope.evaluate.registry import get_evaluator
from divscope.evaluate.settings import HOW_TO_ASK, EvalSettings
from divscope.io.evalsets import EvalItem, load_eval_set, max_new_tokens_for
from divscope.store.cached import cached_result, params_digest
from divscope.train.run import Run


def sample_items(items: list[EvalItem], limit: int | None, seed: int) -> list[EvalItem]:
    """A seeded, order-independent sample: the ``limit`` items with the smallest hash of (seed, id)."""
    if not limit or limit >= len(items):
        return items
    rank = {i.id: hashlib.sha256(f"{seed}:{i.id}".encode()).hexdigest() for i in items}
    chosen = set(sorted(rank, key=rank.__getitem__)[:limit])
    return [i for i in items if i.id in chosen]


def held_out(items: list[EvalItem], summary: dict[str, Any]) -> tuple[list[EvalItem], int]:
    """Drop items whose id is a training id or whose prompt overlaps the training data (recorded at train time)."""
    banned = set(summary.get("train_ids", ())) | set(summary.get("eval_overlap", ()))
    kept = [i for i in items if i.id not in banned and i.id.split("/", 1)[-1] not in banned]
    return kept, len(items) - len(kept)


def result_path(run_dir: Path, eval_set: str, method: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", eval_set).strip("_") or "set"
    return run_dir / "eval" / f"{name}.{method}.json"


_D = EvalSettings()  # the defaults below are the settings object's (one source)


def set_defaults(eval_set: str) -> dict[str, Any]:
    """Method options whose default is the eval set's own (``None`` in :class:`EvalSettings`)."""
    return {"max_new_tokens": max_new_tokens_for(eval_set), "judge_prompt": judge_prompt_for(eval_set)}


def evaluate_run(run_dir: str | Path, eval_set: str = _D.eval_set, method: str = _D.method,
                 limit: int | None = _D.limit, seed: int = _D.seed, max_len: int = _D.max_len,
                 batch_size: int = _D.batch_size, device: str | None = _D.device, **options: Any) -> dict[str, Any]:
    """Score the run with the registered method ``method`` (see :mod:`divscope.evaluate.registry`), cached.

    ``options`` go to the method; one it does not accept is refused before anything is loaded. The result holds
    the method's ``metric``, ``score`` and details, the common fields and ``per_item`` ({item id: score}).
    An option the method takes whose default is the set's own (:func:`set_defaults`) is filled in when it is
    missing or None, so the result's parameters always hold the value used.
    """
    run_dir = Path(run_dir)
    evaluator = get_evaluator(method)
    check_options(evaluator, options)
    for k, v in set_defaults(eval_set).items():
        if k in evaluator.options and options.get(k) is None:
            options[k] = v
    run = Run.open(run_dir)
    params = {"eval_set": eval_set, "method": method, "limit": limit, "seed": seed, "max_len": max_len,
              **{k: v for k, v in options.items() if k != "api_key" and k not in HOW_TO_ASK}}
    out = result_path(run_dir, eval_set, method)

    def compute() -> dict[str, Any]:
        return _evaluate(run, evaluator, out, eval_set, limit, seed, max_len, batch_size, device, options)

    # Reused for the same parameters, unless a judge run had failed requests (a rerun completes it from the
    # caches) or the result predates per-item scores.
    return cached_result(out, {"params": _as_stored(out, params)}, compute,
                         valid=lambda r: r.get("complete", True) and "per_item" in r)


def _as_stored(out: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the stored result spells them when they differ only in how requests were sent: results
    stored before ``concurrency`` (and the judge's timeout, retries) left the parameters stay valid."""
    try:
        stored = json.loads(out.read_text(encoding="utf-8")).get("params")
    except (OSError, ValueError, AttributeError):
        return params
    if not isinstance(stored, dict):
        return params
    bare = {k: v for k, v in stored.items() if k not in HOW_TO_ASK}
    return stored if params_digest(bare) == params_digest(params) else params


def _evaluate(run: Run, evaluator: Any, out: Path, eval_set: str, limit: int | None, seed: int, max_len: int,
              batch_size: int, device: str | None, options: dict[str, Any]) -> dict[str, Any]:
    method, summary = evaluator.name, run.summary
    items, excluded = held_out(load_eval_set(eval_set), summary)
    items = sample_items(items, limit, seed)
    outcome = evaluator.evaluate(run, items, seed=seed, max_len=max_len, batch_size=batch_size, device=device,
                                 details_path=out.with_suffix(".items.jsonl"), **options)
    if not isinstance(outcome, EvalOutcome):
        raise TypeError(f"evaluator {method!r} returned {type(outcome).__name__}, not an EvalOutcome")
    strays = set(outcome.item_ids) - {it.id for it in items}
    if strays:
        raise ValueError(f"evaluator {method!r} scored items it was not given: {sorted(strays)[:3]}")
    result = {"metric": outcome.metric, "score": outcome.score, **outcome.details}
    result.setdefault("items", len(outcome.per_item))
    result.update({"divscope_version": __version__, "excluded_overlapping": excluded,
                   "train_fingerprint": summary["data_fingerprint"], "per_item": outcome.per_item_map()})
    return result
