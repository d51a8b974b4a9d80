"""Argument validation shared by the engine, the baselines and every registered strategy.

One function per argument, so the same mistake gets the same one-line message whichever strategy is used
(the check battery in ``divscope.select.checks`` compares messages against these functions).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from divscope.errors import DivscopeError


def check_n(n: Any, available: int | None = None) -> int:
    """N as an int: a positive integer, and at most ``available`` (the eligible pool size) when given."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise DivscopeError(f"size N must be a positive integer, got {n!r}; pass e.g. --size 1000")
    if available is not None and int(n) > available:
        raise DivscopeError(f"cannot select {int(n)} samples from a pool of {available}: choose a size "
                            f"N <= {available} or ingest a larger pool")
    return int(n)


def check_seed(seed: Any) -> int:
    """The seed as an int: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise DivscopeError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. --seed 0")
    return int(seed)


def check_d(d: Any, strategy: str | None = None) -> float:
    """The diversity level as a float in [0, 1]; ``None`` says which strategy needs one."""
    if d is None:
        raise DivscopeError(f"strategy {strategy or '(this one)'} needs --diversity D in [0, 1]")
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(float(d)) \
            or not 0.0 <= float(d) <= 1.0:
        raise DivscopeError(f"diversity level d must be a number in [0, 1], got {d!r}; "
                            "use e.g. 0, 1/6, ..., 1 (the paper's seven levels)")
    return float(d)
