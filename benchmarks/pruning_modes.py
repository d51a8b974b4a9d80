"""Type pruning against the paper-literal sample pruning (``--pruning samples``) on the 20K study pool.

For each strategy, size N and level d (seven, k spacing, typeless samples excluded: the defaults), both pruning
modes select; per level the tables give k, |pool(k)|, types covered, the mean response length of the subset in
target-model tokens, and the Jaccard overlap of the two modes' subsets. The tables are written between the
markers of docs/results/pruning-modes.md (the prose around them is kept), the numbers to pruning-modes.json.

    python benchmarks/pruning_modes.py --ws /tmp/study20k/ws                       # micro, both sides
    python benchmarks/pruning_modes.py --strategies response-micro,instruction-micro,response-macro
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from study_pool import ROOT, response_lengths, study_selector

DOC = ROOT / "docs" / "results" / "pruning-modes.md"
BEGIN, END = "<!-- tables: benchmarks/pruning_modes.py -->", "<!-- end of tables -->"
LEVELS = [i / 6 for i in range(7)]


def compare(selector, lengths: np.ndarray, strategy: str, n: int, seed: int) -> list[dict]:
    rows = []
    for d in LEVELS:
        row: dict = {"d": d}
        chosen = {}
        for mode in ("types", "samples"):
            t = time.perf_counter()
            sub = selector.select(strategy, n, d, seed, pruning=mode)
            info = sub.info
            chosen[mode] = set(sub.rows.tolist())
            row[mode] = {"k": info["k"], "k_min": info["k_min"], "k_max": info["k_max"], "pool": info["pool_size"],
                         "covered": info["types_covered"], "mean_len": float(lengths[sub.rows].mean()),
                         "seconds": time.perf_counter() - t}
        row["jaccard"] = len(chosen["types"] & chosen["samples"]) / len(chosen["types"] | chosen["samples"])
        rows.append(row)
    return rows


def table(strategy: str, n: int, rows: list[dict]) -> str:
    t0, s0 = rows[0]["types"], rows[0]["samples"]
    head = (f"**{strategy}, N = {n:,}** (k_min..k_max: types {t0['k_min']:,}..{t0['k_max']:,}, samples "
            f"{s0['k_min']:,}..{s0['k_max']:,})\n\n"
            "| d | k (types) | pool | covered | mean len | k (samples) | pool | covered | mean len | Jaccard |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['d']:.3f} | {r['types']['k']:,} | {r['types']['pool']:,} | {r['types']['covered']:,} | "
        f"{r['types']['mean_len']:.0f} | {r['samples']['k']:,} | {r['samples']['pool']:,} | "
        f"{r['samples']['covered']:,} | {r['samples']['mean_len']:.0f} | {r['jaccard']:.3f} |\n" for r in rows)
    return head + body


def write_doc(tables: str, meta: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Pruning modes\n\n{BEGIN}\n{END}\n"
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    DOC.write_text(f"{before}{BEGIN}\n{meta}\n\n{tables}{END}{after}", encoding="utf-8")


def main() -> None:
    from divscope.select.registry import parse_strategies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ws", type=Path, default=Path("/tmp/study20k/ws"))
    ap.add_argument("--strategies", default="response-micro,instruction-micro")
    ap.add_argument("--sizes", default="64,1000,5000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/results alone")
    args = ap.parse_args()
    strategies = parse_strategies(args.strategies)
    sizes = [int(x) for x in args.sizes.split(",")]
    selector, spec = study_selector(args.ws, strategies)
    lengths = response_lengths(selector, spec)
    results, tables = {}, ""
    for strategy in strategies:
        for n in sizes:
            t = time.perf_counter()
            rows = compare(selector, lengths, strategy, n, args.seed)
            results[f"{strategy}/n{n}"] = rows
            tables += table(strategy, n, rows) + "\n"
            print(table(strategy, n, rows), f"({time.perf_counter() - t:.1f} s)\n", flush=True)
    meta = (f"Pool: `{spec.pool.source[0]}`, {len(selector.rows):,} eligible of {len(selector.ids):,} pairs "
            f"(evaluation overlap removed, as `examples/reproduce-cpu.yaml` does); seed {args.seed}; k spacing, "
            "typeless samples excluded; mean len = mean response length in target-model tokens.")
    if not args.no_doc:
        write_doc(tables, meta)
        DOC.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n",
                                            encoding="utf-8")
        print(f"written: {DOC}")


if __name__ == "__main__":
    main()
