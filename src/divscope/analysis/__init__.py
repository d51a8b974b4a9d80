"""Analysis stage: how performance moves with diversity, a static HTML report, and the planning of a study.

    analyze(DIR)  -> dict   DIR/results.jsonl -> DIR/analysis/ (slopes, correlations, best subsets, figures)
    report(DIR)   -> Path   DIR/report.html (runs analyze first when its outputs are missing or stale)
    compare(GRID) -> DataFrame  metric cards of subsets side by side, lengths against random, winners
    plan(SPEC)    -> dict   minimum detectable slope, replicates for an effect, hours and disk of a spec

``regression`` (calibrated slope of score on level d: reference prior for one replicate, ``mixed`` for
replicates), ``correlation`` (Pearson, Spearman, BH q, partial on length, within strategy) and ``plots``
(matplotlib, Agg) are usable on their own. ``write_synthetic_study`` writes a realistic fake study.
"""

from divscope.analysis.analyze import analyze, load_results, synthetic_results, write_synthetic_study
from divscope.analysis.compare import compare
from divscope.analysis.correlation import correlations
from divscope.analysis.regression import Fit, fit
from divscope.analysis.report import report

__all__ = ["Fit", "analyze", "compare", "correlations", "fit", "load_results", "report", "synthetic_results",
           "write_synthetic_study"]
