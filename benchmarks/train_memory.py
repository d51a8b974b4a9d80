"""Peak memory and speed of CPU training, whole batch in one forward pass vs micro-batches (the CPU default).

Trains the shipped SmolLM2-135M (LoRA, the default settings) on the first N samples of the builtin demo pool,
each configuration in a fresh subprocess so that its peak RSS (VmHWM) is its own, with the same data, seed and
global batch: ``--micro-batch`` 8 (one pass of the whole batch of 8, what training did before the micro-batch
setting) and each of the micro-batches given. Prints peak RSS, seconds per step, the per-step losses and their
largest relative difference from the whole-batch run, and the ratios against it (measured in the same run).

    nice -n 10 python benchmarks/train_memory.py --samples 64 --steps 2 --micro 1 --dropout 0

With LoRA dropout (the default 0.05) each pass draws its own masks, so the losses differ as two seeds' dropout
would; ``--dropout 0`` shows the split alone (float summation order).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
from divscope.io import read_records
from divscope.train.settings import TrainSettings
from divscope.train.sft import train
subset, out, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
run = train(read_records(subset)[0], out, TrainSettings(**cfg))
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
s = run.summary
print(json.dumps({"peak_mib": hwm / 1024, "seconds_per_step": s["seconds_per_step"], "losses": s["losses"],
                  "batch": s["batch"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--micro", default="1", help="comma list of micro-batches to compare with 8")
    ap.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout")
    ap.add_argument("--max-len", type=int, default=256)
    a = ap.parse_args()

    import divscope

    with tempfile.TemporaryDirectory(prefix="divscope-train-memory-") as tmp:
        ws = Path(tmp) / "ws"
        divscope.ingest("builtin:demo", ws)
        subset = divscope.write_records(divscope.Workspace(ws).pool.records()[: a.samples], Path(tmp) / "s.jsonl")
        results = {}
        for micro in [8, *(int(m) for m in a.micro.split(","))]:
            cfg = {"max_steps": a.steps, "batch_size": 8, "max_len": a.max_len, "lora_dropout": a.dropout,
                   "device": "cpu", "micro_batch": micro}
            out = subprocess.run([sys.executable, "-c", CHILD, str(subset), str(Path(tmp) / f"run{micro}"),
                                  json.dumps(cfg)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-2000:])
            results[micro] = json.loads(out.stdout.strip().splitlines()[-1])
    ref = results[8]
    print(f"{a.samples} samples, {a.steps} steps, global batch 8, max_len {a.max_len}, LoRA dropout {a.dropout}")
    print(f"{'micro-batch':>11} {'peak MiB':>9} {'ratio':>6} {'s/step':>7} {'ratio':>6} {'max rel. loss diff':>18}  losses")
    for micro, r in results.items():
        diff = max(abs(x - y) / abs(y) for x, y in zip(r["losses"], ref["losses"], strict=True))
        print(f"{micro:>11} {r['peak_mib']:>9.0f} {r['peak_mib'] / ref['peak_mib']:>6.2f} "
              f"{r['seconds_per_step']:>7.2f} {r['seconds_per_step'] / ref['seconds_per_step']:>6.2f} "
              f"{diff:>18.2e}  {r['losses']}")


if __name__ == "__main__":
    main()
