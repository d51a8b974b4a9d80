"""Benchmark of the selection engine on a synthetic incidence shaped like the paper's pool.

    python benchmarks/bench_select.py            # 117K samples, 30K types, ~15M nonzeros, N = 10K, 7 levels
    python benchmarks/bench_select.py --quick    # 20K samples, 6K types, ~2M nonzeros, N = 2K
    python benchmarks/bench_select.py --cli-only # only step 0

What it does:

0. End to end through the CLI: a workspace with a pool of as many records (string ids ``rec-0000000``...) and
   the generated incidence installed as its response-micro features, then ``divscope grid WS --strategies
   response-micro --sizes N --levels 7 --seeds 0`` run two ways, each in fresh child processes: (a) ``cli.main``
   in a child that imported divscope and warmed numba first, with the time of each stage (exclusive of the
   stages nested in it): opening the pool (footer, fingerprint), loading the incidence, reading the cached
   arrays (engine arrays, prunings, record lines), building the CSC view, hashing type names and record ids, the
   engine's construction, pruning, the 7 levels (the sample kernel, which sorts each picked type's candidates
   lazily: "sorts" is measured apart, as the first level's time minus the same level's again), encoding the
   pool's record lines, writing the subsets and manifests, and the rest; (b) the whole command as a user runs
   it, one fresh interpreter (start-up, imports and numba's start-up included), its CPU time taken from
   ``getrusage(RUSAGE_CHILDREN)``. Every time is printed as wall-clock and as CPU time (user + system, all
   threads): on a machine shared with other jobs the CPU time is the steadier measure.
   "old" is the code of each ``--old-ref`` (default: the commit this branch started from, ``git merge-base HEAD
   main``), extracted with ``git archive`` into a temporary folder and run the same way in the same session, so
   both see the same machine load. States: "cold" is the first grid after ingest + featurize (nothing the grid
   caches: engine arrays, prunings, remembered fingerprint checks; the record lines ingest encodes are there for
   the new code), "no lines" the same without the record lines (a workspace ingested by an older divscope: this
   grid encodes them), "cached" every later grid. Each variant runs ``--repeats`` times (default 3) and the best
   is reported; the subsets, manifests and dataset_info.json of every variant are compared byte for byte.

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
import shutil
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
    for name in ("prune", "sample", "sort_column", "mix64", "transpose"):
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
    t0, c0 = time.perf_counter(), time.process_time()
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
    out["total_s"], out["total_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["k_min"], out["k_max"] = k_min, k_max
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["engine_peak_kib"] = _vm("VmHWM") if reset else None
    # What a later CLI call does: the seed-independent arrays (CSC, hashes) come from the feature cache.
    arrays = eng.arrays()  # (read only by the engine: no copy needed)
    t0, c0 = time.perf_counter(), time.process_time()
    again = Engine(inc, seed=seed, arrays=arrays)
    again.k_range(n_select)
    sels = [again.select(n_select, d) for d in LEVELS]
    out["cached_total_s"], out["cached_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    assert sels == [eng.select(n_select, d) for d in LEVELS]
    print(json.dumps(out))


CLI_CHILD = r"""
import importlib, json, sys, time
ws, out, n_select = sys.argv[1], sys.argv[2], sys.argv[3]
import scipy.sparse as sp
cli, featurize, workspace, engine, kernels, seeding, subsets, cached = (importlib.import_module(f"divscope.{m}") for m in (
    "cli", "features.featurize", "io.workspace", "select.engine", "select.kernels", "select.seeding",
    "select.subsets", "store.cached"))

engine.Engine(sp.random(50, 8, density=0.3, random_state=0, format="csr").astype(bool)).select(10, 0.5)  # numba

STACK, TIMES, CPU = [], {}, {}


def wrap(owner, attr, label):
    f = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if f is None:
        return

    def timed(*a, **k):
        STACK.append([0.0, 0.0])
        t, c = time.perf_counter(), time.process_time()
        try:
            return f(*a, **k)
        finally:
            dt, dc = time.perf_counter() - t, time.process_time() - c
            inner = STACK.pop()
            TIMES[label] = TIMES.get(label, 0.0) + dt - inner[0]
            CPU[label] = CPU.get(label, 0.0) + dc - inner[1]
            if STACK:
                STACK[-1][0] += dt
                STACK[-1][1] += dc

    setattr(owner, attr, timed)


writers = importlib.import_module("divscope.io.writers")
for owner, attr, label in [
        (workspace.Pool, "__init__", "open pool"), (workspace, "fingerprint_rows", "open pool"),
        (workspace.Pool, "column", "open pool"),
        (featurize, "load_incidence", "incidence load"), (cached, "cached_arrays", "cached arrays"),
        (cached, "stored_arrays", "cached arrays"),
        (kernels, "transpose", "CSC"), (engine.Engine, "_csc", "CSC"),
        (seeding, "hash_strings", "hashing"), (engine, "hash_strings", "hashing"),
        (engine.Engine, "__init__", "engine construction"), (kernels, "prune", "pruning"),
        (kernels, "sample", "levels"), (subsets, "write_subset", "writing"),
        (writers, "encode_pool", "encoding record lines")]:
    wrap(owner, attr, label)
t, cpu = time.perf_counter(), time.process_time()
rc = cli.main(["grid", ws, "--strategies", "response-micro", "--sizes", n_select, "--levels", "7", "--seeds", "0",
               "-o", out])
total, cpu = time.perf_counter() - t, time.process_time() - cpu
assert rc == 0, rc
stages, cpu_stages = dict(TIMES), dict(CPU)
# sorts: the first level picks every type for the first time; the same level again finds them sorted
from divscope.select.strategies import Selector
eng = Selector(ws).engine("response", "micro", 0)
eng.k_range(int(n_select))
t, c = time.perf_counter(), time.process_time()
eng.select(int(n_select), 0.0)
first, first_cpu = time.perf_counter() - t, time.process_time() - c
t, c = time.perf_counter(), time.process_time()
eng.select(int(n_select), 0.0)
again, again_cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"total": total, "cpu": cpu, "stages": stages, "cpu_stages": cpu_stages,
                  "sorts": max(0.0, first - again), "sorts_cpu": max(0.0, first_cpu - again_cpu)}))
"""

STAGES = ("open pool", "incidence load", "cached arrays", "CSC", "hashing", "engine construction", "pruning",
          "levels", "encoding record lines", "writing")
# The whole command as a user runs it: a fresh interpreter, imports and numba's start-up included.
PROCESS = "import sys; from divscope.cli import main; sys.exit(main(sys.argv[1:]))"


def make_workspace(path: Path, m: sp.csr_matrix) -> Path:
    """A workspace whose pool has ``m``'s rows as records (string ids) and ``m`` as its response-micro features."""
    import divscope
    from divscope.features.featurize import ENTRY_FILE, LATEST_FILE, features_dir
    from divscope.features.incidence import Incidence
    from divscope.store.atomic import write_json

    src = path.with_suffix(".jsonl")
    with open(src, "w", encoding="utf-8") as fh:
        for i in range(m.shape[0]):
            fh.write(json.dumps({"id": f"rec-{i:07d}", "instruction": f"question {i}", "response": f"answer {i}"})
                     + "\n")
    divscope.ingest(str(src), path)
    ws = divscope.Workspace(path)
    inc = Incidence(m, [f"tok{i}" for i in range(m.shape[1])], "micro", "response", {"synthetic": True},
                    ws.pool.fingerprint)
    d = features_dir(ws, "response", "micro")
    inc.save(d / "bench")
    write_json(d / "bench" / ENTRY_FILE, {"key": "bench", "level": "micro", "side": "response", "config": {},
                                          "identity": "", "pool_fingerprint": ws.pool.fingerprint,
                                          "incidence_fingerprint": inc.fingerprint, "extras": {}})
    write_json(d / LATEST_FILE, {"key": "bench", "time": 0})
    return d / "bench"


def grid_args(ws: Path, out: Path, n_select: int) -> list[str]:
    return ["grid", str(ws), "--strategies", "response-micro", "--sizes", str(n_select), "--levels", "7", "--seeds",
            "0", "-o", str(out)]


def cli_run(src: str, ws: Path, out: Path, n_select: int) -> dict:
    """The grid in a child that imported divscope and warmed numba first: per-stage times of ``cli.main``."""
    env = {**os.environ, "PYTHONPATH": src, "DIVSCOPE_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", CLI_CHILD, str(ws), str(out), str(n_select)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def process_run(src: str, ws: Path, out: Path, n_select: int) -> dict:
    """The grid as one fresh process: wall-clock and CPU time (user + system, all threads, from
    ``getrusage(RUSAGE_CHILDREN)``), interpreter start-up, imports and numba's start-up included."""
    env = {**os.environ, "PYTHONPATH": src, "DIVSCOPE_PROGRESS": "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROCESS, *grid_args(ws, out, n_select)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    return {"total": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def same_outputs(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def forget(ws: Path, entry: Path, lines: bool) -> None:
    """Remove what a grid caches in the workspace (engine arrays, prunings, remembered fingerprint checks) and,
    with ``lines``, the record lines ingest encodes: the next grid starts cold."""
    from divscope.features.featurize import VERIFIED_FILE
    from divscope.io.workspace import POOL_MEMO

    for d in (entry / "engine", entry / "engine-pruning", *([ws / "cache" / "lines"] if lines else [])):
        shutil.rmtree(d, ignore_errors=True)
    (entry / VERIFIED_FILE).unlink(missing_ok=True)
    (ws / POOL_MEMO).unlink(missing_ok=True)


def bench_cli(m: sp.csr_matrix, n_select: int, repeats: int, old_refs: list[str]) -> None:
    """Step 0 (see the module docstring): the CLI grid, old vs new, cold and cached, stage by stage."""
    root = Path(__file__).resolve().parents[1]
    refs = old_refs or [subprocess.run(["git", "-C", str(root), "merge-base", "HEAD", "main"], capture_output=True,
                                       text=True, check=True).stdout.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        srcs = {}
        for ref in refs:
            old_src = tmp_path / f"old-{ref[:10]}"
            old_src.mkdir()
            archive = subprocess.run(["git", "-C", str(root), "archive", ref, "src"], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive.stdout, check=True)
            srcs[f"old {ref[:7]}"] = str(old_src / "src")
        t = time.perf_counter()
        ws = tmp_path / "ws"
        entry = make_workspace(ws, m)
        print(f"\nCLI grid, end to end: workspace of {m.shape[0]:,} records (string ids) with the incidence as its "
              f"response-micro features, built in {time.perf_counter() - t:.1f} s; old = "
              + ", ".join(f"{r[:10]}" for r in refs))
        new_src = str(root / "src")
        # cold: the first grid after ingest + featurize (the record lines come from ingest); "no lines": a
        # workspace ingested before record lines existed, encoded on this first grid; cached: every later grid.
        variants = [(f"{name}, {state}", src, state) for state in ("cold", "cached") for name, src in srcs.items()]
        variants += [("new, no lines", new_src, "no lines"), ("new, cold", new_src, "cold"),
                     ("new, cached", new_src, "cached")]
        staged: dict[str, list[dict]] = {n: [] for n, _, _ in variants}
        whole: dict[str, list[dict]] = {n: [] for n, _, _ in variants}
        outs = {}
        for i in range(repeats):
            for how, runner, results in (("stages", cli_run, staged), ("process", process_run, whole)):
                for label, src, state in variants:
                    if state != "cached":
                        forget(ws, entry, lines=state == "no lines")
                    out = tmp_path / f"out-{how}-{label.replace(', ', '-').replace(' ', '-')}-{i}"
                    results[label].append(runner(src, ws, out, n_select))
                    outs[(how, label)] = out
        identical = all(same_outputs(outs[next(iter(outs))], o) for o in outs.values())
    for clock, total, stages_key, sorts_key in (("wall-clock", "total", "stages", "sorts"),
                                                 ("CPU (process time, all threads)", "cpu", "cpu_stages",
                                                  "sorts_cpu")):
        best = {n: min(rs, key=lambda r, k=total: r[k]) for n, rs in staged.items()}
        proc = {n: min(rs, key=lambda r, k=total: r[k]) for n, rs in whole.items()}
        names = list(best)
        print(f"\n  divscope grid --strategies response-micro --sizes {n_select} --levels 7 --seeds 0: {clock} "
              f"seconds, best of {repeats} runs each (each stage exclusive of those nested in it)")
        print("  | stage | " + " | ".join(names) + " |")
        print("  |---|" + "---|" * len(names))
        for stage in STAGES:
            print(f"  | {stage} | " + " | ".join(f"{best[n][stages_key].get(stage, 0.0):.3f}" for n in names) + " |")
        print("  | sorts (part of levels) | " + " | ".join(f"{best[n][sorts_key]:.3f}" for n in names) + " |")
        rest = {n: best[n][total] - sum(best[n][stages_key].values()) for n in names}
        print("  | other (settings, grid.json, tables) | " + " | ".join(f"{rest[n]:.3f}" for n in names) + " |")
        sel = {n: best[n][total] - best[n][stages_key].get("writing", 0.0) for n in names}
        print("  | **selection (all but writing)** | " + " | ".join(f"**{sel[n]:.3f}**" for n in names) + " |")
        print("  | **grid command (cli.main, modules imported, numba warm)** | "
              + " | ".join(f"**{best[n][total]:.3f}**" for n in names) + " |")
        print("  | **whole process (interpreter, imports, numba start-up)** | "
              + " | ".join(f"**{proc[n][total]:.3f}**" for n in names) + " |")
        for n in names:
            if not n.startswith("new"):
                continue
            for o in names:
                if o.startswith("new") or not o.endswith(", cached" if n == "new, cached" else ", cold"):
                    continue
                print(f"  {n} / {o} ({clock}): grid command {best[n][total] / best[o][total]:.2f}x "
                      f"({best[o][total] / best[n][total]:.1f}x faster), whole process "
                      f"{proc[n][total] / proc[o][total]:.2f}x")
    print(f"  load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"  subsets, manifests and dataset_info.json of every variant byte-identical: {identical}")
    if not identical:
        sys.exit("old and new selections differ")


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
    ap.add_argument("--cli-only", action="store_true", help="only the end-to-end CLI comparison (step 0)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant in step 0 (the best is reported)")
    ap.add_argument("--old-ref", action="append", default=[],
                    help="git commit of old code in step 0, repeatable [merge-base with main]")
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
    bench_cli(m, n_select, args.repeats, args.old_ref)
    if args.cli_only:
        return

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
    print(f"  the same with the CSC view and hashes given (as the feature cache gives them): "
          f"{res['cached_total_s']:.2f} s")
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
