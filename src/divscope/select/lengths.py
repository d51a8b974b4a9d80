"""Length control: restrict selection to samples whose length (in target-model tokens) lies in a band.

The paper kept responses near 500 tokens so that mean length no longer moved with diversity (micro diversity
otherwise grows with length: a long text carries more mid-frequency types). ``length_mask`` gives the
eligible rows; selection then runs on that sub-pool exactly as it runs on the whole pool.

    parse_length_range("400:600") -> (400, 600)      inclusive; "400:" / ":600" leave one end open
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError
from divscope.io.workspace import Workspace


def parse_length_range(value: Any) -> tuple[int | None, int | None]:
    """``"MIN:MAX"``, ``"MIN:"``, ``":MAX"`` or a pair ``[MIN, MAX]`` (None = open) -> (min, max), inclusive."""
    if isinstance(value, str):
        lo_s, sep, hi_s = value.partition(":")
        if not sep:
            raise DivscopeError(f"length range {value!r}: write MIN:MAX (e.g. 400:600; MIN: or :MAX for one end)")
        parts: list[Any] = [lo_s.strip() or None, hi_s.strip() or None]
    elif isinstance(value, list | tuple) and len(value) == 2:
        parts = list(value)
    else:
        raise DivscopeError(f"length range {value!r}: write MIN:MAX or [MIN, MAX]")
    out: list[int | None] = []
    for p in parts:
        if p is None:
            out.append(None)
            continue
        try:
            if isinstance(p, bool) or (isinstance(p, float) and not p.is_integer()):
                raise ValueError
            out.append(int(p))
        except (TypeError, ValueError):
            raise DivscopeError(f"length range {value!r}: bounds must be whole numbers of tokens") from None
    lo, hi = out
    if lo is None and hi is None:
        raise DivscopeError(f"length range {value!r}: give at least one bound")
    if (lo is not None and lo < 0) or (hi is not None and hi < 0):
        raise DivscopeError(f"length range {value!r}: bounds must be >= 0")
    if lo is not None and hi is not None and hi < lo:
        raise DivscopeError(f"length range {value!r}: MAX ({hi}) is below MIN ({lo})")
    return lo, hi


def format_range(rng: tuple[int | None, int | None] | list[int | None]) -> str:
    lo, hi = rng
    return f"{'' if lo is None else lo}:{'' if hi is None else hi}"


def target_tokenizer(model: str) -> str:
    """The tokenizer spec of a training model spec (``smollm2`` -> ``smollm2``; an HF id or folder -> itself)."""
    return "smollm2" if model in ("smollm2", "default", "") else model


def length_mask(ws: Workspace | str | Path, length_range: Any, side: str = "response",
                tokenizer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(boolean mask of pool rows with ``min <= length <= max``, the lengths) in tokens of ``tokenizer``."""
    from divscope.features.micro import token_lengths

    if side not in ("instruction", "response"):
        raise DivscopeError(f"unknown length side {side!r}: choose instruction or response")
    lo, hi = parse_length_range(length_range)
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    lengths = np.asarray(token_lengths(ws, side, tokenizer=tokenizer), dtype=np.int64)
    mask = np.ones(len(lengths), bool)
    if lo is not None:
        mask &= lengths >= lo
    if hi is not None:
        mask &= lengths <= hi
    return mask, lengths


def length_request(length_range: Any, side: str, tokenizer: str | None) -> dict[str, Any]:
    """What a manifest records about the length band (part of the subset request)."""
    from divscope import models

    lo, hi = parse_length_range(length_range)
    tok = tokenizer or models.DEFAULT_TOKENIZER
    return {"range": [lo, hi], "side": side, "tokenizer": tok, "identity": models.tokenizer_identity(tok)}
