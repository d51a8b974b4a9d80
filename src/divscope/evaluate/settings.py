"""The evaluate stage's settings: ``divscope evaluate`` options and each entry of the spec's ``evaluate:`` list.

``seed`` draws the evaluation items (``limit`` of them) and seeds sampled generation; it is its own seed, recorded
with the result, not the training seed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from divscope.evaluate.judge_prompts import JUDGE_REQUESTS
from divscope.settings import Settings, setting

# Method options that are fields of their own (older specs gave them inside ``options``).
_JUDGE = ("endpoint", "judge_model", "api_key_env", "concurrency")
# How requests are sent, not what they answer: passed to the method, never part of a result's parameters.
HOW_TO_ASK = ("concurrency", "timeout", "max_retries")
# Method fields added after results were stored: passed to the method only away from their default, so the
# parameters of a stored result (and so the result) stay valid.
_ADDED = ("nll_weighting", "end_of_turn", "judge_prompt", "generator", "generator_endpoint", "generator_model",
          "judge_max_tokens")


class EvalSettings(Settings):
    eval_set: str = setting("alpaca_eval", "alpaca_eval | vicuna | arena_hard | mt_bench | ifeval | pool:WS "
                            "(held-out pool samples) | FILE")
    method: str = setting("nll", "nll: offline mean NLL per token of reference answers (score = -NLL). judge: "
                          "generate answers, pairwise LLM judge against the references in both orders (score = "
                          "win rate in [0, 1], ties half). ifeval: generate answers, verifiable-instruction checks "
                          "(score = prompt-level strict accuracy in [0, 1]).")
    limit: int | None = setting(100, "Seeded sample of N items (0 = all).")
    seed: int = setting(0, "Seed of the item sample (and of sampled generation).")
    max_len: int = setting(512, "Tokens per scored conversation (nll) or prompt (judge/ifeval).")
    batch_size: int = setting(8, "Items per forward pass.")
    device: str | None = setting(None, "cpu, cuda, cuda:1 ... [cuda if available]")
    max_new_tokens: int | None = setting(None, "judge/ifeval: answer length limit (greedy decoding) [the set's own: "
                                         "2048 for alpaca_eval, vicuna, arena_hard, mt_bench; 1024 for ifeval, "
                                         "pool:WS and files].")
    generator: Literal["hf", "vllm", "endpoint"] = setting(
        "hf", "judge/ifeval: what generates the answers: hf (transformers, in this process), vllm (in this process; "
        "pip install 'divscope[vllm]'), endpoint (an OpenAI-compatible server serving the trained model).")
    generator_endpoint: str | None = setting(None, "generator endpoint: URL of the server serving the trained "
                                             "model, e.g. http://host:8001/v1 (requests in flight: --batch-size).")
    generator_model: str | None = setting(None, "generator endpoint: the model name that server serves.")
    endpoint: str | None = setting(None, "judge: OpenAI-compatible server, e.g. http://host:8000/v1.")
    judge_model: str | None = setting(None, "judge: model name the server serves.")
    api_key_env: str | None = setting("OPENAI_API_KEY", "judge: environment variable holding the API key (read at "
                                      "request time, never written).")
    concurrency: int = setting(JUDGE_REQUESTS["concurrency"], "judge: requests in flight at most.", ge=1)
    timeout: float = setting(JUDGE_REQUESTS["timeout"], "judge: seconds per request attempt (a slow CPU server needs more).",
                             gt=0)
    max_retries: int = setting(JUDGE_REQUESTS["max_retries"], "judge: retries of a failed request (timeouts, 429, 5xx) after the first "
                               "attempt.", ge=0)
    judge_max_tokens: int | None = setting(None, "judge: tokens per judge reply [the prompt's own: 1024 for "
                                           "mt_bench, 4096 for arena_hard, 1 for alpaca_eval's one-token verdict].", ge=1)
    judge_prompt: Literal["alpaca_eval", "arena_hard", "mt_bench"] | None = setting(
        None, "judge: the judge prompt [the set's own: AlpacaEval 2.0's for alpaca_eval, Arena-Hard's for "
        "arena_hard, MT-Bench's pair prompts for mt_bench, vicuna and other sets].")
    nll_weighting: Literal["token", "item"] = setting(
        "token", "nll: the score's mean: token (every reference token counts once, long answers weigh more) | "
        "item (every prompt counts once). Both are reported.")
    end_of_turn: Literal["include", "exclude"] = setting(
        "include", "nll: score the end-of-turn marker that closes each answer (include) or not (exclude: "
        "length-neutral). Both are reported.")
    options: dict[str, Any] = setting(help="Further options of the method (spec only).", cli=False,
                                      default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from divscope.evaluate.registry import evaluator_names

        if v not in evaluator_names():  # the built-in methods and any registered one
            raise ValueError(f"unknown method {v!r}: choose one of {', '.join(evaluator_names())}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _lift_options(cls, data: Any) -> Any:
        """Older specs wrote the judge's settings inside ``options``; they are fields now."""
        if isinstance(data, dict) and isinstance(data.get("options"), dict):
            opts = dict(data["options"])
            lifted = {k: opts.pop(k) for k in (*_JUDGE, "max_new_tokens") if k in opts and k not in data}
            if lifted:
                data = {**data, **lifted, "options": opts}
        return data

    @property
    def name(self) -> str:
        return f"{self.eval_set}.{self.method}"

    def new_tokens(self) -> int:
        """``max_new_tokens``, or the eval set's own when it is not set."""
        from divscope.io.evalsets import max_new_tokens_for

        return self.max_new_tokens or max_new_tokens_for(self.eval_set)

    def method_options(self) -> dict[str, Any]:
        """The options ``evaluate_run`` passes to this method: the fields that the method declares it takes
        (generation length for judge and ifeval, the endpoint fields for judge), then ``options``."""
        from divscope.evaluate.registry import get_evaluator

        accepted = get_evaluator(self.method).options
        fields = {"max_new_tokens": self.max_new_tokens, "endpoint": self.endpoint, "judge_model": self.judge_model,
                  "api_key_env": self.api_key_env or None, **{k: getattr(self, k) for k in HOW_TO_ASK},
                  **{k: getattr(self, k) for k in _ADDED if getattr(self, k) != type(self).model_fields[k].default}}
        return {**{k: v for k, v in fields.items() if k in accepted}, **self.options}


class RespondSettings(Settings):
    """``divscope respond``: regenerate a pool's responses with a model behind an OpenAI-compatible endpoint."""

    endpoint: str = setting(..., "OpenAI-compatible server: http://host:8000/v1 (or its root).")
    model: str = setting(..., "Model name the server serves (e.g. a Llama-3.1-70B variant).")
    api_key_env: str | None = setting("OPENAI_API_KEY", "Environment variable holding the API key (read at request "
                                      "time, never written).")
    concurrency: int = setting(8, "Requests in flight at most.", ge=1)
    max_tokens: int = setting(2048, "Tokens per regenerated answer.", ge=1)
    temperature: float = setting(0.0, "Sampling temperature (0: greedy).", ge=0)
    timeout: float = setting(120.0, "Seconds per request attempt (a slow CPU server needs more).", gt=0)
    max_retries: int = setting(5, "Retries of a failed request (timeouts, 429, 5xx) after the first attempt.", ge=0)
    limit: int = setting(0, "Only the first N samples (0 = all).", ge=0)
