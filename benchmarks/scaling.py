"""How cost grows: the selection engine at 30K, 117K and 1M samples, and featurization local vs Ray.

    python benchmarks/scaling.py                 # engine at 30K / 117K / 1M + featurization on 4,000 texts
    python benchmarks/scaling.py --sizes 30000 117000 --feat-n 1000   # quicker

1. Engine: a synthetic incidence shaped like the paper's micro incidence (``bench_select.make_incidence``:
   Zipf type frequencies, 128 types per sample as at 117K samples x 30K types x 15M nonzeros; the number of
   types grows as sqrt(n), Heaps' law), N = 8.5% of the pool (10K of 117K as in the paper) at 7 levels. Each
   size runs in a fresh child process (``bench_select.py --child``) that reports construction + pruning + 7
   levels (wall-clock and CPU time), the same again with the CSC view and hashes given as the feature cache gives
   them ("cached"), and its own peak RSS (VmHWM: loading the incidence, then the engine run; ``ru_maxrss`` would
   include the generator's peak in the parent, which Linux carries across fork + exec). Printed with the growth ratios of time and of nonzeros between sizes: growth no
   worse than linear in nonzeros means time ratio <= nonzero ratio.
2. Featurization: micro (tokenize with the target tokenizer) and macro (MiniLM embeddings) of the response side
   of ``builtin:study?n=FEAT_N``, through ``featurize(..., engine="local")`` and ``engine="ray"`` (a local Ray
   cluster with this machine's CPUs) in fresh workspaces, texts/s of the whole call (Ray's start-up included,
   reported separately), and a check that both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_select import make_incidence  # noqa: E402

PAPER_N, PAPER_TYPES, PER_SAMPLE, SELECT_FRACTION = 117_000, 30_000, 128, 10_000 / 117_000


def engine_at(n: int, seed: int) -> dict:
    n_types = round(PAPER_TYPES * (n / PAPER_N) ** 0.5)
    t = time.perf_counter()
    m = make_incidence(n, n_types, PER_SAMPLE * n, seed=seed)
    gen = time.perf_counter() - t
    n_select = round(SELECT_FRACTION * n)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inc.npz")
        np.savez(path, indptr=m.indptr, indices=m.indices, shape=np.asarray(m.shape))
        nnz, shape = m.nnz, m.shape
        del m
        env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run([sys.executable, str(HERE / "bench_select.py"), "--child", path, "--n-select",
                               str(n_select), "--seed", str(seed)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res.get("load_peak_kib") and res.get("engine_peak_kib"):
        peak = max(res["load_peak_kib"], res["engine_peak_kib"]) / 2**20  # this process's own (VmHWM)
    else:
        peak = max(res["peak_rss_kib"], res["rss_loaded_kib"]) / 2**20
    return {"n": n, "types": shape[1], "nnz": nnz, "N": n_select, "generate_s": gen,
            "engine_s": res["total_s"], "cached_s": res["cached_total_s"], "engine_cpu_s": res["total_cpu_s"],
            "cached_cpu_s": res["cached_cpu_s"], "prune_s": res["prune_s"], "peak_gib": peak,
            "engine_own_gib": (res["engine_peak_kib"] - res["rss_after_load_kib"]) / 2**20
            if res.get("engine_peak_kib") else None}


def featurization(n: int) -> list[dict]:
    import ray

    from divscope.backend import Backend, ray_init
    from divscope.features.featurize import featurize_result
    from divscope.io.ingest import ingest

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("local", "ray"):
            ingest([f"builtin:study?n={n}"], Path(tmp) / name)
        eng = Backend("ray", num_cpus=os.cpu_count())
        t = time.perf_counter()
        ray_init(eng)
        startup = time.perf_counter() - t
        for level in ("micro", "macro"):
            out = {}
            for name, engine in (("local", None), ("ray", eng)):
                t = time.perf_counter()
                res = featurize_result(Path(tmp) / name, level, "response", engine=engine)
                out[name] = (time.perf_counter() - t, res.path)
            same = all((out["local"][1] / f.name).read_bytes() == f.read_bytes()
                       for f in out["ray"][1].iterdir() if f.name != "entry.json")
            rows.append({"level": level, "n": n, "local_s": out["local"][0], "ray_s": out["ray"][0],
                         "ray_startup_s": startup, "identical": same})
        ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30_000, 117_000, 1_000_000])
    ap.add_argument("--feat-n", type=int, default=4_000, help="texts for the featurization comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, load average at start: {load:.2f}, python {sys.version.split()[0]}")

    rows = []
    for n in args.sizes:
        r = engine_at(n, args.seed)
        rows.append(r)
        print(f"  {n:>9,} samples done: {r['engine_s']:.2f} s, peak {r['peak_gib']:.2f} GiB", flush=True)
    print("\nselection engine (construction + pruning + 7 levels), paper-shaped synthetic incidence")
    print("| samples | types | nonzeros | N | engine s | cached s | engine CPU s | cached CPU s | peak RSS GiB | "
          "engine's own GiB | time ratio | nonzero ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        tr = f"{r['engine_s'] / rows[i - 1]['engine_s']:.2f}x" if i else "-"
        nr = f"{r['nnz'] / rows[i - 1]['nnz']:.2f}x" if i else "-"
        own = f"{r['engine_own_gib']:.2f}" if r["engine_own_gib"] is not None else "-"
        print(f"| {r['n']:,} | {r['types']:,} | {r['nnz']:,} | {r['N']:,} | {r['engine_s']:.2f} | {r['cached_s']:.2f} | "
              f"{r['engine_cpu_s']:.2f} | {r['cached_cpu_s']:.2f} | "
              f"{r['peak_gib']:.2f} | {own} | {tr} | {nr} |")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        growth = (b["engine_s"] / a["engine_s"]) / (b["nnz"] / a["nnz"])
        print(f"\n{a['n']:,} -> {b['n']:,}: time grew {b['engine_s'] / a['engine_s']:.2f}x for "
              f"{b['nnz'] / a['nnz']:.2f}x nonzeros (time per nonzero x{growth:.2f}; <= 1 is at most linear)")

    if args.feat_n:
        print(f"\nfeaturization of {args.feat_n:,} responses (builtin:study), local vs a local Ray cluster "
              f"with {os.cpu_count()} CPUs")
        print("| level | local texts/s | ray texts/s | ray / local | ray start-up s | same bytes |")
        print("|---|---|---|---|---|---|")
        for r in featurization(args.feat_n):
            print(f"| {r['level']} | {r['n'] / r['local_s']:,.0f} | {r['n'] / r['ray_s']:,.0f} | "
                  f"{r['local_s'] / r['ray_s']:.2f}x | {r['ray_startup_s']:.1f} | {r['identical']} |")


if __name__ == "__main__":
    main()
