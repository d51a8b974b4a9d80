"""Paired comparisons (analysis.paired): per-replicate differences, their t intervals, Holm, the minimum detectable
difference and the anchor shift, each checked against an independent computation (scipy, statsmodels' power
solver, hand-written Holm) on rows whose replicates share a large offset that only pairing removes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from divscope.analysis import analyze, report
from divscope.analysis.paired import figure_panels, paired_rows

R = 6
METRIC = "alpaca_eval.nll"


def _rows(seed: int = 0, effects: dict[str, float] | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows of a study with R replicates: response-micro at d = 0 and 1, instruction-micro at d = 1 only, random;
    replicate r adds one shared offset (sd 0.05) to every cell, so unpaired intervals are ~10x wider."""
    effects = effects or {"response-micro": 0.02, "instruction-micro": -0.01, "random": 0.0}
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.05, R)
    rows = [{"cell": "base", "strategy": "base", "size": 0, "diversity": None, "seed": None, "replicate": 0,
             "metric": METRIC, "score": -2.2}]
    scores: dict[str, np.ndarray] = {}

    def add(strategy: str, d: float | None, effect: float) -> None:
        y = -2.1 + shared + effect + rng.normal(0, 0.002, R)
        scores[f"{strategy}@{d}"] = y
        for r in range(R):
            rows.append({"cell": f"{strategy}/d{d}-r{r}", "strategy": strategy, "size": 64, "diversity": d,
                         "seed": 0, "replicate": r, "metric": METRIC, "score": float(y[r])})

    add("response-micro", 0.0, 0.0)
    add("response-micro", 1.0, effects["response-micro"])
    add("instruction-micro", 1.0, effects["instruction-micro"])
    add("random", None, effects["random"])
    return rows, scores


def _t_interval(x: np.ndarray) -> tuple[float, float]:
    return stats.t.interval(0.90, df=x.size - 1, loc=x.mean(), scale=stats.sem(x))


def test_high_low_is_paired_by_replicate() -> None:
    rows, y = _rows()
    _, contrasts = paired_rows(rows)
    (c,) = [c for c in contrasts if c["kind"] == "high-low"]
    x = y["response-micro@1.0"] - y["response-micro@0.0"]
    assert (c["a"], c["b"], c["n"]) == ("response-micro@1", "response-micro@0", R)
    np.testing.assert_allclose(c["diffs"], x, rtol=0, atol=1e-12)
    assert c["diff"] == pytest.approx(x.mean(), abs=1e-12)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx(_t_interval(x), abs=1e-12)
    assert c["p"] == pytest.approx(stats.ttest_1samp(x, 0.0).pvalue, rel=1e-9)
    # pairing removes the shared offsets: the interval is far narrower than an unpaired one, and holds the effect
    unpaired = stats.ttest_ind(y["response-micro@1.0"], y["response-micro@0.0"]).confidence_interval(0.90)
    assert c["ci_high"] - c["ci_low"] < (unpaired.high - unpaired.low) / 5
    assert c["ci_low"] < 0.02 < c["ci_high"] and c["distinguishable"]


def test_arms_ranked_with_holm_and_min_detectable() -> None:
    from statsmodels.stats.power import TTestPower

    rows, y = _rows()
    arms, contrasts = paired_rows(rows)
    assert [a["arm"] for a in arms] == ["response-micro", "random", "instruction-micro"]
    assert [a["rank"] for a in arms] == [1, 2, 3]
    top = arms[0]
    assert top["diversity"] == 1.0 and top["n"] == R
    assert top["mean"] == pytest.approx(y["response-micro@1.0"].mean(), abs=1e-12)
    assert (top["ci_low"], top["ci_high"]) == pytest.approx(_t_interval(y["response-micro@1.0"]), abs=1e-12)
    assert top["vs_anchor"] == pytest.approx(y["response-micro@1.0"].mean() + 2.2, abs=1e-12)
    assert top["vs_anchor_low"] == pytest.approx(top["ci_low"] + 2.2, abs=1e-12)
    pairs = [c for c in contrasts if c["kind"] == "arms"]
    assert [(c["a"], c["b"]) for c in pairs] == [("response-micro", "random"), ("response-micro", "instruction-micro"),
                                                  ("random", "instruction-micro")]
    key = {"response-micro": "response-micro@1.0", "random": "random@None", "instruction-micro": "instruction-micro@1.0"}
    raw = []
    for c in pairs:
        x = y[key[c["a"]]] - y[key[c["b"]]]
        raw.append(stats.ttest_1samp(x, 0.0).pvalue)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx(_t_interval(x), abs=1e-12)
        d = TTestPower().solve_power(nobs=R, alpha=0.05, power=0.8, alternative="two-sided")
        assert c["min_detectable"] == pytest.approx(d * x.std(ddof=1), rel=1e-4)
    order = np.argsort(raw)  # Holm by hand: the i-th smallest p times (m - i), running max, capped at 1
    holm, running = np.empty(3), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, raw[j] * (3 - i)))
        holm[j] = running
    np.testing.assert_allclose([c["p_holm"] for c in pairs], holm, rtol=1e-9)
    from statsmodels.stats.multitest import multipletests

    np.testing.assert_allclose(holm, multipletests(raw, method="holm")[1], rtol=1e-12)
    assert [c["distinguishable"] for c in pairs] == [bool(q < 0.10) for q in holm]


def test_pairs_need_the_same_seed_position_and_replicate() -> None:
    """Random cells of other seeds are not paired with a strategy's replicates (the pilot's design: one subset with
    3 training seeds against 3 random subsets pairs once)."""
    rows, _ = _rows()
    for r in rows:
        if r["strategy"] == "random":
            r["seed"], r["replicate"] = r["replicate"], 0
    _, contrasts = paired_rows(rows)
    c = next(c for c in contrasts if c["kind"] == "arms" and "random" in (c["a"], c["b"])
             and "response-micro" in (c["a"], c["b"]))
    assert c["n"] == 1 and c["ci_low"] is None or np.isnan(c["ci_low"])


def test_no_effect_is_rarely_distinguishable() -> None:
    """Under equal arms, Holm keeps the family-wise error of 'distinguishable' at or below 10%."""
    hits = 0
    for seed in range(200):
        rows, _ = _rows(seed, {"response-micro": 0.0, "instruction-micro": 0.0, "random": 0.0})
        _, contrasts = paired_rows(rows)
        hits += any(c["distinguishable"] for c in contrasts if c["kind"] == "arms")
    assert hits <= 200 * 0.10 + 3 * np.sqrt(200 * 0.1 * 0.9)


def test_analyze_writes_tables_figure_and_report(tmp_path) -> None:
    rows, _ = _rows()
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "study.json").write_text(json.dumps({"name": "paired"}))
    a = analyze(tmp_path)
    assert "paired_alpaca_eval.nll_64.png" in a["figures"]
    arms = json.loads((tmp_path / "analysis" / "paired_arms.json").read_text())
    assert [x["arm"] for x in arms] == ["response-micro", "random", "instruction-micro"]
    header = (tmp_path / "analysis" / "paired_contrasts.csv").read_text().splitlines()[0]
    assert header.startswith("metric,size,kind,a,b,n,diff") and "diffs" not in header
    first = (tmp_path / "analysis" / "figures" / "paired_alpaca_eval.nll_64.png").read_bytes()
    analyze(tmp_path)
    assert (tmp_path / "analysis" / "figures" / "paired_alpaca_eval.nll_64.png").read_bytes() == first
    html = report(tmp_path, force=True).read_text()
    assert "Paired comparisons" in html and "response-micro \u2212 random" in html


def test_figure_panels_read_arm_minus_random() -> None:
    rows, y = _rows()
    _, contrasts = paired_rows(rows)
    (hilo_title, hilo), (arms_title, arms) = figure_panels(contrasts)
    assert "highest minus lowest" in hilo_title and len(hilo) == 1
    assert "minus random" in arms_title
    got = {c["a"]: c for c in arms}
    assert set(got) == {"response-micro", "instruction-micro"} and all(c["b"] == "random" for c in arms)
    x = y["instruction-micro@1.0"] - y["random@None"]
    np.testing.assert_allclose(got["instruction-micro"]["diffs"], x, atol=1e-12)
    assert (got["instruction-micro"]["ci_low"], got["instruction-micro"]["ci_high"]) == pytest.approx(
        _t_interval(x), abs=1e-12)
