"""Figures: score against diversity level (and against types covered) per strategy, and metric/score
correlations, as PNG bytes.

Matplotlib with the Agg canvas and its default style (a user's matplotlibrc does not leak in), fixed size and
dpi, no PNG ``Software`` tag and no timestamp: the same inputs give byte-identical files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from divscope.analysis.regression import Fit
from divscope.errors import DivscopeError

DPI = 100
SIDES = ("instruction", "response")
LEVELS = ("macro", "meso", "micro")
_POINT = "#1f77b4"
_LINE = "#d62728"
_RANDOM = "#7f7f7f"
_ANCHOR = "#6a3d9a"


def _mpl() -> Any:
    try:
        import matplotlib
        import matplotlib.style
    except ImportError as e:  # pragma: no cover - matplotlib ships with divscope[train]
        raise DivscopeError("plots need matplotlib: pip install matplotlib (or divscope[train])") from e
    return matplotlib  # no pyplot, no global backend: figures draw on their own Agg canvas


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def score_label(metric: str) -> str:
    return {"nll": "score (-mean NLL, higher is better)", "judge": "score (win rate)"}.get(
        metric, f"score ({metric})")


def _ylim(points: Mapping[str, tuple[Sequence[float], Sequence[float]]], random: Mapping[str, Any] | None,
          anchor: Mapping[str, Any] | None) -> tuple[float, float, bool]:
    """Shared y range of the subsets and the random band; the untrained model's score joins it when it lies
    within half a range of it (else it is printed, not drawn, so the subsets keep a readable scale)."""
    ys = [float(v) for _, y in points.values() for v in y]
    if random and random.get("n"):
        ys += [random["mean"] - (random.get("std") or 0.0), random["mean"] + (random.get("std") or 0.0)]
    if not ys:
        return 0.0, 1.0, bool(anchor)
    lo, hi = min(ys), max(ys)
    span = hi - lo or max(abs(hi), 1.0) * 1e-3
    drawn = bool(anchor) and lo - span / 2 <= anchor["mean"] <= hi + span / 2
    if drawn:
        lo, hi = min(lo, anchor["mean"]), max(hi, anchor["mean"])
        span = hi - lo
    return lo - 0.08 * span, hi + 0.08 * span, drawn


def _reference(ax: Any, random: Mapping[str, Any] | None, anchor: Mapping[str, Any] | None, drawn: bool) -> None:
    """The random baseline's mean +- sd band and the untrained model's score, as horizontal references."""
    if random and random.get("n"):
        m, s = random["mean"], random.get("std") or 0.0
        ax.axhspan(m - s, m + s, color=_RANDOM, alpha=0.18, linewidth=0,
                   label=f"random mean \u00b1 sd (n={random['n']})")
        ax.axhline(m, color=_RANDOM, linestyle="--", linewidth=1.0)
    if anchor and drawn:
        ax.axhline(anchor["mean"], color=_ANCHOR, linestyle=":", linewidth=1.4, label="untrained model (base)")
    elif anchor:
        ax.text(0.02, 0.03, f"untrained model: {anchor['mean']:.4g} (off scale)", transform=ax.transAxes,
                fontsize=8, color=_ANCHOR)


def _panels(title: str, metric: str, xlabel: str, sharex: bool) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 7), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 3, sharex=sharex, sharey=True)
    for ax in axes[1, :]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(score_label(metric), fontsize=9)
    for ax in axes.flat:
        ax.grid(True, color="#e6e6e6", linewidth=0.6)
        ax.set_axisbelow(True)
    fig.suptitle(title, fontsize=12)
    return fig, axes


def _legend(fig: Any, axes: Any) -> bytes:
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    return _png(fig)


def diversity_figure(points: Mapping[str, tuple[Sequence[float], Sequence[float]]], fits: Mapping[str, Fit],
                     random: Mapping[str, Any] | None, title: str, metric: str,
                     anchor: Mapping[str, Any] | None = None) -> bytes:
    """2 x 3 panels (instruction/response x macro/meso/micro): points, fitted line with its 90% credible band,
    the random baseline's mean +- sd band and the untrained model's score. Missing strategies: empty panel."""
    mpl = _mpl()
    with mpl.style.context("default"):
        fig, axes = _panels(title, metric, "diversity level d", sharex=True)
        lo, hi, drawn = _ylim(points, random, anchor)
        grid = np.linspace(0.0, 1.0, 101)
        for i, side in enumerate(SIDES):
            for j, level in enumerate(LEVELS):
                ax = axes[i, j]
                strategy = f"{side}-{level}"
                ax.set_xlim(-0.03, 1.03)
                ax.set_ylim(lo, hi)
                _reference(ax, random, anchor, drawn)
                pts = points.get(strategy)
                fit = fits.get(strategy)
                if pts is None or len(pts[0]) == 0:
                    ax.set_title(f"{strategy}\nno results", fontsize=10, color="#888888")
                    continue
                ax.scatter(pts[0], pts[1], s=18, color=_POINT, alpha=0.8, zorder=3, label="subsets")
                if fit is not None and fit.ok:
                    mean, band_lo, band_hi = fit.band(grid)
                    ax.fill_between(grid, band_lo, band_hi, color=_LINE, alpha=0.18, linewidth=0,
                                    label="fitted line, 90% band")
                    ax.plot(grid, mean, color=_LINE, linewidth=1.6)
                    sub = f"slope {100 * fit.slope:+.2f} \u00d710\u207b\u00b2"
                    if fit.inference:
                        sub += f", P(>0) {fit.prob_positive():.2f}"
                    if fit.replicates > 1:
                        sub += f", {fit.replicates} reps"
                else:
                    sub = "slope n/a: " + (fit.note if fit is not None else "no levels")
                ax.set_title(f"{strategy}\n{sub}", fontsize=10)
        return _legend(fig, axes)


def measured_figure(points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                    random: Mapping[str, Any] | None, title: str, metric: str,
                    anchor: Mapping[str, Any] | None = None, xlabel: str = "types covered (own axis)") -> bytes:
    """Score against measured diversity (types the subset covers on its strategy's own axis, or its Vendi score),
    per strategy: what the level d bought, read off the subsets themselves; each panel has its own x range."""
    mpl = _mpl()
    with mpl.style.context("default"):
        fig, axes = _panels(title, metric, xlabel, sharex=False)
        lo, hi, drawn = _ylim(points, random, anchor)
        for i, side in enumerate(SIDES):
            for j, level in enumerate(LEVELS):
                ax = axes[i, j]
                strategy = f"{side}-{level}"
                ax.set_ylim(lo, hi)
                _reference(ax, random, anchor, drawn)
                x, y = points.get(strategy, ((), ()))
                if len(x) == 0:
                    ax.set_title(f"{strategy}\nnot recorded", fontsize=10, color="#888888")
                    continue
                ax.scatter(x, y, s=18, color=_POINT, alpha=0.8, zorder=3, label="subsets")
                ax.set_title(f"{strategy}\n{min(x):,.4g} to {max(x):,.4g}", fontsize=10)
        return _legend(fig, axes)


def correlation_figure(rows: Sequence[Mapping[str, Any]], title: str, limit: int = 30) -> bytes:
    """Horizontal bars of Pearson r per metric column (in table order), Spearman rho as dots; a bar is faded when
    its Benjamini-Hochberg q >= 0.05 (its p when no q is given)."""
    mpl = _mpl()
    from matplotlib.figure import Figure

    rows = [r for r in rows if r.get("pearson_r") is not None][:limit]
    with mpl.style.context("default"):
        fig = Figure(figsize=(8, 1.6 + 0.32 * max(len(rows), 1)), dpi=DPI, layout="constrained")
        ax = fig.subplots()
        if not rows:
            ax.text(0.5, 0.5, "no metric with enough data", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            y = np.arange(len(rows))[::-1]
            r = np.array([row["pearson_r"] for row in rows])
            p = np.array([row.get("pearson_q", row["pearson_p"]) if row.get("pearson_q", row["pearson_p"]) is not None
                          else 1.0 for row in rows])
            colors = ["#2c7fb8" if v >= 0 else "#d95f0e" for v in r]
            alphas = [0.9 if pv < 0.05 else 0.35 for pv in p]
            for yi, ri, c, a in zip(y, r, colors, alphas, strict=True):
                ax.barh(yi, ri, color=c, alpha=a, height=0.7)
            rho = [row["spearman_rho"] if row["spearman_rho"] is not None else math.nan for row in rows]
            ax.scatter(rho, y, marker="o", s=16, color="black", zorder=3, label="Spearman \u03c1")
            ax.set_yticks(y, [row["column"] for row in rows], fontsize=8)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_xlim(-1.05, 1.05)
            ax.set_xlabel("Pearson r with score (bars; faded: BH q \u2265 0.05)")
            ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.legend(loc="lower right", fontsize=8, frameon=False)
        ax.set_title(title, fontsize=11)
        return _png(fig)


# ----------------------------------------------------------------------------------------------- compare

_STRATEGY_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_FLAG = "#d62728"


def compare_figure(rows: Sequence[Mapping[str, Any]], measures: Sequence[tuple[str, str]], title: str) -> bytes:
    """One panel per (column, label) of ``measures``: each leveled strategy's subsets against the diversity level d
    (a line per strategy and seed), the random subsets' mean +- sd as a grey band, every other baseline's mean as a
    dotted horizontal line. ``rows``: the rows of ``divscope.analysis.compare.compare`` (one subset each)."""
    mpl = _mpl()
    from matplotlib.figure import Figure

    leveled = sorted({r["strategy"] for r in rows if r.get("diversity") is not None})
    flat = sorted({r["strategy"] for r in rows if r.get("diversity") is None and r["strategy"] != "random"})
    colour = {s: _STRATEGY_COLOURS[i % len(_STRATEGY_COLOURS)] for i, s in enumerate(leveled)}
    ncols = min(4, max(1, len(measures)))
    nrows = max(1, math.ceil(len(measures) / ncols))
    with mpl.style.context("default"):
        fig = Figure(figsize=(3.4 * ncols, 2.9 * nrows + 0.9), dpi=DPI, layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (key, label) in zip(axes, measures, strict=False):
            ax.grid(True, color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_title(label, fontsize=10)
            ax.set_xlim(-0.05, 1.05)
            ax.set_xlabel("diversity level d", fontsize=8)
            ax.tick_params(labelsize=8)
            rand = [float(r[key]) for r in rows if r["strategy"] == "random" and _finite(r.get(key))]
            if rand:
                m, s = float(np.mean(rand)), float(np.std(rand, ddof=1)) if len(rand) > 1 else 0.0
                ax.axhspan(m - s, m + s, color=_RANDOM, alpha=0.18, linewidth=0,
                           label=f"random mean \u00b1 sd (n={len(rand)})")
                ax.axhline(m, color=_RANDOM, linestyle="--", linewidth=1.0)
            for j, strategy in enumerate(flat):
                vals = [float(r[key]) for r in rows if r["strategy"] == strategy and _finite(r.get(key))]
                if vals:
                    ax.axhline(float(np.mean(vals)), color=_ANCHOR if j == 0 else "#555555",
                               linestyle=":" if j == 0 else "-.", linewidth=1.3, label=f"{strategy} (mean)")
            for strategy in leveled:
                by_run: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
                for r in rows:
                    if r["strategy"] == strategy and _finite(r.get(key)):
                        run = (r.get("size"), r.get("seed"), r.get("replicate"))
                        by_run.setdefault(run, []).append((float(r["diversity"]), float(r[key])))
                for i, pts in enumerate(by_run[k] for k in sorted(by_run, key=str)):
                    pts.sort()
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, linewidth=1.4,
                            color=colour[strategy], alpha=0.9, label=strategy if i == 0 else None)
        for ax in axes[len(measures):]:
            ax.set_axis_off()
        handles, labels = [], []
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8,
                       frameon=False)
        fig.suptitle(title, fontsize=12)
        return _png(fig)


def lengths_figure(labels: Sequence[str], panels: Sequence[tuple[str, Sequence[float | None], Sequence[bool],
                                                                 Mapping[str, Any] | None]], title: str) -> bytes:
    """Horizontal bars of mean length per subset, one panel per side: ``(side label, values, flagged, random)``
    where ``random`` holds the random subsets' ``mean`` and ``sd``; flagged subsets' bars are red."""
    mpl = _mpl()
    from matplotlib.figure import Figure

    with mpl.style.context("default"):
        fig = Figure(figsize=(6.2 * max(1, len(panels)), 1.4 + 0.26 * max(len(labels), 1)), dpi=DPI,
                     layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), sharey=True, squeeze=False)).ravel()
        y = np.arange(len(labels))[::-1]
        for ax, (name, values, flagged, random) in zip(axes, panels, strict=False):
            vals = [float(v) if _finite(v) else 0.0 for v in values]
            ax.barh(y, vals, height=0.7, color=[_FLAG if f else _POINT for f in flagged], alpha=0.9)
            if random and random.get("mean") is not None:
                m, s = float(random["mean"]), float(random.get("sd") or 0.0)
                ax.axvspan(m - s, m + s, color=_RANDOM, alpha=0.25, linewidth=0)
                ax.axvline(m, color=_RANDOM, linestyle="--", linewidth=1.2)
            ax.set_yticks(y, list(labels), fontsize=8)
            ax.set_xlabel(f"{name}: mean target tokens (red: flagged against random)", fontsize=9)
            ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
        fig.suptitle(title, fontsize=12)
        return _png(fig)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def paired_figure(panels: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], title: str) -> bytes:
    """Forest panels of paired differences: per contrast (a row: ``a``, ``b``, ``diffs``, ``diff``, ``ci_low``,
    ``ci_high``), each replicate's difference as a dot, the mean with its 90% interval as a bar, zero dashed.
    ``panels``: (panel title, its contrasts, top to bottom)."""
    mpl = _mpl()
    from matplotlib.figure import Figure

    panels = [(t, list(rows)) for t, rows in panels if rows]
    height = sum(0.42 * len(rows) + 1.0 for _, rows in panels) + 0.6
    with mpl.style.context("default"):
        fig = Figure(figsize=(8.0, max(2.5, height)), dpi=DPI, layout="constrained")
        if not panels:
            return _png(fig)
        axes = np.atleast_1d(fig.subplots(len(panels), 1, squeeze=False,
                                          height_ratios=[len(r) + 1.4 for _, r in panels])).ravel()
        rng = np.random.default_rng(0)  # vertical jitter of the dots only; fixed, so the file is reproducible
        for ax, (name, rows) in zip(axes, panels, strict=True):
            ax.axvline(0.0, color=_RANDOM, linestyle="--", linewidth=1.0)
            ax.grid(True, axis="x", color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
            for i, c in enumerate(rows):
                y = len(rows) - 1 - i
                x = [float(v) for v in c.get("diffs") or []]
                ax.scatter(x, y + rng.uniform(-0.15, 0.15, len(x)), s=14, color=_POINT, alpha=0.7, zorder=3,
                           label="one replicate" if i == 0 else None)
                if _finite(c.get("ci_low")) and _finite(c.get("ci_high")):
                    ax.plot([c["ci_low"], c["ci_high"]], [y, y], color=_LINE, linewidth=2.2, zorder=4,
                            label="mean, 90% interval" if i == 0 else None)
                if _finite(c.get("diff")):
                    ax.plot([c["diff"]], [y], marker="D", markersize=6, color=_LINE, zorder=5)
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels([f"{c['a']} \u2212 {c['b']} (n={c.get('n', 0)})" for c in reversed(rows)],
                               fontsize=8)
            ax.set_ylim(-0.7, len(rows) - 0.3)
            ax.set_title(name, fontsize=10)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_xlabel("paired difference of score (same replicate: same seeds, same prompts)", fontsize=8)
        fig.suptitle(title, fontsize=11)
        return _legend(fig, axes)
