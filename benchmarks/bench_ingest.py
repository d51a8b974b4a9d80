"""Ingest throughput and peak memory on a large file, against a naive ``json.load`` reference.

Builds an N-record ShareGPT-style JSON array from the builtin pairs (each made unique), then, each in a fresh
subprocess so peak RSS is its own: (a) ``divscope.ingest`` (streaming, validated, written to Parquet) and
(b) the reference: ``json.load`` of the whole file into Python objects. Prints records/s and peak RSS of both.

    python benchmarks/bench_ingest.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
mode, path, out = sys.argv[1:4]
t = time.perf_counter()
if mode == "divscope":
    import divscope
    n = divscope.ingest(path, out).accepted
else:
    with open(path, encoding="utf-8") as fh:
        n = len(json.load(fh))
dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"n": n, "seconds": dt, "peak_mib": hwm / 1024}))
"""


def build(path: Path, n: int) -> int:
    import divscope

    with tempfile.TemporaryDirectory() as d:
        base = divscope.Workspace(divscope.ingest("builtin:demo", d).workspace.path).pool.records()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n):
            r = base[i % len(base)]
            obj = {"id": f"s{i}", "conversations": [
                {"from": "human", "value": f"{r.instruction} (variant {i})"},
                {"from": "gpt", "value": r.response}]}
            fh.write(("," if i else "") + "\n  " + json.dumps(obj, ensure_ascii=False))
        fh.write("\n]\n")
    return path.stat().st_size


def child(mode: str, path: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)], capture_output=True, text=True,
                         check=True, env={**os.environ, "DIVSCOPE_PROGRESS": "0"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.json"
        size = build(path, args.n)
        ours = child("divscope", path, Path(d) / "ws")
        ref = child("json.load", path, Path(d) / "unused")
    print(f"input: {args.n:,} records, {size / 2**20:,.1f} MiB JSON array")
    print(f"{'reader':<12}{'records/s':>12}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, r in (("divscope", ours), ("json.load", ref)):
        print(f"{name:<12}{r['n'] / r['seconds']:>12,.0f}{r['seconds']:>10.1f}{r['peak_mib']:>14,.0f}")
    print(f"peak memory ratio json.load / divscope: {ref['peak_mib'] / ours['peak_mib']:.1f}x "
          f"(divscope also validates, deduplicates and writes Parquet)")
    print(f"this process peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
