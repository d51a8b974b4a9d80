"""Evaluation methods behind one protocol: the registry, option checking, per-item scores, a third-party method.

``tiny_run`` (tests/conftest.py) is a LoRA run trained for one step, copied fresh for this module.
"""

from __future__ import annotations

import json
import math

import pytest

from divscope.errors import DivscopeError
from divscope.evaluate.base import EvalOutcome, FunctionEvaluator, option_names
from divscope.evaluate.registry import (
    evaluator_names,
    get_evaluator,
    register_evaluator,
    unregister_evaluator,
)
from divscope.evaluate.runs import evaluate_run, result_path
from divscope.io.evalsets import load_eval_set
from divscope.train.run import Run


class RefLength:
    """A method defined outside divscope: scores items by the length of their first reference. It needs no
    model, so the test is about the plumbing: registry, options, caching and the result file."""

    name = "reflen"
    options = ("unit",)

    def __init__(self) -> None:
        self.calls: list[tuple[Run, list[str], dict]] = []

    def evaluate(self, run, items, *, seed, max_len, batch_size, device, details_path, unit="words"):
        self.calls.append((run, [it.id for it in items], {"seed": seed, "details_path": details_path}))
        scored = [it for it in items if it.references]
        per = [float(len(it.references[0].split()) if unit == "words" else len(it.references[0])) for it in scored]
        return EvalOutcome("reference_length", sum(per) / len(per), [it.id for it in scored], per, {"unit": unit})


@pytest.fixture()
def reflen():
    ev = register_evaluator(RefLength())
    yield ev
    unregister_evaluator("reflen")


def test_builtin_methods_are_registered_with_their_options():
    assert evaluator_names()[:3] == ("nll", "judge", "ifeval")
    assert get_evaluator("nll").options == ("nll_weighting", "end_of_turn")
    gen = ("generator", "generator_endpoint", "generator_model")
    assert get_evaluator("ifeval").options == ("max_new_tokens", "temperature", *gen)
    assert get_evaluator("judge").options == ("endpoint", "judge_model", "api_key_env", "concurrency", "timeout",
                                              "max_retries", "judge_max_tokens", "max_new_tokens", "temperature",
                                              "judge_prompt", *gen)
    with pytest.raises(DivscopeError, match="unknown evaluation method 'bleu': choose from nll, judge, ifeval"):
        get_evaluator("bleu")


def noop(run, items, *, seed, max_len, batch_size, device, details_path):
    raise AssertionError("not called")


def test_registry_refuses_taken_and_unusable_names():
    with pytest.raises(ValueError, match="registered already"):
        register_evaluator(FunctionEvaluator("nll", noop))
    assert get_evaluator("nll").func.__name__ == "evaluate_nll"
    for bad in ("", "Has Space", "a.b", "../x"):  # the name becomes part of RUN/eval/<set>.<method>.json
        with pytest.raises(ValueError, match="evaluation method name"):
            register_evaluator(FunctionEvaluator(bad, noop))
    assert "Has Space" not in evaluator_names()


def test_options_come_from_the_function_signature():
    def f(run, items, *, seed, max_len, batch_size, device, details_path, alpha=1, beta="x"):
        raise AssertionError

    assert option_names(f) == ("alpha", "beta")
    with pytest.raises(TypeError, match="kwargs"):
        option_names(lambda run, items, **kw: None)


def test_outcome_is_checked():
    with pytest.raises(ValueError, match="2 item ids but 1"):
        EvalOutcome("m", 0.0, ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="distinct"):
        EvalOutcome("m", 0.0, ["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="params"):
        EvalOutcome("m", 0.0, [], [], {"params": {}})


@pytest.mark.parametrize(("method", "options", "accepted"), [
    ("nll", {"max_new_tokens": 8}, "accepted: nll_weighting, end_of_turn"),
    ("ifeval", {"endpoint": "http://x"}, "accepted: max_new_tokens, temperature, generator"),
    ("judge", {"judge_modle": "m", "temprature": 0}, "accepted: endpoint, judge_model, api_key_env"),
])
def test_unknown_option_is_a_one_line_error_naming_the_accepted_ones(tiny_run, method, options, accepted):
    # The eval set does not exist: the option error comes first, before anything is loaded.
    with pytest.raises(DivscopeError) as e:
        evaluate_run(tiny_run, "no-such-set.jsonl", method, limit=1, **options)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"unknown option(s) for method {method}: {', '.join(sorted(options))}")
    assert accepted in msg


def test_third_party_evaluator_through_evaluate_run(tiny_run, reflen):
    res = evaluate_run(tiny_run, "vicuna", "reflen", limit=4, seed=3, unit="chars")
    (run, given, common), = reflen.calls
    assert isinstance(run, Run) and run.path == tiny_run and len(given) == 4 and common["seed"] == 3
    assert common["details_path"] == result_path(tiny_run, "vicuna", "reflen").with_suffix(".items.jsonl")
    refs = {i.id: i.references[0] for i in load_eval_set("vicuna") if i.id in given}
    assert res["per_item"] == {i: float(len(r)) for i, r in refs.items()}
    assert res["metric"] == "reference_length" and res["unit"] == "chars" and res["items"] == 4
    assert math.isclose(res["score"], sum(map(len, refs.values())) / 4)
    assert res["params"] == {"eval_set": "vicuna", "method": "reflen", "limit": 4, "seed": 3, "max_len": 512,
                             "unit": "chars"}
    for key in ("divscope_version", "excluded_overlapping", "train_fingerprint"):
        assert key in res
    path = result_path(tiny_run, "vicuna", "reflen")
    assert json.loads(path.read_text()) == res
    # Same settings: read back, not recomputed. Another option value: recomputed.
    assert evaluate_run(tiny_run, "vicuna", "reflen", limit=4, seed=3, unit="chars") == res
    assert len(reflen.calls) == 1
    evaluate_run(tiny_run, "vicuna", "reflen", limit=4, seed=3)
    assert len(reflen.calls) == 2
    # A result file from before per-item scores were kept is computed again.
    old = json.loads(path.read_text())
    del old["per_item"]
    path.write_text(json.dumps(old))
    assert "per_item" in evaluate_run(tiny_run, "vicuna", "reflen", limit=4, seed=3) and len(reflen.calls) == 3


def test_evaluator_scoring_items_it_was_not_given_is_refused(tiny_run):
    def liar(run, items, *, seed, max_len, batch_size, device, details_path):
        return EvalOutcome("m", 1.0, ["not/an/item"], [1.0])

    register_evaluator(FunctionEvaluator("liar", liar))
    try:
        with pytest.raises(ValueError, match="not given"):
            evaluate_run(tiny_run, "vicuna", "liar", limit=2)
    finally:
        unregister_evaluator("liar")


@pytest.mark.slow
def test_nll_per_item_scores_belong_to_their_items(tiny_run, tmp_path):
    """Each item's per-item score is minus its own NLL, computed alone: ids and values stay aligned although nll
    batches the items sorted by length (here their lengths differ and are not in file order)."""
    from divscope.evaluate.nll import mean_nll

    answers = ["Paris is the capital of France, and it is also its largest city by far.", "Blue.",
               "Water boils at one hundred degrees Celsius at sea level.", "Four.", "The sun rises in the east."]
    qa = [(f"Question number {n}: please answer briefly.", a) for n, a in enumerate(answers)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in qa))
    res = evaluate_run(tiny_run, str(data), "nll", limit=None, max_len=256, batch_size=2)
    assert res["metric"] == "nll" and res["score"] == -res["mean_nll"] and len(res["per_item"]) == res["items"] == 5
    model, tok = Run.open(tiny_run).load()
    for item in load_eval_set(str(data)):
        conv = [{"role": "user", "content": item.turns[0]}, {"role": "assistant", "content": item.references[0]}]
        alone = mean_nll(model, tok, [conv], max_len=256).mean_nll
        assert math.isclose(res["per_item"][item.id], -alone, rel_tol=1e-4), item.id
