"""``divscope plan``: the minimum detectable slope agrees with simulated studies; pilot components; the command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from divscope.analysis.plan import design, min_detectable, noise, plan, power_at, read_spec, replicates_for
from divscope.analysis.regression import ols_reference, prob_positive, two_stage
from divscope.analysis.settings import PlanSettings

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = ROOT / "docs" / "results" / "archive" / "reproduce-cpu" / "spec.yaml"  # the first CPU study
SIMS = 4000


def _detected(p: np.ndarray, alpha: float = 0.05) -> float:
    return float(((p > 1 - alpha / 2) | (p < alpha / 2)).mean())


def _simulated_mds(power_of: callable, mds: float) -> float:
    """The slope where the simulated power crosses 80%, by linear interpolation on a grid around ``mds``."""
    grid = mds * np.linspace(0.6, 1.4, 17)
    pw = np.array([power_of(b) for b in grid])
    i = int(np.argmax(pw >= 0.8))
    assert 0 < i and pw[-1] >= 0.8, pw
    return float(grid[i - 1] + (0.8 - pw[i - 1]) * (grid[i] - grid[i - 1]) / (pw[i] - pw[i - 1]))


def test_mds_of_reproduce_cpu_agrees_with_simulated_studies() -> None:
    """The first CPU study's spec (7 levels, 1 replicate, 32 items), default components. Simulated per item:
    score = b d + selection + training + mean over the 32 items of (item effect, shared by every cell of a study
    and cancelling in the slope, + cell-by-item interaction); analysed with the reference posterior."""
    spec = read_spec(REPRODUCE)
    nz = noise(spec, PlanSettings(), None)
    res = plan(REPRODUCE)
    assert res["replicates"] == 1 and res["df"] == 5 and nz["items"] == 32
    d = np.asarray(spec["levels"])
    rng = np.random.default_rng(0)
    item_sd, inter_sd = 0.3, np.sqrt(nz["prompt"] * 32)  # per-item: a large shared effect, the interaction

    def power_of(b: float) -> float:
        items = rng.normal(0, item_sd, (1, 32, SIMS))
        per_item = items + rng.normal(0, inter_sd, (7, 32, SIMS))
        y = (b * d[:, None] + rng.normal(0, np.sqrt(nz["selection"]), (7, SIMS))
             + rng.normal(0, np.sqrt(nz["training"]), (7, SIMS)) + per_item.mean(axis=1))
        o = ols_reference(d, y)
        return _detected(prob_positive(o["slope"], o["se"], o["df"]))

    sim = _simulated_mds(power_of, res["mds"])
    assert abs(sim / res["mds"] - 1) < 0.15, (sim, res["mds"])
    assert abs(sim / res["mds"] - 1) < 0.05  # in fact much closer: the noncentral t is exact here


def test_mds_of_a_replicated_design_agrees_with_simulated_studies() -> None:
    """7 levels x 4 replicates, a replicate intercept and a between-replicate slope sd: the analysis' t on 3 df."""
    levels = list(np.linspace(0, 1, 7))
    noise_var, slope_var = 1e-5, 4e-6
    se, df = design(levels, 4, noise_var, slope_var)
    mds = min_detectable(se, df)
    assert df == 3 and power_at(mds, se, df) == pytest.approx(0.8, abs=1e-9)
    d = np.asarray(levels)
    rng = np.random.default_rng(1)

    def power_of(b: float) -> float:
        y = (b * d + rng.normal(0, 0.01, (SIMS, 4, 1)) + rng.normal(0, np.sqrt(slope_var), (SIMS, 4, 1)) * d
             + rng.normal(0, np.sqrt(noise_var), (SIMS, 4, 7)))
        ts = two_stage(d, y)
        return _detected(prob_positive(ts["slope"], ts["se"], ts["df"]))

    sim = _simulated_mds(power_of, mds)
    assert abs(sim / mds - 1) < 0.15, (sim, mds)
    need = replicates_for(mds, levels, noise_var, slope_var, 0.05, 0.8)
    assert need == 4  # the design that has 80% power at its own MDS


def test_plan_command_prints_the_detectable_slope_and_hours() -> None:
    from divscope.cli import cli

    r = CliRunner().invoke(cli, ["plan", str(REPRODUCE), "--effect", "0.005"])
    assert r.exit_code == 0, r.output
    res = plan(REPRODUCE)
    assert "minimum detectable slope at 80% power" in r.output and f"{100 * res['mds']:.2f}" in r.output
    assert re.search(r"replicates needed for a slope of 0\.5 x 10\^-2: \d+", r.output)
    assert "total h" in r.output and f"{res['costs']['hours']:.2f}" in r.output
    c = res["costs"]
    assert c["cells"] == 6 * 7 + 3 and c["evaluations"] == 46
    # the measured sizing in the spec's comment: ~12 s a step at 192 tokens, 8 steps, ~15 s per evaluation
    assert c["step_seconds"] == pytest.approx(12.1, rel=0.02) and 1.0 < c["train_hours"] + c["eval_hours"] < 2.0
    more = CliRunner().invoke(cli, ["plan", str(REPRODUCE), "--replicates", "5", "--noise-sd", "0.002",
                                    "--device", "gpu"])
    assert more.exit_code == 0, more.output
    assert "5 replicate(s)" in more.output and "--noise-sd" in more.output and "cost on gpu" in more.output


@pytest.mark.parametrize("where", ["top", "selection"])
def test_plan_reads_replicates_from_the_spec(tmp_path: Path, where: str) -> None:
    """``replicates: R`` (top level, or under selection) is the design; older specs: the selection seeds."""
    text = REPRODUCE.read_text()
    text = (text + "replicates: 4\n") if where == "top" else text.replace("  seeds: [0]", "  seeds: [0]\n  replicates: 4")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    res = plan(spec)
    assert res["replicates"] == 4 and res["df"] == 3
    assert res["costs"]["cells"] == 6 * 7 * 4 + 3 * 4  # baselines too: seeds x replicates
    assert where == "top" or res["costs"]["cells"] == _grid_size(spec)  # (a top-level key is the plan's alone)
    assert read_spec(REPRODUCE)["replicates"] == 1


def _grid_size(spec: Path) -> int:
    """Subsets the study's grid really selects."""
    from divscope.experiment.spec import load_spec
    from divscope.select.subsets import grid_cells

    g = load_spec(spec).selection
    return len(grid_cells(Path("o"), g.strategies, g.sizes, g.level_values(), g.seeds, ".jsonl", g.baseline_seeds,
                          g.replicates, g.hold == "selection", g.replicates_for))


def test_plan_takes_each_strategys_replicates(tmp_path: Path) -> None:
    """``replicates_for``: each strategy's detectable slope at its own replicates, cells as the grid selects them;
    the demo's design (micro strategies replicated twice) plans without NaN at 1 df."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(REPRODUCE.read_text().replace(
        "  seeds: [0]", "  seeds: [0]\n  replicates_for: {response-micro: 5, random: 2}"))
    res = plan(spec, PlanSettings(noise_sd=0.003))
    reps = {r["strategy"]: (r["replicates"], r["df"]) for r in res["rows"]}
    assert reps["response-micro"] == (5, 4) and reps["instruction-macro"] == (1, 5)
    one = next(r for r in res["rows"] if r["strategy"] == "instruction-macro")
    five = next(r for r in res["rows"] if r["strategy"] == "response-micro")
    assert one["mds"] == pytest.approx(min_detectable(*design(res["levels"], 1, 0.003**2)))
    assert five["mds"] == pytest.approx(min_detectable(*design(res["levels"], 5, 0.003**2)))
    assert res["costs"]["cells"] == 5 * 7 + 7 * 5 + 3 * 2 == _grid_size(spec)
    demo = ROOT / "src" / "divscope" / "data" / "specs" / "demo.yaml"
    d = plan(demo)
    assert d["costs"]["cells"] == 18 == _grid_size(demo)
    micro = [r for r in d["rows"] if r["strategy"].endswith("micro")]
    assert [(r["replicates"], r["df"]) for r in micro] == [(2, 1), (2, 1)] and all(r["mds"] > 0 for r in micro)
    from divscope.cli import cli

    out = CliRunner().invoke(cli, ["plan", str(demo)])
    assert out.exit_code == 0 and "2 levels, 1/2 replicates by strategy" in out.output, out.output
    assert power_at(1.0, 0.0125, 1.0) == pytest.approx(1.0, abs=1e-6)  # scipy's tail is NaN there; power is not


def test_plan_reads_a_pilot_without_slope_fits(tmp_path: Path) -> None:
    """The pilot-cpu design (one level, a baseline): no slope fit, so no residual; the noise is the sum of its
    training, selection and prompt components, the prompt part at the spec's items."""
    from divscope.analysis.pilot import pilot_components

    rng = np.random.default_rng(3)
    items = rng.normal(0, 0.2, 40)
    rows = []
    for strategy, d, subsets, seeds in (("response-micro", 1.0, [0], [0, 1000, 2000]), ("random", None, [0, 1, 2], [0])):
        for sel in subsets:
            for tr in seeds:
                per = items + rng.normal(0, 0.01, 40) + rng.normal(0, 0.002)
                cell = f"{strategy}/s{sel}-t{tr}"
                rows.append({"cell": cell, "strategy": strategy, "size": 64, "diversity": d, "seed": sel,
                             "replicate": tr // 1000, "selection_seed": sel, "train_seed": tr,
                             "metric": "alpaca_eval.nll", "score": float(per.mean())})
                ev = tmp_path / "runs" / cell / "eval"
                ev.mkdir(parents=True)
                (ev / "alpaca_eval.nll.json").write_text(json.dumps(
                    {"per_item": {f"alpaca_eval/{j}": float(v) for j, v in enumerate(per)}}))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = pilot_components(tmp_path)
    assert p["residual"] is None and p["within_subset_df"] == 2 and p["selection"] is not None
    res = plan(REPRODUCE, PlanSettings(pilot=str(tmp_path)))
    want = p["training"] + p["selection"] + p["prompt_item_var"] / 32
    assert res["noise"]["var"] == pytest.approx(want, rel=1e-12) and res["noise"]["source"].startswith("pilot comp")


def _pilot(root: Path, seed: int = 0) -> dict[str, float]:
    """A pilot with known components: 2 strategies x 7 levels x 2 subsets x 2 training seeds, 40 items each."""
    rng = np.random.default_rng(seed)
    truth = {"selection": 4e-6, "training": 2e-6, "prompt_item_var": 1.6e-4, "items": 40}
    items = rng.normal(0, 0.2, 40)
    rows = []
    for strategy in ("response-micro", "instruction-meso"):
        for d in np.linspace(0, 1, 7):
            for sel in (0, 1):
                subset = rng.normal(0, np.sqrt(truth["selection"]))
                for tr in (0, 1):
                    per = items + rng.normal(0, np.sqrt(truth["prompt_item_var"]), 40)
                    score = 0.01 * d + subset + rng.normal(0, np.sqrt(truth["training"])) + per.mean()
                    cell = f"{strategy}/n64-d{d:.3f}-a{sel}-t{tr}"
                    rows.append({"cell": cell, "strategy": strategy, "size": 64, "diversity": float(d),
                                 "seed": sel, "replicate": 2 * sel + tr, "selection_seed": sel, "train_seed": tr,
                                 "eval_seed": 0, "metric": "alpaca_eval.nll", "score": float(score)})
                    ev = root / "runs" / cell / "eval"
                    ev.mkdir(parents=True)
                    (ev / "alpaca_eval.nll.json").write_text(json.dumps({
                        "score": float(score), "seconds_per_item": 0.5,
                        "per_item": {f"alpaca_eval/{j}": float(v) for j, v in enumerate(per)}}))
                    (ev.parent / "train.json").write_text(json.dumps({
                        "seconds_per_step": 10.0, "load_seconds": 4.0,
                        "config": {"batch_size": 8, "grad_accum": 1, "max_len": 256}}))
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "study.json").write_text(json.dumps({"spec": {"evaluate": [{"limit": 40}]}}))
    return truth


def test_pilot_components_recover_the_truth(tmp_path: Path) -> None:
    from divscope.analysis.pilot import pilot_components

    truth = _pilot(tmp_path)
    p = pilot_components(tmp_path)
    assert p["items"] == 40 and p["prompt_cells"] == 56 and p["within_subset_df"] == 28
    assert p["prompt_item_var"] == pytest.approx(truth["prompt_item_var"], rel=0.1)  # 1,365 df
    # exactly the residual mean square of the additive cell + item model (statsmodels OLS with both factors)
    import pandas as pd
    import statsmodels.formula.api as smf

    long = [{"cell": c.parent.parent.relative_to(tmp_path / "runs").as_posix(), "item": k, "y": v}
            for c in sorted((tmp_path / "runs").rglob("alpaca_eval.nll.json"))
            for k, v in json.loads(c.read_text())["per_item"].items()]
    ols = smf.ols("y ~ C(cell) + C(item)", pd.DataFrame(long)).fit()
    assert p["prompt_item_var"] == pytest.approx(ols.mse_resid, rel=1e-9)
    assert p["prompt"] == pytest.approx(truth["prompt_item_var"] / 40, rel=0.1)
    # training (28 df) and selection (28 df, a difference of two estimates): chi-square noise, loose bounds
    assert 0.3 * truth["training"] < p["training"] < 2.5 * truth["training"]
    assert 0.2 * truth["selection"] < p["selection"] < 3.0 * truth["selection"]
    total = truth["selection"] + truth["training"] + truth["prompt_item_var"] / 40
    assert p["residual"] == pytest.approx(total, rel=0.5)  # the replicated fits' within-replicate residual
    assert p["seconds_per_token"] == pytest.approx(10.0 / (8 * 256)) and p["load_seconds"] == 4.0
    res = plan(REPRODUCE, PlanSettings(pilot=str(tmp_path)))
    assert res["noise"]["source"].startswith("pilot residual") and "40 -> 32 items" in res["noise"]["source"]
    want = p["residual"] - p["prompt"] + p["prompt_item_var"] / 32
    assert res["noise"]["var"] == pytest.approx(want, rel=1e-12)
    assert res["costs"]["source"] == "pilot" and res["costs"]["item_seconds"] == 0.5


def test_plan_counts_a_variants_reused_cells_once(tmp_path: Path) -> None:
    """A variant's cell whose subset the base already trained is reused by the runner (experiment.reuse), so the
    plan does not count it: the CPU study's headline variant (all six strategies at d = 1 plus random) trains only
    its four macro and meso arms. A variant that changes a selection key or a level's features trains those again
    (the end-to-end check against the runner's cells: test_ablations.test_study_with_variants_end_to_end)."""
    spec = ROOT / "examples" / "reproduce-cpu.yaml"
    costs = plan(spec)["costs"]
    assert costs["cells"] == (2 * 2 + 1) * 8 + 4 * 8 and costs["evaluations"] == costs["cells"] + 1
    text = spec.read_text()
    more = tmp_path / "more.yaml"  # a level the base did not run: its micro cells are new too
    more.write_text(text.replace("      levels: [1]", "      levels: [0.5, 1]"))
    assert plan(more)["costs"]["cells"] == 40 + (4 * 2 + 2) * 8
    words = tmp_path / "words.yaml"  # micro over words: every micro cell is new, macro/meso and random reused
    words.write_text(text.replace("      levels: [1]", "      levels: [1]\n    features: {micro: {unit: words}}"))
    assert plan(words)["costs"]["cells"] == 40 + 6 * 8
    band = tmp_path / "band.yaml"  # another selection key: nothing is reused, random included
    band.write_text(text.replace("      levels: [1]", "      levels: [1]\n      length_range: [100, 200]"))
    assert plan(band)["costs"]["cells"] == 40 + 7 * 8


def test_plan_counts_the_cells_the_cpu_study_trained() -> None:
    """The committed CPU study (docs/results/cpu-study, base and headline variant): its cell records say which
    runs were trained and which reused another's (``shared_run``); the plan of its spec counts the trained ones."""
    study = ROOT / "docs" / "results" / "cpu-study"
    status = [json.loads(p.read_text()) for p in [*study.glob("cells/*.json"), *study.glob("variants/*/cells/*.json")]
              if p.name != "base.json"]
    trained = [c for c in status if c["status"] == "done" and "shared_run" not in c["results"]]
    assert len(status) == 40 + 7 * 8 and len(trained) == 72
    assert plan(ROOT / "examples" / "reproduce-cpu.yaml")["costs"]["cells"] == len(trained)
