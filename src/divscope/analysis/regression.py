"""Bayesian linear regression of performance on diversity level, in closed form.

Model, for the subsets of one (strategy, size, metric) group with levels d_i and scores y_i::

    y_i = b0 + b1 * d_i + e_i,        e_i ~ N(0, s2)
    (b0, b1) | s2 ~ N(m0, s2 * V0),   s2 ~ Inv-Gamma(a0, b0)        (conjugate Normal-Inverse-Gamma)

Posterior (X = [1, d], precision form, L0 = V0^-1)::

    Ln = L0 + X'X,  Vn = Ln^-1,  mn = Vn (L0 m0 + X'y)
    an = a0 + n / 2
    bn = b0 + (|y - X mn|^2 + (mn - m0)' L0 (mn - m0)) / 2

(the last line equals the textbook ``b0 + (y'y + m0'L0m0 - mn'Ln mn) / 2`` without its cancellation). The
marginal posterior of the coefficients is a Student-t with 2*an degrees of freedom, location mn and scale
matrix (bn / an) Vn, so the slope's posterior standard deviation is ``sqrt(bn / (an - 1) * Vn[1, 1])``.

Default prior (``Prior()``), weakly informative and unit-free:

* m0 = (mean(y), 0); V0 = diag(100^2, 100^2): a priori the slope is centred on 0 and the intercept on the
  group's mean score, each with standard deviation 100 noise standard deviations (d spans [0, 1]), i.e.
  practically flat: the posterior mean slope is the least squares slope shrunk by ~1e-4 relative.
* a0 = 0.01 and b0 = a0 * var(y): an inverse-gamma worth 0.02 pseudo-observations, centred on the spread of
  the group's scores.

Centring the intercept on mean(y) and tying b0 to var(y) only fix the location and the unit of the scores
(the zero of -NLL or of a win rate is arbitrary; an intercept prior at 0 would pull the fit by an amount that
depends on where that zero lies): the fit is equivariant, scores a*y + c give slope and sd times a exactly,
and with a0 that small these choices carry negligible information once n >= 3. Pass explicit numbers (``Prior(mean=(m, 0), b0=...)``)
for a prior that does not look at the data.

Units: the slope is in score units per unit of d (d = 0 is the least diverse level, d = 1 the most). Tables
show it multiplied by 100 ("x 10^-2", as the paper does). ``band`` gives, over a grid of d, the posterior mean
of the regression line and its 1-sigma credible band (sd of b0 + b1 d), and the wider posterior predictive
sd of a new score at that level.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Prior:
    """Normal-Inverse-Gamma prior. ``scale``: prior sd of (intercept, slope) in noise-sd units.

    ``mean[0]=None`` centres the intercept on ``mean(y)`` and ``b0=None`` means ``a0 * var(y)``: a location
    and a unit, not information (see the module doc).
    """

    mean: tuple[float | None, float] = (None, 0.0)
    scale: tuple[float, float] = (100.0, 100.0)
    a0: float = 0.01
    b0: float | None = None

    def resolve_mean(self, y: np.ndarray) -> np.ndarray:
        m = self.mean[0]
        return np.array([float(np.mean(y)) if m is None else float(m), float(self.mean[1])])

    def resolve_b0(self, y: np.ndarray) -> float:
        if self.b0 is not None:
            return float(self.b0)
        v = float(np.var(y)) if y.size > 1 else 0.0
        if not v > 0:
            v = max(float(np.mean(y * y)), 1.0) * 1e-12  # constant scores: a tiny positive unit
        return self.a0 * v


@dataclass
class Fit:
    """Posterior of one regression. ``ok`` False when it could not be fitted (see ``note``)."""

    n: int
    n_levels: int
    ok: bool
    note: str = ""
    mn: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    Vn: np.ndarray = field(default_factory=lambda: np.full((2, 2), np.nan))
    an: float = math.nan
    bn: float = math.nan

    @property
    def dof(self) -> float:
        return 2.0 * self.an

    @property
    def intercept(self) -> float:
        return float(self.mn[0])

    @property
    def slope(self) -> float:
        return float(self.mn[1])

    def _var_factor(self) -> float:
        """bn / (an - 1): multiplies Vn to give the Student-t covariance (infinite if an <= 1)."""
        return self.bn / (self.an - 1.0) if self.an > 1.0 else math.inf

    @property
    def slope_sd(self) -> float:
        return math.sqrt(self._var_factor() * float(self.Vn[1, 1])) if self.ok else math.nan

    @property
    def intercept_sd(self) -> float:
        return math.sqrt(self._var_factor() * float(self.Vn[0, 0])) if self.ok else math.nan

    @property
    def sigma(self) -> float:
        """Posterior mean of the noise variance, as a standard deviation."""
        return math.sqrt(self._var_factor()) if self.ok else math.nan

    def prob_positive(self) -> float:
        """Posterior probability that the slope is > 0."""
        if not self.ok:
            return math.nan
        from scipy.special import stdtr  # Student-t CDF; scipy.stats is a much heavier import

        scale = math.sqrt(self.bn / self.an * float(self.Vn[1, 1]))
        return float(stdtr(self.dof, self.slope / scale))

    def band(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over levels ``d``: posterior mean line, its 1-sigma credible sd, and the predictive sd of a new score."""
        d = np.asarray(d, dtype=np.float64)
        X = np.column_stack([np.ones_like(d), d])
        mean = X @ self.mn
        q = np.einsum("ij,jk,ik->i", X, self.Vn, X)
        f = self._var_factor()
        return mean, np.sqrt(f * q), np.sqrt(f * (1.0 + q))


def fit(d: np.ndarray, y: np.ndarray, prior: Prior | None = None) -> Fit:
    """Posterior of score ``y`` on level ``d``. Fewer than two distinct levels: ``ok=False`` with a note."""
    prior = prior or Prior()
    d = np.asarray(d, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if d.shape != y.shape:
        raise ValueError("d and y differ in length")
    keep = np.isfinite(d) & np.isfinite(y)
    d, y = d[keep], y[keep]
    n = int(d.size)
    n_levels = int(np.unique(d).size)
    if n_levels < 2:
        return Fit(n=n, n_levels=n_levels, ok=False,
                   note=f"{n_levels} distinct diversity level(s): a slope needs at least 2")
    X = np.column_stack([np.ones(n), d])
    m0 = prior.resolve_mean(y)
    L0 = np.diag(1.0 / np.square(np.asarray(prior.scale, dtype=np.float64)))
    Ln = L0 + X.T @ X
    Vn = np.linalg.inv(Ln)
    Vn = (Vn + Vn.T) / 2.0
    mn = np.linalg.solve(Ln, L0 @ m0 + X.T @ y)
    r = y - X @ mn
    dm = mn - m0
    an = prior.a0 + n / 2.0
    bn = prior.resolve_b0(y) + 0.5 * (float(r @ r) + float(dm @ L0 @ dm))
    note = "" if n > 2 else "2 points: the slope is barely constrained"
    return Fit(n=n, n_levels=n_levels, ok=True, note=note, mn=mn, Vn=Vn, an=an, bn=bn)
