"""What ``--balance-by`` costs a strategy's own objective, and its time, on ``builtin:demo`` (3,000 pairs).

The pool gets a metadata column ``length``: the tertile (short / medium / long) of each response's length in
characters, so the three values have equal shares (1,000 each). The micro strategies favour long responses at
high levels (more token types), so the column shows the skew balancing removes. For each strategy and level,
N = 500 is selected without and with ``--balance-by length``; the table gives the share of each tertile, the
types covered (the micro strategies' objective) and the time of each selection (best of ``--repeats``, the
ratio balanced / unbalanced measured in the same run).

    python benchmarks/balance_cost.py [--n 500] [--repeats 3] [--work /tmp/balance-cost]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

STRATEGIES = ["response-micro", "instruction-micro", "random"]
LEVELS = [0.0, 0.5, 1.0]


def pool(work: Path) -> Path:
    """The demo pool with the ``length`` tertile column, micro features of both sides (built once)."""
    from divscope.cli import main
    from divscope.features.featurize import featurize

    ws = work / "ws"
    if (ws / "pool.parquet").exists():
        return ws
    work.mkdir(parents=True, exist_ok=True)
    assert main(["ingest", "builtin:demo", "--out", str(work / "ws0")]) == 0
    assert main(["export", str(work / "ws0"), "--to", str(work / "demo.jsonl")]) == 0
    rows = [json.loads(line) for line in (work / "demo.jsonl").read_text().splitlines()]
    lengths = np.asarray([len(r["messages"][-1]["content"]) for r in rows])
    cuts = np.quantile(lengths, [1 / 3, 2 / 3])
    names = np.asarray(["short", "medium", "long"])[np.searchsorted(cuts, lengths, side="right")]
    with open(work / "demo-length.jsonl", "w") as f:
        for r, name in zip(rows, names, strict=True):
            f.write(json.dumps({**r, "length": str(name)}) + "\n")
    assert main(["ingest", str(work / "demo-length.jsonl"), "--out", str(ws)]) == 0
    for side in ("instruction", "response"):
        featurize(ws, "micro", side)
    return ws


def best_time(f, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/balance-cost"))
    args = ap.parse_args()

    from divscope.io.workspace import Workspace
    from divscope.select.strategies import Selector

    ws = Workspace(pool(args.work))
    values = [r.metadata["length"] for r in ws.pool.records()]
    selector = Selector(ws)
    order = ("short", "medium", "long")
    print(f"pool {len(values)}: " + ", ".join(f"{v} {values.count(v)}" for v in order) + f"; N = {args.n}")
    print("| strategy | d | shares short / medium / long | types covered | balanced: shares | types covered "
          "| time balanced / unbalanced |")
    print("|---|---|---|---|---|---|---|")
    for strategy in STRATEGIES:
        for d in LEVELS if strategy != "random" else [None]:
            cells = []
            for balance in (None, "length"):
                selector.select(strategy, args.n, d, 0, balance=balance)  # warm: pruning, candidate orders
                seconds, sub = best_time(lambda s=strategy, dd=d, b=balance: selector.select(s, args.n, dd, 0, balance=b),
                                         args.repeats)
                chosen = [values[r] for r in sub.rows]
                shares = " / ".join(f"{chosen.count(v) / args.n:.1%}" for v in order)
                cells.append((shares, sub.info.get("types_covered", "-"), seconds))
            (s0, c0, t0), (s1, c1, t1) = cells
            print(f"| {strategy} | {'-' if d is None else d} | {s0} | {c0} | {s1} | {c1} | {t1 / t0:.2f} "
                  f"({t1 * 1000:.1f} / {t0 * 1000:.1f} ms) |")


if __name__ == "__main__":
    main()
