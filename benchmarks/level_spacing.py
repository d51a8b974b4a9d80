"""Issue 16's acceptance table: types covered per level for the six diversity strategies on the 20K study pool,
under the defaults (k spacing, typeless samples excluded), with typeless samples included (the old behaviour),
and with coverage spacing.

    python benchmarks/level_spacing.py --ws /tmp/study20k/ws --size 64 [--strategies all]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from study_pool import study_selector

LEVELS = [i / 6 for i in range(7)]
MODES = {"old (typeless include, k)": {"typeless": "include"}, "default (exclude, k)": {},
         "coverage (exclude)": {"spacing": "coverage"}}


def main() -> None:
    from divscope.select.registry import parse_strategies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ws", type=Path, default=Path("/tmp/study20k/ws"))
    ap.add_argument("--strategies", default="all")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    strategies = parse_strategies(args.strategies)
    selector, _ = study_selector(args.ws, strategies)
    out = {}
    print("| strategy | options | typed / typeless | k per level | types covered per level | strictly increasing |")
    print("|---|---|---|---|---|---|")
    for strategy in strategies:
        for label, options in MODES.items():
            t = time.perf_counter()
            infos = [selector.select(strategy, args.size, d, args.seed, **options).info for d in LEVELS]
            covered = [i["types_covered"] for i in infos]
            ks = [i["k"] for i in infos]
            strict = all(a < b for a, b in zip(covered, covered[1:], strict=False))
            extra = f" (targets {', '.join(str(i['coverage_target']) for i in infos)})" \
                if "coverage_target" in infos[0] else ""
            out[f"{strategy}/{label}"] = {"k": ks, "covered": covered, "infos": infos,
                                          "seconds": time.perf_counter() - t}
            print(f"| {strategy} | {label} | {infos[0]['typed_samples']:,} / {infos[0]['typeless_samples']:,} | "
                  f"{', '.join(f'{k:,}' for k in ks)} | {', '.join(map(str, covered))}{extra} | "
                  f"{'yes' if strict else 'no'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
