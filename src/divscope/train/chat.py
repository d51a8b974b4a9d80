"""Chat encoding with assistant-only labels: one function used by training and by the NLL evaluation.

The model's own chat template renders the conversation; the character spans of assistant turns are found by
rendering prefixes (``messages[:i]`` with the generation prompt, then ``messages[:i+1]``), and every token whose
first character lies in such a span is a loss token. That includes the end-of-turn marker, so the model learns
to stop. It works for any template that renders prefixes consistently, which is what generation relies on.

The text is tokenized as rendered (no special tokens added by the tokenizer): the template writes BOS where the
format has it (``train.formats``), so it is there once, in training, scoring and generation
(:func:`encode_prompt`) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE = -100


def assistant_spans(tokenizer: Any, messages: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the [start, end) character spans of its assistant turns."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True))
        upto = tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=False)
        end = len(upto)
        if not text.startswith(upto) or start > end:
            raise ValueError("chat template does not render prefixes consistently; cannot mask prompt tokens")
        spans.append((start, end))
    return text, spans


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], max_len: int) -> dict[str, list[int]] | None:
    """``input_ids`` and ``assistant_masks`` (1 = loss token), truncated to ``max_len`` from the right.

    Returns None when truncation leaves no assistant token (nothing to learn or score).
    """
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                    max_length=max_len)
    mask = []
    for start, _ in enc["offset_mapping"]:
        mask.append(int(any(s <= start < e for s, e in spans)))
    if not any(mask):
        return None
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def encode_for_scoring(tokenizer: Any, messages: Sequence[dict[str, str]], max_len: int) -> dict[str, Any] | None:
    """:func:`encode_chat` (the same tokens and masks) plus what scoring must report about them.

    ``end_of_turn_masks``: 1 for the tokens of the marker that closes an assistant turn (``<|im_end|>`` and its
    newline in ChatML): the text of the turn's span after its answer. ``length``: tokens before truncation, so a
    cut reference is counted, not hidden. ``unlocated``: turns whose answer the template rendered changed, so
    their marker could not be told from the answer (their tokens all count as answer).
    """
    text, spans = assistant_spans(tokenizer, messages)
    answers = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    closing: list[int | None] = []
    for (start, end), body in zip(spans, answers, strict=True):
        at = text.rfind(body, start, end) if body else start
        closing.append(None if at < 0 else at + len(body))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"][:max_len]
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in offsets]
    if not any(mask):
        return None
    eot = [int(any(c is not None and c <= a < e for (_, e), c in zip(spans, closing, strict=True)))
           for a, _ in offsets]
    return {"input_ids": list(enc["input_ids"][:max_len]), "assistant_masks": mask, "end_of_turn_masks": eot,
            "length": len(enc["input_ids"]), "unlocated": sum(c is None for c in closing)}


def labels_from(enc: dict[str, list[int]]) -> list[int]:
    return [t if m else IGNORE for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)]


def encode_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The token ids generation continues from: the conversation rendered with the generation prompt, tokenized
    exactly as training tokenizes (:func:`encode_chat`)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def turns_without(enc: dict[str, list[int]], token_id: int) -> int:
    """How many assistant turns (runs of loss tokens) of an encoded sample lack ``token_id``: with the stop token,
    the turns cut by truncation before their end, which teach the model nothing about stopping."""
    missing, inside, seen = 0, False, False
    for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True):
        if m and not inside:
            inside, seen = True, False
        if m:
            seen = seen or t == token_id
        elif inside:
            missing, inside = missing + (not seen), False
    return missing + (inside and not seen)
