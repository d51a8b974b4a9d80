"""Pairwise LLM judge: the model's answers against reference answers, both orders, win rate with a CI.

* **Prompt**: each set's own judge (:mod:`divscope.evaluate.judge_prompts`): AlpacaEval 2.0's for
  ``alpaca_eval`` (one-token verdict weighted by its probability), Arena-Hard's for ``arena_hard``, FastChat's
  MT-Bench pair prompts for ``mt_bench``, ``vicuna`` and any other set (``pair-v2-multi-turn`` for two turns);
  ``judge_prompt`` picks another.
* **Both orders**: every item is judged twice, model answer as A and reference as B, then swapped, to cancel
  the judge's position bias. Each order scores the model 1 (win), 0.5 (tie) or 0 (loss); the item's score is
  the mean of its two orders (win+loss -> 0.5, win+tie -> 0.75). An item counts only when both orders gave a
  verdict; the others are reported as ``unjudged`` with their reason, never silently dropped.
* **Verdict parsing** is tolerant: the last label in the reply wins; ``[[A]]``/``[[B]]``/``[[C]]``,
  Arena-Hard labels (``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``; strong and weak count
  alike), ``[[tie]]``, single brackets and "Final verdict: A" are understood; an echo of the format
  instruction is ignored. A reply with no verdict gets one follow-up turn asking for the verdict only.
* **Win rate** = mean item score (ties count half), in [0, 1]; the 95% interval is a seeded percentile
  bootstrap over items (2,000 resamples), with the normal-approximation standard error beside it. Beside it,
  the benchmark's own number: AlpacaEval's length-controlled win rate (:mod:`divscope.evaluate.lengthcontrol`),
  Arena-Hard's win rate with strong verdicts counted three times (``benchmark_win_rate``).
* **Caching**: every request goes through :class:`divscope.endpoint.EndpointClient` with a cache keyed by
  (judge model, messages, parameters): the messages hold the question and both answers in their order, so a
  rerun never re-asks a (prompt, answer pair, order); failed requests are not cached and are retried.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divscope.endpoint import EndpointClient, Result, check_parsed
from divscope.evaluate.base import EvalOutcome
from divscope.evaluate.judge_prompts import (
    JUDGE_REQUESTS,
    STRONG_WEIGHT,
    JudgePrompt,
    Reading,
    get_prompt,
    parse_verdict,
)
from divscope.io.evalsets import EvalItem
from divscope.train.run import Run

__all__ = ["parse_verdict"]  # re-exported: verdict parsing lives with the prompts

ORDERS = ("model_first", "reference_first")
# Why an order of an item has no verdict (the keys of ``unjudged_reasons``).
REQUEST_FAILED = "request failed"
NO_VERDICT = "no verdict in reply"


def model_score(verdict: str, order: str) -> float:
    """The model's score in one order: 1 win, 0.5 tie, 0 loss."""
    if verdict == "tie":
        return 0.5
    model_label = "A" if order == "model_first" else "B"
    return 1.0 if verdict == model_label else 0.0


# --------------------------------------------------------------------------------------------------------------
# Win rate and its interval
# --------------------------------------------------------------------------------------------------------------


@dataclass
class WinRate:
    win_rate: float
    ci_low: float
    ci_high: float
    stderr: float
    n: int
    level: float = 0.95
    n_boot: int = 2000

    def to_json(self) -> dict[str, Any]:
        return {"win_rate": round(self.win_rate, 6), "ci": [round(self.ci_low, 6), round(self.ci_high, 6)],
                "ci_level": self.level, "ci_method": f"percentile bootstrap over items, {self.n_boot} resamples",
                "stderr": round(self.stderr, 6), "n": self.n}


def win_rate(scores: Sequence[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> WinRate:
    """Mean of per-item scores in [0, 1] with a seeded percentile-bootstrap interval."""
    x = np.asarray(list(scores), dtype=float)
    if x.size == 0:
        raise ValueError("no judged item")
    if ((x < 0) | (x > 1)).any():
        raise ValueError("item scores must lie in [0, 1]")
    mean = float(x.mean())
    stderr = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return WinRate(mean, float(min(lo, mean)), float(max(hi, mean)), stderr, int(x.size), level, n_boot)


# --------------------------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One item to judge: the user turns, the model's answers and the reference answers (aligned)."""

    id: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    references: tuple[str, ...]
    category: str = ""  # Arena-Hard's creative-writing prompts get their own judge prompt


@dataclass
class Judgment:
    id: str
    verdicts: dict[str, str | None] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # order -> "<reason>: <detail>", for people
    repaired: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # order -> REQUEST_FAILED | NO_VERDICT, for counting
    strong: dict[str, bool] = field(default_factory=dict)  # order -> a strong verdict (Arena-Hard's >>)

    def fail(self, order: str, reason: str, detail: str) -> None:
        self.verdicts[order] = None
        self.reasons[order] = reason
        self.problems[order] = f"{reason}: {detail}"

    @property
    def score(self) -> float | None:
        if len(self.scores) < len(ORDERS):
            return None
        return sum(self.scores.values()) / len(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "verdicts": self.verdicts, "problems": self.problems,
                "repaired": self.repaired}


def judge_messages(pair: Pair, order: str, prompt: str | JudgePrompt = "mt_bench") -> list[dict[str, str]]:
    """The judge request for one order (``model_first``: the model's answer is assistant A)."""
    a, b = (pair.answers, pair.references) if order == "model_first" else (pair.references, pair.answers)
    p = get_prompt(prompt) if isinstance(prompt, str) else prompt
    return p.messages(pair.questions, a, b, pair.category)


@dataclass
class JudgeOutcome:
    judgments: list[Judgment]
    failed_requests: int
    results: list[Result]
    prompt: str = "mt_bench"

    @property
    def scores(self) -> list[float]:
        return [j.score for j in self.judgments if j.score is not None]

    def check_replies(self) -> None:
        """Replies without a verdict (after the follow-up): more than 20% of the answered ones is a warning, all
        of them an error (:func:`divscope.endpoint.check_parsed`)."""
        no_verdict = [j.problems[o] for j in self.judgments for o, r in j.reasons.items() if r == NO_VERDICT]
        check_parsed("judge", len(no_verdict), len(no_verdict) + sum(len(j.scores) for j in self.judgments),
                     no_verdict[0] if no_verdict else "", f"the judge model does not answer in {self.prompt}'s "
                     "verdict format (even after a follow-up asking for the verdict alone): use a stronger judge "
                     "model or a larger --judge-max-tokens")

    def summary(self, seed: int = 0) -> dict[str, Any]:
        judged = [j for j in self.judgments if j.score is not None]
        per_order: dict[str, Counter[str]] = {o: Counter() for o in ORDERS}
        position: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        consistent = 0
        for j in self.judgments:
            for o, v in j.verdicts.items():
                if v is None:
                    continue
                s = model_score(v, o)  # the verdict's outcome (a weighted judge's score may lie in between)
                per_order[o]["win" if s == 1 else "tie" if s == 0.5 else "loss"] += 1
                position[v] += 1
            reasons.update(j.reasons.values())
            if j.score is not None and len({model_score(v, o) for o, v in j.verdicts.items()}) == 1:
                consistent += 1
        out: dict[str, Any] = {
            "judged": len(judged), "unjudged": len(self.judgments) - len(judged),
            "unjudged_reasons": dict(sorted(reasons.items())),
            "verdicts_by_order": {o: dict(sorted(c.items())) for o, c in per_order.items()},
            "position_preference": {"A": position["A"], "B": position["B"], "tie": position["tie"]},
            "consistent_fraction": round(consistent / len(judged), 4) if judged else None,
            "repaired_replies": sum(len(j.repaired) for j in self.judgments),
            "failed_requests": self.failed_requests,
        }
        if judged:
            out.update(win_rate(self.scores, seed=seed).to_json())
            if self.prompt == "arena_hard":  # Arena-Hard's own number: a strong verdict counts three times
                pairs = [(STRONG_WEIGHT if j.strong.get(o) else 1, s) for j in judged for o, s in j.scores.items()]
                out["benchmark_win_rate"] = round(sum(w * s for w, s in pairs) / sum(w for w, _ in pairs), 6)
                out["strong_verdicts"] = sum(1 for j in judged for o in j.scores if j.strong.get(o))
        return out


def judge_pairs(client: EndpointClient, pairs: Sequence[Pair], repair: bool = True,
                progress: str | None = "judge", prompt: str | JudgePrompt = "mt_bench") -> JudgeOutcome:
    """Judge every pair in both orders through ``client`` (cached, concurrent, retried) with ``prompt``."""
    p = get_prompt(prompt) if isinstance(prompt, str) else prompt
    for pair in pairs:
        if not (len(pair.answers) >= len(pair.questions[:2]) and len(pair.references) >= len(pair.questions[:2])):
            raise ValueError(f"{pair.id}: needs an answer and a reference for each of its first two turns")
    requests = [(i, o, judge_messages(pair, o, p)) for i, pair in enumerate(pairs) for o in ORDERS]
    results = client.chat_many([m for _, _, m in requests], progress=progress)
    judgments = [Judgment(pair.id) for pair in pairs]
    to_repair = []
    for (i, o, msgs), res in zip(requests, results, strict=True):
        j = judgments[i]
        if not res.ok:
            j.fail(o, REQUEST_FAILED, str(res.error))
            continue
        reading = p.read(res.text, res.logprobs)
        if reading.verdict is None and repair and p.repair:
            to_repair.append((i, o, [*msgs, {"role": "assistant", "content": res.text},
                                     {"role": "user", "content": p.repair}]))
            continue
        _record(j, o, reading, res.text)
    if to_repair:
        fixes = client.chat_many([m for _, _, m in to_repair], progress=f"{progress} (verdict follow-ups)"
                                 if progress else None)
        results = [*results, *fixes]
        for (i, o, _), res in zip(to_repair, fixes, strict=True):
            j = judgments[i]
            j.repaired.append(o)
            if not res.ok:
                j.fail(o, REQUEST_FAILED, str(res.error))
                continue
            _record(j, o, p.read(res.text, res.logprobs), res.text)
    failed = sum(1 for r in results if not r.ok)
    return JudgeOutcome(judgments, failed, results, p.name)


def _record(j: Judgment, order: str, reading: Reading, text: str) -> None:
    if reading.verdict is None:
        j.fail(order, NO_VERDICT, "..." + " ".join(text.split())[-120:])
        return
    j.verdicts[order] = reading.verdict
    if reading.prob_a is not None:  # a weighted judge: the model's probability of being preferred
        j.scores[order] = reading.prob_a if order == "model_first" else 1.0 - reading.prob_a
    else:
        j.scores[order] = model_score(reading.verdict, order)
    j.strong[order] = reading.strong


# --------------------------------------------------------------------------------------------------------------
# `divscope evaluate RUN --method judge`
# --------------------------------------------------------------------------------------------------------------


def pairs_for(items: Sequence[Any], answers: Sequence[tuple[str, ...]]) -> list[Pair]:
    """Items whose references cover their first (up to two) turns, paired with the model's answers."""
    out = []
    for it, ans in zip(items, answers, strict=True):
        k = min(len(it.turns), 2)
        out.append(Pair(it.id, tuple(it.turns[:k]), tuple(ans[:k]), tuple(it.references[:k]), it.category))
    return out


def evaluate_judge(run: Run, items: Sequence[EvalItem], *, seed: int, max_len: int, batch_size: int,
                   device: str | None, details_path: Path | None = None, endpoint: str | None = None,
                   judge_model: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                   concurrency: int = JUDGE_REQUESTS["concurrency"], timeout: float = JUDGE_REQUESTS["timeout"],
                   max_retries: int = JUDGE_REQUESTS["max_retries"], judge_max_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0,
                   judge_prompt: str | None = None, generator: str = "hf", generator_endpoint: str | None = None,
                   generator_model: str | None = None) -> EvalOutcome:
    """The ``judge`` method: generate the run's answers, judge them against the references in both orders.

    Per item: its score in [0, 1] (mean of the two orders); unjudged items have none (they are in the details
    file with their reason). The keyword parameters after ``details_path`` are the method's options;
    ``judge_prompt``, ``judge_max_tokens`` and ``max_new_tokens`` default to the prompt's and the set's own
    (``evaluate_run`` passes the set's), ``generator*`` choose the backend (:mod:`divscope.evaluate.generators`).
    """
    from divscope.errors import DivscopeError
    from divscope.evaluate.generate import GenConfig, GenStats
    from divscope.evaluate.generators import answers_for_run
    from divscope.io.evalsets import OTHER_MAX_NEW_TOKENS
    from divscope.store.atomic import atomic_open

    if not endpoint or not judge_model:
        raise DivscopeError("--method judge needs --endpoint URL (an OpenAI-compatible server) and --judge-model "
                            "NAME")
    prompt = get_prompt(judge_prompt or "mt_bench")
    client = EndpointClient(endpoint, judge_model, api_key_env=api_key_env, max_concurrency=concurrency,
                            timeout=timeout, max_retries=max_retries, max_tokens=judge_max_tokens or prompt.max_tokens,
                            extra_params=prompt.params, seed=seed,
                            cache_path=run.path / "eval" / "cache" / "judge.jsonl")
    # The judge sees at most two turns (MT-Bench's format): later turns are neither generated nor judged.
    usable = [EvalItem(it.id, it.turns[:2], it.references[:2], it.category, it.extra) for it in items
              if len(it.references) >= min(len(it.turns), 2)]
    if not usable:
        raise DivscopeError("no item of this eval set has reference answers to judge against (use alpaca_eval, "
                            "vicuna, arena_hard or mt_bench)")
    gen = GenConfig(max_new_tokens=max_new_tokens or OTHER_MAX_NEW_TOKENS, temperature=temperature, seed=seed,
                    batch_size=batch_size, max_prompt_len=max_len)
    stats = GenStats()
    answers, backend = answers_for_run(run.path, usable, gen, device=device, stats=stats, generator=generator,
                                       generator_endpoint=generator_endpoint, generator_model=generator_model)
    pairs = pairs_for(usable, answers)
    try:
        outcome = judge_pairs(client, pairs, prompt=prompt)
    finally:
        client.close()
    if details_path is not None:
        with atomic_open(details_path) as fh:
            for p, j in zip(pairs, outcome.judgments, strict=True):
                fh.write(json.dumps({**j.to_json(), "answers": list(p.answers)}, ensure_ascii=False) + "\n")
    outcome.check_replies()
    summary = outcome.summary(seed=seed)
    if not summary["judged"]:
        raise DivscopeError(f"the judge gave no usable verdict for any item ({summary['unjudged_reasons']}); "
                            f"{client.failures_summary(outcome.results)}")
    judged = [j for j in outcome.judgments if j.score is not None]
    if prompt.name == "alpaca_eval":  # AlpacaEval 2.0's headline number beside the plain win rate
        from divscope.evaluate.lengthcontrol import length_controlled_win_rate

        by_id = {pair.id: pair for pair in pairs}
        summary.update(length_controlled_win_rate(
            [j.score for j in judged], [len(by_id[j.id].answers[0]) for j in judged],
            [len(by_id[j.id].references[0]) for j in judged]))
    return EvalOutcome("judge_win_rate", summary["win_rate"], [j.id for j in judged], [j.score for j in judged], {
        **summary,
        "items": summary["judged"], "skipped_no_reference": len(items) - len(usable),
        "complete": outcome.failed_requests == 0,
        "judge": {**client.describe(), "prompt": prompt.name, "prompts": list(prompt.names), "orders": list(ORDERS)},
        "judge_requests_sent": client.stats["requests_sent"], "judge_cache_hits": client.stats["cache_hits"],
        "generation": {**gen.key_params(), **stats.to_json(), **backend},
        "seconds_per_item": stats.to_json()["seconds_per_generated_answer"],
    })
