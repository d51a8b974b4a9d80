"""Replicated studies: cells (strategy, size, level, replicate) with their own seeds, held seeds, the untrained
model's anchor row, and the results row contract (every seed, types covered, unit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from divscope.errors import DivscopeError
from divscope.experiment.spec import parse_spec
from helpers import tiny_study

ROW_KEYS = {"cell", "strategy", "size", "diversity", "seed", "replicate", "selection_seed", "train_seed",
            "eval_seed", "types_covered", "unit", "metric", "score", "disk_bytes"}


def _spec(text: str, **selection):
    raw = yaml.safe_load(text)
    raw["selection"].update(selection)
    return parse_spec(raw)


def test_replicate_seeds_and_file_names() -> None:
    from divscope.select.settings import GridSettings
    from divscope.select.subsets import grid_cells

    def cells(**kw):
        return [(c.path.name, c.seed, c.replicate) for c in grid_cells(
            Path("out"), ["instruction-micro", "random"], [8], [0.0, 1.0], [3], ".jsonl", [5], **kw)]

    assert cells() == [("n8-d0.000-s3.jsonl", 3, 0), ("n8-d1.000-s3.jsonl", 3, 0), ("n8-s5.jsonl", 5, 0)]
    assert cells(replicates=2) == [("n8-d0.000-s3-r0.jsonl", 3, 0), ("n8-d0.000-s3-r1.jsonl", 1003, 1),
                                   ("n8-d1.000-s3-r0.jsonl", 3, 0), ("n8-d1.000-s3-r1.jsonl", 1003, 1),
                                   ("n8-s5-r0.jsonl", 5, 0), ("n8-s5-r1.jsonl", 1005, 1)]  # the baseline too
    assert {seed for _, seed, _ in cells(replicates=2, hold_selection=True)} == {3, 5}
    g = GridSettings(replicates=3)
    assert [(g.selection_seed(7, r), g.train_seed(2, r)) for r in range(3)] == [(7, 2), (1007, 1002), (2007, 2002)]
    held = GridSettings(replicates=3, hold="training")
    assert [(held.selection_seed(7, r), held.train_seed(2, r)) for r in range(3)] == [(7, 2), (1007, 2), (2007, 2)]
    with pytest.raises(ValueError, match="seeds 0 and 1000 both give selection seed 1000"):
        GridSettings(seeds=[0, 1000], replicates=2)
    GridSettings(seeds=[0, 1000], replicates=2, hold="selection")  # held: no seed is derived
    with pytest.raises(DivscopeError, match="selection.replicates: replicates must be >= 1"):
        _spec(tiny_study(), replicates=0)


def test_replicates_for_names_the_strategies_replicated() -> None:
    """``replicates_for`` gives the strategies it names their own R (names, seeds, replicate ids); the others
    keep ``replicates`` and their names without ``-r``."""
    from divscope.select.settings import GridSettings
    from divscope.select.subsets import grid_cells

    g = GridSettings(strategies=["instruction-micro", "response-meso", "random"], levels=[0, 1], sizes=[8],
                     seeds=[3], baseline_seeds=[5, 6], replicates_for="instruction-micro=2")
    assert g.replicates_for == {"instruction-micro": 2} and g.has_replicates()
    assert [g.replicates_of(s) for s in g.strategies] == [2, 1, 1]
    cells = [(c.strategy, c.path.name, c.seed, c.replicate) for c in grid_cells(
        Path("out"), g.strategies, g.sizes, g.level_values(), g.seeds, ".jsonl", g.baseline_seeds, g.replicates,
        False, g.replicates_for)]
    assert cells == [("instruction-micro", "n8-d0.000-s3-r0.jsonl", 3, 0),
                     ("instruction-micro", "n8-d0.000-s3-r1.jsonl", 1003, 1),
                     ("instruction-micro", "n8-d1.000-s3-r0.jsonl", 3, 0),
                     ("instruction-micro", "n8-d1.000-s3-r1.jsonl", 1003, 1),
                     ("response-meso", "n8-d0.000-s3.jsonl", 3, 0), ("response-meso", "n8-d1.000-s3.jsonl", 3, 0),
                     ("random", "n8-s5.jsonl", 5, 0), ("random", "n8-s6.jsonl", 6, 0)]
    # the pilot's design: one subset, 3 training seeds (held selection); 3 random subsets, one training seed
    pilot = GridSettings(strategies=["response-micro", "random"], levels=[1], sizes=[64], baseline_seeds=[0, 1, 2],
                         replicates_for={"response-micro": 3}, hold="selection")
    assert [(c.strategy, c.seed, c.replicate) for c in grid_cells(
        Path("o"), pilot.strategies, pilot.sizes, pilot.level_values(), pilot.seeds, ".jsonl", pilot.baseline_seeds,
        pilot.replicates, True, pilot.replicates_for)] == [
        ("response-micro", 0, 0), ("response-micro", 0, 1), ("response-micro", 0, 2),
        ("random", 0, 0), ("random", 1, 0), ("random", 2, 0)]
    assert [pilot.train_seed(0, r) for r in range(3)] == [0, 1000, 2000]
    # the seed check counts each seed list at the replicates of the strategies that use it
    GridSettings(strategies=["instruction-micro"], seeds=[0, 1000], baseline_seeds=[0], replicates_for="random=2")
    with pytest.raises(ValueError, match="seeds 0 and 1000 both give selection seed 1000"):
        GridSettings(strategies=["instruction-micro", "random"], seeds=[7], baseline_seeds=[0, 1000],
                     replicates_for="random=2")
    assert GridSettings(replicates_for={}).replicates_for is None and not GridSettings().has_replicates()


@pytest.mark.parametrize(("value", "message"), [
    ("response-micro", "give STRATEGY=R pairs"), ("response-micro=0", "replicates must be a whole number >= 1"),
    ({"response-micro": 1.5}, "whole number"), ({"response-nano": 2}, "unknown strategy 'response-nano'"),
    ({"all": 2}, "name one strategy, not a group"),
])
def test_replicates_for_errors_name_the_key(value: object, message: str) -> None:
    with pytest.raises(DivscopeError, match=f"selection.replicates_for: .*{message}"):
        _spec(tiny_study(), replicates_for=value)


def test_results_rows_carry_every_seed(tmp_path: Path) -> None:
    """The row contract shared with the analysis, on hand-made cells (no training)."""
    from divscope.experiment.cells import Cell, anchor_cell
    from divscope.experiment.study import cells_of, write_results

    spec = _spec(tiny_study(), replicates=2)
    manifests = [{"strategy": "instruction-micro", "file": "n8-d1.000-s0-r1.jsonl", "size": 8, "diversity": 1.0,
                  "seed": 1000, "replicate": 1, "types_covered": 17},
                 {"strategy": "random", "file": "n8-s0-r0.jsonl", "size": 8, "diversity": None, "seed": 0,
                  "replicate": 0}]
    cells: list[Cell] = [anchor_cell(tmp_path / "runs" / "base"), *cells_of(spec, tmp_path, manifests)]
    for i, c in enumerate(cells):
        c.results = {"alpaca_eval.nll": -1.0 - i}
    assert write_results(tmp_path, cells, spec) == 3
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(set(r) == ROW_KEYS for r in rows)
    base, micro, rnd = rows
    assert base == {"cell": "base", "strategy": "base", "size": 0, "diversity": None, "seed": None, "replicate": 0,
                    "selection_seed": None, "train_seed": None, "eval_seed": 0, "types_covered": None, "unit": None,
                    "metric": "alpaca_eval.nll", "score": -1.0, "disk_bytes": None}
    assert (micro["cell"], micro["replicate"], micro["selection_seed"], micro["train_seed"]) == \
        ("instruction-micro/n8-d1.000-s0-r1", 1, 1000, 1000)
    assert (micro["types_covered"], micro["unit"], rnd["types_covered"], rnd["unit"]) == (17, "smollm2", None, None)
    assert (rnd["replicate"], rnd["selection_seed"], rnd["train_seed"]) == (0, 0, 0)
    words = _spec(tiny_study().replace("pool:", "features:\n  micro: {unit: words}\npool:"), replicates=2)
    write_results(tmp_path, cells, words)
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[1])["unit"] == "words"


def _rows(path: Path) -> dict[str, dict]:
    return {r["cell"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_replicated_study_with_held_selection_and_the_anchor(tmp_path: Path) -> None:
    """Base study: 2 replicates of the random baseline, each its own selection and training seed. Variant
    ``held``: selection held, so both replicates train on the same subset with different seeds; its replicate 0
    is the base's (same bytes, same seed: shared), its replicate 1 is not (same bytes as the base's replicate 0,
    another seed: trained). The untrained model is evaluated once, for the study and its variant, and a rerun
    redoes nothing."""
    from divscope.experiment.runner import run_study

    text = tiny_study(strategies="[random]") + "variants:\n  - {name: held, selection: {hold: selection}}\n"
    spec = _spec(text, replicates=2)
    out = tmp_path / "study"
    summary = run_study(spec, out)
    assert summary["failed"] == 0 and summary["variants"][0]["shared_runs"] == 1, summary

    rows = _rows(out / "results.jsonl")
    assert set(rows) == {"base", "random/n8-s0-r0", "random/n8-s0-r1"}
    base, r0, r1 = rows["base"], rows["random/n8-s0-r0"], rows["random/n8-s0-r1"]
    assert (base["strategy"], base["size"], base["diversity"], base["replicate"]) == ("base", 0, None, 0)
    assert (r0["selection_seed"], r0["train_seed"], r1["selection_seed"], r1["train_seed"]) == (0, 0, 1000, 1000)
    assert r0["replicate"] == 0 and r1["replicate"] == 1 and r0["eval_seed"] == r1["eval_seed"] == 0
    subsets = out / "subsets" / "random"
    assert (subsets / "n8-s0-r0.jsonl").read_bytes() != (subsets / "n8-s0-r1.jsonl").read_bytes()

    held = out / "variants" / "held"
    vrows = _rows(held / "results.jsonl")
    assert (vrows["random/n8-s0-r0"]["selection_seed"], vrows["random/n8-s0-r1"]["selection_seed"]) == (0, 0)
    assert (vrows["random/n8-s0-r0"]["train_seed"], vrows["random/n8-s0-r1"]["train_seed"]) == (0, 1000)
    vsub = held / "subsets" / "random"
    assert (vsub / "n8-s0-r0.jsonl").read_bytes() == (vsub / "n8-s0-r1.jsonl").read_bytes()  # selection held
    assert not (held / "runs" / "random" / "n8-s0-r0").exists()  # shared with the base study's replicate 0
    trained = json.loads((held / "runs" / "random" / "n8-s0-r1" / "train.json").read_text())
    assert trained["config"]["seed"] == 1000  # training differs: another seed, another adapter
    adapter = "model/adapter_model.safetensors"
    assert (held / "runs" / "random" / "n8-s0-r1" / adapter).read_bytes() != \
        (out / "runs" / "random" / "n8-s0-r0" / adapter).read_bytes()

    # The anchor: evaluated once into OUT/runs/base, the same row in the variant, nothing redone on a rerun.
    assert vrows["base"]["score"] == base["score"] and not (held / "runs" / "base").exists()
    anchor = json.loads((out / "runs" / "base" / "eval" / "alpaca_eval.nll.json").read_text())
    assert anchor["score"] == base["score"] and len(anchor["per_item"]) == anchor["items"] == 4
    files = {p: p.stat().st_mtime_ns for p in out.glob("**/runs/**/*.json")}
    assert run_study(spec, out)["failed"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/runs/**/*.json")} == files
