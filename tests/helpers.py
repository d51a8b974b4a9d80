"""Plain helpers shared by several test modules (tests/ is on sys.path: ``from helpers import real_pairs``).

Fixtures live in tests/conftest.py; this module holds what tests call directly."""

from __future__ import annotations

POOL_N = 240  # samples in the shared real-data pool of the ``pool_dir`` / ``ws`` fixtures (tests/conftest.py)


def real_pairs(n: int) -> list[dict]:
    """The first n real ShareGPT pairs that pass the demo filter (streams only the head of the file)."""
    from divscope.io.builtin import PairFilter, iter_builtin

    items, _ = iter_builtin("builtin:sharegpt-pairs")
    keep, out = PairFilter(), []
    for item in items:
        msgs = None if item.problem else item.value["messages"]
        if msgs and keep.keep(msgs[-2]["content"], msgs[-1]["content"]):
            out.append({"id": item.value["id"], "messages": msgs})
            if len(out) == n:
                break
    return out
