"""The canonical record: one SFT sample, whatever format it came from.

Every reader produces ``Record`` objects and every writer consumes them, so the rest of divscope (featurizers,
engine, metrics, training) never needs to know which format a pool was read from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def content_hash(conversation: tuple[Turn, ...] | list[Turn]) -> str:
    """Stable id of a conversation's content: sha256 over a canonical JSON form, 16 hex digits.

    Only roles and contents enter the hash, so the same conversation read from alpaca, ShareGPT or Parquet gets
    the same id, and exact duplicates across sources are detectable.
    """
    canon = json.dumps([[t.role, t.content] for t in conversation], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Record:
    """One sample.

    ``id`` is the source's own id when it gave one, else the content hash; ``content_hash`` is always kept, so
    both identities survive. ``metadata`` holds every extra column of the input, JSON-serialisable.
    """

    id: str
    conversation: tuple[Turn, ...]
    source: str = ""
    source_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""

    @staticmethod
    def make(
        conversation: list[Turn] | tuple[Turn, ...],
        source: str = "",
        source_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Record:
        conv = tuple(conversation)
        h = content_hash(conv)
        return Record(
            id=source_id if source_id else h,
            conversation=conv,
            source=source,
            source_id=source_id or None,
            metadata=dict(metadata or {}),
            content_hash=h,
        )

    # Derived views, as DESIGN.md defines the two sides of a sample.
    @property
    def instruction(self) -> str:
        """System prompt and user turns, joined in order."""
        return "\n\n".join(t.content for t in self.conversation if t.role in ("system", "user"))

    @property
    def response(self) -> str:
        """Assistant turns, joined in order."""
        return "\n\n".join(t.content for t in self.conversation if t.role == "assistant")

    def side(self, name: str) -> str:
        if name == "instruction":
            return self.instruction
        if name == "response":
            return self.response
        raise ValueError(f"unknown side {name!r}: use 'instruction' or 'response'")

    @property
    def n_turns(self) -> int:
        return sum(1 for t in self.conversation if t.role != "system")

    @property
    def system(self) -> str | None:
        return self.conversation[0].content if self.conversation and self.conversation[0].role == "system" else None

    def messages(self) -> list[dict[str, str]]:
        return [t.to_dict() for t in self.conversation]
