"""Pairwise judge: verdict parsing, win-rate math (both orders, ties as half, bootstrap CI), judging against a
real OpenAI-compatible HTTP server (tests/openai_server.py) with faults and malformed verdicts, caching, and
`divscope evaluate --method judge` end to end on a tiny trained run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from divscope.endpoint import EndpointClient
from divscope.errors import DivscopeError
from divscope.evaluate.judge import (
    ORDERS,
    Pair,
    judge_messages,
    judge_pairs,
    model_score,
    parse_verdict,
    win_rate,
)
from openai_server import (
    Fault,
    OpenAIServer,
    openai_server_fixture,  # noqa: F401 - registers the ``openai_server`` fixture
)

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def client(server: OpenAIServer, tmp_path: Path | None = None, **kw) -> EndpointClient:
    opts = {"timeout": 5, "max_retries": 3, **FAST, **kw}
    cache = tmp_path / "judge.jsonl" if tmp_path is not None else None
    return EndpointClient(server.base_url, "judge-model", cache_path=cache, **opts)


def answers_in(messages) -> tuple[str, str]:
    """Assistant A's and B's answers, read back from a pair-v2 judge prompt."""
    text = messages[1]["content"]
    a = re.search(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\]", text, re.S)
    b = re.search(r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B's Answer\]", text, re.S)
    return a.group(1), b.group(1)


def prefers(word: str):
    """A judge that picks the answer containing ``word`` (tie when neither or both do)."""

    def responder(messages):
        a, b = answers_in(messages)
        if (word in a) == (word in b):
            return "Both are similar. [[C]]"
        return f"Explanation... Final verdict: {'[[A]]' if word in a else '[[B]]'}"

    return responder


def pairs(n: int, model: str = "model answer", ref: str = "reference answer") -> list[Pair]:
    return [Pair(f"p{i}", (f"question {i}",), (f"{model} {i}",), (f"{ref} {i}",)) for i in range(n)]


# -- verdict parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,verdict", [
    ("A is more detailed. [[A]]", "A"),
    ("[[B]]", "B"),
    ("It is a draw: [[C]]", "tie"),
    ("[[A]] at first, but on reflection [[B]]", "B"),  # the last verdict wins
    ("My final verdict is tie: [[A=B]]", "tie"),
    ("[[B>>A]]", "B"), ("[[A>B]]", "A"), ("[[ b > a ]]", "B"), ("[[Tie]]", "tie"),
    ("Final verdict: [B]", "B"),
    ("**Final verdict:** Assistant A", "A"),
    ("Final verdict: a tie.", "tie"),
    # An echo of the format instruction is not a verdict:
    ('I must output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie. '
     "So: [[B]]", "B"),
    ('Output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.', None),
    ("Both answers are fine.", None), ("", None), (None, None),
    ("Assistant A gave a better answer overall.", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


# -- win-rate math -------------------------------------------------------------------------------------------


def test_model_score_depends_on_order():
    assert [model_score(v, "model_first") for v in ("A", "B", "tie")] == [1.0, 0.0, 0.5]
    assert [model_score(v, "reference_first") for v in ("A", "B", "tie")] == [0.0, 1.0, 0.5]


def test_win_rate_mean_and_bootstrap_ci():
    wr = win_rate([1, 0, 0.5, 0.75])
    assert wr.win_rate == pytest.approx(0.5625) and wr.n == 4
    assert 0 <= wr.ci_low <= wr.win_rate <= wr.ci_high <= 1
    assert win_rate([1, 0, 0.5, 0.75]).ci_low == wr.ci_low  # seeded: the same interval every time
    # A large sample: the percentile bootstrap agrees with the normal approximation.
    x = [1.0] * 60 + [0.0] * 30 + [0.5] * 10
    wr = win_rate(x)
    se = np.std(x, ddof=1) / np.sqrt(len(x))
    assert wr.win_rate == pytest.approx(0.65) and wr.stderr == pytest.approx(se)
    assert wr.ci_low == pytest.approx(0.65 - 1.96 * se, abs=0.02)
    assert wr.ci_high == pytest.approx(0.65 + 1.96 * se, abs=0.02)
    assert win_rate([0.5] * 5).to_json()["ci"] == [0.5, 0.5]
    with pytest.raises(ValueError):
        win_rate([])
    with pytest.raises(ValueError):
        win_rate([1.5])


def test_both_orders_cancel_position_bias(openai_server):
    openai_server.responder = lambda m: "A is first, so A. [[A]]"  # a judge that always picks position A
    out = judge_pairs(client(openai_server), pairs(5), progress=None)
    assert openai_server.requests == 10  # every pair judged in both orders
    s = out.summary()
    assert s["win_rate"] == 0.5 and s["judged"] == 5 and s["consistent_fraction"] == 0.0
    assert s["verdicts_by_order"] == {"model_first": {"win": 5}, "reference_first": {"loss": 5}}
    assert s["position_preference"] == {"A": 10, "B": 0, "tie": 0}
    # The request of each order puts the right answer first.
    a, b = answers_in(judge_messages(pairs(1)[0], "model_first"))
    assert a.startswith("model answer") and b.startswith("reference answer")
    a, b = answers_in(judge_messages(pairs(1)[0], "reference_first"))
    assert a.startswith("reference answer") and b.startswith("model answer")


def test_ties_count_half_and_mixed_items(openai_server):
    openai_server.responder = prefers("GOOD")
    ps = [Pair("w", ("q",), ("GOOD one",), ("ref",)),          # model wins both orders -> 1
          Pair("l", ("q",), ("meh",), ("GOOD ref",)),          # loses both -> 0
          Pair("t", ("q",), ("GOOD a",), ("GOOD b",)),         # tie both -> 0.5
          Pair("t2", ("q",), ("x",), ("y",))]                  # tie both -> 0.5
    out = judge_pairs(client(openai_server), ps, progress=None)
    assert [j.score for j in out.judgments] == [1.0, 0.0, 0.5, 0.5]
    assert out.summary()["win_rate"] == 0.5 and out.summary()["consistent_fraction"] == 1.0


def test_multi_turn_items_use_the_multi_turn_template(openai_server):
    seen = []

    def responder(messages):
        seen.append(messages)
        return "[[A]]"

    openai_server.responder = responder
    p = Pair("mt", ("q1", "q2"), ("a1", "a2"), ("r1", "r2"))
    judge_pairs(client(openai_server), [p], progress=None)
    user = seen[0][1]["content"]
    assert "### User:\nq2" in user and "Assistant A's Conversation" in user
    assert "second user question" in seen[0][0]["content"]


# -- the server misbehaves -----------------------------------------------------------------------------------


def test_transient_faults_are_retried(openai_server):
    openai_server.responder = prefers("model")
    openai_server.push(Fault.rate_limit(0), Fault.server_error(500), Fault.slow(2.0), Fault.missing_fields(),
                       Fault.invalid_json(), Fault.drop())
    out = judge_pairs(client(openai_server, timeout=0.8, max_concurrency=2, max_retries=6), pairs(4),
                      progress=None)
    s = out.summary()
    assert s["judged"] == 4 and s["win_rate"] == 1.0 and s["failed_requests"] == 0


def test_malformed_verdicts_get_one_follow_up(openai_server):
    def responder(messages):
        if messages[-1]["content"].startswith("Please output only your final verdict"):
            return "Sorry. [[A]]" if "question 0" in messages[1]["content"] else "I cannot decide."
        return "Both answers have merits."  # no verdict at all

    openai_server.responder = responder
    out = judge_pairs(client(openai_server), pairs(2), progress=None)
    assert openai_server.requests == 8  # 4 judgments + 4 follow-ups
    j0, j1 = out.judgments
    assert j0.score == 0.5 and sorted(j0.repaired) == sorted(ORDERS)  # A in both orders -> win + loss
    assert j1.score is None and set(j1.problems) == set(ORDERS)
    assert j1.problems["model_first"].startswith("no verdict in reply")
    s = out.summary()
    assert s["judged"] == 1 and s["unjudged"] == 1 and s["unjudged_reasons"] == {"no verdict in reply": 2}
    assert s["failed_requests"] == 0


def test_judge_replies_without_verdict_warn_then_fail(openai_server, capsys):
    """Half the answered orders without a verdict (after the follow-up): one warning line with count and rate.
    No verdict anywhere: an error, so no result is stored."""
    openai_server.responder = lambda m: "[[A]]" if "question 0" in m[1]["content"] else "Both are fine."
    out = judge_pairs(client(openai_server), pairs(2), progress=None)
    out.check_replies()
    err = capsys.readouterr().err
    assert err.strip() == ("warning: judge: 2 of 4 replies (50%) could not be parsed; the judge model does not "
                           "answer in mt_bench's verdict format (even after a follow-up asking for the verdict "
                           "alone): use a stronger judge model or a larger --judge-max-tokens")
    openai_server.responder = lambda m: "Both are fine."
    out = judge_pairs(client(openai_server), pairs(3), progress=None)
    with pytest.raises(DivscopeError, match=r"judge: none of the 6 replies could be parsed \(first reply: 'no "
                       r"verdict in reply: \.\.\.Both are fine\.'\)"):
        out.check_replies()
    # 2 of 10 (20%, not above): counted in the summary, no warning.
    openai_server.responder = lambda m: "Hmm." if "question 0" in m[1]["content"] else "[[B]]"
    out = judge_pairs(client(openai_server), pairs(5), progress=None)
    out.check_replies()
    assert capsys.readouterr().err == "" and out.summary()["unjudged_reasons"] == {"no verdict in reply": 2}


def test_persistent_failures_leave_items_unjudged_then_a_rerun_asks_only_them(openai_server, tmp_path):
    def responder(messages):
        if "question 1" in messages[1]["content"]:
            return Fault.server_error(500)
        return prefers("model")(messages)

    openai_server.responder = responder
    out = judge_pairs(client(openai_server, tmp_path, max_retries=1), pairs(3), progress=None)
    s = out.summary()
    assert s["judged"] == 2 and s["unjudged"] == 1 and s["failed_requests"] == 2
    assert s["unjudged_reasons"] == {"request failed": 2}
    assert out.judgments[1].problems["model_first"].startswith("request failed: HTTP 500")
    openai_server.reset_counters()
    openai_server.responder = prefers("model")
    again = judge_pairs(client(openai_server, tmp_path), pairs(3), progress=None)
    assert openai_server.requests == 2  # only the two failed requests
    assert again.summary()["judged"] == 3 and again.summary()["win_rate"] == 1.0


def test_rerun_sends_zero_requests(openai_server, tmp_path):
    openai_server.responder = prefers("model")
    first = judge_pairs(client(openai_server, tmp_path), pairs(6), progress=None).summary()
    assert openai_server.requests == 12
    openai_server.reset_counters()
    c = client(openai_server, tmp_path)
    second = judge_pairs(c, pairs(6), progress=None).summary()
    assert openai_server.requests == 0 and c.stats["cache_hits"] == 12
    assert second == first
    # Another answer to the same prompt is another pair: asked.
    judge_pairs(client(openai_server, tmp_path), pairs(1, model="other answer"), progress=None)
    assert openai_server.requests == 2


# -- `divscope evaluate --method judge` on a trained run ------------------------------------------------------
# (``tiny_run``, a one-step LoRA run copied fresh for this module, is in tests/conftest.py)


@pytest.mark.slow
def test_evaluate_judge_end_to_end(tiny_run, openai_server, monkeypatch):
    from divscope.cli import main

    monkeypatch.setenv("DIVSCOPE_TEST_JUDGE_KEY", "sk-judge-secret-42")
    openai_server.responder = lambda m: "B looks better to me. [[B]]"
    argv = ["evaluate", str(tiny_run), "--eval-set", "vicuna", "--method", "judge", "--limit", "2",
            "--max-new-tokens", "8", "--endpoint", openai_server.base_url, "--judge-model", "judge-model",
            "--api-key-env", "DIVSCOPE_TEST_JUDGE_KEY"]
    assert main(argv) == 0
    out = tiny_run / "eval" / "vicuna.judge.json"
    res = json.loads(out.read_text())
    assert res["metric"] == "judge_win_rate" and res["items"] == 2 and res["complete"] is True
    assert res["score"] == res["win_rate"] == 0.5  # "B" in both orders: one win, one loss per item
    assert res["ci"] == [0.5, 0.5] and res["judge"]["model"] == "judge-model"
    assert res["generation"]["generated"] == 2 and res["seconds_per_item"] > 0
    assert openai_server.requests == 4
    assert openai_server.headers[0]["authorization"] == "Bearer sk-judge-secret-42"
    details = [json.loads(x) for x in (tiny_run / "eval" / "vicuna.judge.items.jsonl").read_text().splitlines()]
    assert len(details) == 2 and all(d["score"] == 0.5 and len(d["answers"]) == 1 for d in details)
    assert res["per_item"] == {d["id"]: d["score"] for d in details}  # per-item scores for analyses
    for f in tiny_run.rglob("*"):
        if f.is_file():
            assert b"sk-judge-secret-42" not in f.read_bytes(), f
    # Same settings: the result file is reused. Without it: answers and verdicts come from the caches.
    openai_server.reset_counters()
    assert main(argv) == 0 and openai_server.requests == 0
    out.unlink()
    assert main(argv) == 0 and openai_server.requests == 0
    again = json.loads(out.read_text())
    assert again["generation"]["cached"] == 2 and again["generation"]["generated"] == 0
    assert again["judge_cache_hits"] == 4 and again["score"] == 0.5
    # No endpoint: a one-line user error before anything is generated.
    assert main(["evaluate", str(tiny_run), "--eval-set", "vicuna", "--method", "judge", "--limit", "1"]) != 0


@pytest.mark.slow
def test_judge_per_item_scores_follow_their_items(tiny_run, openai_server):
    """The judge prefers the model's answer for one item only (in both orders): ``per_item`` must say which."""
    from divscope.evaluate.runs import evaluate_run, sample_items
    from divscope.io.evalsets import load_eval_set

    chosen = sample_items(load_eval_set("vicuna"), 3, seed=5)
    by_question = {i.turns[0]: i for i in chosen}
    favourite = chosen[1].id

    def responder(messages):
        question = re.search(r"\[User Question\]\n(.*?)\n\n\[The Start", messages[1]["content"], re.S).group(1)
        item = by_question[question]
        reference_is_a = answers_in(messages)[0] == item.references[0]
        model_wins = item.id == favourite
        return "[[B]]" if reference_is_a == model_wins else "[[A]]"

    openai_server.responder = responder
    res = evaluate_run(tiny_run, "vicuna", "judge", limit=3, seed=5, max_new_tokens=4,
                       endpoint=openai_server.base_url, judge_model="judge-model", api_key_env=None)
    assert res["per_item"] == {i.id: 1.0 if i.id == favourite else 0.0 for i in chosen}
    assert res["score"] == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.slow
def test_evaluate_judge_that_never_gives_a_verdict_fails_and_stores_nothing(tiny_run, openai_server, capsys):
    from divscope.cli import main

    openai_server.responder = lambda m: "Both answers are fine."  # no verdict, even when asked again
    out = tiny_run / "eval" / "vicuna.judge.json"
    before = out.read_bytes() if out.exists() else None
    argv = ["evaluate", str(tiny_run), "--eval-set", "vicuna", "--method", "judge", "--limit", "2",
            "--max-new-tokens", "4", "--endpoint", openai_server.base_url, "--judge-model", "mute-judge",
            "--api-key-env", ""]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: judge: none of the 4 replies could be parsed") and len(err.splitlines()) == 1
    assert openai_server.requests == 8  # 4 orders + 4 follow-ups asking for the verdict alone
    assert (out.read_bytes() if out.exists() else None) == before  # no result stored
