"""select stage: the selection engine (reverse greedy pruning + type-aware sampling).

    from divscope.select import Engine, Selection
    engine = Engine(incidence, seed=0)
    selection = engine.select(n=10_000, d=0.5)
"""

from divscope.select.engine import Engine, Selection, level_to_k

__all__ = ["Engine", "Selection", "level_to_k"]
