"""Record shapes: alpaca, ShareGPT and OpenAI messages, to and from the canonical ``Record``.

A shape is how one record is laid out, independent of the container (JSON, JSONL, Parquet, HF datasets):
the same dict arrives from any of them. Every problem is raised as ``RecordProblem`` with a reason code, so the
ingest can report it with file and line and keep going.
"""

from __future__ import annotations

import json
from typing import Any

from divscope.io.record import Record, Turn, content_hash
from divscope.io.repair import repair_turns

SHAPES = ("alpaca", "sharegpt", "openai")

# ShareGPT role spellings seen in the wild (ShareGPT dumps, LLaMA-Factory, FastChat, Vicuna, OpenChat).
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "prompter": "user", "question": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "bot": "assistant", "gpt-4": "assistant", "claude": "assistant",
    "system": "system",
}
OPENAI_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# What ``--repair`` reads a role outside a shape's own spellings as (``role_alias``): any spelling of either.
ROLE_ALIASES = {**SHAREGPT_ROLES, **OPENAI_ROLES}
ID_KEYS = ("id", "uid", "sample_id")
CONVERSATION_KEYS = ("conversations", "conversation")
ALPACA_INSTRUCTION = ("instruction", "prompt", "question")
ALPACA_INPUT = ("input", "context")
ALPACA_OUTPUT = ("output", "response", "completion", "answer")


class RecordProblem(ValueError):
    """A record that cannot become a canonical one; ``reason`` is a stable code used in reports."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def detect_shape(obj: Any) -> str | None:
    """The shape a dict looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "openai"
    if any(k in obj for k in CONVERSATION_KEYS):
        return "sharegpt"
    if any(k in obj for k in ALPACA_INSTRUCTION) and any(k in obj for k in ALPACA_OUTPUT):
        return "alpaca"
    return None


def _first_key(obj: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in obj and obj[k] is not None), None)


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: keep text parts; anything else (images, audio) is not text SFT data.
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
    raise RecordProblem("wrong_type", f"{what} must be a string, got {type(value).__name__}")


def _source_id(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    key = _first_key(obj, ID_KEYS)
    if key is None:
        return None, None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordProblem("wrong_type", f"'{key}' must be a string or integer, got {type(value).__name__}")
    text = str(value)
    return (text if text.strip() else None), key


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def validate_conversation(turns: list[Turn]) -> None:
    """Enforce the turn grammar every downstream stage relies on.

    [system] user assistant (user assistant)*: the system prompt only first, roles alternating, starting with a
    user turn and ending with an assistant turn, no empty turn.
    """
    if not turns:
        raise RecordProblem("no_assistant_turn", "conversation is empty")
    body = turns[1:] if turns[0].role == "system" else turns
    for i, t in enumerate(turns):
        if not t.content.strip():
            reason = {"assistant": "empty_response", "user": "empty_instruction"}.get(t.role, "empty_content")
            raise RecordProblem(reason, f"turn {i} ({t.role}) is empty")
    if not any(t.role == "assistant" for t in body):
        raise RecordProblem("no_assistant_turn", "conversation has no assistant turn")
    for i, t in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if t.role != want:
            where = i + (len(turns) - len(body))
            raise RecordProblem(
                "broken_turn_order",
                f"turn {where} is {t.role!r} where {want!r} was expected ([system] user assistant ... alternating)",
            )
    if body[-1].role != "assistant":
        raise RecordProblem("broken_turn_order", "conversation ends with a user turn that has no answer")


def _turns_from_list(items: Any, what: str, role_key: str, content_key: str, roles: dict[str, str],
                     extras: dict[str, Any], aliases: list[int] | None = None) -> list[Turn]:
    """The turns of a list of role/content objects. With ``aliases`` (a repair), roles outside the shape's own
    spellings are read through ``ROLE_ALIASES`` and the indices of those turns are appended to it."""
    if not isinstance(items, list):
        raise RecordProblem("wrong_type", f"'{what}' must be a list of turns, got {type(items).__name__}")
    turns = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordProblem("wrong_type", f"{what}[{i}] must be an object, got {type(item).__name__}")
        rk = role_key if role_key in item else ("role" if "role" in item else None)
        ck = content_key if content_key in item else ("content" if "content" in item else None)
        if rk is None or ck is None:
            raise RecordProblem("missing_field", f"{what}[{i}] needs '{role_key}' and '{content_key}'")
        role = item[rk]
        if not isinstance(role, str):
            raise RecordProblem("wrong_type", f"{what}[{i}].{rk} must be a string")
        canon = roles.get(role.strip().lower())
        if canon is None and aliases is not None:
            canon = ROLE_ALIASES.get(role.strip().lower())
            if canon is not None:
                aliases.append(i)
        if canon is None:
            raise RecordProblem("unknown_role", f"{what}[{i}] has unknown role {role!r}")
        turns.append(Turn(canon, _text(item[ck], f"{what}[{i}].{ck}")))
        rest = {k: v for k, v in item.items() if k not in (rk, ck)}
        if rest:
            extras[str(i)] = rest
    return turns


def from_dict(obj: Any, shape: str | None = None, source: str = "") -> Record:
    """Turn one raw dict into a validated ``Record`` (shape auto-detected unless given)."""
    turns, source_id, metadata = _parse(obj, shape, None)
    validate_conversation(turns)
    return Record.make(turns, source=source, source_id=source_id, metadata=metadata)


REPAIRED_SUFFIX = "#repaired"


def repaired_from_dict(obj: Any, shape: str | None = None, source: str = "") -> Record:
    """``from_dict`` for a record that failed validation, after the repairs of ``divscope.io.repair``.

    The record gets a new id (the source's id + ``#repaired``, else the repaired content's hash) and carries
    ``repaired_from`` (its id before repair) and ``repairs`` (the kinds applied, in order) in its metadata.
    Raises ``RecordProblem`` for what no repair can save (reason as validation gives it after the repairs).
    """
    if (shape or detect_shape(obj)) == "alpaca":  # one instruction, one output: nothing to repair
        return from_dict(obj, shape, source)
    aliases: list[int] = []
    turns, source_id, metadata = _parse(obj, shape, aliases)
    fixed, applied = repair_turns([(t.role, t.content) for t in turns])
    if aliases:
        applied.insert(0, "role_alias")
    if not applied:  # no repair applies: the record's own problem stands
        return from_dict(obj, shape, source)
    repaired = [Turn(str(role), content) for role, content in fixed]
    try:
        validate_conversation(repaired)
    except RecordProblem as p:
        raise RecordProblem(p.reason, f"{p.detail} (after repairs: {', '.join(applied)})") from None
    metadata["repaired_from"] = source_id if source_id is not None else content_hash(tuple(turns))
    metadata["repairs"] = applied
    new_id = source_id + REPAIRED_SUFFIX if source_id is not None else None
    return Record.make(repaired, source=source, source_id=new_id, metadata=metadata)


def _parse(obj: Any, shape: str | None, aliases: list[int] | None) -> tuple[list[Turn], str | None, dict[str, Any]]:
    """A raw dict's turns (not yet validated), its own id and its metadata."""
    if not isinstance(obj, dict):
        raise RecordProblem("wrong_type", f"a record must be a JSON object, got {type(obj).__name__}")
    found = detect_shape(obj)
    shape = shape or found
    if shape is None:
        keys = ", ".join(sorted(obj)[:8]) or "none"
        raise RecordProblem(
            "unknown_format",
            f"not alpaca (instruction/output), ShareGPT (conversations) or OpenAI (messages); keys: {keys}",
        )
    if found is not None and found != shape:
        raise RecordProblem("mixed_format", f"record looks like {found}, but the file is read as {shape}")
    source_id, id_key = _source_id(obj)
    used = {id_key} if id_key else set()
    turn_extras: dict[str, Any] = {}
    if shape == "alpaca":
        turns = _alpaca_turns(obj, used)
    elif shape == "sharegpt":
        key = _first_key(obj, CONVERSATION_KEYS) or "conversations"
        used.add(key)
        turns = _turns_from_list(obj.get(key), key, "from", "value", SHAREGPT_ROLES, turn_extras, aliases)
        if "system" in obj and obj["system"] is not None:
            used.add("system")
            turns.insert(0, Turn("system", _text(obj["system"], "system")))
    elif shape == "openai":
        used.add("messages")
        turns = _turns_from_list(obj.get("messages"), "messages", "role", "content", OPENAI_ROLES, turn_extras,
                                 aliases)
    else:
        raise RecordProblem("unknown_format", f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    metadata = {k: _jsonable(v) for k, v in obj.items() if k not in used and k != "divscope_metadata"}
    nested = obj.get("divscope_metadata")
    if isinstance(nested, str):  # columnar writers store it as JSON text
        try:
            nested = json.loads(nested)
        except json.JSONDecodeError:
            pass
    if isinstance(nested, dict):
        metadata.update(_jsonable(nested))
    elif nested is not None:
        metadata["divscope_metadata"] = _jsonable(nested)
    if turn_extras:
        metadata["turn_extra"] = _jsonable(turn_extras)
    return turns, source_id, metadata


def _alpaca_turns(obj: dict[str, Any], used: set[str]) -> list[Turn]:
    ik = _first_key(obj, ALPACA_INSTRUCTION)
    ok = _first_key(obj, ALPACA_OUTPUT)
    if ik is None:
        raise RecordProblem("missing_field", "missing 'instruction'")
    if ok is None:
        raise RecordProblem("missing_field", "missing 'output'")
    used.update({ik, ok})
    instruction = _text(obj[ik], ik)
    output = _text(obj[ok], ok)
    if not instruction.strip():
        raise RecordProblem("empty_instruction", f"'{ik}' is empty")
    if not output.strip():
        raise RecordProblem("empty_response", f"'{ok}' is empty")
    inp_key = _first_key(obj, ALPACA_INPUT)
    if inp_key:
        used.add(inp_key)
        inp = _text(obj[inp_key], inp_key)
        if inp.strip():
            instruction = f"{instruction}\n{inp}"  # LLaMA-Factory's join, so files train the same there
    turns: list[Turn] = []
    if obj.get("system") is not None:
        used.add("system")
        system = _text(obj["system"], "system")
        if system.strip():
            turns.append(Turn("system", system))
    if obj.get("history") is not None:
        used.add("history")
        history = obj["history"]
        if not isinstance(history, list):
            raise RecordProblem("wrong_type", "'history' must be a list of [instruction, response] pairs")
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RecordProblem("wrong_type", f"history[{i}] must be an [instruction, response] pair")
            turns.append(Turn("user", _text(pair[0], f"history[{i}][0]")))
            turns.append(Turn("assistant", _text(pair[1], f"history[{i}][1]")))
    turns.append(Turn("user", instruction))
    turns.append(Turn("assistant", output))
    return turns


# Keys that mean something to some shape: metadata columns with these names are nested under
# ``divscope_metadata`` on write (and unnested on read) so they can never be mistaken for the payload.
RESERVED_KEYS = frozenset(
    {"messages", "system", "history", "divscope_metadata", *ID_KEYS, *CONVERSATION_KEYS,
     *ALPACA_INSTRUCTION, *ALPACA_INPUT, *ALPACA_OUTPUT}
)


def to_dict(record: Record, shape: str) -> dict[str, Any]:
    """A record in a shape's native layout; metadata columns are written back beside the payload.

    The id is written only when the source gave one: otherwise it is the content hash, recomputed on read.
    """
    return shape_dict(record.messages(), record.source_id, dict(record.metadata), shape)


def shape_dict(messages: list[dict[str, str]], source_id: str | None, meta: dict[str, Any], shape: str
               ) -> dict[str, Any]:
    """``to_dict`` of a record given as its messages (``{"role", "content"}`` dicts, taken as they are),
    source id and metadata (a dict this call may change): what a writer reading a pool's rows directly uses."""
    out: dict[str, Any] = {"id": source_id} if source_id is not None else {}
    if shape == "openai":
        out["messages"] = messages
    elif shape == "sharegpt":
        role = {"user": "human", "assistant": "gpt", "system": "system"}
        out["conversations"] = [{"from": role[t["role"]], "value": t["content"]} for t in messages]
    elif shape == "alpaca":
        conv = messages
        if conv and conv[0]["role"] == "system":
            out["system"] = conv[0]["content"]
            conv = conv[1:]
        history = [[conv[i]["content"], conv[i + 1]["content"]] for i in range(0, len(conv) - 2, 2)]
        if history:
            out["history"] = history
        out.update({"instruction": conv[-2]["content"], "input": "", "output": conv[-1]["content"]})
    else:
        raise ValueError(f"unknown shape {shape!r}")
    nested = {k: meta.pop(k) for k in sorted(meta) if k in RESERVED_KEYS}
    out.update(meta)
    if nested:
        out["divscope_metadata"] = nested
    return out
