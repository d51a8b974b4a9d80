"""What every evaluation method is: an :class:`Evaluator` that turns a run and its held-out items into an
:class:`EvalOutcome`.

One shape for every method (``nll``, ``judge``, ``ifeval`` or one registered by a user, see
:mod:`divscope.evaluate.registry`) so that ``evaluate_run`` needs no per-method code and analyses can read the
per-item scores of any method the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from divscope.errors import DivscopeError
from divscope.io.evalsets import EvalItem
from divscope.train.run import Run

# Keyword arguments every evaluator receives from ``evaluate_run``; anything else is a method option.
COMMON_ARGS = ("seed", "max_len", "batch_size", "device", "details_path")
# Keys ``evaluate_run`` writes itself: a method's details must not shadow them.
RESERVED_KEYS = frozenset({"metric", "score", "per_item", "params", "divscope_version", "excluded_overlapping",
                           "train_fingerprint"})


@dataclass(frozen=True)
class EvalOutcome:
    """A method's result: ``score`` (higher is better) named by ``metric``, per-item scores and the rest.

    ``per_item[i]`` is the score of item ``item_ids[i]``, on the scale and in the direction of ``score`` (so an
    analysis never needs to know the method): only items that got a score are listed. ``details`` holds every
    other number the method reports; they are written beside ``metric`` and ``score`` in the result JSON.
    """

    metric: str
    score: float
    item_ids: list[str]
    per_item: list[float]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.per_item):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.per_item)} per-item scores")
        if len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item ids of an outcome must be distinct")
        clash = RESERVED_KEYS & set(self.details)
        if clash:
            raise ValueError(f"details must not set {', '.join(sorted(clash))} (written by evaluate_run)")

    def per_item_map(self) -> dict[str, float]:
        return dict(zip(self.item_ids, self.per_item, strict=True))


class Evaluator(Protocol):
    """An evaluation method. ``options`` names the keyword options ``evaluate`` accepts beyond ``COMMON_ARGS``;
    ``evaluate_run`` refuses any other before loading anything."""

    name: str
    options: tuple[str, ...]

    def evaluate(self, run: Run, items: list[EvalItem], *, seed: int, max_len: int, batch_size: int,
                 device: str | None, details_path: Path, **options: Any) -> EvalOutcome: ...


def option_names(func: Callable[..., Any]) -> tuple[str, ...]:
    """The method options of an evaluate function: its keyword-only parameters other than ``COMMON_ARGS``.

    Read from the signature so the accepted options cannot drift from the ones the function really takes."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"{func.__qualname__} takes **kwargs: its options cannot be checked; name them")
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_ARGS)


@dataclass(frozen=True)
class FunctionEvaluator:
    """An :class:`Evaluator` made of a name and a function ``f(run, items, *, <COMMON_ARGS>, <options>)``."""

    name: str
    func: Callable[..., EvalOutcome]

    @property
    def options(self) -> tuple[str, ...]:
        return option_names(self.func)

    def evaluate(self, run: Run, items: list[EvalItem], **kwargs: Any) -> EvalOutcome:
        return self.func(run, items, **kwargs)


def check_options(evaluator: Evaluator, options: dict[str, Any]) -> None:
    """A one-line user error naming the accepted options when ``options`` holds one the method does not take."""
    unknown = sorted(set(options) - set(evaluator.options))
    if unknown:
        accepted = ", ".join(evaluator.options) or "none"
        raise DivscopeError(f"unknown option(s) for method {evaluator.name}: {', '.join(unknown)}; "
                            f"accepted: {accepted}")
