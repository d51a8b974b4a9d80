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

from divscope.evaluate.base import COMMON_ARGS, Evaluator, FunctionEvaluator
from divscope.evaluate.ifeval import evaluate_ifeval
from divscope.evaluate.judge import evaluate_judge
from divscope.evaluate.nll import evaluate_nll
from divscope.registry import Registry


def _check(name: str, evaluator: Evaluator) -> None:
    options = tuple(evaluator.options)
    if not all(isinstance(o, str) for o in options) or set(options) & set(COMMON_ARGS):
        raise ValueError(f"evaluator {name!r}: options must be names other than {', '.join(COMMON_ARGS)}")


# The name becomes part of a file name (RUN/eval/<set>.<method>.json) and of CLI/spec values.
_REGISTRY: Registry[Evaluator] = Registry("evaluation method", r"[a-z0-9][a-z0-9_-]*", _check,
                                          name_help="lowercase letters, digits, '_' and '-' only")
register_evaluator = _REGISTRY.register
unregister_evaluator = _REGISTRY.unregister
get_evaluator = _REGISTRY.get
evaluator_names = _REGISTRY.names


for _builtin in (FunctionEvaluator("nll", evaluate_nll), FunctionEvaluator("judge", evaluate_judge),
                 FunctionEvaluator("ifeval", evaluate_ifeval)):
    register_evaluator(_builtin)
