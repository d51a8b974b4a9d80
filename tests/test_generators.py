"""Generation backends (hf | vllm | endpoint), each benchmark's own judge prompt, AlpacaEval's length-controlled
win rate, and the answer length that is the eval set's own.

The endpoint backend and the judges run against the real OpenAI-compatible test server (tests/openai_server.py);
the run is the untrained model's (``base_run``: a ``train.json``, no weights), which the endpoint backend never
loads. The Hugging Face backend runs SmolLM2 on the one-step LoRA run (``tiny_run``, tests/conftest.py).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import pytest

from divscope.errors import DivscopeError
from divscope.evaluate.generate import GenConfig, GenStats, generate_answers
from divscope.evaluate.generators import answers_for_run, make_generator
from divscope.evaluate.judge import Pair, judge_pairs
from divscope.evaluate.runs import evaluate_run
from divscope.evaluate.settings import EvalSettings
from divscope.io.evalsets import EvalItem, load_eval_set
from divscope.train.run import Run, base_run
from openai_server import (
    Fault,
    openai_server_fixture,  # noqa: F401 - registers the ``openai_server`` fixture
)
from test_judge import FAST, client

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def run(tmp_path: Path) -> Run:
    return base_run(tmp_path / "base", "smollm2")


def is_judge(messages) -> bool:
    return messages[0]["role"] == "system"  # the judge prompts have one; the eval sets' questions here do not


def server_for(answer_of, verdict="[[C]]"):
    """A server that answers generation requests with ``answer_of(question)`` and judge requests with ``verdict``."""

    def responder(messages):
        if is_judge(messages):
            return verdict(messages) if callable(verdict) else verdict
        return answer_of(messages[-1]["content"])

    return responder


# -- the endpoint backend -----------------------------------------------------------------------------------------


def test_endpoint_generator_answers_from_the_server_and_caches(run, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-for-the-judge-only")
    openai_server.responder = server_for(lambda q: f"ANSWER to {q[:20]}")
    opts = {"generator": "endpoint", "generator_endpoint": openai_server.base_url, "generator_model": "trained",
            "endpoint": openai_server.base_url, "judge_model": "judge-model", "api_key_env": None}
    res = evaluate_run(run.path, "vicuna", "judge", limit=3, seed=1, **opts)
    gen_bodies = [b for b in openai_server.bodies if b["model"] == "trained"]
    assert len(gen_bodies) == 3 and openai_server.requests == 3 + 6  # 3 answers, 3 items x 2 orders judged
    # The set's own answer length (2,048 for the judge sets), greedy; no key sent to the generator.
    assert {b["max_tokens"] for b in gen_bodies} == {2048} and {b["temperature"] for b in gen_bodies} == {0.0}
    assert not any("authorization" in h for h, b in zip(openai_server.headers, openai_server.bodies, strict=True)
                   if b["model"] == "trained")
    assert res["params"]["max_new_tokens"] == 2048 and res["generation"]["max_new_tokens"] == 2048
    assert res["params"]["judge_prompt"] == "mt_bench" and res["params"]["generator"] == "endpoint"
    assert res["generation"]["generator"] == "endpoint" and res["generation"]["generated"] == 3
    assert res["generation"]["generator_requests_sent"] == 3
    details = [json.loads(x) for x in (run.path / "eval" / "vicuna.judge.items.jsonl").read_text().splitlines()]
    assert all(d["answers"][0].startswith("ANSWER to ") for d in details)
    # Rerun without the result file: answers and verdicts come from the caches, nothing is asked.
    (run.path / "eval" / "vicuna.judge.json").unlink()
    openai_server.reset_counters()
    again = evaluate_run(run.path, "vicuna", "judge", limit=3, seed=1, **opts)
    assert openai_server.requests == 0 and again["generation"]["cached"] == 3
    assert again["score"] == res["score"]


def test_endpoint_generator_retries_then_a_failure_fails_and_a_rerun_asks_only_it(run, openai_server, monkeypatch):
    from divscope.endpoint import EndpointClient
    from divscope.evaluate import generators

    monkeypatch.setattr(generators, "EndpointClient", functools.partial(EndpointClient, **FAST))  # short backoff
    items = [EvalItem(f"t/{i}", (f"question {i}",)) for i in range(4)]
    cfg = GenConfig(max_new_tokens=16, batch_size=2)

    def answer(messages):
        return Fault.server_error(500) if "question 2" in messages[-1]["content"] else "fine"

    openai_server.responder = answer
    openai_server.push(Fault.rate_limit(0), Fault.drop())  # transient: retried by the client
    with pytest.raises(DivscopeError, match=r"generation through .* failed: 1/4 requests .*HTTP 500.*run the same"):
        answers_for_run(run.path, items, cfg, generator="endpoint", generator_endpoint=openai_server.base_url,
                        generator_model="trained")
    openai_server.reset_counters()
    openai_server.responder = lambda m: "fixed"
    answers, backend = answers_for_run(run.path, items, cfg, generator="endpoint",
                                       generator_endpoint=openai_server.base_url, generator_model="trained")
    assert openai_server.requests == 1  # the three answers received before are cached by the client
    assert answers == [("fine",), ("fine",), ("fixed",), ("fine",)] and backend["generator_cache_hits"] == 3


def test_endpoint_generator_needs_its_url_and_model(run):
    with pytest.raises(DivscopeError, match="--generator-endpoint URL .* --generator-model NAME"):
        make_generator(run, "endpoint", endpoint=None, model="m")


def test_backends_never_share_cached_answers(run):
    hf = make_generator(run, "hf")
    ep = make_generator(run, "endpoint", endpoint="http://127.0.0.1:9/v1", model="trained")
    assert hf.model_id == run.model_id  # the key HF answers were always cached under: old caches stay valid
    assert ep.model_id != hf.model_id and "trained" in ep.model_id


def test_vllm_is_an_optional_extra(run):
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(DivscopeError, match=r"pip install 'divscope\[vllm\]'"):
        make_generator(run, "vllm")


def test_generation_batches_prompts_of_similar_length():
    """Whatever the backend, the chats of one call are neighbours in length (less padding for HF)."""
    calls = []

    class Recorder:
        chunk = None

        def generate_chats(self, chats, cfg, ids, stats):
            calls.append([len(c[-1]["content"]) for c in chats])
            return ["x"] * len(chats)

    lengths = [50, 1, 49, 2, 48, 3]
    items = [EvalItem(f"i{n}", ("q" * n,)) for n in lengths]
    answers = generate_answers(Recorder(), items, GenConfig(batch_size=2), "model", stats=GenStats())
    assert calls == [[1, 2], [3, 48], [49, 50]] and len(answers) == 6


# -- the Hugging Face backend on SmolLM2 ------------------------------------------------------------------------


@pytest.mark.slow
def test_hf_generator_on_a_trained_run(tiny_run):
    items = [EvalItem(f"t/{i}", (q,)) for i, q in enumerate(["Say hi.", "Name a colour, in one word please.",
                                                              "What is two plus two?"])]
    stats = GenStats()
    cfg = GenConfig(max_new_tokens=4, batch_size=2, max_prompt_len=64)
    answers, backend = answers_for_run(tiny_run, items, cfg, stats=stats)
    assert backend == {"generator": "hf"} and len(answers) == 3 and all(len(a) == 1 for a in answers)
    assert stats.generated == 3 and 0 < stats.new_tokens <= 12
    again = GenStats()
    assert answers_for_run(tiny_run, items, cfg, stats=again)[0] == answers and again.cached == 3


# -- each benchmark's judge prompt ------------------------------------------------------------------------------


def _alpaca_outputs(messages):
    text = messages[1]["content"]
    return re.findall(r'"output": """(.*?)"""', text, re.S)


def test_alpaca_eval_prompt_weighs_the_verdict_by_its_probability(openai_server):
    """The judge gives the model's answer probability 0.8 in either position: the item scores 0.8."""

    def responder(messages):
        assert messages[0]["content"].startswith("You are a highly efficient assistant")
        out1, out2 = _alpaca_outputs(messages)
        model_is_m = out1.startswith("model")
        p_m = 0.8 if model_is_m else 0.2
        top = [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)},
               {"token": "Both", "logprob": -20.0}]
        return {"content": "m" if p_m > 0.5 else "M", "logprobs": {"content": [{"token": "m", "top_logprobs": top}]}}

    openai_server.responder = responder
    ps = [Pair(f"p{i}", (f"question {i}",), (f"model answer {i}",), (f"reference answer {i}",)) for i in range(3)]
    c = client(openai_server, max_tokens=1, extra_params={"logprobs": True, "top_logprobs": 5})
    out = judge_pairs(c, ps, prompt="alpaca_eval", progress=None)
    assert [j.score for j in out.judgments] == pytest.approx([0.8] * 3)
    assert out.summary()["verdicts_by_order"] == {"model_first": {"win": 3}, "reference_first": {"win": 3}}
    assert openai_server.bodies[0]["logprobs"] is True and openai_server.bodies[0]["max_tokens"] == 1
    # A server without log-probabilities: the one-token verdict counts 1 or 0.
    openai_server.responder = lambda m: "M"  # always output 2 = assistant B
    out = judge_pairs(client(openai_server), ps, prompt="alpaca_eval", progress=None)
    assert [j.score for j in out.judgments] == [0.5] * 3 and out.summary()["position_preference"]["B"] == 6


def test_arena_hard_prompt_and_its_strong_verdicts(openai_server):
    seen = []

    def responder(messages):
        seen.append(messages[0]["content"])
        text = messages[1]["content"]
        a = re.search(r"<\|The Start of Assistant A's Answer\|>\n(.*?)\n<\|The End", text, re.S).group(1)
        strong = "strong" in text
        if a.startswith("model"):
            return "Mine first... My final verdict is: " + ("[[A>>B]]" if strong else "[[A>B]]")
        return "My final verdict is: [[A>B]]"  # the reference in position A: it wins, weakly

    openai_server.responder = responder
    ps = [Pair("s", ("strong question",), ("model a",), ("ref a",), "hard_prompt"),
          Pair("w", ("write a poem",), ("model b",), ("ref b",), "creative_writing")]
    s = judge_pairs(client(openai_server), ps, prompt="arena_hard", progress=None).summary()
    # Per item: model wins as A, loses as B -> 0.5. Arena-Hard's own count: item s: 3 wins + 1 loss, item w: 1 + 1.
    assert s["win_rate"] == 0.5 and s["strong_verdicts"] == 1
    assert s["benchmark_win_rate"] == pytest.approx((3 + 1) / (4 + 2))
    assert sum("generating your own answer" in x for x in seen) == 2  # hard prompt: the judge answers first
    assert sum("generating your own answer" not in x for x in seen) == 2  # creative writing: v2.0's own prompt


def test_each_set_gets_its_own_prompt_and_length(run, openai_server):
    openai_server.responder = server_for(lambda q: "an answer", verdict="M")
    opts = {"generator": "endpoint", "generator_endpoint": openai_server.base_url, "generator_model": "trained",
            "endpoint": openai_server.base_url, "judge_model": "judge-model", "api_key_env": None}
    res = evaluate_run(run.path, "alpaca_eval", "judge", limit=12, seed=0, **opts)
    assert res["judge"]["prompt"] == "alpaca_eval" and res["params"]["judge_prompt"] == "alpaca_eval"
    assert res["length_controlled_win_rate"] is not None and res["lc_glm"] == "length_controlled_minimal"
    judge_bodies = [b for b in openai_server.bodies if b["model"] == "judge-model"]
    assert {b["max_tokens"] for b in judge_bodies} == {1}
    assert EvalSettings(eval_set="arena_hard").new_tokens() == 2048
    assert EvalSettings(eval_set="ifeval").new_tokens() == 1024 and EvalSettings(max_new_tokens=64).new_tokens() == 64
    items = {i.category: i for i in load_eval_set("arena_hard")}
    assert items["creative_writing"].extra["baseline_model"] == "gemini-2.0-flash-001"
    assert items["hard_prompt"].extra["baseline_model"] == "o3-mini-2025-01-31"


def test_stored_specs_with_the_old_answer_length_continue():
    from divscope.experiment.spec import parse_spec

    now = parse_spec({"evaluate": [{"eval_set": "alpaca_eval", "method": "judge"}]})
    stored = parse_spec({"evaluate": [{"eval_set": "alpaca_eval", "method": "judge", "max_new_tokens": 512}]})
    assert now.fingerprint() == stored.fingerprint()
    assert parse_spec({"evaluate": [{"max_new_tokens": 256}]}).fingerprint() != now.fingerprint()


# -- AlpacaEval's length-controlled win rate --------------------------------------------------------------------


def test_length_controlled_win_rate_reproduces_alpaca_eval_on_its_own_annotations():
    """alpaca-7b's annotations from the AlpacaEval repository; the reference numbers were computed by the
    alpaca-eval package's own code (tests/data/alpaca_eval_alpaca-7b_annotations.json says how)."""
    from divscope.evaluate.lengthcontrol import fit_glm, length_controlled_win_rate

    data = json.loads((DATA / "alpaca_eval_alpaca-7b_annotations.json").read_text())
    ref = data["reference"]
    pref = [(p if p != 0 else 1.5) - 1 for p, _, _ in data["rows"]]  # AlpacaEval's [1, 2] scale -> P(model)
    base = [b for _, b, _ in data["rows"]]
    model = [m for _, _, m in data["rows"]]
    assert sum(pref) / len(pref) * 100 == pytest.approx(ref["win_rate"], abs=1e-9)
    coef, c = fit_glm(pref, model, base)
    assert c == pytest.approx(ref["C"], rel=1e-6)
    assert list(coef) == pytest.approx(list(ref["coef"].values()), abs=1e-6)
    lc = length_controlled_win_rate(pref, model, base)
    assert lc["length_controlled_win_rate"] * 100 == pytest.approx(ref["length_controlled_minimal"], abs=1e-4)
    assert length_controlled_win_rate(pref[:5], model[:5], base[:5])["length_controlled_win_rate"] is None
