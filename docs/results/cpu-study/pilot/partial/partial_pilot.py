"""Partial pilot: results rows built from the finished cells' status files (the study writes results.jsonl only
at its end), then the pilot's variance components over them."""
import json, sys
from pathlib import Path
from divscope.analysis.pilot import pilot_components

src, dst = Path("/work/runs/pilot-cpu"), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
rows = []
for f in sorted((src / "cells").glob("*.json")):
    c = json.loads(f.read_text())
    if c["status"] != "done":
        continue
    cid = c["cell"]
    score = c["results"]["alpaca_eval.nll"]
    if cid == "base":
        rows.append({"cell": "base", "strategy": "base", "size": 0, "diversity": None, "metric": "alpaca_eval.nll", "score": score})
        continue
    strategy, name = cid.split("/")
    m = json.loads((src / "subsets" / strategy / (name + ".jsonl.manifest.json")).read_text())
    r = int(m.get("replicate", 0))
    t = json.loads((src / "runs" / cid / "train.json").read_text())["config"]["seed"]
    rows.append({"cell": cid, "strategy": strategy, "size": 64, "diversity": m["diversity"], "seed": m["seed"],
                 "replicate": r, "selection_seed": m["seed"], "train_seed": t, "metric": "alpaca_eval.nll", "score": score})
(dst / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
(dst / "runs").mkdir(exist_ok=True)
for r in rows:
    link = dst / "runs" / r["cell"]
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(src / "runs" / r["cell"])
for r in rows:
    print(r["cell"], r.get("train_seed"), round(r["score"], 6))
p = pilot_components(dst, "alpaca_eval.nll")
print(json.dumps({k: p[k] for k in ("cells", "within_subset", "within_subset_df", "between_subsets", "prompt_item_var",
                                    "items", "prompt", "training", "selection", "seconds_per_token", "load_seconds",
                                    "seconds_per_item", "notes")}, indent=1))
