"""Conversation repair: documented fixes for conversations that break the turn grammar, each one named.

Real chat exports often do not follow ``[system] user assistant (user assistant)*``: ShareGPT dumps split long
conversations into chunks that open with the assistant, some turns are empty, a turn is sent in two messages.
These functions turn such a conversation into one that follows the grammar by *removing or joining* turns only;
they never write a word that was not there. Each returns the kinds it applied, in order, so the ingest can count
them and record them on the record.

Two policies share the steps below:

* ``repair_turns`` (``divscope ingest --repair``): keep as much of the conversation as the grammar allows:
  ``strip_empty`` -> ``drop_leading_assistant`` -> ``merge_consecutive`` -> ``drop_trailing_user``
  (``role_alias`` is applied while the roles are read, see ``divscope.io.shapes``).
* ``first_alternating_run`` (the ``builtin:conversations`` view): cut the conversation at its first break
  instead of joining across it: from the first user turn (with a system prompt just before it), the longest run
  of alternating, non-empty, known-role turns, then ``drop_trailing_user``.

Turns are ``(role, content)`` pairs; ``role`` is canonical (``system``/``user``/``assistant``) or ``None`` for a
role no alias names (only the builtin view passes those in; the ingest rejects them as ``unknown_role``).
"""

from __future__ import annotations

from collections.abc import Sequence

# Every repair kind, in the order ``repair_turns`` applies them (``role_alias`` comes from reading the roles).
REPAIRS = ("role_alias", "strip_empty", "drop_leading_assistant", "merge_consecutive", "drop_trailing_user")
# Validation reasons a repair can cure (``no_assistant_turn`` never can: repairs only remove or join turns).
REPAIRABLE = frozenset({"broken_turn_order", "empty_instruction", "empty_response", "empty_content",
                        "unknown_role"})
JOIN = "\n\n"  # consecutive turns of one role are joined like the instruction/response sides of a record

RoleTurn = tuple[str | None, str]


def _ok(turn: RoleTurn) -> bool:
    return turn[0] is not None and bool(turn[1].strip())


def strip_empty(turns: Sequence[RoleTurn]) -> list[RoleTurn]:
    """Drop turns whose content is empty or whitespace."""
    return [t for t in turns if t[1].strip()]


def drop_leading_assistant(turns: Sequence[RoleTurn]) -> list[RoleTurn]:
    """Drop the assistant turns before the first user turn (answers to a question that is not there); system
    turns before it stay."""
    first_user = next((i for i, t in enumerate(turns) if t[0] == "user"), len(turns))
    return [t for i, t in enumerate(turns) if i >= first_user or t[0] != "assistant"]


def merge_consecutive(turns: Sequence[RoleTurn]) -> list[RoleTurn]:
    """Join each run of turns of one role into one turn, contents separated by a blank line."""
    out: list[RoleTurn] = []
    for role, content in turns:
        if out and out[-1][0] == role:
            out[-1] = (role, out[-1][1] + JOIN + content)
        else:
            out.append((role, content))
    return out


def drop_trailing_user(turns: Sequence[RoleTurn]) -> list[RoleTurn]:
    """Drop a final user turn (a question with no answer)."""
    return list(turns[:-1]) if turns and turns[-1][0] == "user" else list(turns)


_STEPS = (("strip_empty", strip_empty), ("drop_leading_assistant", drop_leading_assistant),
          ("merge_consecutive", merge_consecutive), ("drop_trailing_user", drop_trailing_user))


def repair_turns(turns: Sequence[RoleTurn]) -> tuple[list[RoleTurn], list[str]]:
    """The ``--repair`` policy: every step that changes the turns is listed, in the order applied."""
    out, applied = list(turns), []
    for kind, step in _STEPS:
        fixed = step(out)
        if fixed != out:
            applied.append(kind)
        out = fixed
    return out, applied


def first_alternating_run(turns: Sequence[RoleTurn]) -> list[RoleTurn]:
    """The ``builtin:conversations`` policy: the first well-formed stretch, or ``[]`` when it has no exchange."""
    roles = [t[0] for t in turns]
    if "user" not in roles:
        return []
    start = end = roles.index("user")
    while end + 1 < len(turns) and _ok(turns[end]) and _ok(turns[end + 1]) and roles[end + 1] == (
            "assistant" if roles[end] == "user" else "user"):
        end += 1
    run = drop_trailing_user(turns[start:end + 1])
    if len(run) < 2:
        return []
    if start > 0 and roles[start - 1] == "system" and _ok(turns[start - 1]):
        run.insert(0, turns[start - 1])
    return run
