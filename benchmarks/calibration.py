"""How often P(slope > 0) falls outside [0.025, 0.975] under no true slope, per way of computing it.

    python benchmarks/calibration.py [--studies 2000] [--fits 400] [--seed 0]

Prints one line per procedure: the share of null studies with P outside [0.025, 0.975] (nominal 5%) and its
binomial 95% interval. The numbers quoted in docs/analysis.md and src/divscope/analysis/mixed.py come from
this script with its defaults. Procedures:

* one replicate, n levels: the old conjugate posterior (a_n = a0 + n/2, t on n + 2 a0 df) and the reference
  posterior (t on n - 2 df, ``regression.ols_reference``);
* 7 levels x 4 replicates with a random intercept (sd 1) and a random slope of sd tau (0, or the within-replicate
  slope noise sd/sqrt(Sxx)): the unconstrained two-stage t on R - 1 df (``regression.two_stage``, what
  ``fit`` uses), and statsmodels MixedLM's own Wald standard error read on R - 1 df and on a normal;
* ``fit`` itself (MixedLM path) on an unbalanced design (one cell of 28 missing).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import stats

from divscope.analysis.regression import fit, ols_reference, prob_positive, two_stage


def rate(p: np.ndarray) -> str:
    p = np.asarray(p)
    k, n = int(((p < 0.025) | (p > 0.975)).sum()), p.size
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    return f"{k / n:6.1%}  [{ci.low:.1%}, {ci.high:.1%}]  ({k}/{n})"


def conjugate_old(d: np.ndarray, y: np.ndarray, a0: float = 0.01, scale: float = 100.0) -> float:
    """The posterior divscope used before: Normal-Inverse-Gamma, m0 = (mean y, 0), b0 = a0 var(y)."""
    X = np.column_stack([np.ones_like(d), d])
    m0, L0 = np.array([y.mean(), 0.0]), np.eye(2) / scale**2
    Ln = L0 + X.T @ X
    mn = np.linalg.solve(Ln, L0 @ m0 + X.T @ y)
    r, dm = y - X @ mn, mn - m0
    an = a0 + d.size / 2
    bn = a0 * y.var() + 0.5 * (r @ r + dm @ L0 @ dm)
    return float(stats.t.cdf(mn[1] / np.sqrt(bn / an * np.linalg.inv(Ln)[1, 1]), 2 * an))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--fits", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for n in (5, 7):
        d = np.linspace(0, 1, n)
        Y = rng.normal(size=(n, a.studies))
        o = ols_reference(d, Y)
        print(f"1 replicate, n = {n}: reference t on n - 2 df      {rate(prob_positive(o['slope'], o['se'], o['df']))}")
        print(f"1 replicate, n = {n}: old conjugate (a0 + n/2)     "
              f"{rate(np.array([conjugate_old(d, Y[:, j]) for j in range(a.studies)]))}")
    R, L = 4, 7
    d = np.linspace(0, 1, L)
    sxx = float(((d - d.mean()) ** 2).sum())
    for tau in (0.0, 1 / np.sqrt(sxx)):
        def draw(m: int, tau: float = tau) -> np.ndarray:
            return (rng.normal(size=(m, R, 1)) + rng.normal(0, 1, (m, R, 1)) * tau * d
                    + rng.normal(size=(m, R, L))) if tau else rng.normal(size=(m, R, 1)) + rng.normal(size=(m, R, L))
        ts = two_stage(d, draw(a.studies))
        print(f"{R} x {L}, tau = {tau:.2f}: two-stage t on R - 1 df        {rate(prob_positive(ts['slope'], ts['se'], ts['df']))}")
        Y = draw(a.fits)
        t0 = time.perf_counter()
        p_fit, p_t, p_z = [], [], []
        for Ys in Y:
            f = fit(np.tile(d, R), Ys.ravel(), np.repeat(np.arange(R), L))
            p_fit.append(f.prob_positive())
            if f.model == "mixedlm":
                p_t.append(float(stats.t.cdf(f.slope / f.mixedlm_se, R - 1)))
                p_z.append(float(stats.norm.cdf(f.slope / f.mixedlm_se)))
        s = (time.perf_counter() - t0) / a.fits
        print(f"{R} x {L}, tau = {tau:.2f}: fit() (MixedLM, balanced)    {rate(np.array(p_fit))}  {s * 1000:.0f} ms/fit")
        print(f"{R} x {L}, tau = {tau:.2f}: MixedLM Wald se, t R - 1 df  {rate(np.array(p_t))}")
        print(f"{R} x {L}, tau = {tau:.2f}: MixedLM Wald se, normal      {rate(np.array(p_z))}")
        p_unb = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for Ys in Y:
                keep = np.ones(R * L, dtype=bool)
                keep[rng.integers(R * L)] = False
                f = fit(np.tile(d, R)[keep], Ys.ravel()[keep], np.repeat(np.arange(R), L)[keep])
                p_unb.append(f.prob_positive())
        print(f"{R} x {L}, tau = {tau:.2f}: fit(), one cell missing      {rate(np.array(p_unb))}")


if __name__ == "__main__":
    main()
