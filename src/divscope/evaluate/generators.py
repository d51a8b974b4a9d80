"""Generation backends: where the answers that ``judge`` and ``ifeval`` score come from (``--generator``).

* ``hf`` (default): Hugging Face ``generate`` in this process (:mod:`divscope.evaluate.generate`): prompts of
  similar length batched together, left-padded, ``batch_size`` per forward pass.
* ``vllm``: vLLM in this process (the optional extra ``pip install 'divscope[vllm]'``, Linux + CUDA). The prompts
  are rendered to token ids by the same code as ``hf`` (the run's chat template, cut from the left at
  ``max_len``) and stop at the same tokens; vLLM schedules them itself (continuous batching). A LoRA run is
  served as the base model plus its adapter.
* ``endpoint``: an OpenAI-compatible server that serves the trained model (``vllm serve RUN/model``, TGI,
  SGLang): ``generator_endpoint`` (URL) and ``generator_model`` (the name it serves), through
  :class:`divscope.endpoint.EndpointClient` (``batch_size`` requests in flight, retries with backoff, fail
  fast on a dead server, every answer cached in ``RUN/eval/cache/generator.jsonl``). The server applies its own
  chat template: serve the model with the template it was trained with. No API key is sent (a server of your
  own model needs none) and prompts are not cut at ``max_len`` (the server's context limit applies).

Every backend's answers go through the same per-answer cache (``RUN/eval/generations.jsonl``); the cache key
holds the backend for ``vllm`` and ``endpoint`` (their numerics differ from ``hf``'s), so switching backends
never mixes answers. A failed endpoint request fails the evaluation with the reasons; the answers already
received stay cached, and the same command again asks only for the missing ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from divscope.endpoint import EndpointClient
from divscope.errors import DivscopeError
from divscope.evaluate.generate import (
    GenConfig,
    GenStats,
    encode_prompts,
    generate_answers,
    generate_chats,
)
from divscope.io.evalsets import EvalItem
from divscope.train.formats import stop_token_ids
from divscope.train.run import Run

GENERATORS = ("hf", "vllm", "endpoint")
VLLM_MISSING = "--generator vllm needs vLLM: pip install 'divscope[vllm]' (Linux with a CUDA GPU)"
# vLLM accepts these LoRA ranks only: the adapter's rank is rounded up to one of them.
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class HFGenerator:
    """Hugging Face ``generate`` on the run's model, loaded on first use (a fully cached rerun loads nothing)."""

    name = "hf"
    chunk: int | None = None  # batch_size chats per call: each batch is cached as it finishes

    def __init__(self, run: Run, device: str | None = None):
        self.run, self.device = run, device
        self.model_id = run.model_id  # the key answers were always cached under
        self._loaded: tuple[Any, Any] | None = None

    def generate_chats(self, chats: Sequence[list[dict[str, str]]], cfg: GenConfig, ids: Sequence[str],
                       stats: GenStats) -> list[str]:
        if self._loaded is None:
            self._loaded = self.run.load(self.device)
        return generate_chats(*self._loaded, chats, cfg, ids=ids, stats=stats, progress=None)

    def describe(self) -> dict[str, Any]:
        return {"generator": self.name}

    def close(self) -> None:
        self._loaded = None


class VLLMGenerator:
    """vLLM's offline engine on the run's model (the base model plus the adapter for a LoRA run)."""

    name = "vllm"
    chunk = 1024  # prompts per engine call (vLLM batches inside); cached after each

    def __init__(self, run: Run, device: str | None = None):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise DivscopeError(VLLM_MISSING) from None
        self.run, self.device = run, device
        self.model_id = f"{run.model_id}:vllm"
        self._engine: Any = None
        self._tok: Any = None
        self._lora: Any = None

    def _load(self) -> None:
        from vllm import LLM

        from divscope.train.model import load_tokenizer_for, resolve_model_path

        cfg = self.run.config
        method = cfg["method"]
        weights = str(self.run.model_dir) if method == "full" else resolve_model_path(cfg["model"])
        kwargs: dict[str, Any] = {"model": weights, "tokenizer": weights, "dtype": "auto",
                                  "seed": int(cfg.get("seed", 0) or 0)}
        if method == "lora" and (self.run.summary.get("chat_format") or {}).get("added_token_ids"):
            raise DivscopeError(f"{self.run.path}: a LoRA run whose chat format added tokens to the vocabulary "
                                "(their embeddings are saved with the adapter) cannot be served by vLLM's LoRA; "
                                "use --generator hf, or train with --full")
        if method == "lora":
            from vllm.lora.request import LoRARequest

            rank = int(cfg.get("lora_r", 16))
            kwargs.update(enable_lora=True, max_lora_rank=next((r for r in _VLLM_LORA_RANKS if r >= rank), rank))
            self._lora = LoRARequest("run", 1, str(self.run.model_dir))
        self._engine = LLM(**kwargs)
        # the chat format the run was trained with, so prompts render as in training (as Run.load does for hf)
        self._tok = load_tokenizer_for(weights if method == "full" else cfg["model"], chat=self.run.chat_format())

    def generate_chats(self, chats: Sequence[list[dict[str, str]]], cfg: GenConfig, ids: Sequence[str],
                       stats: GenStats) -> list[str]:
        import time

        from vllm import SamplingParams

        if self._engine is None:
            self._load()
        t0 = time.perf_counter()
        encoded = encode_prompts(self._tok, chats, cfg.max_prompt_len, stats)
        stop = stop_token_ids(self._tok)
        sampled = cfg.temperature > 0
        params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature if sampled else 0.0,
                                top_p=cfg.top_p if sampled else 1.0, seed=cfg.seed if sampled else None,
                                stop_token_ids=stop, skip_special_tokens=True)
        prompts = [{"prompt_token_ids": e} for e in encoded]
        outs = self._engine.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        texts = []
        for out in outs:
            o = out.outputs[0]
            stats.new_tokens += len(o.token_ids)
            stats.hit_max_new_tokens += o.finish_reason == "length"
            texts.append(o.text.strip())
        stats.generated += len(texts)
        stats.seconds += time.perf_counter() - t0
        return texts

    def describe(self) -> dict[str, Any]:
        import vllm

        return {"generator": self.name, "vllm_version": getattr(vllm, "__version__", "?")}

    def close(self) -> None:
        self._engine = None


class EndpointGenerator:
    """An OpenAI-compatible server that serves the trained model; requests through :class:`EndpointClient`."""

    name = "endpoint"
    chunk = 4096  # a turn's requests go out together (the client caches each answer as it arrives)

    def __init__(self, run: Run, endpoint: str | None, model: str | None, concurrency: int = 8,
                 timeout: float = 600.0, max_retries: int = 5):
        if not endpoint or not model:
            raise DivscopeError("--generator endpoint needs --generator-endpoint URL (an OpenAI-compatible server "
                                "serving the trained model) and --generator-model NAME")
        self.run, self.endpoint, self.model = run, endpoint, model
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        # The served name identifies the model on the server; the URL does not enter the key (ports change).
        self.model_id = f"{run.model_id}:endpoint:{model}"
        self.client: EndpointClient | None = None
        self.requests_sent = 0
        self.cache_hits = 0

    def _client(self, cfg: GenConfig) -> EndpointClient:
        extra = {"top_p": cfg.top_p, "seed": cfg.seed} if cfg.temperature > 0 else {}
        if self.client is not None and self.client.max_tokens == cfg.max_new_tokens and \
                self.client.temperature == cfg.temperature and self.client.extra_params == extra:
            return self.client
        self.close()
        self.client = EndpointClient(self.endpoint, self.model, api_key_env=None,
                                     max_concurrency=max(1, self.concurrency), timeout=self.timeout,
                                     max_retries=self.max_retries, temperature=cfg.temperature,
                                     max_tokens=cfg.max_new_tokens, extra_params=extra, seed=cfg.seed,
                                     cache_path=self.run.path / "eval" / "cache" / "generator.jsonl")
        return self.client

    def generate_chats(self, chats: Sequence[list[dict[str, str]]], cfg: GenConfig, ids: Sequence[str],
                       stats: GenStats) -> list[str]:
        import time

        client = self._client(cfg)
        t0 = time.perf_counter()
        before = dict(client.stats)
        results = client.chat_many([list(c) for c in chats], progress=None)
        self.requests_sent += client.stats["requests_sent"] - before["requests_sent"]
        self.cache_hits += client.stats["cache_hits"] - before["cache_hits"]
        stats.seconds += time.perf_counter() - t0
        if not all(r.ok for r in results):
            raise DivscopeError(f"generation through {client.url} failed: {client.failures_summary(results)}; "
                                "the answers received are cached: run the same command again to ask only for "
                                "the others")
        for r in results:
            usage = r.usage or {}
            stats.new_tokens += int(usage.get("completion_tokens") or 0)
            stats.hit_max_new_tokens += r.finish_reason == "length"
        stats.generated += len(results)
        return [r.text.strip() for r in results]

    def describe(self) -> dict[str, Any]:
        return {"generator": self.name, "generator_url": self.client.url if self.client else self.endpoint,
                "generator_model": self.model, "generator_requests_sent": self.requests_sent,
                "generator_cache_hits": self.cache_hits}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def make_generator(run: Run, generator: str = "hf", device: str | None = None, endpoint: str | None = None,
                   model: str | None = None, concurrency: int = 8) -> Any:
    """The backend named ``generator`` for ``run`` (``concurrency``: requests in flight for ``endpoint``)."""
    if generator == "hf":
        return HFGenerator(run, device)
    if generator == "vllm":
        return VLLMGenerator(run, device)
    if generator == "endpoint":
        return EndpointGenerator(run, endpoint, model, concurrency=concurrency)
    raise DivscopeError(f"unknown generator {generator!r}: choose one of {', '.join(GENERATORS)}")


def answers_for_run(run_dir: str | os.PathLike[str], items: Sequence[EvalItem], cfg: GenConfig,
                    device: str | None = None, stats: GenStats | None = None, generator: str = "hf",
                    generator_endpoint: str | None = None, generator_model: str | None = None
                    ) -> tuple[list[tuple[str, ...]], dict[str, Any]]:
    """A run's answers to ``items`` from backend ``generator``, cached in ``RUN/eval/generations.jsonl``, and the
    backend's description (for the result)."""
    run = Run.open(run_dir)
    backend = make_generator(run, generator, device, generator_endpoint, generator_model,
                             concurrency=cfg.batch_size)
    try:
        answers = generate_answers(backend, items, cfg, backend.model_id,
                                   cache_path=Path(run.path) / "eval" / "generations.jsonl", stats=stats)
    finally:
        backend.close()
    return answers, backend.describe()
