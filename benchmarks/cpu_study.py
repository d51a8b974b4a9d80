"""Issue 20: collect the CPU study into docs/results/cpu-study/ and write the tables its README quotes.

    divscope run examples/reproduce-cpu.yaml --out runs/reproduce-cpu          # the study (resumable)
    PYTHONPATH=src python benchmarks/cpu_study.py runs/reproduce-cpu [--dst docs/results/cpu-study]

Copies the results rows, study.json, report, analysis, cell status files and every run's evaluation (per-item
scores) and train.json, for the study and each of its variants; then writes ``tables.md``: the paired
high-minus-low contrasts (claims), the arms at their highest level ranked with their pairwise differences (the
headline), the mean response length of each arm's subsets (the length band), and each trained run against the
untrained anchor, paired over the prompts, and (selection only, from STUDY/ws) the response length of the micro
and random subsets with and without the study's length band. Every number comes from the copied files, with divscope's analysis
code for the study-level tables; nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from divscope.analysis import analyze, report
from divscope.analysis.regression import LEVEL, mean_interval
from divscope.analysis.results import ANCHOR, load_results


def collect(src: Path, dst: Path) -> None:
    """The study's result files (not its subsets, adapters or workspace) from ``src`` into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("results.jsonl", "study.json", "report.html"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for sub in ("analysis", "cells", "ablations"):
        if (src / sub).is_dir():
            shutil.rmtree(dst / sub, ignore_errors=True)
            shutil.copytree(src / sub, dst / sub)
    for run in sorted(p.parent for p in src.glob("runs/**/eval")):
        rel = run.relative_to(src)
        (dst / rel / "eval").mkdir(parents=True, exist_ok=True)
        for f in sorted((run / "eval").glob("*.json")):
            shutil.copy2(f, dst / rel / "eval" / f.name)
        if (run / "train.json").is_file():
            shutil.copy2(run / "train.json", dst / rel / "train.json")
    for v in sorted((src / "variants").glob("*")) if (src / "variants").is_dir() else []:
        collect(v, dst / "variants" / v.name)


def _t(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 90% t interval (the analysis' own, ``regression.mean_interval``)."""
    _, lo, hi = mean_interval(x, LEVEL)
    return float(x.mean()), lo, hi


def per_item(study: Path, metric: str = "alpaca_eval.nll") -> dict[str, dict[str, float]]:
    """Per-item scores of every run of ``study`` that has them: {cell: {item id: score}}."""
    name = metric + ".json"
    out = {}
    for f in sorted(study.glob(f"runs/**/eval/{name}")):
        cell = str(f.parent.parent.relative_to(study / "runs"))
        out[cell] = {k: float(v) for k, v in json.loads(f.read_text())["per_item"].items()}
    return out


def anchor_table(study: Path, variants: list[Path] = ()) -> list[str]:
    """Each run trained by the study or its variants (a variant's reused runs are the base's) against the
    study's untrained model, paired over the prompts."""
    items = per_item(study)
    for v in variants:
        items.update({f"{v.name}/{cell}": s for cell, s in per_item(v).items() if cell != ANCHOR})
    if ANCHOR not in items:
        return ["(no anchor with per-item scores)"]
    base = items.pop(ANCHOR)
    ids = sorted(base)
    b = np.array([base[i] for i in ids])
    m, lo, hi = _t(b)
    lines = [f"Untrained model: {m:+.5f}, 90% interval over its {b.size} prompts [{lo:+.5f}, {hi:+.5f}] "
             f"(half-width {(hi - lo) / 2:.5f}).", "",
             "| run | score | minus base, paired over prompts | 90% interval | prompts better than base |",
             "|---|---|---|---|---|"]
    lows = []
    for cell, s in sorted(items.items()):
        common = [i for i in ids if i in s]
        x = np.array([s[i] for i in common]) - np.array([base[i] for i in common])
        d, dlo, dhi = _t(x)
        lows.append(dlo)
        lines.append(f"| {cell} | {np.mean([s[i] for i in common]):+.5f} | {d:+.5f} | [{dlo:+.5f}, {dhi:+.5f}] | "
                     f"{int((x > 0).sum())} of {x.size} |")
    lines += ["", f"Smallest lower bound of a trained run's paired difference: {min(lows):+.5f} "
                  f"({len(lows)} runs)."]
    return lines


def _f(v: float | None, fmt: str = "+.5f") -> str:
    return "n/a" if v is None else format(v, fmt)


def study_tables(study: Path, title: str) -> list[str]:
    a = analyze(study)
    rows, _ = load_results(study)
    lines = [f"## {title}", ""]
    base = next(float(r["score"]) for r in rows if r["strategy"] == ANCHOR)
    lines += [f"The untrained model (anchor) scores {base:+.5f}; \"minus base\" is a mean over replicates minus it.",
              ""]

    def minus_base(strategy: str, d: float, sep: str = " ") -> str:
        """Mean minus the anchor over the replicates of one level, with its 90% interval."""
        m, lo, hi = _t(np.array([r["score"] for r in rows if r["strategy"] == strategy and r["diversity"] == d]))
        return f"{m - base:+.5f}{sep}[{lo - base:+.5f}, {hi - base:+.5f}]"

    hilo = [c for c in a["contrasts"] if c["kind"] == "high-low"]
    if hilo:
        slopes = {s["strategy"]: s for s in a["slopes"]}
        lines += ["### Highest minus lowest coverage level, paired by replicate", "",
                  "| strategy | pairs | difference | 90% interval | p | min detectable (80%, 5%) | slope model | "
                  "P(slope > 0) | highest minus base | lowest minus base |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in hilo:
            name = c["a"].partition("@")[0]
            s = slopes[name]
            levels = sorted({r["diversity"] for r in rows if r["strategy"] == name})
            lines.append(f"| {name} | {c['n']} | {_f(c['diff'])} | [{_f(c['ci_low'])}, "
                         f"{_f(c['ci_high'])}] | {_f(c['p'], '.3f')} | {_f(c['min_detectable'], '.5f')} | "
                         f"{s['model']} | {_f(s['p_positive'], '.3f')} | {minus_base(name, levels[-1])} | "
                         f"{minus_base(name, levels[0])} |")
        lines.append("")
    lines += ["### Arms at their highest level, ranked", "",
              "| rank | arm | d | replicates | mean score | 90% interval | minus base | 90% interval | mean response "
              "tokens | types covered (own axis) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in a["arms"]:
        sel = [x for x in rows if x["strategy"] == r["arm"] and x["diversity"] == r["diversity"]]
        toks = np.mean([x["m.response.mean_tokens"] for x in sel if "m.response.mean_tokens" in x])
        types = [x["types_covered"] for x in sel if x.get("types_covered") is not None]
        cov = f"{np.mean(types):.0f}" if types else "-"
        d = "-" if r["diversity"] is None else f"{r['diversity']:g}"
        lines.append(f"| {r['rank']} | {r['arm']} | {d} | {r['n']} | {_f(r['mean'])} | [{_f(r['ci_low'])}, "
                     f"{_f(r['ci_high'])}] | {_f(r['vs_anchor'])} | [{_f(r['vs_anchor_low'])}, "
                     f"{_f(r['vs_anchor_high'])}] | {toks:.1f} | {cov} |")
    lows = {}
    for r in rows:
        if r["strategy"] != ANCHOR and r["diversity"] is not None and r["diversity"] == 0.0:
            lows.setdefault(r["strategy"], []).append(r)
    for s, sel in sorted(lows.items()):
        toks = np.mean([x["m.response.mean_tokens"] for x in sel])
        types = np.mean([x["types_covered"] for x in sel])
        m, lo, hi = _t(np.array([x["score"] for x in sel]))
        lines.append(f"| (lowest level) | {s} | 0 | {len(sel)} | {m:+.5f} | [{lo:+.5f}, {hi:+.5f}] | "
                     f"{minus_base(s, 0.0, ' | ')} | {toks:.1f} | {types:.0f} |")
    lines += ["", "### Pairwise differences of the arms (row minus column arm), paired by replicate", "",
              "| a - b | pairs | difference | 90% interval | p | Holm p | distinguishable | min detectable |",
              "|---|---|---|---|---|---|---|---|"]
    for c in a["contrasts"]:
        if c["kind"] == "arms":
            lines.append(f"| {c['a']} - {c['b']} | {c['n']} | {_f(c['diff'])} | [{_f(c['ci_low'])}, "
                         f"{_f(c['ci_high'])}] | {_f(c['p'], '.3f')} | {_f(c['p_holm'], '.3f')} | "
                         f"{'yes' if c['distinguishable'] else 'no'} | {_f(c['min_detectable'], '.5f')} |")
    report(study, force=True)
    return lines + [""]


def length_table(ws: Path, replicates: int = 8) -> list[str]:
    """The selection side of the length confound, without training: mean response length (target tokens) of the
    micro subsets at d = 0 and d = 1 and of random, with and without the study's response band, over the study's
    replicate seeds (``divscope.select`` with the study's filters; it does not remove the 17 evaluation-overlap
    rows the study does, so a subset can differ from the study's by those)."""
    import divscope
    from divscope.io.workspace import Workspace
    from divscope.select.where import column_values

    spec = json.loads((ws.parent / "study.json").read_text())["spec"]["selection"]
    rt = np.array(column_values(Workspace(ws), "response_tokens", "smollm2"), dtype=float)
    lines = ["| responses | arm | mean response tokens | 90% interval over subsets | subsets |", "|---|---|---|---|---|"]
    for band in (None, spec["length_range"]):
        for strategy, d in (("response-micro", 0.0), ("response-micro", 1.0), ("instruction-micro", 0.0),
                            ("instruction-micro", 1.0), ("random", None)):
            kw = {"d": d, "typeless": spec["typeless"], "spacing": spec["spacing"]} if d is not None else {}
            m = np.array([rt[divscope.select(ws, strategy, 64, seed=1000 * r, where=spec["where"], length_range=band,
                                             **kw).rows].mean() for r in range(replicates)])
            mean, lo, hi = _t(m)
            what = "any length" if band is None else f"{band[0]}..{band[1]} tokens"
            lines.append(f"| {what} | {strategy}{'' if d is None else f' d={d:g}'} | {mean:.1f} | [{lo:.1f}, {hi:.1f}] | "
                         f"{m.size} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--dst", type=Path, default=Path("docs/results/cpu-study"))
    ap.add_argument("--no-lengths", action="store_true", help="skip the selection-only length table (needs the "
                    "study's workspace, STUDY/ws)")
    a = ap.parse_args()
    collect(a.study, a.dst)
    lines = ["# CPU study tables (written by benchmarks/cpu_study.py)", ""]
    lines += study_tables(a.dst, "Base study: micro on both sides at the lowest and highest level, and random")
    variants = [v for v in sorted((a.dst / "variants").glob("*")) if (v / "results.jsonl").is_file()] \
        if (a.dst / "variants").is_dir() else []
    lines += ["## The untrained anchor, per trained run (the study's and its variants')", ""]
    lines += anchor_table(a.dst, variants) + [""]
    if not a.no_lengths:
        lines += ["## Response length of the subsets, with and without the band (selection only)", ""]
        lines += length_table(a.study / "ws") + [""]
    for v in variants:
        lines += study_tables(v, f"Variant {v.name}")
    text = "\n".join(lines) + "\n"
    (a.dst / "tables.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
