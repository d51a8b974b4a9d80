"""``divscope analyze`` and ``divscope report``: slopes, correlations and figures of a study; its HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.analysis.settings import CompareSettings, PlanSettings
from divscope.metrics.settings import MetricSettings
from divscope.settings import cli_options
from divscope.ui import console, print_wide, table

STUDY = click.Path(file_okay=False, path_type=Path)


def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, int | float) and not isinstance(v, bool) else "n/a"


def print_summary(res: dict[str, Any], top: int = 8) -> None:
    """Slope table (x 10^-2, the paper's 10K slopes beside), top correlations and notes, on the console."""
    for metric in res["metrics"]:
        anchor = next((b for b in res["baselines"] if b["metric"] == metric and b["strategy"] == "base"), None)
        rows = []
        for s in res["slopes"]:
            if s["metric"] != metric:
                continue
            ci = (f"[{s['ci_low_x100']:+.2f}, {s['ci_high_x100']:+.2f}]"
                  if isinstance(s["ci_low_x100"], float) and isinstance(s["ci_high_x100"], float) else "n/a")
            rows.append((s["strategy"], s["size"], s["model"], s["n"], s["replicates"], _f(s["slope_x100"], "+.2f"),
                         _f(s["sd_x100"], ".2f"), ci, _f(s["p_positive"], ".3f"), _f(s["hilo_x100"], "+.2f"),
                         "" if s["paper_x100"] is None else f"{s['paper_x100']:+.2f}"))
        if rows:
            print_wide(table(f"slope of score ({metric}) per unit diversity level, x 10^-2"
                                + (f"; untrained model: {anchor['mean']:.4g}" if anchor else ""),
                                ["strategy", "size", "model", "n", "reps", "slope", "sd", "90% interval", "P(>0)",
                                 "high-low", "paper 10K"], rows))
        corr = [c for c in res["correlations"] if c["metric"] == metric and c["pearson_r"] is not None][:top]
        if corr:
            print_wide(table(f"metrics vs score ({metric}), top {len(corr)} by |r| (q: Benjamini-Hochberg)",
                                ["metric column", "n", "pearson r", "q", "spearman rho", "q", "partial r (length)",
                                 "within r"],
                                [(c["column"], c["n"], _f(c["pearson_r"], "+.3f"), _f(c["pearson_q"], ".2g"),
                                  _f(c["spearman_rho"], "+.3f"), _f(c["spearman_q"], ".2g"),
                                  _f(c["partial_r"], "+.3f"), _f(c["within_r"], "+.3f")) for c in corr]))
    for note in res["notes"]:
        console.print(f"note: {note}", markup=False)


@click.command("analyze")
@click.argument("study", type=STUDY)
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures (tables only).")
def analyze_cmd(study: Path, no_figures: bool) -> None:
    """Calibrated slopes of score on diversity level per strategy and size (replicates: a random slope per
    replicate), metric correlations with BH q-values, best subsets and figures, from STUDY/results.jsonl into
    STUDY/analysis/."""
    from divscope.analysis.analyze import analyze

    res = analyze(study, figures=not no_figures)
    print_summary(res)
    console.print(f"analysis: {res['dir']}", markup=False)
    from divscope.analysis import ablations

    if ablations.has_ablations(study):
        print_ablations(ablations.write(study))
        console.print(f"ablations: {study / ablations.OUT}", markup=False)


def print_ablations(ab: dict[str, Any], top: int = 6) -> None:
    """Slopes per study with the length slopes beside them, and the best cheap predictors."""

    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) else "n/a"

    rows = [(s["study"], s["strategy"], s["size"], f(s["slope_x100"], "+.2f"), f(s["sd_x100"], ".2f"),
             f(s["p_positive"], ".3f"),
             f(s["length_slope_response"], "+.1f"), s["unit"] or "", s["tokenizer"] or "",
             f"{s['low']}-{s['high']}" if s["low"] is not None else "", s["length_range"] or "-")
            for s in ab["slopes"]]
    if rows:
        print_wide(table("ablations: slope of score per unit d, x 10^-2 (delta response tokens d 0 -> 1)",
                            ["study", "strategy", "size", "slope", "sd", "P(>0)", "d length", "unit", "tokenizer", "band",
                             "length control"], rows))
    pred = [p for p in ab["predictors"] if p["spearman_rho"] is not None][:top]
    if pred:
        print_wide(table(f"cheap predictors (before training) vs score, top {len(pred)} by |spearman|",
                            ["metric", "column", "n", "spearman", "p", "pearson", "same sign"],
                            [(p["metric"], p["column"], p["n"], f(p["spearman_rho"], "+.3f"),
                              f(p["spearman_p"], ".2g"), f(p["pearson_r"], "+.3f"),
                              f"{p['studies_same_sign']}/{p['studies']}") for p in pred]))


@click.command("report")
@click.argument("study", type=STUDY)
@click.option("--force", is_flag=True, help="Rerun the analysis even if it is up to date.")
def report_cmd(study: Path, force: bool) -> None:
    """One static HTML report (tables, embedded plots, no script, no external resource) at STUDY/report.html;
    runs the analysis first when STUDY/analysis is missing or older than the results."""
    from divscope.analysis.report import report

    path = report(study, force=force)
    console.print(f"report: {path}", markup=False)


@click.command("compare")
@click.argument("targets", nargs=-1, required=True, type=click.Path(path_type=Path))
@cli_options(CompareSettings)
@cli_options(MetricSettings)
@click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the comparison as a static HTML page with plots.")
@click.option("--force", is_flag=True, help="Recompute metric cards even when up-to-date ones exist.")
def compare_cmd(targets: tuple[Path, ...], html: Path | None, force: bool, **values: Any) -> None:
    """Compare subsets to choose one: SUBSET files (with their manifests), a GRID folder or a STUDY folder.

    Prints the metric card of every subset side by side (stacked tables that fit the terminal; a legend for
    every abbreviation), each strategy's own coverage, the mean length of each side against the random subsets
    of the same size (flagged beyond --length-tolerance and random's spread), the best subset per measure and,
    for a study, the trained score. Card options default to the study's, else to those of the existing cards.
    """
    from divscope.analysis.compare import compare, render, write_html

    cs = CompareSettings.from_cli(values)
    given = MetricSettings.from_cli(values).changed()
    df = compare(list(targets), force=force, **cs.model_dump(), **given)
    render(df)
    if html is not None:
        title = "divscope compare: " + ", ".join(t.name or str(t) for t in targets)
        console.print(f"html: {write_html(df, html, title)}", markup=False)


@click.command("plan")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@cli_options(PlanSettings)
def plan_cmd(spec: Path, **kwargs: Any) -> None:
    """Before running SPEC: the minimum detectable slope of each strategy at its levels and replicates (80%
    power, two-sided 0.05, as the analysis tests it), the replicates needed for --effect, and the hours and disk
    the study takes; from a pilot study's variance components and timings (--pilot DIR) or documented defaults."""
    from divscope.analysis.plan import plan

    print_plan(plan(spec, PlanSettings.from_cli(kwargs)))


def _gb(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else _f(v, ".3g")


def print_plan(p: dict[str, Any]) -> None:
    nz, c = p["noise"], p["costs"]
    by = sorted({r["replicates"] for r in p["rows"]})
    reps = f"{p['replicates']} replicate(s)" if len(by) <= 1 else f"{'/'.join(map(str, by))} replicates by strategy"
    head = (f"plan: {p['spec']} ({p['metric']}); {len(p['levels'])} levels, {reps}; "
            f"per-cell noise sd {nz['var'] ** 0.5:.3g} at {nz['items']} items ({nz['source']}); slope sd between "
            f"replicates {nz['slope_var'] ** 0.5:.3g} ({nz['slope_source']})")
    console.print(head, markup=False)
    print_wide(table(f"minimum detectable slope at {p['power']:.0%} power, two-sided {p['alpha']:g} (x 10^-2)",
                     ["strategy", "size", "levels", "replicates", "df", "sd of slope", "min detectable"],
                     [(r["strategy"], r["size"], r["levels"], r["replicates"], _f(r["df"], ".0f"),
                       _f(100 * r["se"], ".3f"), _f(100 * r["mds"], ".2f")) for r in p["rows"]]))
    console.print("minimum detectable slope x 10^-2 by replicates: " + ", ".join(
        f"{r}: {_f(100 * v, '.2f')}" for r, v in p["mds_by_replicates"].items()), markup=False)
    if p["effect"] is not None:
        need = p["replicates_needed"]
        console.print(f"replicates needed for a slope of {100 * p['effect']:.3g} x 10^-2: "
                      + (str(need) if need else "more than 500"), markup=False)
    parts = [(k, nz.get(k)) for k in ("training", "selection", "prompt") if nz.get(k) is not None]
    if parts:
        console.print("variance components (score^2 per cell): " + ", ".join(f"{k} {v:.3g}" for k, v in parts),
                      markup=False)
    gpu = c["gpu_hours"] is not None
    print_wide(table(f"cost on {c['device']} ({c['source']})", ["cells", "evaluations", "s / step", "s / item",
                                                              "train h", "eval h", "featurize h", "total h",
                                                              *(["GPUs / cell", "GPU-h"] if gpu else []),
                                                              "kept disk GB", "peak disk GB"],
                     [(c["cells"], c["evaluations"], _f(c["step_seconds"], ".3g"), _f(c["item_seconds"], ".3g"),
                       _f(c["train_hours"], ".2f"), _f(c["eval_hours"], ".2f"), _f(c["featurize_hours"], ".2f"),
                       _f(c["hours"], ".2f"), *([c["gpus_per_cell"], _f(c["gpu_hours"], ".1f")] if gpu else []),
                       _gb(c["disk_gb"]), _gb(c["peak_disk_gb"]))]))
    print_wide(table(f"per cell (peak: while training, {c['per_cell'][0]['checkpoints_held'] if c['per_cell'] else 0}"
                     f" checkpoint(s) of {_f(c['per_cell'][0]['checkpoint_mb'] / 1e3 if c['per_cell'] else 0, '.3g')} "
                     f"GB held; total peak: every cell's kept disk + {c['parallel_cells']} cell(s) training)",
                     ["size", "cells", "steps", "train h", "eval h", *(["GPU-h"] if gpu else []), "kept disk GB",
                      "peak disk GB"],
                     [(d["size"], d["cells"], d["steps"], _f(d["train_hours"], ".3g"), _f(d["eval_hours"], ".3g"),
                       *([_f(d["gpu_hours"], ".3g")] if gpu else []), _gb(d["kept_mb"] / 1e3),
                       _gb(d["peak_mb"] / 1e3)) for d in c["per_cell"]]))
    for n in c["notes"]:
        console.print(f"note: {n}", markup=False)
