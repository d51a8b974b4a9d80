"""AlpacaEval 2.0's length-controlled win rate (Dubois et al. 2024), offline.

AlpacaEval fits a logistic GLM to the judge's per-item preferences for the model over the baseline,

    logit P(model preferred on item i) = theta * 1  +  phi * tanh(delta_i / sd(delta))  [ + psi * difficulty_i ]

where ``delta_i`` = baseline answer length - model answer length (characters) and ``theta`` is the model's own
term, then predicts every item at ``delta = 0`` and averages: the win rate the model would have with answers
as long as the baseline's. The fit is the one ``alpaca_eval.metrics.glm_winrate`` makes: the preference as a
soft label (each item twice, label 1 weighted by p and label 0 by 1 - p), L1-penalised logistic regression
without intercept (liblinear, ``random_state=123``), the penalty chosen among 10 values ``C`` in
10^-4..10^4 by 5-fold cross-validation grouped by item on the soft log-loss, refitted on all items.

What differs from AlpacaEval's leaderboard number (its GLM ``length_controlled_v1``), and why: that GLM also has
the instruction term ``psi * difficulty_i`` and pulls the fit towards two "gamed" versions of the baseline
(``regularize_to_baseline_lambda = 0.2``). Both need ``df_gamed.csv``, which ``alpaca-eval`` downloads from the
Hugging Face hub at run time and no package ships, so divscope fits the package's own
``length_controlled_minimal`` GLM (the formula above without the bracket). The two can differ a lot: on
alpaca-7b's leaderboard annotations, minimal gives 19.5% where v1 gives 5.9% (the win rate is 2.6%): a model
with much shorter answers than the baseline gets more credit without the regularisation. Use it to compare
divscope's cells with each other (same baseline, same judge), not with AlpacaEval's published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GLM = "length_controlled_minimal"
FORMULA = "np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1"
MIN_ITEMS = 10  # 5-fold cross-validation needs a few items per fold
_CS = np.logspace(-4, 4, 10)  # LogisticRegressionCV's default grid (Cs=10)


def _model(c: float) -> Any:
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}  # `penalty` is deprecated in 1.8
    return LogisticRegression(C=c, solver="liblinear", fit_intercept=False, random_state=123, dual=False, **l1)


def _soft_logloss(p: np.ndarray, q: np.ndarray) -> float:
    q = np.clip(q, 1e-15, 1 - 1e-15)
    return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))


def fit_glm(preferences: Sequence[float], model_lengths: Sequence[int], baseline_lengths: Sequence[int]
            ) -> tuple[np.ndarray, float]:
    """(coefficients [phi, theta], the chosen C) of the length GLM on soft preferences in [0, 1]."""
    from sklearn.model_selection import GroupKFold

    p = np.asarray(preferences, dtype=float)
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(model_lengths, dtype=float)
    sd = delta.std(ddof=1)
    x = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    design = np.column_stack([x, np.ones_like(x)])
    n = len(p)
    xd = np.vstack([design, design])
    yd = np.concatenate([np.ones(n), np.zeros(n)])
    wd = np.concatenate([p, 1 - p])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    folds = list(GroupKFold(n_splits=5).split(xd, yd, groups))
    scores = []
    for c in _CS:
        losses = []
        for train, test in folds:
            m = _model(c).fit(xd[train], yd[train], sample_weight=wd[train])
            losses.append(_soft_logloss(np.where(yd[test] == 1, wd[test], 1 - wd[test]),
                                        m.predict_proba(xd[test])[:, 1]))
        scores.append(-np.mean(losses))
    best = float(_CS[int(np.argmax(scores))])
    return _model(best).fit(xd, yd, sample_weight=wd).coef_[0], best


def length_controlled_win_rate(preferences: Sequence[float], model_lengths: Sequence[int],
                               baseline_lengths: Sequence[int]) -> dict[str, Any]:
    """The result fields: ``length_controlled_win_rate`` (a fraction in [0, 1], None below ``MIN_ITEMS`` items),
    the GLM's name, formula and coefficients."""
    out: dict[str, Any] = {"length_controlled_win_rate": None, "lc_glm": GLM, "lc_formula": FORMULA}
    if len(preferences) < MIN_ITEMS:
        out["lc_skipped"] = f"needs at least {MIN_ITEMS} judged items, got {len(preferences)}"
        return out
    coef, c = fit_glm(preferences, model_lengths, baseline_lengths)
    out["length_controlled_win_rate"] = round(float(1 / (1 + np.exp(-coef[1]))), 6)  # every item at delta = 0
    out["lc_coefficients"] = {"np.tanh(std_delta_len)": round(float(coef[0]), 6),
                              "not_gamed_baseline.astype(float)": round(float(coef[1]), 6), "C": c}
    return out
