"""Names -> plug-ins: one registry type behind every seam (featurizers, strategies, evaluators).

A plug-in is registered under its ``name`` attribute (a featurizer: its ``level``); the name is checked once, at registration (it becomes part
of file names, CLI values and spec fields), and so is the plug-in's declaration (``check``), so a malformed one
fails where it is registered, not later in the middle of a study.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from divscope.errors import DivscopeError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, name_pattern: str, check: Callable[[str, T], None] | None = None,
                 reserved: Iterable[str] = (), name_help: str = "", key: str = "name",
                 replace_by_default: bool = False) -> None:
        self.kind = kind
        self._key = key
        self._replace = replace_by_default
        self._pattern = re.compile(name_pattern)
        self._check = check
        self._reserved = tuple(reserved)
        self._name_help = name_help
        self._items: dict[str, T] = {}

    def register(self, item: T, *, replace: bool | None = None) -> T:
        """Make ``item`` usable by its name (its ``key`` attribute); a taken name needs ``replace=True``."""
        replace = self._replace if replace is None else replace
        name = getattr(item, self._key, None)
        if not isinstance(name, str) or not self._pattern.fullmatch(name) or name in self._reserved:
            reserved = f"; not {' / '.join(self._reserved)}" if self._reserved else ""
            raise ValueError(f"{self.kind} name {name!r}: {self._name_help}{reserved}")
        if self._check is not None:
            self._check(name, item)
        if name in self._items and not replace and self._items[name] is not item:
            raise ValueError(f"a {self.kind} named {name!r} is registered already; pass replace=True to replace it")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Forget a registered plug-in (a plug-in unloading, or a test cleaning up)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """The plug-in registered as ``name``; an unknown name is a one-line error listing the known ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise DivscopeError(f"unknown {self.kind} {name!r}: choose from {', '.join(self.names())}"
                                + did_you_mean(name, self.names())) from None

    def names(self) -> tuple[str, ...]:
        """Registered names: the built-in ones first, then in registration order."""
        return tuple(self._items)
