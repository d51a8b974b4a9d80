"""Calibration under the null: with no true slope, P(slope > 0) must fall outside [0.025, 0.975] in 5% of studies.

Tolerance: 2,000 simulated studies per design, observed share within 5% +- 1.5% (the binomial sd of a share of
2,000 at 5% is 0.49%, so +-1.5% is about 3 sd: a calibrated procedure fails by chance in ~0.3% of seeds, the old
posterior's 11% to 14% never passes). The single-replicate and balanced replicated cases run through the
vectorised functions ``fit`` itself uses (``ols_reference``, ``two_stage``); a smaller set of studies checks that
``fit`` (MixedLM running) gives exactly those probabilities. The unbalanced design, where the probabilities come
from ``fit`` alone, fits 400 studies (slow): 5% must lie in the 99% binomial interval of the observed share.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from divscope.analysis.regression import fit, ols_reference, prob_positive, two_stage

STUDIES = 2000
TOL = 0.015


def _outside(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(((p < 0.025) | (p > 0.975)).mean())


def _conjugate_old(d: np.ndarray, y: np.ndarray, a0: float = 0.01, scale: float = 100.0) -> float:
    """The posterior divscope used before this change, kept here only to show its miscalibration: Normal-Inverse-
    Gamma with m0 = (mean y, 0), V0 = scale^2 I, b0 = a0 var(y); its t has 2 a_n = n + 2 a0 degrees of freedom."""
    X = np.column_stack([np.ones_like(d), d])
    m0, L0 = np.array([y.mean(), 0.0]), np.eye(2) / scale**2
    Ln = L0 + X.T @ X
    mn = np.linalg.solve(Ln, L0 @ m0 + X.T @ y)
    r, dm = y - X @ mn, mn - m0
    an = a0 + d.size / 2
    bn = a0 * y.var() + 0.5 * (r @ r + dm @ L0 @ dm)
    return float(stats.t.cdf(mn[1] / np.sqrt(bn / an * np.linalg.inv(Ln)[1, 1]), 2 * an))


@pytest.mark.parametrize("n", [5, 7])
def test_one_replicate_is_calibrated_and_the_old_posterior_is_not(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    d = np.linspace(0.0, 1.0, n)
    Y = rng.normal(size=(n, STUDIES)) * 0.01 - 2.0  # scores near -NLL, no slope
    o = ols_reference(d, Y)
    p = prob_positive(o["slope"], o["se"], o["df"])
    assert abs(_outside(p) - 0.05) < TOL, _outside(p)
    for j in range(25):  # fit() is those numbers
        f = fit(d, Y[:, j])
        assert f.model == "ols" and f.df == n - 2
        assert f.prob_positive() == pytest.approx(float(p[j]), abs=1e-12)
    old = np.array([_conjugate_old(d, Y[:, j]) for j in range(STUDIES)])
    assert _outside(old) > 0.05 + 2 * TOL, _outside(old)  # ~13% at n = 5, ~11% at n = 7


R, L = 4, 7
D = np.linspace(0.0, 1.0, L)
SXX = float(((D - D.mean()) ** 2).sum())


def _replicated(rng: np.random.Generator, m: int, tau: float) -> np.ndarray:
    """m studies of R replicates x L levels: replicate intercept sd 1, replicate slope sd tau, noise sd 1."""
    return rng.normal(size=(m, R, 1)) + rng.normal(size=(m, R, 1)) * tau * D + rng.normal(size=(m, R, L))


@pytest.mark.parametrize("tau", [0.0, 1.0 / np.sqrt(SXX)])  # no slope variance; as large as the slope noise
def test_replicated_design_is_calibrated(tau: float) -> None:
    rng = np.random.default_rng(7 if tau else 8)
    Y = _replicated(rng, STUDIES, tau)
    ts = two_stage(D, Y)
    p = prob_positive(ts["slope"], ts["se"], ts["df"])
    assert abs(_outside(p) - 0.05) < TOL, _outside(p)
    # fit() (statsmodels MixedLM running) gives these probabilities: its slope is MixedLM's and equals the
    # two-stage mean in a balanced design, its interval the unconstrained REML one
    models = []
    for k in range(12):
        f = fit(np.tile(D, R), Y[k].ravel(), np.repeat(np.arange(R), L))
        models.append(f.model)
        assert f.replicates == R and f.df == R - 1, f.note
        assert f.model == "mixedlm" or (f.model == "two-stage" and "MixedLM" in f.note), f.note  # labelled fallback
        assert f.slope == pytest.approx(float(ts["slope"][k]), abs=1e-6 * float(ts["se"][k]))
        assert f.prob_positive() == pytest.approx(float(p[k]), abs=1e-6)
    assert models.count("mixedlm") >= 9, models


def test_pooling_replicates_as_points_would_be_miscalibrated() -> None:
    """Why replicates need the hierarchical model: when replicate slopes vary (here sd twice the slope noise), the
    points' OLS on n - 2 df, ignoring the replicates, is far too confident (~19%); the two-stage t is not."""
    rng = np.random.default_rng(9)
    Y = rng.normal(size=(STUDIES, R, 1)) * 2.0 / np.sqrt(SXX) * D + rng.normal(size=(STUDIES, R, L))
    o = ols_reference(np.tile(D, R), Y.reshape(STUDIES, R * L).T)
    assert _outside(prob_positive(o["slope"], o["se"], o["df"])) > 0.12
    ts = two_stage(D, Y)
    assert abs(_outside(prob_positive(ts["slope"], ts["se"], ts["df"])) - 0.05) < TOL


@pytest.mark.slow
def test_unbalanced_replicated_design_through_fit() -> None:
    """400 null studies through fit() with one of the 28 cells missing (MixedLM + the per-replicate spread)."""
    rng = np.random.default_rng(11)
    Y = _replicated(rng, 400, 0.0)
    p = []
    for Ys in Y:
        keep = np.ones(R * L, dtype=bool)
        keep[rng.integers(R * L)] = False
        f = fit(np.tile(D, R)[keep], Ys.ravel()[keep], np.repeat(np.arange(R), L)[keep])
        assert "unbalanced" in f.note
        p.append(f.prob_positive())
    k = int(round(_outside(np.array(p)) * len(p)))
    ci = stats.binomtest(k, len(p)).proportion_ci(0.99)
    assert ci.low <= 0.05 <= ci.high, (k, ci)
