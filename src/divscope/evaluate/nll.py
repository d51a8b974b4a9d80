"""Offline proxy: mean negative log-likelihood per token of reference answers given their prompts.

Needs no server. Scores exactly the tokens training puts loss on (``divscope.train.chat.encode_chat``), so a
lower number means the fine-tuned model assigns more probability to good answers it never saw.
``evaluate_nll`` is the ``nll`` evaluation method (score = -mean NLL, higher is better).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.evaluate.base import EvalOutcome
from divscope.io.evalsets import EvalItem
from divscope.train.chat import IGNORE, encode_chat, labels_from
from divscope.train.run import Run
from divscope.ui import progress_bar


@dataclass
class NllResult:
    mean_nll: float  # per scored token, over all items
    tokens: int
    items: int
    skipped: int  # items with no reference token left within max_len
    per_item: list[float]  # mean NLL per token of each scored conversation
    seconds: float
    scored: list[int] = field(default_factory=list)  # index in ``conversations`` of each ``per_item`` entry

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


def mean_nll(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], max_len: int = 512,
             batch_size: int = 8) -> NllResult:
    """Token-weighted mean NLL of the assistant turns of ``conversations``, batched, no gradients."""
    import torch

    encoded = [encode_chat(tokenizer, conv, max_len) for conv in conversations]
    scored = [i for i, e in enumerate(encoded) if e is not None]
    kept = [encoded[i] for i in scored]
    order = sorted(range(len(kept)), key=lambda i: len(kept[i]["input_ids"]))  # little padding per batch
    per_item = [0.0] * len(kept)
    total, tokens = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), progress_bar("nll", total=len(kept)) as advance:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(kept[i]["input_ids"]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(kept[i]["input_ids"])
                ids[row, :n] = torch.tensor(kept[i]["input_ids"])
                labels[row, :n] = torch.tensor(labels_from(kept[i]))
                attn[row, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels,
                                                    ignore_index=IGNORE, reduction="none")
            mask = shift_labels != IGNORE
            for row, i in enumerate(idx):
                n_tok = int(mask[row].sum())
                s = float(nll[row][mask[row]].sum())
                per_item[i] = s / max(n_tok, 1)
                total += s
                tokens += n_tok
            advance(len(idx))
    return NllResult(total / max(tokens, 1), tokens, len(kept), len(encoded) - len(kept), per_item,
                     time.perf_counter() - t0, scored)


def evaluate_nll(run: Run, items: list[EvalItem], *, seed: int, max_len: int, batch_size: int, device: str | None,
                 details_path: Path) -> EvalOutcome:
    """The ``nll`` method: items whose references answer every turn, scored as a conversation.

    Per item: minus its mean NLL per token (the direction of ``score``; ``score`` itself weighs items by their
    token count). No options, and no details file: nothing is generated.
    """
    ids, convs = [], []
    for it in items:
        if len(it.references) < len(it.turns):
            continue
        conv: list[dict[str, str]] = []
        for q, a in zip(it.turns, it.references, strict=False):
            conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        ids.append(it.id)
        convs.append(conv)
    if not convs:
        raise DivscopeError("no item of this eval set has reference answers; nll needs them (try alpaca_eval)")
    model, tok = run.load(device)
    res = mean_nll(model, tok, convs, max_len=max_len, batch_size=batch_size)
    details = {"mean_nll": res.mean_nll, "perplexity": res.perplexity, "tokens": res.tokens, "items": res.items,
               "skipped": res.skipped, "seconds": round(res.seconds, 2),
               "seconds_per_item": round(res.seconds / max(res.items, 1), 4)}
    return EvalOutcome("nll", -res.mean_nll, [ids[i] for i in res.scored], [-x for x in res.per_item], details)
