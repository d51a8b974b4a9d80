"""Evaluation sets shipped inside the package (offline), plus any user file in a supported format.

Named sets (``pool:WS`` turns a workspace's pool into one, for held-out NLL): ``alpaca_eval`` (805 prompts, GPT-4-Turbo reference answers), ``vicuna`` (its 80 Vicuna rows),
``arena_hard`` (Arena-Hard v2.0: 750 prompts; baseline answers by o3-mini for its 500 hard prompts and by
Gemini-2.0-Flash for its 250 creative-writing prompts, as v2.0 defines them), ``mt_bench`` (80 two-turn questions; GPT-4 references
for 30), ``ifeval`` (541 prompts with verifiable instructions, no reference). Origins and licences:
``divscope/data/eval/LICENSES.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError

EVAL_SETS = ("alpaca_eval", "vicuna", "arena_hard", "mt_bench", "ifeval")
# Answer length (``max_new_tokens``) for each set when none is given: the judge sets' references run long
# (AlpacaEval's GPT-4-Turbo answers average 2,049 characters, up to 6,639), so 2,048 tokens; IFEval's
# "at least N words" instructions need ~1,000; a pool or a user file gets 1,024.
MAX_NEW_TOKENS = {"alpaca_eval": 2048, "vicuna": 2048, "arena_hard": 2048, "mt_bench": 2048, "ifeval": 1024}
OTHER_MAX_NEW_TOKENS = 1024
# Arena-Hard v2.0's baseline per category (its judge config): the model whose answers are the references.
ARENA_HARD_BASELINES = {"hard_prompt": "o3-mini-2025-01-31", "creative_writing": "gemini-2.0-flash-001"}


def max_new_tokens_for(eval_set: str) -> int:
    """The answer length an eval set is generated with unless ``max_new_tokens`` says otherwise."""
    return MAX_NEW_TOKENS.get(eval_set, OTHER_MAX_NEW_TOKENS)


@dataclass(frozen=True)
class EvalItem:
    """One prompt: the user turns (several for multi-turn sets), reference answers aligned with them where the
    set has them, and set-specific fields (IFEval instruction ids and kwargs, categories)."""

    id: str
    turns: tuple[str, ...]
    references: tuple[str, ...] = ()
    category: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.turns[0]

    @property
    def reference(self) -> str | None:
        return self.references[0] if self.references else None


def _data(*parts: str) -> Path:
    return Path(str(resources.files("divscope").joinpath("data", "eval", *parts)))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _alpaca_eval(only: str | None = None) -> list[EvalItem]:
    rows = json.loads(_data("alpaca_eval_gpt4_baseline.json").read_text(encoding="utf-8"))
    return [EvalItem(f"alpaca_eval/{i}", (r["instruction"],), (r["output"],), r["dataset"],
                     {"generator": r.get("generator")})
            for i, r in enumerate(rows) if only is None or r["dataset"] == only]


def _answers(name: str) -> dict[str, str]:
    answers = {}
    for row in _jsonl(_data("arena-hard-v2.0", name)):
        content = row["messages"][-1]["content"]
        answers[row["uid"]] = content["answer"] if isinstance(content, dict) else content
    return answers


def _arena_hard() -> list[EvalItem]:
    baselines = {"hard_prompt": _answers("o3-mini-2025-01-31.answers.jsonl"),
                 "creative_writing": _answers("gemini-2.0-flash-001.creative_writing.answers.jsonl")}
    out = []
    for q in _jsonl(_data("arena-hard-v2.0", "question.jsonl")):
        category = q.get("category") or "hard_prompt"
        ref = baselines.get(category, baselines["hard_prompt"]).get(q["uid"])
        out.append(EvalItem(f"arena_hard/{q['uid']}", (q["prompt"],), (ref,) if ref else (), category,
                            {"subcategory": q.get("subcategory"),
                             "baseline_model": ARENA_HARD_BASELINES.get(category, ARENA_HARD_BASELINES["hard_prompt"])}))
    return out


def _mt_bench() -> list[EvalItem]:
    refs = {r["question_id"]: tuple(r["choices"][0]["turns"])
            for r in _jsonl(_data("mt_bench", "reference_gpt-4.jsonl"))}
    return [EvalItem(f"mt_bench/{q['question_id']}", tuple(q["turns"]), refs.get(q["question_id"], ()),
                     q["category"]) for q in _jsonl(_data("mt_bench", "question.jsonl"))]


def _ifeval() -> list[EvalItem]:
    return [EvalItem(f"ifeval/{r['key']}", (r["prompt"],), (), "ifeval",
                     {"key": r["key"], "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]})
            for r in _jsonl(_data("ifeval_input_data.jsonl"))]


def _as_items(records: list[Any], prefix: str) -> list[EvalItem]:
    return [EvalItem(f"{prefix}/{r.id}", tuple(t.content for t in r.conversation if t.role == "user"),
                     tuple(t.content for t in r.conversation if t.role == "assistant"),
                     r.metadata["category"] if isinstance(r.metadata.get("category"), str) else "",
                     {"system": r.system} if r.system else {}) for r in records]


def _pool(ws: Path) -> list[EvalItem]:
    """A workspace's pool as an eval set (``pool:WS``): evaluation then keeps only samples not trained on."""
    from divscope.io.workspace import Workspace

    return _as_items(Workspace(ws).pool.records(), "pool")


def _user_file(path: Path) -> list[EvalItem]:
    """Any supported file: the user turns are the prompt, the assistant turns the references."""
    from divscope.io import read_records

    records, rejects = read_records(path)
    if not records:
        why = rejects[0].problem[1] if rejects and rejects[0].problem else "it is empty"
        raise DivscopeError(f"{path}: no usable evaluation record ({why})")
    return _as_items(records, path.name)


def load_eval_set(name: str) -> list[EvalItem]:
    """A named set or a path to a user file."""
    loaders = {"alpaca_eval": _alpaca_eval, "vicuna": lambda: _alpaca_eval("vicuna"),
               "arena_hard": _arena_hard, "mt_bench": _mt_bench, "ifeval": _ifeval}
    if name in loaders:
        return loaders[name]()
    if name.startswith("pool:"):
        return _pool(Path(name[len("pool:"):]))
    path = Path(name)
    if path.exists():
        return _user_file(path)
    raise DivscopeError(f"unknown eval set {name!r}: use one of {', '.join(EVAL_SETS)} or a path to a file")
