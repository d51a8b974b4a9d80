"""The slope of a replicated design: random intercept and random slope per replicate (statsmodels MixedLM).

Model, replicate r at level d_i::

    y_ri = (b0 + u_r) + (b1 + v_r) d_i + e_ri,   (u_r, v_r) ~ N(0, G),   e_ri ~ N(0, s2)

Fitted by REML with ``statsmodels.regression.mixed_linear_model.MixedLM`` (a kept library; no sampler of ours).
Its fixed slope is the reported slope; its G and s2 give ``tau`` (the between-replicate sd of the slope) and
``sigma``.

Why the interval is not MixedLM's own Wald interval: MixedLM keeps G positive semi-definite. With few replicates
(R = 3 to 5) G lands on that boundary in a large share of studies (the replicate slopes agree better than the
noise predicts), and there its standard error is the within-replicate one; read on R - 1 degrees of freedom it
puts P(slope > 0) outside [0.025, 0.975] in 0 of 396 null studies without a slope variance (7 levels x 4
replicates), read on a normal in 10% of them when the replicate slopes vary as much as their noise
(benchmarks/calibration.py; docs/analysis.md has the table). In a balanced design (every replicate at the
same levels) the REML estimate with G unconstrained has a closed form: the fixed slope is the mean of the
per-replicate least-squares slopes b_r, its variance sd(b_r)^2 / R, and (b1_hat - b1) / (sd(b_r) / sqrt(R)) is
exactly t on R - 1 degrees of freedom whatever G is (the flat-prior posterior of the same model is that t).
That is the interval used; it equals MixedLM's whenever MixedLM's G is interior, and ``mixedlm_se`` keeps
MixedLM's own value beside it. An unbalanced design (a replicate missing levels) uses the same spread of
per-replicate slopes, an approximation the note states.

Fallbacks, labelled in ``model`` and ``note``: 2 replicates (too few for a slope variance; MixedLM is not
fitted) and a MixedLM that fails or does not converge give ``model = "two-stage"``: the mean of the per-replicate
slopes with the same t on R - 1 df.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

MIN_MIXED_REPLICATES = 3


def _per_replicate(d: np.ndarray, y: np.ndarray, rep: np.ndarray, ids: list[object]
                   ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-replicate least-squares intercepts and slopes; pooled within-replicate residual variance and df."""
    a, b, ssr, df = [], [], 0.0, 0
    for r in ids:
        m = rep == r
        dr, yr = d[m], y[m]
        dc = dr - dr.mean()
        br = float(dc @ yr / (dc @ dc))
        ar = float(yr.mean() - br * dr.mean())
        res = yr - ar - br * dr
        a.append(ar)
        b.append(br)
        ssr += float(res @ res)
        df += int(dr.size) - 2
    return np.array(a), np.array(b), ssr, float(df)


def _mixedlm(d: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[object | None, str]:
    """MixedLM REML fit (random intercept and slope by group), or None and why not."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    X = np.column_stack([np.ones_like(d), d])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # L-BFGS then Powell from where it stopped: L-BFGS alone leaves ~1 in 5 fits at a G on its boundary
            # unconverged (7 levels x 4 replicates, no slope variance); the pair converged on all we tried
            res = MixedLM(y, X, groups=groups, exog_re=X).fit(reml=True, method=["lbfgs", "powell"])
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as e:
        return None, f"MixedLM failed ({type(e).__name__}: {str(e)[:80]})"
    fe = np.asarray(res.fe_params, dtype=np.float64)
    if not res.converged or not np.all(np.isfinite(fe)):
        return None, "MixedLM did not converge"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bse = np.asarray(res.bse_fe, dtype=np.float64)
    if not np.all(np.isfinite(bse)):
        return None, "MixedLM's fit is degenerate (non-finite standard errors)"
    return res, ""


def fit_replicated(d: np.ndarray, y: np.ndarray, rep: np.ndarray, ids: list[object]) -> dict[str, object]:
    """The fields of ``regression.Fit`` for a design with replicates ``ids`` (each spanning >= 2 levels)."""
    keep = np.isin(rep, np.array(ids, dtype=object))
    dropped = int((~keep).sum())
    d, y, rep = d[keep], y[keep], rep[keep]
    n, n_levels, R = int(d.size), int(np.unique(d).size), len(ids)
    a, b, ssr, wdf = _per_replicate(d, y, rep, ids)
    sigma = math.sqrt(ssr / wdf) if wdf > 0 else math.nan
    se = float(b.std(ddof=1)) / math.sqrt(R)
    cov = np.cov(np.vstack([a, b]), ddof=1) / R
    levels = {tuple(np.sort(d[rep == r])) for r in ids}
    notes = []
    if dropped:
        notes.append(f"{dropped} point(s) of replicates with a single level left out")
    if len(levels) > 1:
        notes.append("unbalanced (replicates at different levels): the interval uses the spread of the "
                     "per-replicate slopes, an approximation")
    base = {"n": n, "n_levels": n_levels, "ok": True, "replicates": R, "se": se, "df": float(R - 1),
            "sigma": sigma, "cov": cov}
    if R < MIN_MIXED_REPLICATES:
        notes.insert(0, f"two-stage: {R} replicates are too few for MixedLM's random-slope variance (needs "
                        f"{MIN_MIXED_REPLICATES}); mean of the per-replicate slopes, t on {R - 1} df")
        return dict(model="two-stage", note="; ".join(notes), slope=float(b.mean()), intercept=float(a.mean()),
                    intercept_se=math.sqrt(cov[0, 0]), **base)
    codes = {r: i for i, r in enumerate(ids)}
    res, why = _mixedlm(d, y, np.array([codes[r] for r in rep]))
    if res is None:
        notes.insert(0, f"two-stage: {why}; mean of the per-replicate slopes, t on {R - 1} df")
        return dict(model="two-stage", note="; ".join(notes), slope=float(b.mean()), intercept=float(a.mean()),
                    intercept_se=math.sqrt(cov[0, 0]), **base)
    fe = np.asarray(res.fe_params, dtype=np.float64)
    cov_re = np.asarray(res.cov_re, dtype=np.float64)
    bse = np.asarray(res.bse_fe, dtype=np.float64)
    tau = math.sqrt(max(float(cov_re[1, 1]), 0.0))
    if len(levels) == 1 and abs(float(fe[1]) - float(b.mean())) > 1e-6 * max(se, abs(float(b.mean())), 1e-12):
        # balanced: GLS equals the mean of the per-replicate slopes for any G, so a departure is a failed fit
        notes.insert(0, "two-stage: MixedLM's fixed slope departs from the balanced-design identity (a failed "
                        f"fit); mean of the per-replicate slopes, t on {R - 1} df")
        return dict(model="two-stage", note="; ".join(notes), slope=float(b.mean()), intercept=float(a.mean()),
                    intercept_se=math.sqrt(cov[0, 0]), **base)
    if len(levels) == 1 and abs(float(bse[1]) - se) > 1e-3 * max(se, 1e-300):
        notes.append("MixedLM's slope variance is at its boundary: the interval uses its unconstrained REML "
                     "value (spread of per-replicate slopes)")
    return dict(model="mixedlm", note="; ".join(notes), slope=float(fe[1]), intercept=float(fe[0]),
                intercept_se=math.sqrt(cov[0, 0]), tau=tau, mixedlm_se=float(bse[1]),
                **{**base, "sigma": math.sqrt(float(res.scale))})
