"""Plain helpers shared by several test modules (tests/ is on sys.path: ``from helpers import real_pairs``).

Fixtures live in tests/conftest.py; this module holds what tests call directly."""

from __future__ import annotations

POOL_N = 240  # samples in the shared real-data pool of the ``pool_dir`` / ``ws`` fixtures (tests/conftest.py)


def tiny_study(strategies: str = "[instruction-micro, random]", max_len: int = 48, limit: int = 4,
               name: str = "tiny") -> str:
    """A study spec small enough for a test: 200 real pairs, 2 levels, 8 samples, 1 training step."""
    return f"""
name: {name}
pool:
  source: builtin:sharegpt-pairs?n=200&seed=4
selection:
  strategies: {strategies}
  levels: 2
  sizes: [8]
  baseline_seeds: [0]
train:
  max_steps: 1
  batch_size: 4
  max_len: {max_len}
evaluate:
  - eval_set: alpaca_eval
    method: nll
    limit: {limit}
    max_len: 96
"""


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


def assert_one_line_errors(cases: list, capsys, *not_written) -> None:
    """Each (CLI args, message start) exits 2 with one line on stderr starting with the message, and none of
    ``not_written`` (the outputs those commands name) exists afterwards."""
    from divscope.cli import main

    for args, message in cases:
        capsys.readouterr()
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, err
    assert not any(p.exists() for p in not_written)
