"""Offline proxy: mean negative log-likelihood of reference answers given their prompts.

Needs no server. Scores exactly the tokens training puts loss on (``divscope.train.chat.encode_chat``), so a
lower number means the fine-tuned model assigns more probability to good answers it never saw.
``evaluate_nll`` is the ``nll`` evaluation method (score = -mean NLL, higher is better).

Two choices change what "mean" means, and both are reported whichever one is the score:

* weighting: ``token`` (every scored token counts once, so long references weigh more; the classic number) or
  ``item`` (every prompt counts once: the mean of the per-item means);
* ``end_of_turn``: ``include`` or ``exclude`` the marker closing each answer. A reference cut at ``max_len``
  loses its marker, and a model trained on short answers is confident about where an answer ends, so the
  marker ties the score to answer length; excluding it gives a length-neutral variant.
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
from divscope.train.chat import IGNORE, encode_for_scoring, labels_from
from divscope.train.run import Run
from divscope.ui import progress_bar

WEIGHTINGS = ("token", "item")
END_OF_TURN = ("include", "exclude")


@dataclass
class NllResult:
    mean_nll: float  # per scored token, over all items, end-of-turn markers included
    tokens: int
    items: int
    skipped: int  # items with no reference token left within max_len
    per_item: list[float]  # mean NLL per token of each scored conversation (markers included)
    seconds: float
    scored: list[int] = field(default_factory=list)  # index in ``conversations`` of each ``per_item`` entry
    # per scored item: (NLL sum, tokens) of the answer text and of the end-of-turn markers
    parts: list[tuple[float, int, float, int]] = field(default_factory=list)
    truncated: int = 0  # scored items cut at max_len: the end of their reference (and its marker) is not scored
    unlocated: int = 0  # assistant turns whose marker could not be told from the answer (counted as answer)

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    def item_means(self, end_of_turn: str = "include") -> list[float | None]:
        """Each item's mean NLL per token; None for an item with no token left (only markers, excluded)."""
        out: list[float | None] = []
        for s, n, es, en in self.parts:
            s, n = (s + es, n + en) if end_of_turn == "include" else (s, n)
            out.append(s / n if n else None)
        return out

    def mean(self, weighting: str = "token", end_of_turn: str = "include") -> float:
        """The mean NLL under one weighting (``token`` | ``item``) and marker choice (``include`` | ``exclude``)."""
        if weighting == "item":
            means = [m for m in self.item_means(end_of_turn) if m is not None]
            return sum(means) / len(means) if means else float("nan")
        keep = end_of_turn == "include"
        total = sum(s + (es if keep else 0.0) for s, _, es, _ in self.parts)
        count = sum(n + (en if keep else 0) for _, n, _, en in self.parts)
        return total / count if count else float("nan")


def mean_nll(model: Any, tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]], max_len: int = 512,
             batch_size: int = 8) -> NllResult:
    """Token-weighted mean NLL of the assistant turns of ``conversations``, batched, no gradients; the result
    also holds each item's sums, answer text and end-of-turn markers apart (:meth:`NllResult.mean`)."""
    import torch

    encoded = [encode_for_scoring(tokenizer, conv, max_len) for conv in conversations]
    scored = [i for i, e in enumerate(encoded) if e is not None]
    kept = [e for e in encoded if e is not None]
    order = sorted(range(len(kept)), key=lambda i: len(kept[i]["input_ids"]))  # little padding per batch
    parts = [(0.0, 0, 0.0, 0)] * len(kept)
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
            eot = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                n = len(kept[i]["input_ids"])
                ids[row, :n] = torch.tensor(kept[i]["input_ids"])
                labels[row, :n] = torch.tensor(labels_from(kept[i]))
                eot[row, :n] = torch.tensor(kept[i]["end_of_turn_masks"], dtype=torch.bool)
                attn[row, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels,
                                                    ignore_index=IGNORE, reduction="none").double()
            mask, marker = shift_labels != IGNORE, eot[:, 1:].to(device)
            for row, i in enumerate(idx):
                body, end = mask[row] & ~marker[row], mask[row] & marker[row]
                parts[i] = (float(nll[row][body].sum()), int(body.sum()), float(nll[row][end].sum()),
                            int(end.sum()))
            advance(len(idx))
    res = NllResult(0.0, sum(n + en for _, n, _, en in parts), len(kept), len(encoded) - len(kept), [],
                    time.perf_counter() - t0, scored, parts,
                    truncated=sum(e["length"] > max_len for e in kept), unlocated=sum(e["unlocated"] for e in kept))
    res.mean_nll = res.mean("token", "include")
    res.per_item = [m if m is not None else float("nan") for m in res.item_means("include")]
    return res


def evaluate_nll(run: Run, items: list[EvalItem], *, seed: int, max_len: int, batch_size: int, device: str | None,
                 details_path: Path, nll_weighting: str = "token", end_of_turn: str = "include") -> EvalOutcome:
    """The ``nll`` method: items whose references answer every turn, scored as a conversation.

    ``score`` = minus the mean NLL chosen by ``nll_weighting`` and ``end_of_turn`` (defaults: the classic
    token-weighted mean, markers included); the four variants are all in the result. Per item: minus its mean
    NLL per token under ``end_of_turn``. No details file: nothing is generated.
    """
    if nll_weighting not in WEIGHTINGS or end_of_turn not in END_OF_TURN:
        raise DivscopeError(f"nll: nll_weighting must be one of {', '.join(WEIGHTINGS)} and end_of_turn one of "
                            f"{', '.join(END_OF_TURN)} (got {nll_weighting!r}, {end_of_turn!r})")
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
    primary = res.mean(nll_weighting, end_of_turn)
    per = [(ids[i], -m) for i, m in zip(res.scored, res.item_means(end_of_turn), strict=True) if m is not None]
    details = {"mean_nll": primary, "perplexity": math.exp(primary), "nll_weighting": nll_weighting,
               "end_of_turn": end_of_turn,
               **{f"mean_nll_{w}{'' if e == 'include' else '_no_eot'}": res.mean(w, e)
                  for w in WEIGHTINGS for e in END_OF_TURN},
               "tokens": res.tokens, "end_of_turn_tokens": sum(en for *_, en in res.parts), "items": len(per),
               "skipped": res.skipped, "truncated_references": res.truncated,
               "train_max_len": run.config.get("max_len"), "seconds": round(res.seconds, 2),
               "seconds_per_item": round(res.seconds / max(res.items, 1), 4)}
    if res.unlocated:
        details["end_of_turn_unlocated"] = res.unlocated
    return EvalOutcome("nll", -primary, [i for i, _ in per], [x for _, x in per], details)
