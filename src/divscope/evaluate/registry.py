"""The evaluation methods by name: the three built in (``nll``, ``judge``, ``ifeval``) and any registered later.

``evaluate_run(..., method=NAME)`` looks the method up here, so a new method needs no edit to divscope::

    from divscope.evaluate.base import EvalOutcome, FunctionEvaluator
    from divscope.evaluate.registry import register_evaluator

    def answer_length(run, items, *, seed, max_len, batch_size, device, details_path, unit="chars"):
        ...
        return EvalOutcome("answer_length", score, ids, per_item, {"items": len(ids)})

    register_evaluator(FunctionEvaluator("length", answer_length))
"""

from __future__ import annotations

import re

from divscope.errors import DivscopeError
from divscope.evaluate.base import COMMON_ARGS, Evaluator, FunctionEvaluator
from divscope.evaluate.ifeval import evaluate_ifeval
from divscope.evaluate.judge import evaluate_judge
from divscope.evaluate.nll import evaluate_nll

# The name becomes part of a file name (RUN/eval/<set>.<method>.json) and of CLI/spec values.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_REGISTRY: dict[str, Evaluator] = {}


def register_evaluator(evaluator: Evaluator, *, replace: bool = False) -> Evaluator:
    """Make ``evaluator`` usable as ``method=evaluator.name``; a taken name needs ``replace=True``."""
    name = getattr(evaluator, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"evaluator name {name!r}: lowercase letters, digits, '_' and '-' only")
    if name in _REGISTRY and not replace:
        raise ValueError(f"an evaluator named {name!r} is already registered (pass replace=True to override it)")
    options = tuple(evaluator.options)
    if not all(isinstance(o, str) for o in options) or set(options) & set(COMMON_ARGS):
        raise ValueError(f"evaluator {name!r}: options must be names other than {', '.join(COMMON_ARGS)}")
    _REGISTRY[name] = evaluator
    return evaluator


def unregister_evaluator(name: str) -> None:
    """Forget a registered method (tests, plugins that clean up)."""
    _REGISTRY.pop(name, None)


def get_evaluator(name: str) -> Evaluator:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DivscopeError(f"unknown evaluation method {name!r}: use one of {', '.join(evaluator_names())}") \
            from None


def evaluator_names() -> tuple[str, ...]:
    """Registered method names, built-in ones first, in registration order."""
    return tuple(_REGISTRY)


for _builtin in (FunctionEvaluator("nll", evaluate_nll), FunctionEvaluator("judge", evaluate_judge),
                 FunctionEvaluator("ifeval", evaluate_ifeval)):
    register_evaluator(_builtin)
