"""Evaluate a training run: pick the held-out items, load the fine-tuned model, score, cache the result.

Results go to ``RUN/eval/<set>.<method>.json`` (atomic); asking again with the same settings reads the file
instead of recomputing (unless it is marked ``"complete": false``: a judge run with failed requests, which a
rerun completes from the caches). Items that overlap the run's training data are never scored (``held-out``).
``judge`` and ``ifeval`` also write per-item details to ``RUN/eval/<set>.<method>.items.jsonl``; their
generated answers are cached in ``RUN/eval/generations.jsonl`` and judge replies in
``RUN/eval/cache/judge.jsonl``. Scores are higher-is-better: ``nll`` -mean NLL, ``judge`` the win rate against
the references as a fraction in [0, 1], ``ifeval`` prompt-level strict accuracy in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from divscope._version import __version__
from divscope.errors import DivscopeError
from divscope.io.evalsets import EvalItem, load_eval_set
from divscope.store.atomic import write_json
from divscope.train.run import Run

METHODS = ("nll", "judge", "ifeval")


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


def evaluate_run(run_dir: str | Path, eval_set: str = "alpaca_eval", method: str = "nll", limit: int | None = 200,
                 seed: int = 0, max_len: int = 512, batch_size: int = 8, device: str | None = None,
                 **options: Any) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if method not in METHODS:
        raise DivscopeError(f"--method must be one of {', '.join(METHODS)}")
    run = Run.open(run_dir)
    summary = run.summary
    params = {"eval_set": eval_set, "method": method, "limit": limit, "seed": seed, "max_len": max_len,
              **{k: v for k, v in options.items() if k != "api_key"}}
    out = result_path(run_dir, eval_set, method)
    if out.is_file():
        cached = json.loads(out.read_text(encoding="utf-8"))
        if cached.get("params") == params and cached.get("complete", True):
            return cached
    items, excluded = held_out(load_eval_set(eval_set), summary)
    items = sample_items(items, limit, seed)
    if method == "nll":
        result = _nll(run_dir, items, max_len, batch_size, device)
    elif method == "judge":
        from divscope.evaluate.judge import evaluate_judge

        result = evaluate_judge(run_dir, items, seed=seed, max_len=max_len, batch_size=batch_size, device=device,
                                details=out.with_suffix(".items.jsonl"), **options)
    else:
        from divscope.evaluate.ifeval import evaluate_ifeval

        result = evaluate_ifeval(run_dir, items, seed=seed, max_len=max_len, batch_size=batch_size, device=device,
                                 details=out.with_suffix(".items.jsonl"), **options)
    result.update({"params": params, "divscope_version": __version__, "excluded_overlapping": excluded,
                   "train_fingerprint": summary["data_fingerprint"]})
    write_json(out, result)
    return result


def _nll(run_dir: Path, items: list[EvalItem], max_len: int, batch_size: int, device: str | None) -> dict[str, Any]:
    from divscope.evaluate.nll import mean_nll

    convs = []
    for it in items:
        if len(it.references) < len(it.turns):
            continue
        conv: list[dict[str, str]] = []
        for q, a in zip(it.turns, it.references, strict=False):
            conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        convs.append(conv)
    if not convs:
        raise DivscopeError("no item of this eval set has reference answers; nll needs them (try alpaca_eval)")
    model, tok = Run.open(run_dir).load(device)
    res = mean_nll(model, tok, convs, max_len=max_len, batch_size=batch_size)
    return {"metric": "nll", "score": -res.mean_nll, "mean_nll": res.mean_nll, "perplexity": res.perplexity,
            "tokens": res.tokens, "items": res.items, "skipped": res.skipped, "seconds": round(res.seconds, 2),
            "seconds_per_item": round(res.seconds / max(res.items, 1), 4)}
