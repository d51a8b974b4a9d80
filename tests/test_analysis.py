"""Analysis: conjugate Bayesian slopes (checked against independent closed forms, OLS and Monte Carlo),
correlations (against scipy), analyze outputs (deterministic, graceful on gaps, clear user errors), report."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from divscope.analysis import Prior, analyze, fit, report, synthetic_results, write_synthetic_study
from divscope.analysis.analyze import is_current, load_results
from divscope.analysis.commands import analyze_cmd, report_cmd
from divscope.analysis.correlation import correlations
from divscope.analysis.regression import PAPER_SLOPES_10K
from divscope.errors import DivscopeError

# ------------------------------------------------------------------------------------------------ regression


def _data(n: int = 14, slope: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = np.repeat(np.linspace(0, 1, 7), n // 7)
    return d, -1.45 + slope * d + rng.normal(0, 0.01, d.size)


def test_posterior_equals_textbook_conjugate_update() -> None:
    """Informative prior, explicit inverses, the two textbook forms of b_n; fit() uses a different route."""
    d, y = _data()
    prior = Prior(mean=(-1.4, 0.2), scale=(2.0, 3.0), a0=2.5, b0=0.003)
    f = fit(d, y, prior)
    X = np.column_stack([np.ones_like(d), d])
    mu0 = np.array(prior.mean)
    V0 = np.diag(np.square(prior.scale))
    Lam0 = np.linalg.inv(V0)
    Lamn = Lam0 + X.T @ X
    Vn = np.linalg.inv(Lamn)
    mun = Vn @ (Lam0 @ mu0 + X.T @ y)
    an = prior.a0 + d.size / 2
    bn = prior.b0 + 0.5 * (y @ y + mu0 @ Lam0 @ mu0 - mun @ Lamn @ mun)
    beta_ols = np.linalg.solve(X.T @ X, X.T @ y)
    ssr = np.sum((y - X @ beta_ols) ** 2)
    diff = beta_ols - mu0
    bn_alt = prior.b0 + 0.5 * (ssr + diff @ np.linalg.inv(V0 + np.linalg.inv(X.T @ X)) @ diff)
    assert bn == pytest.approx(bn_alt, rel=1e-8)
    np.testing.assert_allclose(f.mn, mun, rtol=1e-10)
    np.testing.assert_allclose(f.Vn, Vn, rtol=1e-10)
    assert f.an == an
    assert f.bn == pytest.approx(bn, rel=1e-8)
    # marginal of the slope: Student-t(2 an, mu_n[1], sqrt(bn/an Vn[1,1]))
    t = stats.t(df=2 * an, loc=mun[1], scale=np.sqrt(bn / an * Vn[1, 1]))
    assert f.slope_sd == pytest.approx(t.std(), rel=1e-8)
    assert f.prob_positive() == pytest.approx(t.sf(0.0), rel=1e-8)
    # line band at x: sd of x'beta under the same multivariate t
    grid = np.array([0.0, 0.3, 1.0])
    mean, sd, pred = f.band(grid)
    for x, m, s, p in zip(grid, mean, sd, pred, strict=True):
        v = np.array([1.0, x])
        tx = stats.t(df=2 * an, loc=v @ mun, scale=np.sqrt(bn / an * v @ Vn @ v))
        assert m == pytest.approx(tx.mean(), rel=1e-10)
        assert s == pytest.approx(tx.std(), rel=1e-8)
        assert p == pytest.approx(np.sqrt(bn / (an - 1) * (1 + v @ Vn @ v)), rel=1e-8)


def test_flat_prior_gives_ols_slope_and_standard_error() -> None:
    d, y = _data(n=21, slope=-0.03, seed=3)
    lr = stats.linregress(d, y)
    flat = fit(d, y, Prior(scale=(1e8, 1e8), a0=0.0, b0=0.0))
    assert flat.slope == pytest.approx(lr.slope, rel=1e-9)
    assert flat.intercept == pytest.approx(lr.intercept, rel=1e-9)
    # a0, b0 -> 0 and a flat coefficient prior: bn/(an-1) = SSR/(n-2), so sd = the OLS standard error
    assert flat.slope_sd == pytest.approx(lr.stderr, rel=1e-6)
    default = fit(d, y)  # the documented default is practically flat
    assert default.slope == pytest.approx(lr.slope, rel=1e-4)
    assert default.slope_sd == pytest.approx(lr.stderr, rel=0.05)


def test_slope_sd_monte_carlo() -> None:
    d, y = _data(n=14, slope=0.04, seed=5)
    f = fit(d, y)
    rng = np.random.default_rng(0)
    m = 200_000
    s2 = stats.invgamma(f.an, scale=f.bn).rvs(size=m, random_state=rng)
    L = np.linalg.cholesky(f.Vn)
    beta = f.mn + (rng.standard_normal((m, 2)) @ L.T) * np.sqrt(s2)[:, None]
    assert beta[:, 1].mean() == pytest.approx(f.slope, abs=0.01 * f.slope_sd + 1e-12)
    assert beta[:, 1].std() == pytest.approx(f.slope_sd, rel=0.02)
    assert (beta[:, 1] > 0).mean() == pytest.approx(f.prob_positive(), abs=0.01)


def test_scale_equivariance_and_degenerate_inputs() -> None:
    d, y = _data()
    a, b = fit(d, y), fit(d, 100.0 * y + 7.0)  # default prior: equivariant under a change of unit and zero
    assert b.slope == pytest.approx(100.0 * a.slope, rel=1e-8)
    assert b.slope_sd == pytest.approx(100.0 * a.slope_sd, rel=1e-8)
    assert b.intercept == pytest.approx(100.0 * a.intercept + 7.0, rel=1e-8)
    one = fit([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert not one.ok and "distinct" in one.note and np.isnan(one.slope_sd)
    assert not fit([], []).ok
    two = fit([0.0, 1.0], [1.0, 2.0])
    assert two.ok and two.slope == pytest.approx(1.0, rel=1e-3) and np.isfinite(two.slope_sd)
    const = fit([0.0, 0.5, 1.0], [1.0, 1.0, 1.0])
    assert const.ok and const.slope == pytest.approx(0.0, abs=1e-9) and const.slope_sd >= 0


# ----------------------------------------------------------------------------------------------- correlation

def test_correlations_match_scipy() -> None:
    rows = synthetic_results(sizes=(1000,), seeds=(0, 1), random_seeds=3)
    rows[0]["m.response.distinct_2"] = None  # a missing value: that pair is dropped
    for r in rows:
        r["m.response.const"] = 1.0
        r["m.response.vendi_sample"] = 1000.0  # bookkeeping: not correlated
    rows.append({**rows[1], "metric": "judge", "score": 50.0})  # another score metric: never mixed in
    out = correlations(rows)
    nll = [c for c in out if c["metric"] == "nll"]
    y = np.array([r["score"] for r in rows if r["metric"] == "nll"])
    for c in nll:
        x = np.array([np.nan if r.get(c["column"]) is None else r[c["column"]] for r in rows
                      if r["metric"] == "nll"])
        ok = np.isfinite(x)
        assert c["n"] == ok.sum()
        if c["column"] == "m.response.const":
            assert c["pearson_r"] is None and "constant" in c["note"]
            continue
        pr, sr = stats.pearsonr(x[ok], y[ok]), stats.spearmanr(x[ok], y[ok])
        assert c["pearson_r"] == pytest.approx(pr.statistic, rel=1e-10)
        assert c["pearson_p"] == pytest.approx(pr.pvalue, rel=1e-8)
        assert c["spearman_rho"] == pytest.approx(sr.statistic, rel=1e-10)
        assert c["spearman_p"] == pytest.approx(sr.pvalue, rel=1e-8)
    rs = [abs(c["pearson_r"]) for c in nll if c["pearson_r"] is not None]
    assert rs == sorted(rs, reverse=True) and nll[-1]["column"] == "m.response.const"
    assert next(c for c in nll if c["column"] == "m.response.distinct_2")["n"] == len(y) - 1
    assert "m.response.vendi_sample" not in {c["column"] for c in out}
    judge = [c for c in out if c["metric"] == "judge"]
    assert judge and all(c["n"] == 1 and c["pearson_r"] is None for c in judge)


# --------------------------------------------------------------------------------------------------- analyze

@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study")
    write_synthetic_study(path, name="test <study> & co", sizes=(1000, 10_000), seeds=(0, 1), random_seeds=4)
    return path


@pytest.fixture(scope="module")
def analyzed(study: Path) -> dict:
    return analyze(study)


def test_analyze_outputs(study: Path, analyzed: dict) -> None:
    out = study / "analysis"
    for name in analyzed["files"]:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "figures").iterdir()) == analyzed["figures"] == [
        "correlations_nll.png", "diversity_nll_1000.png", "diversity_nll_10000.png"]
    for png in (out / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png.read_bytes()[:4096]
    slopes = json.loads((out / "slopes.json").read_text())
    assert len(slopes) == 12 and {s["size"] for s in slopes} == {1000, 10_000}
    for s in slopes:  # the synthetic truth is the paper's table: recovered within 4 posterior sd
        assert s["n"] == 14 and s["n_levels"] == 7 and s["note"] == ""
        assert abs(s["slope_x100"] - PAPER_SLOPES_10K[s["strategy"]]) < 4 * s["sd_x100"]
        assert s["slope_x100"] == pytest.approx(100 * s["slope"]) and s["sd_x100"] == pytest.approx(100 * s["slope_sd"])
        assert (s["paper_x100"] is not None) == (s["size"] == 10_000)
    header = (out / "slopes.csv").read_text().splitlines()[0]
    assert header.startswith("metric,strategy,size,n,n_levels,slope,slope_sd,slope_x100,sd_x100,intercept")
    rows, _ = load_results(study)
    rnd = np.array([r["score"] for r in rows if r["strategy"] == "random" and r["size"] == 1000])
    base = json.loads((out / "baselines.json").read_text())
    b = next(x for x in base if x["strategy"] == "random" and x["size"] == 1000)
    assert b["n"] == 4 and b["mean"] == pytest.approx(rnd.mean()) and b["std"] == pytest.approx(rnd.std(ddof=1))
    best = json.loads((out / "best.json").read_text())["nll"]
    top = max(rows, key=lambda r: r["score"])
    assert best["overall"]["cell"] == top["cell"] and best["overall"]["score"] == pytest.approx(top["score"])
    assert [e["scope"] for e in best["per_strategy"]] == [
        "instruction-macro", "instruction-meso", "instruction-micro", "response-macro", "response-meso",
        "response-micro", "random", "k-center", "distance"]
    rnd10 = next(x for x in base if x["strategy"] == "random" and x["size"] == best["overall"]["size"])
    assert best["overall"]["vs_random"] == pytest.approx(top["score"] - rnd10["mean"])
    corr = json.loads((out / "correlations.json").read_text())
    assert len(corr) == 16 and all(c["pearson_r"] is not None for c in corr)
    results_csv = (out / "results.csv").read_text().splitlines()
    assert len(results_csv) == 1 + len(rows) and "m.response.mean_tokens" in results_csv[0]


def test_analyze_is_deterministic_and_order_free(study: Path, analyzed: dict, tmp_path: Path) -> None:
    other = tmp_path / "shuffled"
    other.mkdir()
    lines = (study / "results.jsonl").read_text().splitlines()
    random.Random(1).shuffle(lines)
    (other / "results.jsonl").write_text("\n".join(lines) + "\n")
    analyze(other)
    a, b = study / "analysis", other / "analysis"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert not [p for p in study.iterdir() if p.name.startswith(".analysis")]  # no temp leftovers


def test_gaps_are_notes_not_crashes(tmp_path: Path) -> None:
    rows = synthetic_results(sizes=(1000,), seeds=(0,), random_seeds=2)
    rows = [r for r in rows if r["strategy"] != "response-meso"]
    rows = [r for r in rows if not (r["strategy"] == "instruction-macro" and r["diversity"] != 0.0)]
    rows.append({**rows[-1], "cell": "bad-score", "score": None})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = analyze(tmp_path)
    s = next(x for x in res["slopes"] if x["strategy"] == "instruction-macro")
    assert s["slope_x100"] == "n/a" and s["n"] == 1 and "distinct" in s["note"]
    assert "response-meso" not in {x["strategy"] for x in res["slopes"]}
    notes = " | ".join(res["notes"])
    assert "no results for response-meso" in notes and "instruction-macro" in notes
    assert "without a finite score" in notes
    assert (tmp_path / "analysis" / "figures" / "diversity_nll_1000.png").is_file()
    assert "n/a" in (tmp_path / "analysis" / "slopes.csv").read_text()
    # baselines only: no slope, no diversity figure, still a report
    only = tmp_path / "baselines_only"
    only.mkdir()
    (only / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["diversity"] is None))
    res = analyze(only, figures=False)
    assert res["slopes"] == [] and res["figures"] == []
    html = report(only).read_text()
    assert "random" in html


@pytest.mark.parametrize(("content", "match"), [
    (None, "no results file"),
    ("", "holds no scored result"),
    ('{"cell": "a", "strategy": "random", "size": 10, "metric": "nll", "score": 1}\n{oops\n', r":2: not valid JSON"),
    ('[1, 2]\n', r":1: expected a JSON object"),
    ('{"cell": "a", "strategy": "random", "metric": "nll", "score": 1}\n', r"'size' missing"),
    ('{"cell": "a", "strategy": "x", "size": 5, "diversity": 2, "metric": "nll", "score": 1}\n', "in \\[0, 1\\]"),
])
def test_user_errors(tmp_path: Path, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / "results.jsonl").write_text(content)
    with pytest.raises(DivscopeError, match=match):
        analyze(tmp_path)
    assert not (tmp_path / "analysis").exists()


def test_repeated_cells_keep_the_last(tmp_path: Path) -> None:
    base = {"strategy": "response-micro", "size": 10, "seed": 0, "metric": "nll"}
    rows = [{**base, "cell": "a", "diversity": 0.0, "score": 1.0}, {**base, "cell": "b", "diversity": 1.0, "score": 2.0},
            {**base, "cell": "a", "diversity": 0.0, "score": 0.0}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, notes = load_results(tmp_path)
    assert [r["score"] for r in kept] == [0.0, 2.0] and "repeated" in notes[0]


# ---------------------------------------------------------------------------------------------------- report

def test_report_contents(study: Path, analyzed: dict) -> None:
    path = report(study)
    html = path.read_text()
    assert path == study / "report.html"
    assert "test &lt;study&gt; &amp; co" in html and "<study>" not in html
    assert "<script" not in html.lower() and not re.search(r"(?:src|href)=\"(?:https?:)?//", html)
    assert "http://" not in html and "https://" not in html
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for name in ("slopes", "figures", "correlations", "best", "results", "notes"):
        assert f'id="{name}"' in html
    assert "paper 10K" in html and "+2.37" in html and "-5.45" in html
    for href in re.findall(r'href="(analysis/[^"]+)"', html):
        assert (study / href).is_file(), href
    assert "response.mean_tokens" in html and "m.instruction.vendi" in html
    assert report(study).read_bytes() == html.encode()  # deterministic


def test_report_reruns_analysis_only_when_stale(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, sizes=(1000,), seeds=(0,), random_seeds=2)
    report(tmp_path)
    summary = tmp_path / "analysis" / "summary.json"
    first = summary.stat().st_mtime_ns
    assert is_current(tmp_path)
    report(tmp_path)
    assert summary.stat().st_mtime_ns == first
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"cell": "extra", "strategy": "random", "size": 1000, "diversity": None, "seed": 9,
                             "metric": "nll", "score": -1.5}) + "\n")
    assert not is_current(tmp_path)
    report(tmp_path)
    assert json.loads(summary.read_text())["n_results"] == 1 + 6 * 7 + 2 + 1 + 1


def test_commands(study: Path, analyzed: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(report_cmd, [str(study)])  # the analysis is current: only the HTML is written
    assert r.exit_code == 0, r.output
    assert "report: " in r.output and (study / "report.html").is_file()
    r = runner.invoke(analyze_cmd, [str(study), "--no-figures", "--a0", "0.5"])
    assert r.exit_code == 0, r.output
    assert "slope of score (nll)" in r.output and "response-micro" in r.output and "+5.35" in r.output
    summary = json.loads((study / "analysis" / "summary.json").read_text())
    assert summary["prior"]["a0"] == 0.5 and not summary["with_figures"] and not is_current(study)
    r = runner.invoke(report_cmd, [str(tmp_path / "nothing")])
    assert isinstance(r.exception, DivscopeError) and "no results file" in str(r.exception)


# ------------------------------------------------------------------------- the committed real study, re-analysed

REAL = Path(__file__).resolve().parents[1] / "docs" / "results" / "reproduce-cpu"
SIX = ("instruction-macro", "instruction-meso", "instruction-micro", "response-macro", "response-meso",
       "response-micro")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _same_table(got: list[dict[str, str]], want: list[dict[str, str]], name: str) -> None:
    """Same rows, same columns; numbers equal to 1e-9 relative (the last printed digit may differ), text equal."""
    assert len(got) == len(want) and got and list(got[0]) == list(want[0]), name
    for g, w in zip(got, want, strict=True):
        for col, wv in w.items():
            try:
                wf = float(wv)
            except ValueError:
                assert g[col] == wv, (name, col, g[col], wv)
                continue
            assert float(g[col]) == pytest.approx(wf, rel=1e-9, abs=1e-15), (name, col, g[col], wv)


@pytest.fixture(scope="module")
def real_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/results/reproduce-cpu's real results rows (45 subsets, N = 64, SmolLM2 LoRA, AlpacaEval NLL) and
    study.json, copied into a fresh study folder and analysed by this version."""
    path = tmp_path_factory.mktemp("reproduce-cpu")
    for name in ("results.jsonl", "study.json"):
        shutil.copy(REAL / name, path / name)
    analyze(path)
    return path


def test_committed_study_reanalysed_gives_the_committed_tables(real_study: Path) -> None:
    for name in ("slopes.csv", "baselines.csv", "best.csv", "correlations.csv", "results.csv"):
        _same_table(_csv_rows(real_study / "analysis" / name), _csv_rows(REAL / "analysis" / name), name)
    slopes = {r["strategy"]: r for r in _csv_rows(real_study / "analysis" / "slopes.csv")}
    assert set(slopes) == set(SIX) and all(r["n"] == "7" and r["note"] == "" for r in slopes.values())
    # What docs/results/reproduce-cpu/README.md reads from them: both micro slopes clearly away from zero, with
    # the paper's signs; the four macro/meso slopes within about 1.2 sd of zero.
    assert float(slopes["response-micro"]["slope"]) > 0 and float(slopes["response-micro"]["p_positive"]) > 0.98
    assert float(slopes["instruction-micro"]["slope"]) < 0 and float(slopes["instruction-micro"]["p_positive"]) < 0.03
    for s in ("instruction-macro", "instruction-meso", "response-macro", "response-meso"):
        assert abs(float(slopes[s]["slope"])) < 1.2 * float(slopes[s]["slope_sd"]), s


def test_committed_study_slopes_match_least_squares(real_study: Path) -> None:
    """Computed without divscope: per strategy, numpy's least-squares line through the 7 (d, score) points and
    its textbook standard error. Under the weak default prior the posterior mean slope is that slope (shrunk by
    ~1e-4 relative) and the posterior sd is the OLS standard error to within 1% (2 a_n - 2 = 5.02 vs n - 2 = 5
    in the variance's denominator)."""
    rows = [json.loads(line) for line in (REAL / "results.jsonl").read_text().splitlines() if line.strip()]
    slopes = {r["strategy"]: r for r in json.loads((real_study / "analysis" / "slopes.json").read_text())}
    for strategy in SIX:
        pts = sorted((r["diversity"], r["score"]) for r in rows if r["strategy"] == strategy)
        d, y = np.array(pts).T
        assert len(d) == 7 and np.allclose(d, np.arange(7) / 6)
        b1, b0 = np.polyfit(d, y, 1)
        se = np.sqrt(np.sum((y - (b0 + b1 * d)) ** 2) / (len(d) - 2) / np.sum((d - d.mean()) ** 2))
        got = slopes[strategy]
        assert got["slope"] == pytest.approx(b1, rel=1e-3), strategy
        assert got["intercept"] == pytest.approx(b0, rel=1e-6), strategy
        assert got["slope_sd"] == pytest.approx(se, rel=0.01), strategy
        # P(slope > 0): the conjugate model's Student-t has 2 a_n = n + 2 a0 degrees of freedom (not OLS's n - 2)
        # and scale sqrt(b_n / a_n * Vn[1, 1]) ~ sqrt(SSR / (n + 2 a0) / Sxx); a0 = 0.01 (regression.Prior)
        n, a0 = len(d), 0.01
        ssr, sxx = np.sum((y - (b0 + b1 * d)) ** 2), np.sum((d - d.mean()) ** 2)
        t = stats.t(df=n + 2 * a0, loc=b1, scale=np.sqrt(ssr / (n + 2 * a0) / sxx))
        assert got["p_positive"] == pytest.approx(t.sf(0.0), abs=0.01), strategy
    rnd = np.array([r["score"] for r in rows if r["strategy"] == "random"])
    (base,) = json.loads((real_study / "analysis" / "baselines.json").read_text())
    assert base["n"] == 3 and base["mean"] == pytest.approx(rnd.mean()) and base["std"] == pytest.approx(rnd.std(ddof=1))
    top = max(rows, key=lambda r: r["score"])
    best = json.loads((real_study / "analysis" / "best.json").read_text())["alpaca_eval.nll"]
    assert best["overall"]["cell"] == top["cell"] == "response-micro/n64-d0.833-s0"


def test_committed_study_report_shows_the_slopes(real_study: Path) -> None:
    html = report(real_study).read_text()
    assert "reproduce-cpu" in html
    for r in _csv_rows(REAL / "analysis" / "slopes.csv"):
        sign = "pos" if float(r["slope"]) > 0 else "neg"
        cell = f'<span class="{sign}">{float(r["slope_x100"]):+.2f}</span></td><td>{float(r["sd_x100"]):.2f}</td>'
        assert f'<td class="l">{r["strategy"]}</td>' in html and cell in html, r["strategy"]
    assert "+1.75" in html and "-0.84" in html  # the README's table
