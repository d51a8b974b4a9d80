"""``divscope analyze`` and ``divscope report``: slopes, correlations and figures of a study; its HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from divscope.ui import console, table

STUDY = click.Path(file_okay=False, path_type=Path)


def _prior(a0: float | None, b0: float | None, scale: float | None) -> Any:
    from divscope.analysis.regression import Prior

    kw: dict[str, Any] = {}
    if a0 is not None:
        kw["a0"] = a0
    if b0 is not None:
        kw["b0"] = b0
    if scale is not None:
        kw["scale"] = (scale, scale)
    return Prior(**kw)


def _prior_options(f: Any) -> Any:
    f = click.option("--prior-scale", type=float, default=None,
                     help="Prior sd of intercept and slope, in noise-sd units [default: 100, practically flat].")(f)
    f = click.option("--b0", type=float, default=None,
                     help="Inverse-gamma scale of the noise variance [default: a0 * var(score)].")(f)
    f = click.option("--a0", type=float, default=None, help="Inverse-gamma shape of the noise variance [default: 0.01].")(f)
    return f


def print_summary(res: dict[str, Any], top: int = 8) -> None:
    """Slope table (x 10^-2, the paper's 10K slopes beside), top correlations and notes, on the console."""
    for metric in res["metrics"]:
        rows = []
        for s in res["slopes"]:
            if s["metric"] != metric:
                continue
            slope = f"{s['slope_x100']:+.2f}" if isinstance(s["slope_x100"], float) else "n/a"
            sd = f"{s['sd_x100']:.2f}" if isinstance(s["sd_x100"], float) else "n/a"
            rows.append((s["strategy"], s["size"], s["n"], s["n_levels"], slope, sd,
                         s["p_positive"] if isinstance(s["p_positive"], float) else "n/a",
                         "" if s["paper_x100"] is None else f"{s['paper_x100']:+.2f}"))
        if rows:
            console.print(table(f"slope of score ({metric}) per unit diversity level, x 10^-2",
                                ["strategy", "size", "n", "levels", "slope", "sd", "P(>0)", "paper 10K"], rows))
        corr = [c for c in res["correlations"] if c["metric"] == metric and c["pearson_r"] is not None][:top]
        if corr:
            console.print(table(f"metrics vs score ({metric}), top {len(corr)} by |r|",
                                ["metric column", "n", "pearson r", "p", "spearman rho"],
                                [(c["column"], c["n"], c["pearson_r"], "n/a" if c["pearson_p"] is None else f"{c['pearson_p']:.2g}",
                                  c["spearman_rho"] if c["spearman_rho"] is not None else "n/a") for c in corr]))
    for note in res["notes"]:
        console.print(f"note: {note}", markup=False)


@click.command("analyze")
@click.argument("study", type=STUDY)
@_prior_options
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures (tables only).")
def analyze_cmd(study: Path, a0: float | None, b0: float | None, prior_scale: float | None,
                no_figures: bool) -> None:
    """Bayesian slopes of score on diversity level per strategy and size, metric correlations, best subsets
    and figures, from STUDY/results.jsonl into STUDY/analysis/."""
    from divscope.analysis.analyze import analyze

    res = analyze(study, _prior(a0, b0, prior_scale), figures=not no_figures)
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
             f(s["length_slope_response"], "+.1f"), s["unit"] or "", s["tokenizer"] or "",
             f"{s['low']}-{s['high']}" if s["low"] is not None else "", s["length_range"] or "-")
            for s in ab["slopes"]]
    if rows:
        console.print(table("ablations: slope of score per unit d, x 10^-2 (delta response tokens d 0 -> 1)",
                            ["study", "strategy", "size", "slope", "sd", "d length", "unit", "tokenizer", "band",
                             "length control"], rows))
    pred = [p for p in ab["predictors"] if p["spearman_rho"] is not None][:top]
    if pred:
        console.print(table(f"cheap predictors (before training) vs score, top {len(pred)} by |spearman|",
                            ["metric", "column", "n", "spearman", "p", "pearson", "same sign"],
                            [(p["metric"], p["column"], p["n"], f(p["spearman_rho"], "+.3f"),
                              f(p["spearman_p"], ".2g"), f(p["pearson_r"], "+.3f"),
                              f"{p['studies_same_sign']}/{p['studies']}") for p in pred]))


@click.command("report")
@click.argument("study", type=STUDY)
@_prior_options
@click.option("--force", is_flag=True, help="Rerun the analysis even if it is up to date.")
def report_cmd(study: Path, a0: float | None, b0: float | None, prior_scale: float | None, force: bool) -> None:
    """One static HTML report (tables, embedded plots, no script, no external resource) at STUDY/report.html;
    runs the analysis first when STUDY/analysis is missing or older than the results."""
    from divscope.analysis.report import report

    path = report(study, force=force, prior=_prior(a0, b0, prior_scale))
    console.print(f"report: {path}", markup=False)
