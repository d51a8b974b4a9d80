"""The engine's sample kernel without ``--balance-by`` against the kernel of the code before it (``--old-ref``,
default the merge-base with main), on a synthetic Zipf incidence: same outputs, and the time ratio new / old
(best of ``--repeats``, old and new interleaved in one process, so both see the same machine load).

    python benchmarks/balance_kernel.py [--samples 60000] [--types 15000] [--n 5000] [--repeats 21]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]


def old_kernels(ref: str):
    ref = ref or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    text = subprocess.run(["git", "show", f"{ref}:src/divscope/select/kernels.py"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_kernels.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return ref, module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--types", type=int, default=15000)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--old-ref", default="")
    args = ap.parse_args()

    from divscope.select import kernels
    from divscope.select.engine import Engine

    ref, old = old_kernels(args.old_ref)
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, args.samples, min(args.samples, int(40000 / (t + 1)) + 2)) for t in range(args.types)]
    rows = np.concatenate(cols)
    types = np.concatenate([np.full(len(x), t) for t, x in enumerate(cols)])
    m = sp.csr_matrix((np.ones(len(rows), bool), (rows, types)), shape=(args.samples, args.types))
    m.sum_duplicates()
    m.sort_indices()
    e = Engine(m, seed=0)
    pr = e._pruning(0, "types")
    k_min, k_max = e.k_range(args.n)
    ks = [int(k_min + d * (k_max - k_min)) for d in (0, 0.5, 1)]

    def run(new: bool, k: int):
        cs, is_sorted, skey, tkey, tl = e._candidate_order(0)
        common = (e._indptr, e._indices, e._cindptr, e._crows, cs, is_sorted, skey, tkey, pr.removal_step,
                  pr.leave_step, pr.tie_rank, pr.k_max - k, args.n, tl[:0])
        if new:
            return kernels.sample(*common, np.zeros(0, np.int64), np.zeros(0, np.int64))
        return old.sample(*common)

    for k in ks:  # compile / load, sort the columns, and compare
        a, b = run(False, k), run(True, k)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), k
    times: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(args.repeats):
        for new in (False, True) if rep % 2 else (True, False):
            t = time.perf_counter()
            for k in ks:
                run(new, k)
            times[new].append(time.perf_counter() - t)
    o, w = min(times[False]), min(times[True])
    print(f"{args.samples} samples, {args.types} types, {m.nnz} nonzeros, N = {args.n}, levels d = 0, 0.5, 1; "
          f"old = {ref[:10]}")
    print(f"old {o * 1000:.1f} ms, new {w * 1000:.1f} ms, new / old {w / o:.3f} (best of {args.repeats}, "
          "interleaved); outputs identical")


if __name__ == "__main__":
    main()
