"""select stage: the selection engine (reverse greedy pruning + type-aware sampling).

    from divscope.select import Engine, Selection
    engine = Engine(incidence, seed=0)
    selection = engine.select(n=10_000, d=0.5)

``divscope.select`` is also the public function ``divscope.select(ws, strategy, n, ...) -> Subset``: the name is
this package's, so the package object itself is callable, and a call runs ``divscope.api.select`` (looked up by
name when called: the API sits in the top layer, above the metrics it also serves).
"""

import sys
import types

from divscope.select.engine import Engine, Selection, level_to_k

__all__ = ["Engine", "Selection", "level_to_k"]


class CallablePackage(types.ModuleType):
    """The class of this package's module object: calling it is ``divscope.api.select`` (see the docstring)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        import importlib

        return importlib.import_module("divscope.api").select(*args, **kwargs)


sys.modules[__name__].__class__ = CallablePackage
