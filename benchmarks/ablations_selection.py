"""Selection side of an ablation spec, without training: for the base and every variant, the micro features
(types per band, time), and per diversity level the k used, the types covered and the mean response length of
the selected subset, so the length confound (and its removal by length control) shows before any training.

    python benchmarks/ablations_selection.py examples/ablations-cpu.yaml --ws /tmp/studyws [--out FILE.md]

The workspace is ingested from the spec's pool source if it has no pool yet; subsets are written to a temporary
folder and discarded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--ws", required=True)
    ap.add_argument("--out", default=None, help="write the markdown tables here as well")
    args = ap.parse_args()

    from divscope.experiment import study as runner
    from divscope.experiment.spec import load_spec
    from divscope.features.featurize import featurize_result
    from divscope.features.micro import token_lengths
    from divscope.io.workspace import Workspace
    from divscope.select.lengths import target_tokenizer
    from divscope.select.subsets import run_grid

    spec = load_spec(args.spec)
    ws = Workspace(args.ws)
    if not ws.pool_path.exists():
        runner.ingest_pool(spec, ws)
    eligible = runner.eligible_rows(spec, ws)
    resp_len = token_lengths(ws, "response", target_tokenizer(spec.train.model))
    lines = [f"# Selection-side ablations of `{args.spec}` (no training)", "",
             f"pool: {len(resp_len):,} samples, {int(eligible.sum()):,} eligible; mean response length "
             f"{resp_len.mean():.1f} target tokens", "",
             "| study | unit | tokenizer | vocabulary | low | high | below | in band | above | no type | featurize s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    per_level = ["", "| study | strategy | d | k | types covered | mean response tokens |", "|---|---|---|---|---|---|"]
    studies = [("base", spec)] + [(v.name, spec.variant_spec(v.name)) for v in spec.variants]
    for name, s in studies:
        runner.featurize_study(s, ws, [])  # vocab fetch only
        opts = runner.feature_options(s)["micro"]
        t0 = time.perf_counter()
        res = featurize_result(ws, "micro", "response", **opts)
        secs = time.perf_counter() - t0
        cfg = res.incidence.config
        prov = cfg["provenance"]
        lines.append(f"| {name} | {cfg['unit']} | {cfg['tokenizer'] or 'str.split'} | {prov['vocab_size']:,} | "
                     f"{cfg['low']} | {cfg['high']} | {prov['types_below']:,} | {prov['types_mid']:,} | "
                     f"{prov['types_above']:,} | {prov['samples_without_type']:,} | {secs:.1f} |")
        sel = s.selection
        kw = {"features": runner.feature_options(s)}
        if sel.length_range is not None:
            kw.update(length_range=sel.length_range, length_side=sel.length_side,
                      length_tokenizer=sel.length_tokenizer or target_tokenizer(s.train.model))
        strategies = [x for x in sel.strategies if x.endswith("-micro")]
        with tempfile.TemporaryDirectory() as tmp:
            manifests, _ = run_grid(ws, Path(tmp), strategies, sel.sizes, sel.level_values(), sel.seeds,
                                    eligible=eligible, **kw)
            if sel.length_range is not None or name == "base":
                manifests += run_grid(ws, Path(tmp), ["random"], sel.sizes, [0.0], sel.baseline_seeds or sel.seeds,
                                      eligible=eligible, **kw)[0]
        for m in manifests:
            d = "-" if m["diversity"] is None else f"{m['diversity']:.2f}"
            per_level.append(f"| {name} | {m['strategy']} (seed {m['seed']}) | {d} | {m.get('k', '-')} | "
                             f"{m.get('types_covered', '-')} | {resp_len[np.asarray(m['rows'])].mean():.1f} |")
    text = "\n".join(lines + per_level) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
