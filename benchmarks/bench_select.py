"""Benchmark of the selection engine on a synthetic incidence shaped like the paper's pool.

    python benchmarks/bench_select.py            # 117K samples, 30K types, ~15M nonzeros, N = 10K, 7 levels
    python benchmarks/bench_select.py --quick    # 20K samples, 6K types, ~2M nonzeros, N = 2K

What it does:

1. Generates the incidence with numpy: type t (frequency rank r = t + 1) gets f_t = min(n, C / r^a) draws of a
   uniformly random row (Zipf-distributed type frequencies, a = 1 by default); duplicates are dropped, and C is
   set so that the expected number of distinct nonzeros, sum_t n (1 - exp(-f_t / n)), hits the target.
2. Runs the engine in a child process (so that ``ru_maxrss`` measures the engine, not the generator): numba
   warm-up on a tiny incidence (compile, or load from numba's on-disk cache), then ``Engine`` construction, the
   one-off pruning, the seeded candidate orders, and ``select(N, d)`` for d = 0, 1/6, ..., 1.
3. Runs the straightforward reference (``reference_select_levels``: recomputes every type's carrier count at
   each pruning step and every type's chosen count / candidate set at each pick, in plain numpy) on two
   scaled-down pools of m1 < m2 samples from the same generator (samples, types, nonzeros and N all scaled by
   m / n: same Zipf exponent, same types per sample), and the fast engine on the same two pools, checking that
   both give identical selections. The reference time is extrapolated to the full pool by the measured growth:
   t_ref(n) = t_ref(m2) * (n / m2)^alpha, alpha = log(t_ref(m2) / t_ref(m1)) / log(m2 / m1). The speed-up
   reported is that extrapolation divided by the fast engine's measured full-size time (construction +
   pruning + 7 levels; numba warm-up excluded); the directly measured ratios at m1 and m2 are printed too.
   (A random row subsample of the full pool would be the wrong model: on 3K of 117K rows most of the 30K
   types occur once or not at all, and the reference's growth comes out flat.) As a cross-check that does not
   depend on the extrapolation, the reference's first pruning steps are also timed on the full pool.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

LEVELS = [i / 6 for i in range(7)]


def make_incidence(n: int, n_types: int, target_nnz: int, a: float = 1.0, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    inv = 1.0 / np.arange(1, n_types + 1, dtype=np.float64) ** a

    def expected(c: float) -> float:
        f = np.minimum(n, c * inv)
        return float(np.sum(n * (1.0 - np.exp(-f / n))))

    lo, hi = 1.0, float(n) * 1e6
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if expected(mid) < target_nnz else (lo, mid)
    f = np.minimum(n, np.round(lo * inv)).astype(np.int64)
    f = np.maximum(f, 1)
    cols = np.repeat(np.arange(n_types, dtype=np.int64), f)
    rows = rng.integers(0, n, size=len(cols), dtype=np.int64)
    key = np.unique(rows * n_types + cols)
    del rows, cols
    rows = key // n_types
    cols = (key - rows * n_types).astype(np.int32)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    del key, rows
    return sp.csr_matrix((np.ones(len(cols), np.bool_), cols, indptr), shape=(n, n_types))


def _load(path: str) -> sp.csr_matrix:
    with np.load(path) as z:  # int32 index arrays, as Incidence.load reads a cache entry
        return sp.csr_matrix((np.ones(len(z["indices"]), np.bool_), z["indices"], z["indptr"].astype(np.int32)),
                             shape=tuple(z["shape"]), copy=False)


def _vm(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0); True if it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(path: str, n_select: int, seed: int) -> None:
    """Fast engine at full size; prints one JSON line."""
    from divscope.features.incidence import Incidence
    from divscope.select import Engine, kernels

    t = time.perf_counter()
    tiny = sp.random(50, 8, density=0.3, random_state=0, format="csr").astype(bool)
    Engine(tiny, seed=0).select(10, 0.5)
    warm = time.perf_counter() - t
    misses = 0
    for name in ("prune", "sample", "sort_column", "mix64"):
        stats = getattr(getattr(kernels, name), "stats", None)
        misses += sum(stats.cache_misses.values()) if stats is not None else 0
    cached = kernels.HAVE_NUMBA and misses == 0

    m = _load(path)
    inc = Incidence(m, [f"tok{i}" for i in range(m.shape[1])], "micro", "response")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # VmHWM is this process's own peak; ru_maxrss can carry the parent's peak across fork + exec on Linux.
    load_peak = _vm("VmHWM")
    reset = _reset_peak_rss()
    out: dict = {"warmup_s": warm, "numba_cache_present": cached, "rss_loaded_kib": rss_loaded,
                 "load_peak_kib": load_peak, "rss_after_load_kib": _vm("VmRSS"), "peak_reset": reset}
    t0 = time.perf_counter()
    eng = Engine(inc, seed=seed)
    out["construct_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    k_min, k_max = eng.k_range(n_select)
    out["prune_s"] = time.perf_counter() - t
    rows = []
    for d in LEVELS:
        t = time.perf_counter()
        sel = eng.select(n_select, d)
        rows.append({"d": d, "k": sel.k, "pool": sel.pool_size, "covered": sel.types_covered,
                     "s": time.perf_counter() - t})
    out["levels"] = rows
    out["total_s"] = time.perf_counter() - t0
    out["k_min"], out["k_max"] = k_min, k_max
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["engine_peak_kib"] = _vm("VmHWM") if reset else None
    print(json.dumps(out))


def time_reference(m: sp.csr_matrix, n_select: int, seed: int) -> tuple[float, float]:
    from divscope.select import Engine
    from divscope.select.reference import reference_select_levels

    t = time.perf_counter()
    ref = reference_select_levels(m, n_select, LEVELS, seed=seed)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    eng = Engine(m, seed=seed)
    fast = [eng.select(n_select, d) for d in LEVELS]
    t_fast = time.perf_counter() - t
    for r, s in zip(ref, fast, strict=True):  # the reference and the engine must agree exactly
        assert np.array_equal(r[0], s.ids) and r[1:] == (s.k, s.k_min, s.k_max, s.types_covered)
    return t_ref, t_fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20K samples, 6K types, ~2M nonzeros, N = 2K")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sub", type=int, nargs=2, default=None, metavar=("M1", "M2"),
                    help="sizes of the two scaled-down pools for the reference (default 2500 5000; quick: 2000 4000)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n-select", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n_select, args.seed)
        return

    n, n_types, nnz, n_select = (20_000, 6_000, 2_000_000, 2_000) if args.quick else \
        (117_000, 30_000, 15_000_000, 10_000)
    m1, m2 = args.sub or ((2000, 4000) if args.quick else (2500, 5000))
    print(f"cores: {os.cpu_count()}  python {sys.version.split()[0]}  numpy {np.__version__}")
    t = time.perf_counter()
    m = make_incidence(n, n_types, nnz, seed=args.seed)
    gen_s = time.perf_counter() - t
    col = np.bincount(m.indices, minlength=n_types)
    print(f"incidence: {n} samples x {n_types} types, {m.nnz:,} nonzeros, {np.count_nonzero(col)} occurring "
          f"types, max column {col.max()}, median column {int(np.median(col))}, "
          f"mean types/sample {m.nnz / n:.1f} (generated in {gen_s:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inc.npz")
        np.savez(path, indptr=m.indptr, indices=m.indices, shape=np.asarray(m.shape))
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, __file__, "--child", path, "--n-select", str(n_select),
                               "--seed", str(args.seed)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        res = json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"\nfast engine, N = {n_select}, k_min = {res['k_min']}, k_max = {res['k_max']}")
    how = "loaded from numba's on-disk cache" if res["numba_cache_present"] else "compiled"
    print(f"  numba warm-up (tiny incidence; kernels {how}): {res['warmup_s']:.2f} s")
    print(f"  Engine construction      {res['construct_s']:7.2f} s")
    print(f"  pruning (once)           {res['prune_s']:7.2f} s")
    print("  level      d       k     |pool(k)|  covered   time")
    for r in res["levels"]:
        print(f"  {r['d']:8.4f}  {r['k']:6d}  {r['pool']:10d}  {r['covered']:7d}  {r['s']:6.2f} s")
    print(f"  total (construction + pruning + 7 levels; the first level to pick a type also sorts its "
          f"candidates): {res['total_s']:.2f} s")
    peak = max(res["peak_rss_kib"], res["rss_loaded_kib"])
    print(f"  peak RSS of the engine process: {peak / 2**20:.2f} GiB (loading the incidence "
          f"alone peaked at {res['rss_loaded_kib'] / 2**20:.2f} GiB)")
    if res["engine_peak_kib"]:
        print(f"  peak RSS during the engine run: {res['engine_peak_kib'] / 2**20:.2f} GiB, of which "
              f"{res['rss_after_load_kib'] / 2**20:.2f} GiB resident before it started (interpreter + incidence);"
              f" engine's own peak: {(res['engine_peak_kib'] - res['rss_after_load_kib']) / 2**20:.2f} GiB")

    from divscope.select import Engine
    from divscope.select.reference import reference_prune
    from divscope.select.seeding import salts, type_rank

    Engine(sp.random(50, 8, density=0.3, random_state=0, format="csr").astype(bool)).select(10, 0.5)  # warm-up
    rows = []
    for sub in (m1, m2):
        ms = make_incidence(sub, max(1, round(n_types * sub / n)), round(nnz * sub / n), seed=args.seed + 1)
        ns = max(1, round(n_select * sub / n))
        t_ref, t_fast = time_reference(ms, ns, args.seed)
        rows.append((sub, ms.shape[1], ns, ms.nnz, t_ref, t_fast))
    alpha = math.log(rows[1][4] / rows[0][4]) / math.log(m2 / m1)
    t_ref_full = rows[1][4] * (n / m2) ** alpha
    fast_full = res["total_s"]
    print("\nreference (recompute coverage at every step, plain numpy) vs fast engine on scaled-down pools, "
          "7 levels, identical selections")
    print("  samples  types      N   nonzeros   reference     fast    ratio")
    for sub, nt, ns, nz, tr, tf in rows:
        print(f"  {sub:7d}  {nt:5d}  {ns:5d}  {nz:9d}  {tr:9.2f} s  {tf:6.3f} s  {tr / tf:6.0f}x")
    print(f"  growth exponent alpha = {alpha:.2f}; reference extrapolated to {n} samples: "
          f"{rows[1][4]:.2f} s * ({n}/{m2})^{alpha:.2f} = {t_ref_full:,.0f} s")
    print(f"  speed-up at full size: {t_ref_full:,.0f} s / {fast_full:.2f} s = {t_ref_full / fast_full:,.0f}x")
    steps = 20
    tie_rank = type_rank(np.arange(n_types, dtype=np.uint64), salts(args.seed)[0])
    k_max = int(np.count_nonzero(np.bincount(m.indices, minlength=n_types)))
    t = time.perf_counter()
    reference_prune(m, tie_rank, max_steps=steps)
    t_steps = time.perf_counter() - t
    print(f"  cross-check: the reference's first {steps} pruning steps on the full pool take {t_steps:.2f} s "
          f"({t_steps / steps:.3f} s/step; {k_max} steps needed; later steps are cheaper as samples leave)")

    print("\n| metric | value | goal |")
    print("|---|---|---|")
    print(f"| all 7 levels incl. one-off pruning | {fast_full:.2f} s | < 10 s |")
    print(f"| numba warm-up | {res['warmup_s']:.2f} s | |")
    print(f"| peak memory (whole engine process) | {peak / 2**20:.2f} GiB | < 4 GiB |")
    print(f"| speed-up vs reference (extrapolated) | {t_ref_full / fast_full:,.0f}x | >= 100x |")


if __name__ == "__main__":
    main()
