"""Issue 16, item 8: the numbers the restated docs/results READMEs quote that are not in analysis/ or ablations/.

Everything is recomputed from the committed rows (``results.jsonl`` of docs/results/archive/reproduce-cpu,
docs/results/archive/ablations-cpu and its variants) with divscope's own analysis code; nothing is trained.

    PYTHONPATH=src python benchmarks/restate_results.py [--root docs/results]

Prints, per study:

* the slope of each strategy with its d = 0 subset left out (``regression.fit``, reference prior, 90% interval)
  and every drop-one slope with Cook's distance, so a reader sees which single subset carries a slope;
* the best subset's z against the random baseline next to the expected maximum of N standard normal draws, and
  the range of that z implied by the 90% interval of a standard deviation estimated from 3 random seeds;
* correlations (``correlation.correlations``: Pearson, Spearman, BH q, partial on length) with the typeless
  d = 0 subsets left out, and the ablations' pooled cheap predictors the same way;
* differences between the ablation studies' slopes (Welch t) and the minimum detectable slope of the designs
  behind the "no effect" claims (``plan.design`` / ``plan.min_detectable``: 80% power, two-sided 0.05), with
  the per-cell noise taken from the pooled residuals of the fits (said where).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy import integrate, stats

from divscope.analysis import ablations as ab
from divscope.analysis import correlation as corr
from divscope.analysis.plan import design, min_detectable
from divscope.analysis.regression import LEVEL, fit, t_quantile
from divscope.analysis.results import load_results

MICRO = ("instruction-micro", "response-micro")
TOP = ("m.response.mean_tokens", "m.response.token_entropy_bits", "m.response.types_micro",
       "m.response.self_bleu", "m.response.distinct_3", "m.response.vendi")


def x100(v: float) -> str:
    return f"{100 * v:+.2f}"


def describe(f) -> str:  # noqa: ANN001
    lo, hi = f.interval()
    return (f"{x100(f.slope)} (sd {100 * f.se:.2f}, 90% [{x100(lo)}, {x100(hi)}], P(>0) {f.prob_positive():.3f}, "
            f"n {f.n}, df {f.df:.0f}, sigma {f.sigma:.5f})")


def expected_max(n: int) -> float:
    """E[max of n iid standard normals]."""
    g = lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1)  # noqa: E731
    return float(integrate.quad(g, -12, 12)[0])


def sd_interval(sd: float, runs: int, level: float = LEVEL) -> tuple[float, float]:
    """Central ``level`` confidence interval of a normal sd estimated from ``runs`` draws (chi-square)."""
    df = runs - 1
    a = (1 - level) / 2
    return sd * math.sqrt(df / stats.chi2.ppf(1 - a, df)), sd * math.sqrt(df / stats.chi2.ppf(a, df))


def welch(f1, f2) -> str:  # noqa: ANN001
    """Difference f1 - f2 of two independent slope fits: estimate, 90% interval (Welch-Satterthwaite df)."""
    v1, v2 = f1.se ** 2, f2.se ** 2
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / f1.df + v2 ** 2 / f2.df)
    h = t_quantile(0.5 + LEVEL / 2, df) * se
    d = f1.slope - f2.slope
    return f"{x100(d)} (90% [{x100(d - h)}, {x100(d + h)}], df {df:.1f})"


def drop_one(d: np.ndarray, y: np.ndarray) -> list[str]:
    """Slope without each point, and Cook's distance of each point (OLS, 2 parameters)."""
    full = fit(d, y)
    X = np.column_stack([np.ones_like(d), d])
    H = X @ np.linalg.inv(X.T @ X) @ X.T
    h = np.diag(H)
    e = y - (full.intercept + full.slope * d)
    s2 = full.sigma ** 2
    cook = e ** 2 / (2 * s2) * h / (1 - h) ** 2
    out = []
    for i in range(d.size):
        keep = np.arange(d.size) != i
        f = fit(d[keep], y[keep])
        out.append(f"    without d={d[i]:.3f} (score {y[i]:.4f}, leverage {h[i]:.2f}, Cook's D {cook[i]:.2f}): "
                   f"{describe(f)}")
    return out


def best_vs_noise(score: float, mean: float, sd: float, runs: int, draws: list[int]) -> list[str]:
    z = (score - mean) / sd
    lo, hi = sd_interval(sd, runs)
    out = [f"  z = ({score:.5f} - {mean:.5f}) / {sd:.5f} = {z:.2f} random sd; the sd is from {runs} seeds "
           f"({runs - 1} df): its 90% interval [{lo:.5f}, {hi:.5f}] puts z in [{(score - mean) / hi:.2f}, "
           f"{(score - mean) / lo:.2f}]"]
    for n in draws:
        pmax = 1 - stats.norm.cdf(z) ** n
        out.append(f"  expected max of {n} standard normal draws: {expected_max(n):.2f} sd; "
                   f"P(max of {n} noise draws >= {z:.2f}) = {pmax:.2f}")
    return out


def typeless(r: dict) -> bool:
    """A strategy subset that covers no type on its own axis (meso: untagged texts; micro: texts with no
    mid-band type): the d = 0 subsets of meso and micro in these studies."""
    side, _, level = str(r.get("strategy", "")).partition("-")
    return r.get("diversity") is not None and r.get(f"m.{side}.types_{level}") == 0.0


def corr_lines(rows: list[dict], label: str) -> list[str]:
    out = [f"  correlations with the score, {label} ({len(rows)} subsets; q: BH over {len(corr.metric_columns(rows))} columns)"]
    res = {c["column"]: c for c in corr.correlations(rows)}
    for col in TOP:
        c = res.get(col)
        if not c:
            continue
        f = lambda k, c=c: "n/a" if c[k] is None else f"{c[k]:+.3f}"  # noqa: E731
        g = lambda k, c=c: "n/a" if c[k] is None else f"{c[k]:.2g}"  # noqa: E731
        out.append(f"    {col:32s} pearson {f('pearson_r')} (p {g('pearson_p')}, q {g('pearson_q')}), "
                   f"spearman {f('spearman_rho')} (q {g('spearman_q')}), partial|length {f('partial_r')} "
                   f"(q {g('partial_q')}), within {f('within_r')} (q {g('within_q')})")
    return out


def reproduce(root: Path) -> None:
    study = root / "archive" / "reproduce-cpu"
    rows, _ = load_results(study)
    print(f"== {study} ({len(rows)} rows, one seed per cell) ==")
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s not in ("random", "base")]
    resid, dfs, refits = 0.0, 0, {}
    for s in strategies:
        g = [r for r in rows if r["strategy"] == s]
        d = np.array([r["diversity"] for r in g])
        y = np.array([r["score"] for r in g])
        f = fit(d, y)
        resid += f.sigma ** 2 * f.df
        dfs += int(f.df)
        d0 = next(r for r in g if r["diversity"] == 0)
        print(f"{s}: all 7 levels {describe(f)}; d = 0 subset typeless: {typeless(d0)}")
        h95 = t_quantile(0.975, f.df) * f.se
        print(f"  95% interval [{x100(f.slope - h95)}, {x100(f.slope + h95)}]")
        refits[s] = fit(d[d > 0], y[d > 0])
        print(f"  without d = 0: {describe(refits[s])}")
        if s in MICRO:
            print("\n".join(drop_one(d, y)))
    print(f"pooled residual sd of the 6 fits: {math.sqrt(resid / dfs):.5f} ({dfs} df)")
    p2 = [2 * min(f.prob_positive(), 1 - f.prob_positive()) for f in refits.values()]
    print("without d = 0, two-sided p and BH q over the 6 refits: " + ", ".join(
        f"{s} p {p:.3f} q {q:.3f}" for s, p, q in zip(refits, p2, corr.bh_qvalues(p2), strict=True)))
    rand = [r["score"] for r in rows if r["strategy"] == "random"]
    mean, sd = float(np.mean(rand)), float(np.std(rand, ddof=1))
    h = t_quantile(0.5 + LEVEL / 2, len(rand) - 1) * sd / math.sqrt(len(rand))
    print(f"random baseline: mean {mean:.5f} (90% [{mean - h:.5f}, {mean + h:.5f}]), sd {sd:.5f} "
          f"(90% [{sd_interval(sd, len(rand))[0]:.5f}, {sd_interval(sd, len(rand))[1]:.5f}]), {len(rand)} seeds")
    subsets = [r for r in rows if r["diversity"] is not None]
    best = max(subsets, key=lambda r: r["score"])
    print(f"best of the {len(subsets)} strategy subsets: {best['cell']} {best['score']:.5f}")
    print("\n".join(best_vs_noise(best["score"], mean, sd, len(rand), [len(subsets), len(rows)])))
    scored = [r for r in rows if r["strategy"] != "base"]
    print("\n".join(corr_lines(scored, "all subsets")))
    print("\n".join(corr_lines([r for r in scored if not typeless(r)],
                               "the 4 typeless d = 0 subsets (meso and micro) left out")))
    print("\n".join(corr_lines([r for r in scored if not (r["strategy"] == "response-micro" and r["diversity"] == 0)],
                               "response-micro d = 0 left out")))


def ablation(root: Path) -> None:
    study = root / "archive" / "ablations-cpu"
    per_study = {}
    for s in ab.studies(study):
        per_study[s["name"]], _ = load_results(s["dir"])
    print(f"\n== {study} (7 studies x 8 rows, one seed per cell) ==")
    fits_all, fits_pos = {}, {}
    for name, rows in per_study.items():
        g = [r for r in rows if r["strategy"] == "response-micro"]
        d = np.array([r["diversity"] for r in g])
        y = np.array([r["score"] for r in g])
        fits_all[name], fits_pos[name] = fit(d, y), fit(d[d > 0], y[d > 0])
        d0 = next(r for r in g if r["diversity"] == 0)
        print(f"{name}: d = 0 subset {d0['m.response.mean_tokens']:.1f} response tokens, "
              f"{d0['m.response.types_micro']:.0f} types covered")
        print(f"  all 5 levels: {describe(fits_all[name])}")
        print(f"  d > 0 only:   {describe(fits_pos[name])}")
        rand = [r["score"] for r in rows if r["strategy"] == "random"]
        if name in ("base", "length"):
            mean, sd = float(np.mean(rand)), float(np.std(rand, ddof=1))
            top = max(g, key=lambda r: r["diversity"])
            h = t_quantile(0.5 + LEVEL / 2, len(rand) - 1) * sd / math.sqrt(len(rand))
            print(f"  random: mean {mean:.5f} (90% [{mean - h:.5f}, {mean + h:.5f}]), sd {sd:.5f} over {len(rand)} "
                  f"seeds; d = 1 subset {top['score']:.5f}")
            print("\n".join(best_vs_noise(top["score"], mean, sd, len(rand), [])))
    for name in per_study:
        if name != "base":
            print(f"{name} - base: all levels {welch(fits_all[name], fits_all['base'])}; "
                  f"d > 0 {welch(fits_pos[name], fits_pos['base'])}")
    print(f"length (all levels) - base (d > 0): {welch(fits_all['length'], fits_pos['base'])}")
    print(f"llama3 - llama2: all levels {welch(fits_all['llama3'], fits_all['llama2'])}; "
          f"d > 0 {welch(fits_pos['llama3'], fits_pos['llama2'])}")
    for label, fits, levels in (("all 5 levels", fits_all, [0, .25, .5, .75, 1]),
                                ("d > 0 (4 levels)", fits_pos, [.25, .5, .75, 1])):
        df = sum(f.df for f in fits.values())
        var = sum(f.sigma ** 2 * f.df for f in fits.values()) / df
        se, dfit = design(levels, 1, var)
        se_diff = math.sqrt(2) * se
        print(f"{label}: pooled residual sd {math.sqrt(var):.5f} ({df:.0f} df over 7 fits); one fit: sd of slope "
              f"{100 * se:.2f}, min detectable slope {100 * min_detectable(se, dfit):.2f} x 10^-2 on {dfit:.0f} df; "
              f"difference of two fits: sd {100 * se_diff:.2f}, min detectable "
              f"{100 * min_detectable(se_diff, 2 * dfit):.2f} x 10^-2 on {2 * dfit:.0f} df")
        if levels[0] > 0:  # the 5-level design at the noise of the d > 0 fits (no typeless point in it)
            se5, df5 = design([0, .25, .5, .75, 1], 1, var)
            print(f"  5 levels at that noise: sd of slope {100 * se5:.2f}, min detectable "
                  f"{100 * min_detectable(se5, df5):.2f} x 10^-2 on {df5:.0f} df")
    # the pooled cheap predictors, with and without the typeless d = 0 subsets
    for label, keep in (("all subsets", lambda r: True),
                        ("typeless d = 0 subsets left out", lambda r: not typeless(r))):
        sub = {n: [r for r in rows if keep(r)] for n, rows in per_study.items()}
        preds = ab.predictor_rows(sub)
        n = max(p["n"] for p in preds)
        print(f"  cheap predictors, {label} (pooled, a shared subset once: n = {n})")
        for p in preds[:8] + [p for p in preds[8:] if p["column"] == corr.LENGTH]:
            print(f"    {p['column']:36s} n {p['n']:2d} spearman {p['spearman_rho']:+.3f} (p {p['spearman_p']:.2g}, "
                  f"q {p['spearman_q']:.2g}) pearson {p['pearson_r']:+.3f} (q {p['pearson_q']:.2g}) "
                  f"same sign {p['studies_same_sign']}/{p['studies']}")
        pooled = pooled_rows(sub)
        for col in ("m.response.self_bleu", "m.response.distinct_3", "m.response.vendi",
                    "m.response.token_entropy_bits", "m.response.compression_ratio"):
            pc = corr.partial([corr.as_number(r.get(col)) for r in pooled], [r["score"] for r in pooled],
                              [corr.as_number(r.get(corr.LENGTH)) for r in pooled])
            print(f"    partial r given mean response length, {col}: {pc['r']:+.3f} (p {pc['p']:.2g}, n {pc['n']})")


def pooled_rows(per_study: dict) -> list[dict]:
    """The subsets of all studies, a shared subset (one trained run) once, as ``ablations.predictor_rows``."""
    seen: dict[str, dict] = {}
    for rows in per_study.values():
        for r in rows:
            seen.setdefault(ab._identity(r), r)
    return list(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("docs/results"))
    a = ap.parse_args()
    reproduce(a.root)
    ablation(a.root)


if __name__ == "__main__":
    main()
