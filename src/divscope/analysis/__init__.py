"""Analysis stage: how performance moves with diversity, and a static HTML report.

    analyze(DIR)  -> dict   DIR/results.jsonl -> DIR/analysis/ (slopes, correlations, best subsets, figures)
    report(DIR)   -> Path   DIR/report.html (runs analyze first when its outputs are missing or stale)

``regression`` (conjugate Bayesian linear regression of score on level d), ``correlation`` (Pearson and
Spearman of post-hoc metrics with score) and ``plots`` (matplotlib, Agg) are usable on their own.
``write_synthetic_study`` writes a realistic fake study for tests and demos.
"""

from divscope.analysis.analyze import analyze, load_results, synthetic_results, write_synthetic_study
from divscope.analysis.correlation import correlations
from divscope.analysis.regression import Fit, Prior, fit
from divscope.analysis.report import report

__all__ = ["Fit", "Prior", "analyze", "correlations", "fit", "load_results", "report", "synthetic_results",
           "write_synthetic_study"]
