"""NLL weightings on a hand-made case: token- vs item-weighted means, the end-of-turn marker in or out, truncated
references counted; checked against per-token losses computed one conversation at a time, outside divscope."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from divscope.train.chat import IGNORE, encode_chat, encode_for_scoring, labels_from

SHORT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Four."}]
LONG = [{"role": "user", "content": "Describe the water cycle."},
        {"role": "assistant", "content": "Water evaporates from the seas, condenses into clouds, falls as rain or "
                                         "snow, and flows back to the sea through rivers and ground water."}]
TWO_TURNS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


@pytest.fixture(scope="module")
def tokenizer():
    from divscope.train.model import load_tokenizer_for

    return load_tokenizer_for("smollm2")


@pytest.fixture(scope="module")
def base_model():
    from divscope.train.model import load_causal_lm

    return load_causal_lm("smollm2")


def test_end_of_turn_marker_and_truncation_are_found(tokenizer) -> None:
    enc = encode_for_scoring(tokenizer, TWO_TURNS, 512)
    marker = [t for t, m in zip(enc["input_ids"], enc["end_of_turn_masks"], strict=True) if m]
    assert tokenizer.decode(marker) == "<|im_end|>\n<|im_end|>\n"  # what closes each of the two answers
    assert all(a for a, m in zip(enc["assistant_masks"], enc["end_of_turn_masks"], strict=True) if m)
    assert enc["length"] == len(enc["input_ids"]) and enc["unlocated"] == 0
    for max_len in (512, 40, 25, 12):  # the tokens and loss masks are training's own, truncated or not
        ours, train = encode_for_scoring(tokenizer, LONG, max_len), encode_chat(tokenizer, LONG, max_len)
        assert (ours is None) == (train is None)
        if ours is not None:
            assert (ours["input_ids"], ours["assistant_masks"]) == (train["input_ids"], train["assistant_masks"])
            assert (ours["length"] > max_len) == (len(ours["input_ids"]) < ours["length"])
    cut = encode_for_scoring(tokenizer, LONG, 40)
    assert cut["length"] > 40 and not any(cut["end_of_turn_masks"])  # a cut reference has lost its marker


def _token_losses(model, tokenizer, conv) -> tuple[list[float], list[bool]]:
    """Per scored token: its NLL (one conversation, no padding) and whether it belongs to the closing marker."""
    import torch

    enc = encode_for_scoring(tokenizer, conv, 512)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    out, eot = [], []
    for t, (label, marker) in enumerate(zip(labels_from(enc), enc["end_of_turn_masks"], strict=True)):
        if t > 0 and label != IGNORE:
            out.append(-float(logp[t - 1, label]))
            eot.append(bool(marker))
    return out, eot


def test_weightings_against_per_token_losses(base_model, tokenizer) -> None:
    from divscope.evaluate.nll import mean_nll

    model, tok = base_model
    convs = [SHORT, LONG, TWO_TURNS]
    res = mean_nll(model, tok, convs, max_len=512, batch_size=2)  # batched and padded: must not matter
    losses = [_token_losses(model, tok, c) for c in convs]
    every = [x for ls, _ in losses for x in ls]
    body = [[x for x, e in zip(ls, eot, strict=True) if not e] for ls, eot in losses]
    assert sum(e for _, eot in losses for e in eot) == 2 + 2 + 4  # <|im_end|> and "\n" per answer
    expect = {
        ("token", "include"): sum(every) / len(every),
        ("item", "include"): sum(sum(ls) / len(ls) for ls, _ in losses) / 3,  # the mean of the per-item means
        ("token", "exclude"): sum(map(sum, body)) / sum(map(len, body)),
        ("item", "exclude"): sum(sum(b) / len(b) for b in body) / 3,
    }
    for (w, e), value in expect.items():
        assert math.isclose(res.mean(w, e), value, rel_tol=1e-4), (w, e)  # float32 batches
    assert res.mean_nll == res.mean("token", "include") and res.tokens == len(every)
    assert res.per_item == pytest.approx([sum(ls) / len(ls) for ls, _ in losses], rel=1e-4)
    # the case discriminates: the long answer weighs more by token, and the marker moves the score
    assert abs(res.mean("token", "include") - res.mean("item", "include")) > 0.05
    assert abs(res.mean("item", "include") - res.mean("item", "exclude")) > 0.01
    # SmolLM2's template adds a system prompt: 41, 66 and 51 tokens; at 60 only the long answer is cut
    assert res.truncated == 0 and mean_nll(model, tok, convs, max_len=60).truncated == 1


def test_nll_options_choose_the_score_and_every_variant_is_reported(base_model, tmp_path: Path, monkeypatch) -> None:
    """Through ``evaluate_run`` on the untrained model's run: the score follows ``nll_weighting`` and
    ``end_of_turn``, the per-item scores follow ``end_of_turn``, truncated references are counted."""
    from divscope.errors import DivscopeError
    from divscope.evaluate.runs import evaluate_run
    from divscope.train import model as model_mod
    from divscope.train.run import base_run

    monkeypatch.setattr(model_mod, "load_causal_lm", lambda name, device=None, chat="auto": base_model)  # loaded once
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": c[0]["content"], "output": c[1]["content"]}) + "\n"
                            for c in (SHORT, LONG)))
    run = base_run(tmp_path / "base", "smollm2").path
    default = evaluate_run(run, str(data), "nll", limit=None, max_len=60)
    assert default["truncated_references"] == 1 and default["items"] == 2 and default["train_max_len"] is None
    assert default["score"] == -default["mean_nll_token"] and "nll_weighting" not in default["params"]
    item = evaluate_run(run, str(data), "nll", limit=None, max_len=60, nll_weighting="item", end_of_turn="exclude")
    assert item["score"] == -item["mean_nll_item_no_eot"] != default["score"]
    for key in ("mean_nll_token", "mean_nll_item", "mean_nll_token_no_eot", "mean_nll_item_no_eot"):
        assert item[key] == default[key]
    assert math.isclose(-item["score"], -sum(item["per_item"].values()) / 2)
    assert item["per_item"] != default["per_item"]
    with pytest.raises(DivscopeError, match="nll_weighting must be one of token, item"):
        evaluate_run(run, str(data), "nll", limit=None, nll_weighting="prompt")


def test_nll_options_at_their_default_are_not_passed() -> None:
    """So the parameters of nll results stored before these options existed still match, and they are reused."""
    from divscope.evaluate.settings import EvalSettings

    assert EvalSettings().method_options() == {}
    assert EvalSettings(nll_weighting="item").method_options() == {"nll_weighting": "item"}
    assert EvalSettings(end_of_turn="exclude").method_options() == {"end_of_turn": "exclude"}
    assert "nll_weighting" not in EvalSettings(method="ifeval", nll_weighting="item").method_options()
