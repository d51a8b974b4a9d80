"""Answers from a local model to evaluation prompts: batched Hugging Face ``generate``, seeded, cached.

* **Chat template**: every prompt is rendered with the chat format the run was trained with (``add_generation_prompt``),
  tokenized as training tokenized (``divscope.train.chat.encode_prompt``); decoding stops on the token that
  closed every assistant turn in training (``divscope.train.formats.stop_token_ids``).
* **Multi-turn items** (MT-Bench) are answered turn by turn: turn *t* is asked with the model's own answers
  to turns ``1..t-1`` in the context, as MT-Bench does.
* **Batching**: prompts are sorted by length (deterministic) and left-padded into batches of ``batch_size``.
  Greedy decoding by default (``temperature=0``); with ``temperature > 0`` sampling uses ``top_p`` and a
  torch seed set per batch from ``(seed, ids in the batch)``, so a rerun gives the same answers.
* **Prompt length**: a rendered prompt longer than ``max_prompt_len`` tokens is cut from the left (its
  beginning is lost, the generation prompt kept); how many were cut is reported.
* **Threads**: on CPU, decoding runs with ``DIVSCOPE_GEN_THREADS`` torch threads (default 1; 0 leaves torch's
  setting); the previous setting is restored afterwards. On the 2-core development machine with other jobs
  running, 1 thread decoded SmolLM2-135M about 5x faster than 2 (threads spin-waiting for a descheduled peer);
  on an idle machine with more cores a higher value may pay off (docs/evaluation.md has the measurements).
* **Cache**: with ``cache_path``, each finished answer is appended to a kill-safe JSONL store
  (:class:`divscope.store.JsonlStore`) keyed by ``sha256(model identity, item id, turns, settings)``;
  a rerun (or another method on the same run) never regenerates it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from divscope.io.evalsets import EvalItem
from divscope.train.chat import encode_prompt
from divscope.train.formats import stop_token_ids
from divscope.ui import progress_bar


@dataclass(frozen=True)
class GenConfig:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    max_prompt_len: int = 2048

    def key_params(self) -> dict[str, Any]:
        """Settings that change the answers (batch size does not enter the cache key)."""
        d = asdict(self)
        d.pop("batch_size")
        return d


@dataclass
class GenStats:
    generated: int = 0
    cached: int = 0
    truncated_prompts: int = 0
    new_tokens: int = 0
    hit_max_new_tokens: int = 0
    seconds: float = 0.0
    per_turn: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 2)
        d["seconds_per_generated_answer"] = round(self.seconds / self.generated, 3) if self.generated else None
        return d


def _answer_key(model_id: str, item: EvalItem, n_turns: int, cfg: GenConfig) -> str:
    blob = json.dumps({"model": model_id, "id": item.id, "turns": list(item.turns[:n_turns]),
                       "system": item.extra.get("system"), "gen": cfg.key_params()},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def encode_prompts(tok: Any, chats: Sequence[list[dict[str, str]]], max_prompt_len: int,
                   stats: GenStats | None = None) -> list[list[int]]:
    """Each chat rendered with the run's chat format and the generation prompt, tokenized as training tokenizes
    (:func:`divscope.train.chat.encode_prompt`); one longer than ``max_prompt_len`` tokens is cut from the left
    (counted in ``stats.truncated_prompts``). Every backend that generates from token ids (Hugging Face, vLLM)
    renders through here."""
    encoded = []
    for chat in chats:
        enc = encode_prompt(tok, chat)
        if len(enc) > max_prompt_len:
            enc = enc[-max_prompt_len:]
            if stats is not None:
                stats.truncated_prompts += 1
        encoded.append(enc)
    return encoded


def generate_chats(model: Any, tok: Any, chats: Sequence[list[dict[str, str]]], cfg: GenConfig,
                   ids: Sequence[str] | None = None, stats: GenStats | None = None,
                   progress: str | None = "generate") -> list[str]:
    """One answer per chat (a list of messages ending with a user turn), aligned with ``chats``."""
    stats = stats if stats is not None else GenStats()
    if not chats:
        return []
    ids = list(ids) if ids is not None else [str(i) for i in range(len(chats))]
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    encoded = encode_prompts(tok, chats, cfg.max_prompt_len, stats)
    order = sorted(range(len(chats)), key=lambda i: (len(encoded[i]), ids[i]))
    out: list[str] = [""] * len(chats)
    device = next(model.parameters()).device
    eos = stop_token_ids(tok)  # the end-of-turn token training labels end with, and EOS
    model.eval()
    with _cpu_threads(device.type == "cpu"):
        _generate_sorted(model, tok, encoded, order, ids, cfg, eos, device, stats, out, progress)
    return out


@contextlib.contextmanager
def _cpu_threads(on_cpu: bool) -> Iterator[None]:
    """Torch threads for CPU decoding: ``DIVSCOPE_GEN_THREADS`` (default 1; 0 = leave torch's setting)."""
    import torch

    want = int(os.environ.get("DIVSCOPE_GEN_THREADS", "1") or 0)
    before = torch.get_num_threads()
    if not on_cpu or want <= 0 or want == before:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate_sorted(model: Any, tok: Any, encoded: list[list[int]], order: list[int], ids: list[str],
                     cfg: GenConfig, eos: list[int], device: Any, stats: GenStats, out: list[str],
                     progress: str | None) -> None:
    import torch

    t0 = time.perf_counter()
    bar = progress_bar(progress, total=len(order)) if progress else None
    with bar if bar is not None else _Null() as advance:
        for b in range(0, len(order), max(1, cfg.batch_size)):
            idx = order[b:b + cfg.batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = encoded[i]
                input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
                attn[row, width - len(seq):] = 1
            kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "eos_token_id": eos,
                                      "pad_token_id": tok.pad_token_id}
            if cfg.temperature > 0:
                seed_src = f"{cfg.seed}:" + ",".join(ids[i] for i in idx)
                torch.manual_seed(int(hashlib.sha256(seed_src.encode()).hexdigest()[:8], 16))
                kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                gen = model.generate(input_ids=input_ids.to(device), attention_mask=attn.to(device), **kwargs)
            new = gen[:, width:].cpu()
            for row, i in enumerate(idx):
                toks = new[row].tolist()
                n = len(toks)
                for j, t in enumerate(toks):
                    if t in eos:
                        n = j
                        break
                else:
                    stats.hit_max_new_tokens += 1
                stats.new_tokens += n
                out[i] = tok.decode(toks[:n], skip_special_tokens=True).strip()
            stats.generated += len(idx)
            advance(len(idx))
    stats.seconds += time.perf_counter() - t0


class _Null:
    def __enter__(self) -> Any:
        return lambda n=1: None

    def __exit__(self, *exc: Any) -> None:
        return None


def generate_answers(model: Any, items: Sequence[EvalItem], cfg: GenConfig, model_id: str,
                     cache_path: str | os.PathLike[str] | None = None,
                     stats: GenStats | None = None) -> list[tuple[str, ...]]:
    """The model's answers to every turn of every item (aligned with ``items``), through the cache.

    ``model`` is a ``(model, tokenizer)`` pair or a function returning one, called only when some answer is
    not cached yet (a fully cached rerun loads no model), or a generation backend: an object with
    ``generate_chats(chats, cfg, ids, stats) -> answers`` and ``chunk`` (chats per call, None: ``batch_size``;
    see :mod:`divscope.evaluate.generators`). ``model_id`` identifies the model in the cache key.
    """
    from divscope.store import JsonlStore

    stats = stats if stats is not None else GenStats()
    backend = model if hasattr(model, "generate_chats") else None
    loaded: list[Any] = [] if callable(model) else [model]

    def get() -> tuple[Any, Any]:
        if not loaded:
            loaded.append(model())
        return loaded[0]

    store = JsonlStore(Path(cache_path)) if cache_path is not None else None
    answers: list[list[str]] = [[] for _ in items]
    n_turns = max((len(it.turns) for it in items), default=0)
    for t in range(n_turns):
        todo, chats, keys = [], [], []
        for i, it in enumerate(items):
            if len(it.turns) <= t:
                continue
            key = _answer_key(model_id, it, t + 1, cfg)
            hit = store.get(key) if store is not None else None
            if hit is not None:
                answers[i].append(hit["text"])
                stats.cached += 1
                continue
            chat: list[dict[str, str]] = []
            if it.extra.get("system"):
                chat.append({"role": "system", "content": it.extra["system"]})
            for q, a in zip(it.turns[:t], answers[i], strict=True):
                chat += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            chat.append({"role": "user", "content": it.turns[t]})
            todo.append(i)
            chats.append(chat)
            keys.append(key)
        stats.per_turn.append(len(todo))
        if not todo:
            continue
        # Similar lengths share a batch (less padding); characters approximate tokens well enough here.
        ranked = sorted(range(len(todo)), key=lambda j: (sum(len(m["content"]) for m in chats[j]), items[todo[j]].id))
        todo, chats, keys = [todo[j] for j in ranked], [chats[j] for j in ranked], [keys[j] for j in ranked]
        label = "generate" if n_turns == 1 else f"generate turn {t + 1}"
        # One batch at a time, cached as it finishes, so a killed evaluation keeps what it generated.
        step = max(1, getattr(backend, "chunk", None) or cfg.batch_size)
        with progress_bar(label, total=len(todo)) as advance:
            for c in range(0, len(todo), step):
                sl = slice(c, c + step)
                ids = [items[i].id for i in todo[sl]]
                texts = (backend.generate_chats(chats[sl], cfg, ids=ids, stats=stats) if backend is not None
                         else generate_chats(*get(), chats[sl], cfg, ids=ids, stats=stats, progress=None))
                if store is not None:
                    store.put_many((k, {"id": items[i].id, "turn": t + 1, "text": x, "t": round(time.time(), 3)})
                                   for k, i, x in zip(keys[sl], todo[sl], texts, strict=True))
                for i, x in zip(todo[sl], texts, strict=True):
                    answers[i].append(x)
                advance(len(texts))
    return [tuple(a) for a in answers]


def answers_for_run(run_dir: str | os.PathLike[str], items: Sequence[EvalItem], cfg: GenConfig,
                    device: str | None = None, stats: GenStats | None = None) -> list[tuple[str, ...]]:
    """A training run's answers to ``items``, cached in ``RUN/eval/generations.jsonl``."""
    from divscope.train.run import Run

    run = Run.open(run_dir)
    return generate_answers(lambda: run.load(device), items, cfg, run.model_id,
                            cache_path=run.path / "eval" / "generations.jsonl", stats=stats)
