"""Slope of score on diversity level, with a posterior whose frequentist coverage is nominal.

One replicate per level (the rows of a (metric, size, strategy) group come from one replicate)::

    y_i = b0 + b1 d_i + e_i,   e_i ~ N(0, s2),   prior p(b0, b1, s2) ~ 1 / s2      (the reference prior)

The posterior of b1 is a Student-t with n - 2 degrees of freedom, location the least-squares slope and scale its
standard error sqrt(SSR / (n - 2) / Sxx): the Bayesian and the frequentist answers coincide, so an interval of
90% posterior mass covers the true slope in 90% of studies, and under no true slope P(slope > 0) falls outside
[0.025, 0.975] in 5% of them (tests/test_calibration.py simulates it). The conjugate Normal-Inverse-Gamma
posterior used before (a_n = a0 + n/2: a t on n degrees of freedom with the same scale) did so in ~14% (n = 5)
and ~11% (n = 7) of null studies.

Several replicates (a replicate is a full series of levels with its own selection and/or training seed):
the hierarchical model with a random intercept and a random slope per replicate (``mixed.fit_replicated``,
statsmodels MixedLM). Its inference for the fixed slope is exact in a balanced design: the spread of the
per-replicate slopes, a t on R - 1 degrees of freedom (see that module for why MixedLM's own, constrained,
standard error is not used at its boundary).

Units: score per unit of d (d = 0 the least diverse level, d = 1 the most); tables print x 100 ("x 10^-2").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PAPER_SLOPES_10K = {  # the paper's Table, 10K subsets, slope x 10^-2 (their units: score per unit of their x axis)
    "instruction-macro": 2.37,
    "instruction-meso": 4.93,
    "instruction-micro": -5.45,
    "response-macro": 0.73,
    "response-meso": 3.61,
    "response-micro": 5.35,
}
PAPER_SIZE = 10_000
LEVEL = 0.90  # the credible (and confidence) level of every reported interval


def t_cdf(x: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """Student-t CDF (scipy.special.stdtr; lighter than scipy.stats)."""
    from scipy.special import stdtr

    return np.asarray(stdtr(df, x), dtype=np.float64)


def t_quantile(p: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def prob_positive(slope: np.ndarray | float, se: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """P(slope > 0) under a t posterior with location ``slope``, scale ``se``; a zero scale gives 0, 0.5 or 1."""
    slope, se = np.asarray(slope, dtype=np.float64), np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, slope / np.where(se > 0, se, 1.0), np.sign(slope) * np.inf)
    return np.where(np.isnan(z), 0.5, t_cdf(z, df))


def ols_reference(d: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Least squares of each column of ``Y`` (n x m) on ``d`` (n): slope, its standard error (the scale of the
    reference posterior's t), intercept, sigma, df = n - 2. Vectorised so the calibration test fits 2,000 studies
    at once through the code the analysis uses."""
    d = np.asarray(d, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y2 = Y[:, None] if Y.ndim == 1 else Y
    n = d.size
    dc = d - d.mean()
    sxx = float(dc @ dc)
    slope = dc @ Y2 / sxx
    intercept = Y2.mean(axis=0) - slope * d.mean()
    resid = Y2 - intercept[None, :] - np.outer(d, slope)
    df = n - 2
    ssr = np.einsum("ij,ij->j", resid, resid)
    s2 = ssr / df if df > 0 else np.full_like(ssr, np.nan)
    out = {"slope": slope, "se": np.sqrt(s2 / sxx), "intercept": intercept, "sigma": np.sqrt(s2),
           "intercept_se": np.sqrt(s2 * (1.0 / n + d.mean() ** 2 / sxx)), "cov01": -s2 * d.mean() / sxx,
           "df": np.full(slope.shape, float(df))}
    return {k: (v[0] if Y.ndim == 1 else v) for k, v in out.items()}


def two_stage(d: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """Balanced replicated design, ``Y`` (..., R, L) scores of R replicates at the L levels ``d``: the mean of the
    per-replicate least-squares slopes and sd(b_r) / sqrt(R) on R - 1 df. This is the REML inference of the fixed
    slope of the random-intercept-and-slope model when its covariance is left unconstrained; vectorised over
    leading axes (calibration test, plan simulations)."""
    d = np.asarray(d, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    R = Y.shape[-2]
    dc = d - d.mean()
    b = Y @ dc / float(dc @ dc)
    a = Y.mean(axis=-1) - b * d.mean()
    return {"slope": b.mean(axis=-1), "se": b.std(axis=-1, ddof=1) / math.sqrt(R),
            "intercept": a.mean(axis=-1), "df": np.full(b.shape[:-1], float(R - 1)), "slopes": b, "intercepts": a}


@dataclass
class Fit:
    """The slope's posterior (a t: location ``slope``, scale ``se``, ``df`` degrees of freedom) and the line.

    ``model`` says which model gave it: ``ols`` (one replicate: reference prior), ``mixedlm`` (replicates:
    statsmodels MixedLM, random intercept and slope per replicate) or ``two-stage`` (replicates, MixedLM not
    fitted: ``note`` says why). ``ok`` False when no slope exists (fewer than 2 levels)."""

    n: int
    n_levels: int
    ok: bool
    model: str = "ols"
    replicates: int = 1
    note: str = ""
    slope: float = math.nan
    se: float = math.nan
    df: float = math.nan
    intercept: float = math.nan
    intercept_se: float = math.nan
    cov: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))  # of (intercept, slope)
    sigma: float = math.nan  # residual sd within replicates
    tau: float = math.nan  # between-replicate sd of the slope (MixedLM), nan for one replicate
    mixedlm_se: float = math.nan  # MixedLM's own (constrained) Wald standard error, for reference

    @property
    def slope_sd(self) -> float:
        """The scale of the slope's posterior t (= its standard error); the t's own sd is sqrt(df/(df-2)) times it."""
        return self.se

    @property
    def inference(self) -> bool:
        return self.ok and math.isfinite(self.se) and self.df > 0

    def prob_positive(self) -> float:
        return float(prob_positive(self.slope, self.se, self.df)) if self.inference else math.nan

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Central credible interval of the slope (equal to the confidence interval)."""
        if not self.inference:
            return math.nan, math.nan
        h = t_quantile(0.5 + level / 2, self.df) * self.se
        return self.slope - h, self.slope + h

    def band(self, d: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over levels ``d``: the line b0 + b1 d and its central ``level`` credible band (lower, upper)."""
        d = np.asarray(d, dtype=np.float64)
        mean = self.intercept + self.slope * d
        if not self.inference or not np.all(np.isfinite(self.cov)):
            return mean, mean.copy(), mean.copy()
        X = np.column_stack([np.ones_like(d), d])
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, self.cov, X), 0.0))
        h = t_quantile(0.5 + level / 2, self.df) * sd
        return mean, mean - h, mean + h


def fit(d: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
        replicate: Sequence[object] | np.ndarray | None = None) -> Fit:
    """The slope of ``y`` on ``d``; ``replicate`` (one id per point) selects the hierarchical model when the
    points come from 2 or more replicates that each span 2 levels."""
    d = np.asarray(d, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if d.shape != y.shape:
        raise ValueError("d and y differ in length")
    rep = np.zeros(d.size, dtype=object) if replicate is None else np.asarray(list(replicate), dtype=object)
    if rep.shape != d.shape:
        raise ValueError("replicate and d differ in length")
    keep = np.isfinite(d) & np.isfinite(y)
    d, y, rep = d[keep], y[keep], rep[keep]
    n, n_levels = int(d.size), int(np.unique(d).size)
    if n_levels < 2:
        return Fit(n=n, n_levels=n_levels, ok=False,
                   note=f"{n_levels} distinct diversity level(s): a slope needs at least 2")
    ids = sorted(set(rep.tolist()), key=str)
    spanning = [r for r in ids if np.unique(d[rep == r]).size >= 2]
    if len(ids) > 1 and len(spanning) >= 2:
        from divscope.analysis.mixed import fit_replicated

        return Fit(**fit_replicated(d, y, rep, spanning))  # type: ignore[arg-type]
    note = ""
    if len(ids) > 1:
        note = "replicates do not each span 2 levels: fitted as independent points"
    return _ols_fit(d, y, n_levels, note)


def _ols_fit(d: np.ndarray, y: np.ndarray, n_levels: int, note: str = "") -> Fit:
    n = int(d.size)
    o = ols_reference(d, y)
    if n < 3:
        note = "; ".join(x for x in (note, "2 points: no residual degrees of freedom, so no interval") if x)
    elif float(o["se"]) == 0.0:
        note = "; ".join(x for x in (note, "the points lie on a line: zero standard error") if x)
    s2 = float(o["sigma"]) ** 2
    dc = d - d.mean()
    sxx = float(dc @ dc)
    cov = s2 * np.array([[1.0 / n + d.mean() ** 2 / sxx, -d.mean() / sxx], [-d.mean() / sxx, 1.0 / sxx]])
    return Fit(n=n, n_levels=n_levels, ok=True, model="ols", replicates=1, note=note, slope=float(o["slope"]),
               se=float(o["se"]), df=float(n - 2), intercept=float(o["intercept"]),
               intercept_se=float(o["intercept_se"]), cov=cov, sigma=float(o["sigma"]))


def high_low(d: np.ndarray, y: np.ndarray, replicate: np.ndarray | None = None, fitted: Fit | None = None,
             level: float = LEVEL) -> dict[str, float | int | None]:
    """Paired difference: score at the highest level minus score at the lowest, per replicate (mean over the
    points of a replicate at that level); their mean and its central ``level`` interval (t on R - 1 df; one
    replicate: the difference of two points, sd sqrt(2) sigma from ``fitted`` on its df)."""
    d = np.asarray(d, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rep = np.zeros(d.size, dtype=object) if replicate is None else np.asarray(list(replicate), dtype=object)
    out: dict[str, float | int | None] = {"hilo": None, "hilo_low": None, "hilo_high": None, "hilo_n": 0}
    if d.size == 0 or np.unique(d).size < 2:
        return out
    lo, hi = float(d.min()), float(d.max())
    diffs = []
    for r in sorted(set(rep.tolist()), key=str):
        m = rep == r
        at_lo, at_hi = y[m & (d == lo)], y[m & (d == hi)]
        if at_lo.size and at_hi.size:
            diffs.append(float(at_hi.mean() - at_lo.mean()))
    if not diffs:
        return out
    x = np.array(diffs)
    out.update(hilo=float(x.mean()), hilo_n=int(x.size))
    if x.size >= 2:
        _, lo, hi = mean_interval(x, level)
        out.update(hilo_low=lo, hilo_high=hi)
    elif fitted is not None and fitted.model == "ols" and fitted.inference:
        h = t_quantile(0.5 + level / 2, fitted.df) * math.sqrt(2.0) * fitted.sigma
        out.update(hilo_low=out["hilo"] - h, hilo_high=out["hilo"] + h)  # type: ignore[operator]
    return out


def mean_interval(x: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(sd, low, high): the sample sd (ddof 1) of ``x`` and the central ``level`` t interval of its mean on
    n - 1 df; nan for fewer than 2 values. The interval of a mean of paired differences (``high_low``,
    ``paired.contrast``)."""
    if x.size < 2:
        return math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    h = t_quantile(0.5 + level / 2, x.size - 1) * sd / math.sqrt(x.size)
    m = float(x.mean())
    return sd, m - h, m + h
