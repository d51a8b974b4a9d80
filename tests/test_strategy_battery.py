"""The strategy contract battery (divscope.select.checks) over every registered strategy on a real featurized
pool; a third-party strategy registered from outside; and deliberately broken strategies that the battery must
catch, each failing at least the check it breaks."""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import divscope
from divscope.errors import DivscopeError, MissingFeaturesError, StaleFeaturesError
from divscope.select.baselines import id_rank, k_center, random_subset
from divscope.select.builtin import DiversityStrategy
from divscope.select.checks import CHECKS, BatteryPool, battery_pool, parametrize_with_checks, run_checks
from divscope.select.protocol import Needs, SelectionContext
from divscope.select.registry import get_strategy, register_strategy, strategy_names, unregister_strategy
from divscope.select.settings import levels_of
from divscope.select.strategies import ALL, BASELINES, STRATEGIES, Selector, parse_strategies
from divscope.select.subsets import run_grid
from helpers import real_pairs

POOL_N = 160


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> BatteryPool:
    """160 real pairs, featurized micro, macro and meso (offline tagger) on both sides; and a bare copy."""
    return battery_pool(tmp_path_factory.mktemp("battery"), real_pairs(POOL_N), strategies=ALL)


@parametrize_with_checks()
def test_contract(strategy: str, check: Any, battery: BatteryPool) -> None:
    check(strategy, battery)


# The engine's options away from their defaults (typeless: exclude, spacing: k, pruning: types), each passed to
# every selection of the battery; the baselines ignore them and must still pass.
ENGINE_OPTIONS = {
    "typeless-include": {"typeless": "include"},
    "coverage": {"spacing": "coverage"},
    "coverage-typeless-include": {"spacing": "coverage", "typeless": "include"},
    "sample-pruning": {"pruning": "samples"},
}


@pytest.mark.parametrize("options", list(ENGINE_OPTIONS))
@parametrize_with_checks()
def test_contract_under_engine_options(strategy: str, check: Any, options: str, battery: BatteryPool) -> None:
    check(strategy, dataclasses.replace(battery, options=ENGINE_OPTIONS[options]))


def test_battery_pool_has_typeless_samples(battery: BatteryPool) -> None:
    """The typeless checks bite only if some axis has samples without a type: here they do."""
    sel = Selector(battery.workspace)
    counts = {s: int((np.diff(sel.incidence(*s.split("-")).matrix.indptr) == 0).sum()) for s in STRATEGIES}
    assert counts["response-micro"] > 0 and sum(v > 0 for v in counts.values()) >= 2, counts


def test_registry_lists_the_nine_builtins() -> None:
    assert strategy_names()[:9] == ALL == STRATEGIES + BASELINES and len(STRATEGIES) == 6
    assert [get_strategy(s).takes_level for s in ALL] == [True] * 6 + [False] * 3
    assert parse_strategies("all") == list(STRATEGIES) and parse_strategies("baselines") == list(BASELINES)
    with pytest.raises(DivscopeError, match="unknown strategy 'response-nano': choose from"):
        get_strategy("response-nano")


def test_baselines_reject_negative_seeds_directly() -> None:
    ids = [f"r{i}" for i in range(10)]
    for call in (lambda: random_subset(ids, 3, -1), lambda: k_center(np.eye(10, dtype=np.float32), ids, 3, -2)):
        with pytest.raises(DivscopeError, match="seed must be a non-negative integer"):
            call()


# -- a third-party strategy, and broken variants of it ---------------------------------------------------------

class TypeWeighted:
    """Third-party example: N samples drawn with weight growing with their number of response-micro types (the
    smallest of hash(seed, id) / (1 + types)); keyed to record ids, so independent of row order."""

    takes_level = False
    row_order = "sequence"
    seed_sensitive = True

    def __init__(self, name: str) -> None:
        self.name = name

    def needs(self, **options: Any) -> Needs:
        return Needs(incidence=("response", "micro"))

    def keys(self, context: SelectionContext, seed: int) -> np.ndarray:
        types = np.diff(context.incidence("response", "micro").matrix[context.rows].indptr)
        return id_rank(context.sample_ids, seed).astype(np.float64) / (1.0 + types)

    def select(self, context: SelectionContext, n: int, d: float | None, seed: int,
               **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return np.argsort(self.keys(context, seed), kind="stable")[:n], {"weighted_by": "response-micro types"}


class ShortByOne(TypeWeighted):
    def select(self, context, n, d, seed, **options):
        rows, info = super().select(context, n, d, seed)
        return rows[: n - 1], info


class Duplicates(TypeWeighted):
    def select(self, context, n, d, seed, **options):
        rows, info = super().select(context, n, d, seed)
        return np.concatenate([rows[:-1], rows[:1]]), info


class IgnoresSeed(TypeWeighted):
    def select(self, context, n, d, seed, **options):
        return super().select(context, n, d, 0)


class IgnoresMask(TypeWeighted):
    """Returns pool rows where local rows are due: right on the whole pool, wrong on a sub-pool."""

    def select(self, context, n, d, seed, **options):
        rows, info = super().select(context, n, d, seed)
        return context.rows[rows], info


class RowOrderDependent(TypeWeighted):
    """Promises "sequence" but takes the most-typed rows with ties in row order."""

    def select(self, context, n, d, seed, **options):
        types = np.diff(context.incidence("response", "micro").matrix[context.rows].indptr)
        return np.argsort(-(types // 4), kind="stable")[:n], {}


class Unseeded(TypeWeighted):
    """Draws from an unseeded generator: a different subset on every call."""

    def select(self, context, n, d, seed, **options):
        return np.random.default_rng().permutation(len(context.rows))[:n], {}


class SwallowsMissingFeatures(TypeWeighted):
    """Falls back to the first N rows when its features are missing, instead of saying how to build them."""

    def select(self, context, n, d, seed, **options):
        try:
            return super().select(context, n, d, seed)
        except MissingFeaturesError:
            return np.arange(n), {}


class NumpyInfo(TypeWeighted):
    """Puts a numpy integer into the info dict: the manifest (JSON) cannot hold it."""

    def select(self, context, n, d, seed, **options):
        rows, _ = super().select(context, n, d, seed)
        return rows, {"heaviest": np.int64(rows[0])}


class LeaksTypeless(DiversityStrategy):
    """response-micro that records ``typeless: exclude`` but selects with typeless samples in every pool."""

    def __init__(self, name: str) -> None:
        super().__init__("response", "micro")
        self.name = name

    def select(self, context, n, d, seed, **options):
        rows, info = super().select(context, n, d, seed, **{**options, "typeless": "include"})
        return rows, {**info, "typeless": "exclude"}


class CoverageAtLowest(LeaksTypeless):
    """Records coverage spacing and each level's target, but selects every level at the lowest one's k."""

    def select(self, context, n, d, seed, **options):
        rows, info = DiversityStrategy.select(self, context, n, 0.0, seed, **{**options, "spacing": "coverage"})
        lo, hi = info["coverage_range"]
        return rows, {**info, "coverage_target": math.floor(lo + d * (hi - lo) + 0.5 + 1e-9)}


BROKEN = [
    (ShortByOne, "check_exact_size"),
    (Duplicates, "check_distinct_rows"),
    (IgnoresSeed, "check_seed_changes_subset"),
    (IgnoresMask, "check_eligibility_respected"),
    (RowOrderDependent, "check_row_order_independence"),
    (Unseeded, "check_same_seed_same_subset"),
    (SwallowsMissingFeatures, "check_missing_features"),
    (NumpyInfo, "check_rows_in_pool"),
    (LeaksTypeless, "check_typeless_respected"),
    (CoverageAtLowest, "check_coverage_spacing"),
]


@pytest.fixture()
def registered(request: pytest.FixtureRequest) -> Iterator[str]:
    """Registers ``request.param`` (a class) under a test-only name and removes it afterwards."""
    name = f"toy-{request.param.__name__.lower()}"
    register_strategy(request.param(name))
    yield name
    unregister_strategy(name)


@pytest.mark.parametrize("registered", [TypeWeighted], indirect=True)
def test_third_party_strategy_passes_the_battery_and_runs_in_a_grid(registered: str, battery: BatteryPool,
                                                                     tmp_path: Path) -> None:
    assert registered in strategy_names() and parse_strategies(f"random,{registered}") == ["random", registered]
    assert run_checks(registered, battery) == {c.__name__: None for c in CHECKS}
    sub = Selector(battery.workspace).select(registered, 10, 0.5, seed=1)
    assert sub.info["diversity_ignored"] is True and sub.info["weighted_by"] == "response-micro types"
    manifests, built = run_grid(battery.workspace, tmp_path / "g", [registered, "response-micro"], [10],
                                levels_of(2), [0])
    assert built == 3 and {m["strategy"] for m in manifests} == {registered, "response-micro"}
    assert (tmp_path / "g" / registered / "n10-s0.jsonl").is_file()


@pytest.mark.parametrize(("registered", "breaks"), BROKEN, indirect=["registered"],
                         ids=[cls.__name__ for cls, _ in BROKEN])
def test_the_battery_catches_a_broken_strategy(registered: str, breaks: str, battery: BatteryPool) -> None:
    failures = {name: msg for name, msg in run_checks(registered, battery).items() if msg is not None}
    assert breaks in failures, f"{breaks} passed; failures: {failures}"


def test_registration_rejects_malformed_strategies() -> None:
    good = TypeWeighted("toy-dup")
    register_strategy(good)
    try:
        with pytest.raises(ValueError, match="registered already"):
            register_strategy(TypeWeighted("toy-dup"))
        register_strategy(TypeWeighted("toy-dup"), replace=True)
    finally:
        unregister_strategy("toy-dup")
    for name in ("all", "baselines", "a,b", "", "x/y"):
        with pytest.raises(ValueError, match="strategy name"):
            register_strategy(TypeWeighted(name))
    bad = TypeWeighted("toy-bad")
    bad.row_order = "mostly"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="row_order"):
        register_strategy(bad)
    with pytest.raises(TypeError, match="does not follow"):
        register_strategy(type("NoSelect", (), {"name": "toy-noselect"})())  # type: ignore[arg-type]


def test_stale_features_are_reported_as_stale(battery: BatteryPool, tmp_path: Path) -> None:
    """Features built for another pool: StaleFeaturesError from the loader, passed through by the selector."""
    ws = tmp_path / "ws"
    divscope.ingest(real_pairs(40), ws)
    shutil.copytree(battery.workspace / "features", ws / "features")
    with pytest.raises(StaleFeaturesError, match=r"stale or damaged .*`divscope featurize .* --level micro --side response` again") as e:
        Selector(ws).select("response-micro", 5, 0.5)
    assert "\n" not in str(e.value)

