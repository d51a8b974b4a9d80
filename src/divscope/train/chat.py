"""Chat encoding with assistant-only labels: one function used by training and by the NLL evaluation.

The model's own chat template renders the conversation; the character spans of assistant turns are found by
rendering prefixes (``messages[:i]`` with the generation prompt, then ``messages[:i+1]``), and every token whose
first character lies in such a span is a loss token. That includes the end-of-turn marker, so the model learns
to stop. It works for any template that renders prefixes consistently, which is what generation relies on.
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


def labels_from(enc: dict[str, list[int]]) -> list[int]:
    return [t if m else IGNORE for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True)]
