"""The experiment spec: defaults, clear errors naming the bad key, safe YAML only."""

from __future__ import annotations

from pathlib import Path

import pytest

from divscope import DivscopeError
from divscope.experiment.commands import demo_spec_path
from divscope.experiment.spec import load_spec, parse_spec


def test_defaults_and_demo_spec() -> None:
    spec = parse_spec({})
    assert spec.selection.level_values() == [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]
    assert len(spec.selection.strategies) == 7  # the six + random
    demo = load_spec(demo_spec_path())
    assert demo.name == "demo" and demo.primary_eval().method == "nll"
    # issue 20: the demo follows the study defaults and replicates the two micro strategies
    sel = demo.selection
    assert (sel.typeless, sel.spacing, sel.level_values()) == ("exclude", "coverage", [0.0, 1.0])
    assert {s: sel.replicates_of(s) for s in sel.strategies} == {
        "instruction-macro": 1, "instruction-meso": 1, "instruction-micro": 2, "response-macro": 1,
        "response-meso": 1, "response-micro": 2, "random": 1}
    assert parse_spec({"pool": {"source": "a.jsonl"}}).pool.source == ["a.jsonl"]


@pytest.mark.parametrize(("data", "message"), [
    ({"selection": {"sizez": [10]}}, "selection.sizez: unknown key"),
    ({"selection": {"sizes": [0]}}, "selection.sizes: sizes must be >= 1"),
    ({"selection": {"strategies": ["response-nano"]}}, "selection.strategies: unknown strategy 'response-nano'"),
    ({"selection": {"levels": [0.5, 2]}}, "selection.levels"),
    ({"train": {"method": "qlora"}}, "train.method"),
    ({"evaluate": [{"method": "bleu"}]}, "evaluate.0.method"),
    ({"primary": "nope.nll"}, "primary 'nope.nll' is not one of the evaluations"),
    ([1, 2], "top level must be a mapping"),
])
def test_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(DivscopeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_spec(data, "s.yaml")


def test_yaml_is_safe_and_errors_have_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nselection: [unclosed\n")
    with pytest.raises(DivscopeError, match=r"bad.yaml:\d+: not valid YAML"):
        load_spec(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(DivscopeError, match="not valid YAML"):
        load_spec(evil)
    with pytest.raises(DivscopeError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["docs/results/archive/reproduce-cpu/spec.yaml", "examples/paper.yaml"])
def test_example_specs_validate(name: str) -> None:
    spec = load_spec(Path(__file__).parent.parent / name)
    assert len(spec.selection.level_values()) == 7
    assert set(spec.selection.strategies) >= {"instruction-macro", "response-micro", "random"}


def test_how_judge_requests_are_sent_is_not_part_of_the_fingerprint():
    """Timeouts, retries and concurrency do not change an answer: the same study whatever they are. The judge's
    reply length does: another study (but only away from its default, so stored studies keep theirs)."""
    from divscope.evaluate.settings import EvalSettings

    entry = {"eval_set": "alpaca_eval", "method": "judge", "endpoint": "http://x/v1", "judge_model": "j"}
    fp = parse_spec({"evaluate": [entry]}).fingerprint()
    for key, value in (("timeout", 900), ("max_retries", 0), ("concurrency", 2)):
        assert parse_spec({"evaluate": [{**entry, key: value}]}).fingerprint() == fp, key
    assert parse_spec({"evaluate": [{**entry, "judge_max_tokens": 2048}]}).fingerprint() != fp
    # They reach the judge: how requests are sent always, the reply length only when set.
    opts = EvalSettings(method="judge", timeout=900, max_retries=0).method_options()
    assert (opts["timeout"], opts["max_retries"], opts["concurrency"]) == (900, 0, 8)
    assert "judge_max_tokens" not in opts
    assert EvalSettings(method="judge", judge_max_tokens=2048).method_options()["judge_max_tokens"] == 2048


def test_endpoint_tagger_request_options_are_not_part_of_the_fingerprint():
    meso = {"tagger": "endpoint", "options": {"base_url": "http://x/v1", "model": "m"}}
    fp = parse_spec({"features": {"meso": meso}}).fingerprint()
    slow = {**meso, "options": {**meso["options"], "timeout": 600, "max_retries": 9, "max_concurrency": 2}}
    assert parse_spec({"features": {"meso": slow}}).fingerprint() == fp
    longer = {**meso, "options": {**meso["options"], "max_tokens": 2048}}
    assert parse_spec({"features": {"meso": longer}}).fingerprint() != fp


def test_pilot_spec_design() -> None:
    """examples/pilot-cpu.yaml (issue 20): one subset trained with 3 training seeds, 3 random subsets trained with
    one, every run scored on 128 prompts, item-weighted and length-neutral."""
    from divscope.select.subsets import grid_cells

    spec = load_spec(Path(__file__).parent.parent / "examples" / "pilot-cpu.yaml")
    g = spec.selection
    cells = grid_cells(Path("o"), g.strategies, g.sizes, g.level_values(), g.seeds, ".jsonl", g.baseline_seeds,
                       g.replicates, g.hold == "selection", g.replicates_for)
    assert [(c.strategy, c.diversity, c.seed, g.train_seed(spec.train.seed, c.replicate)) for c in cells] == [
        ("response-micro", 1.0, 0, 0), ("response-micro", 1.0, 0, 1000), ("response-micro", 1.0, 0, 2000),
        ("random", None, 0, 0), ("random", None, 1, 0), ("random", None, 2, 0)]
    ev = spec.primary_eval()
    assert (ev.limit, ev.nll_weighting, ev.end_of_turn) == (128, "item", "exclude")
    assert (g.typeless, g.spacing) == ("exclude", "coverage")


def test_reproduce_cpu_spec_design() -> None:
    """examples/reproduce-cpu.yaml (issue 20, the main CPU study): micro on both sides at the lowest and highest
    coverage levels and random, 8 replicates each whose seed drives selection and training, length held in a band;
    the headline variant adds the other four strategies at their highest level with the same replicates."""
    from divscope.select.subsets import grid_cells

    spec = load_spec(Path(__file__).parent.parent / "examples" / "reproduce-cpu.yaml")

    def cells(g):
        return grid_cells(Path("o"), g.strategies, g.sizes, g.level_values(), g.seeds, ".jsonl", g.baseline_seeds,
                          g.replicates, g.hold == "selection", g.replicates_for)

    g = spec.selection
    base = cells(g)
    assert len(base) == 40 and {c.strategy for c in base} == {"instruction-micro", "response-micro", "random"}
    assert {c.diversity for c in base} == {0.0, 1.0, None} and {c.size for c in base} == {64}
    assert sorted({(c.seed, g.train_seed(spec.train.seed, c.replicate)) for c in base}) == [
        (1000 * r, spec.train.seed + 1000 * r) for r in range(8)]
    assert (g.typeless, g.spacing, g.hold) == ("exclude", "coverage", "none")
    assert (g.length_range, g.length_side, g.where) == ([120, 180], "response", "instruction_tokens <= 40 and turns == 1")
    ev = spec.primary_eval()
    assert (ev.limit, ev.nll_weighting, ev.end_of_turn) == (96, "item", "exclude")
    head = cells(spec.variant_spec("headline").selection)
    assert len(head) == 7 * 8 and {c.diversity for c in head} == {1.0, None}
    assert {c.strategy for c in head} == {"instruction-macro", "instruction-meso", "instruction-micro",
                                          "response-macro", "response-meso", "response-micro", "random"}
    shared = {(c.strategy, c.diversity, c.replicate) for c in base} & {(c.strategy, c.diversity, c.replicate) for c in head}
    assert len(shared) == 3 * 8  # micro at d = 1 and random: the base study's runs, reused
