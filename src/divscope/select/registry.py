"""The strategy registry: names -> strategies. The nine built-ins are registered on import; a third party
registers its own without editing divscope, and ``Selector.select``, ``run_grid`` and ``parse_strategies``
then accept its name.

    from divscope.select.registry import register_strategy
    register_strategy(MyStrategy())          # any object following divscope.select.protocol.Strategy
"""

from __future__ import annotations

from divscope.errors import DivscopeError, did_you_mean
from divscope.registry import Registry
from divscope.select.builtin import BUILTIN
from divscope.select.protocol import ROW_ORDERS, Needs, SelectionContext, Strategy

__all__ = ["Needs", "SelectionContext", "Strategy", "get_strategy", "register_strategy", "strategy_names",
           "unregister_strategy"]

RESERVED = ("all", "baselines")  # words of ``parse_strategies``


def _check(name: str, strategy: Strategy) -> None:
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy {name!r} does not follow divscope.select.protocol.Strategy (it needs name, "
                        "takes_level, row_order, seed_sensitive, needs() and select())")
    if not isinstance(strategy.takes_level, bool) or not isinstance(strategy.seed_sensitive, bool):
        raise TypeError(f"strategy {name!r}: takes_level and seed_sensitive must be bool")
    if strategy.row_order not in ROW_ORDERS:
        raise ValueError(f"strategy {name!r}: row_order must be one of {', '.join(ROW_ORDERS)}")


# The name is also a folder name in a grid.
_REGISTRY: Registry[Strategy] = Registry("strategy", r"[A-Za-z0-9][A-Za-z0-9._-]*", _check, RESERVED,
                                         "letters, digits, '.', '_', '-'")
register_strategy = _REGISTRY.register
unregister_strategy = _REGISTRY.unregister
get_strategy = _REGISTRY.get
strategy_names = _REGISTRY.names


for _builtin in BUILTIN:
    register_strategy(_builtin)


STRATEGIES = tuple(s.name for s in BUILTIN if s.takes_level)  # the six; "all" in parse_strategies
BASELINES = tuple(s.name for s in BUILTIN if not s.takes_level)  # "baselines"
ALL = STRATEGIES + BASELINES  # the built-ins (strategy_names() also lists registered third-party ones)


def parse_strategies(spec: str) -> list[str]:
    """``all`` (the six), ``baselines`` (the three built-in ones), or a comma list of registered names."""
    out: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out += STRATEGIES
        elif part == "baselines":
            out += BASELINES
        elif part in strategy_names():
            out.append(part)
        else:
            raise DivscopeError(f"unknown strategy {part!r}: choose from all, baselines, "
                                f"{', '.join(strategy_names())}"
                                + did_you_mean(part, ("all", "baselines", *strategy_names())))
    return list(dict.fromkeys(out))
