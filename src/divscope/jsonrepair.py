"""Tolerant JSON extraction from model replies that should contain JSON (tags, judge verdict formats).

Models wrap JSON in prose and code fences, leave trailing commas, use Python literals or stop mid-list; a strict
parser would turn each of those into a lost answer.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")


def extract_json(text: str | None, default: Any = None) -> Any:
    """The first JSON list or object in a model reply, or ``default`` when there is none.

    Tolerates: surrounding prose; Markdown code fences (a fenced block is tried first); trailing commas;
    single-quoted strings and Python literals (``True``/``False``/``None``, via ``ast.literal_eval``); a reply
    cut off inside a list (the complete leading elements are kept). Candidates are tried in order of their
    opening bracket, so ``"see [1]: {...}"`` still finds the object when ``[1]`` is not what was meant only if
    it fails to parse; a scalar is never returned.
    """
    if not text:
        return default
    blocks = [m.group(2) for m in _FENCE.finditer(text)]
    # An unterminated fence (reply cut off): take everything after the opening fence.
    if not blocks and "```" in text:
        blocks = [re.sub(r"^```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?", "", text[text.index("```"):])]
    for source in [*blocks, text]:
        found = _first_json(source)
        if found is not None:
            return found
    return default


def _first_json(text: str) -> Any:
    pos = 0
    n = len(text)
    while pos < n:
        starts = [i for i in (text.find("[", pos), text.find("{", pos)) if i >= 0]
        if not starts:
            return None
        start = min(starts)
        end = _match_bracket(text, start)
        if end is not None:
            value = _loads_tolerant(text[start:end + 1])
            if isinstance(value, (list, dict)):
                return value
        else:
            value = _salvage_truncated(text[start:])
            if value is not None:
                return value
        pos = start + 1
    return None


def _match_bracket(text: str, start: int) -> int | None:
    """Index of the bracket closing ``text[start]``, string-aware (both quote styles), or None."""
    stack: list[str] = []
    pairs = {"[": "]", "{": "}"}
    quote: str | None = None
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            # A single quote inside a word (don't, it's) is an apostrophe, not a string delimiter.
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum():
                pass
            else:
                quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c in "]}":
            if not stack or stack[-1] != c:
                return None
            stack.pop()
            if not stack:
                return i
        i += 1
    return None


def _loads_tolerant(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", s)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError:
        pass
    py = re.sub(r"\btrue\b", "True", fixed)
    py = re.sub(r"\bfalse\b", "False", py)
    py = re.sub(r"\bnull\b", "None", py)
    try:
        return ast.literal_eval(py)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _salvage_truncated(s: str) -> Any:
    """For a list cut off mid-way (``[{...}, {...}, {"tag": "x``), keep its complete elements."""
    if not s.startswith("["):
        return None
    # Walk the top-level elements, remembering the end of the last complete one.
    depth = 0
    quote: str | None = None
    last_complete = None
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 1:
                last_complete = i
        elif c == "," and depth == 1:
            last_complete = i - 1
        i += 1
    if last_complete is None:
        return None
    value = _loads_tolerant(s[:last_complete + 1].rstrip().rstrip(",") + "]")
    return value if isinstance(value, list) and value else None
