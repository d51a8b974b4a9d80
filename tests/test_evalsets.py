"""The shipped evaluation sets load offline with their documented sizes, and overlap with a pool is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from divscope import DivscopeError
from divscope.io.contamination import find_overlap, normalize
from divscope.io.evalsets import load_eval_set


@pytest.mark.parametrize(("name", "n", "with_ref"), [("alpaca_eval", 805, 805), ("vicuna", 80, 80),
                                                      ("arena_hard", 750, 750), ("mt_bench", 80, 30),
                                                      ("ifeval", 541, 0)])
def test_sizes(name: str, n: int, with_ref: int) -> None:
    items = load_eval_set(name)
    assert len(items) == n
    assert sum(1 for i in items if i.reference) == with_ref
    assert len({i.id for i in items}) == n
    assert all(i.prompt.strip() for i in items)


def test_mt_bench_two_turns_and_ifeval_fields() -> None:
    mt = load_eval_set("mt_bench")
    assert all(len(i.turns) == 2 for i in mt)
    assert {len(i.references) for i in mt if i.references} == {2}
    ife = load_eval_set("ifeval")[0]
    assert ife.extra["instruction_id_list"][0] == "punctuation:no_comma"


def test_user_file_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "mine.jsonl"
    p.write_text('{"instruction": "Say hi", "output": "Hi!"}\n')
    [item] = load_eval_set(str(p))
    assert item.prompt == "Say hi" and item.reference == "Hi!"
    with pytest.raises(DivscopeError, match="unknown eval set"):
        load_eval_set("no_such_set")


def test_overlap_exact_and_ngram() -> None:
    items = load_eval_set("vicuna")
    long_prompt = next(i.prompt for i in items if len(i.prompt.split()) >= 14)
    texts = ["Tell me a joke about cats.",
             items[0].prompt.upper() + "  ",              # equal after normalisation
             "Prefix words here: " + long_prompt + " thanks",  # shares a 13-gram
             " ".join(normalize(long_prompt).split()[:12])]  # only 12 words: no 13-gram
    ov = find_overlap(texts, items)
    assert ov.rows == [1, 2]
    assert items[0].id in ov.matches[1]
