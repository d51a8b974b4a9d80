"""``--balance-by COLUMN``: stratified selection for every strategy. Each value's count in the subset is within
one sample of N times its share of the eligible pool (largest-remainder quotas), the quotas and the counts are in
the manifest, the same seed gives the same subset, a bad column is one line, and without the option nothing
changes."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from divscope.cli import main
from divscope.errors import DivscopeError
from divscope.experiment.spec import parse_spec
from divscope.io.workspace import Workspace
from divscope.select.balance import largest_remainder, take
from divscope.select.checks import battery_pool
from divscope.select.eligibility import eligibility, select_eligible
from divscope.select.registry import get_strategy
from divscope.select.settings import SelectSettings
from divscope.select.strategies import ALL, Selector
from divscope.select.subsets import run_grid_settings
from helpers import assert_one_line_errors, real_pairs

ORIGINS = ["alpaca"] * 10 + ["dolly"] * 6 + ["oasst"] * 3 + ["lima"]  # 50 / 30 / 15 / 5 %


def _records() -> list[dict[str, Any]]:
    """160 real pairs with an uneven ``origin``, a ``tier`` (0 / 1, missing on every 7th) and a ``score``."""
    return [{**p, "origin": ORIGINS[i % 20], "score": i % 9, **({"tier": i % 2} if i % 7 else {})}
            for i, p in enumerate(real_pairs(160))]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    recs = _records()  # two inputs: two sources of 110 and 50 records
    return battery_pool(tmp_path_factory.mktemp("balance"), [recs[:110], recs[110:]], strategies=ALL)


@pytest.fixture(scope="module")
def values(pool) -> list[dict[str, Any]]:
    """Each row's columns, read independently of divscope.select (the property's reference)."""
    return [{**r.metadata, "source": r.source} for r in Workspace(pool.workspace).pool.records()]


def cli(*args: Any) -> int:
    return main([str(a) for a in args])


def _key(v: Any) -> str:
    return json.dumps(v)


def _typeless_rows(selector: Selector, strategy: str) -> set[int]:
    side, level = get_strategy(strategy).needs().incidence
    matrix = selector.incidence(side, level).matrix
    return {int(r) for r in selector.rows if matrix[r].nnz == 0}


# ------------------------------------------------------------------------------------------------- quotas

@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=8).filter(lambda c: sum(c) > 0), data=st.data())
def test_largest_remainder_quotas_are_within_one_and_never_above_the_count(counts, data):
    n = data.draw(st.integers(0, sum(counts)))
    q = largest_remainder(np.asarray(counts), n)
    assert int(q.sum()) == n
    for c, qv in zip(counts, q, strict=True):
        assert abs(Fraction(int(qv)) - Fraction(n * c, sum(counts))) < 1 and 0 <= qv <= c
    # the remainder's extra samples go to the largest remainders, ties to the earlier value
    assert list(largest_remainder(np.asarray([1, 1, 1]), 2)) == [1, 1, 0]
    assert list(largest_remainder(np.asarray([1, 2, 2]), 2)) == [0, 1, 1]


def test_take_walks_the_order_and_passes_over_full_values():
    order = np.asarray([3, 0, 4, 1, 2, 5])
    labels = np.asarray([0, 0, 1, 1, 2, 2])
    assert take(order, labels, np.asarray([1, 1, 1])).tolist() == [3, 0, 4]
    assert take(order, labels, np.asarray([2, 0, 1])).tolist() == [0, 4, 1]


# ---------------------------------------------------------------------------------- the property, nine strategies

@hsettings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from(["source", "origin", "tier"]), n=st.integers(1, 40), seed=st.integers(0, 3),
       where=st.sampled_from([None, "score >= 3"]), typeless=st.sampled_from(["exclude", "include"]),
       d=st.sampled_from([0.0, 0.5, 1.0]))
def test_every_value_keeps_its_share_within_one_sample_for_all_nine_strategies(pool, values, column, n, seed, where,
                                                                              typeless, d):
    ws = Workspace(pool.workspace)
    elig = eligibility(ws, where=where, balance_by=column)
    selector = Selector(ws, elig.mask)
    eligible = Counter(_key(values[r].get(column)) for r in selector.rows)
    total = sum(eligible.values())
    for strategy in ALL:
        opts = {"typeless": typeless, "threshold": 0.0}
        if len(eligible) > n:  # some value could not get a sample: refused, in one line
            with pytest.raises(DivscopeError, match=rf"^--balance-by {column}: {len(eligible)} distinct values "
                                                    rf"among the eligible samples .* for a subset of {n}; "):
                select_eligible(selector, elig, strategy, n, d, seed, **opts)
            continue
        try:
            sub = select_eligible(selector, elig, strategy, n, d, seed, **opts)
        except DivscopeError as e:  # only a value whose typed samples are fewer than its quota may fail
            assert typeless == "exclude" and get_strategy(strategy).takes_level, (strategy, e)
            m = re.match(rf"cannot balance: --balance-by {column} value (.+) needs (\d+) samples but "
                                       r"only (\d+) of them carry a type on the \w+-\w+ axis", str(e))
            assert m, str(e)
            typeless_rows = _typeless_rows(selector, strategy)
            typed = Counter(_key(values[r].get(column)) for r in selector.rows if int(r) not in typeless_rows)
            bad = _key(ast.literal_eval(m.group(1)))
            assert typed[bad] == int(m.group(3)) < int(m.group(2)), (strategy, str(e))
            continue
        got = Counter(_key(values[r].get(column)) for r in sub.rows)
        assert len(sub.rows) == n and len(set(sub.rows.tolist())) == n
        assert set(got) <= set(eligible), (strategy, got)
        for v, c in eligible.items():  # the promise: within one sample of N times the eligible share
            assert abs(Fraction(got[v]) - Fraction(n * c, total)) < 1, (strategy, column, n, v, got, eligible)
        report = sub.info["balance"]
        assert report["column"] == column
        assert {_key(e["value"]): (e["eligible"], e["selected"]) for e in report["values"]} == \
            {v: (c, got[v]) for v, c in eligible.items()}
        assert all(e["quota"] == e["selected"] for e in report["values"])


def test_a_value_short_of_typed_samples_is_named_in_one_line(pool, values):
    """typeless exclude (the default): the quotas are shares of the eligible pool, so a value whose samples are
    mostly typeless on the axis cannot meet its quota at N = the typed count."""
    ws = Workspace(pool.workspace)
    selector = Selector(ws)
    typeless_rows = _typeless_rows(selector, "instruction-meso")
    n = len(selector.rows) - len(typeless_rows)
    with pytest.raises(DivscopeError, match=r"^cannot balance: --balance-by origin value '\w+' needs \d+ samples but "
                                            r"only \d+ of them carry a type on the instruction-meso axis \(typeless "
                                            r"samples are excluded\); pass --typeless include"):
        selector.select("instruction-meso", n, 0.5, 0, balance="origin")
    assert len(selector.select("instruction-meso", n, 0.5, 0, balance="origin", typeless="include").rows) == n


# ------------------------------------------------------------------------------------- select, grid, spec, errors

def test_select_records_quotas_and_counts_and_is_deterministic(pool, values, tmp_path):
    ws = pool.workspace
    for strategy in ALL:
        d = ["-d", 0.5] if get_strategy(strategy).takes_level else []
        base = ["select", ws, "-s", strategy, *d, "-n", 17, "--seed", 2, "--balance-by", "origin"]
        a, b = tmp_path / strategy / "a.jsonl", tmp_path / strategy / "b" / "a.jsonl"
        assert cli(*base, "-o", a) == 0 and cli(*base, "-o", b) == 0
        for suffix in ("", ".manifest.json"):  # the same seed: byte-identical subset and manifest
            assert a.with_name(a.name + suffix).read_bytes() == b.with_name(b.name + suffix).read_bytes(), strategy
        m = json.loads(a.with_name(a.name + ".manifest.json").read_text())
        assert m["request"]["balance_by"] == "origin"
        got = Counter(values[r]["origin"] for r in m["rows"])
        assert got == {"alpaca": 8, "dolly": 5, "lima": 1, "oasst": 3}, strategy
        assert [(e["value"], e["eligible"], e["quota"], e["selected"]) for e in m["balance"]["values"]] == \
            [("alpaca", 80, 8, 8), ("dolly", 48, 5, 5), ("lima", 8, 1, 1), ("oasst", 24, 3, 3)], strategy
        # 17 * (.5, .3, .05, .15) = 8.5, 5.1, .85, 2.55: floors 8, 5, 0, 2, the two left to lima and oasst
    # the Python API takes the same setting and makes the same subset as the command line
    import divscope

    api = divscope.select(ws, "k-center", 17, seed=2, balance_by="origin")
    m = json.loads((tmp_path / "k-center" / "a.jsonl.manifest.json").read_text())
    assert api.rows == m["rows"] and api.manifest["balance"] == m["balance"]
    # another seed: another stratified random subset with the same counts
    rows = {s: Selector(ws).select("random", 17, seed=s, balance="origin").rows.tolist() for s in (0, 1)}
    assert rows[0] != rows[1]
    assert Counter(values[r]["origin"] for r in rows[0]) == Counter(values[r]["origin"] for r in rows[1])


def test_without_balance_by_nothing_changes(pool, tmp_path):
    ws = pool.workspace
    elig = eligibility(ws, where="origin == 'alpaca'", balance_by="origin")
    selector = Selector(ws, elig.mask)
    for strategy in ALL:
        d = 0.5 if get_strategy(strategy).takes_level else None
        plain = selector.select(strategy, 9, d, seed=1, threshold=0.0)
        assert "balance" not in plain.info
        # one value: its quota is N, so the balanced subset is the unbalanced one (same rows, same order)
        one = select_eligible(selector, elig, strategy, 9, d, seed=1, threshold=0.0)
        assert one.rows.tolist() == plain.rows.tolist(), strategy
        assert one.info.pop("balance")["values"] == [{"value": "alpaca", "eligible": 80, "share": 1.0, "quota": 9,
                                                      "selected": 9}]
        assert {k: v for k, v in one.info.items() if k not in ("where", "filters")} == plain.info
    assert cli("select", ws, "-s", "random", "-n", 5, "-o", tmp_path / "a.jsonl") == 0
    m = json.loads((tmp_path / "a.jsonl.manifest.json").read_text())
    assert "balance" not in m and set(m["request"]) == {"strategy", "size", "diversity", "seed", "options"}
    assert parse_spec({"selection": {"balance_by": None}}).fingerprint() == parse_spec({}).fingerprint()
    assert parse_spec({"selection": {"balance_by": "source"}}).fingerprint() != parse_spec({}).fingerprint()


def test_grid_balances_every_cell_and_resumes(pool, values, tmp_path):
    ws, out = pool.workspace, tmp_path / "g"
    args = ["grid", ws, "--strategies", "all,baselines", "--sizes", 12, "--levels", 2, "--typeless", "include",
            "--balance-by", "source", "--where", "score >= 2", "-o", out]
    assert cli(*args) == 0
    eligible = Counter(v["source"] for v in values if v["score"] >= 2)
    total = sum(eligible.values())
    manifests = sorted(out.glob("*/*.manifest.json"))
    assert len(manifests) == 6 * 2 + 3
    for p in manifests:
        m = json.loads(p.read_text())
        assert m["request"]["balance_by"] == "source"
        got = Counter(values[r]["source"] for r in m["rows"])
        assert all(abs(Fraction(got[v]) - Fraction(12 * c, total)) < 1 for v, c in eligible.items()), p
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli(*args) == 0  # resumes: nothing new, nothing rewritten
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_study_grid_balances_on_top_of_its_eligible_rows(pool, values, tmp_path):
    """The path a study takes: run_grid_settings with the eval-overlap mask, selection from the spec."""
    sel = parse_spec({"selection": {"strategies": ["response-micro", "k-center"], "sizes": [10], "levels": 1,
                                    "balance_by": "origin"}}).selection
    given_rows = np.arange(160) % 4 != 0
    manifests, built = run_grid_settings(pool.workspace, tmp_path / "s", sel, eligible=given_rows,
                                         eligible_label="no evaluation overlap")
    eligible = Counter(values[i]["origin"] for i in np.flatnonzero(given_rows))
    assert built == 2
    for m in manifests:
        assert {e["value"]: e["eligible"] for e in m["balance"]["values"]} == dict(eligible)
        got = Counter(values[r]["origin"] for r in m["rows"])
        assert all(abs(Fraction(got[v]) - Fraction(10 * c, 120)) < 1 for v, c in eligible.items())


def test_bad_columns_are_one_line_errors(pool, tmp_path, capsys):
    ws = pool.workspace
    cases = [
        (["select", ws, "-s", "random", "-n", 5, "--balance-by", "sorce", "-o", tmp_path / "a.jsonl"],
         "error: --balance-by: unknown column 'sorce'; the pool's columns: instruction_tokens, response_tokens, "
         "turns, source, origin, score, tier (did you mean 'source'?)"),
        (["grid", ws, "--strategies", "random", "--sizes", 5, "--balance-by", "orign", "-o", tmp_path / "g"],
         "error: --balance-by: unknown column 'orign'; the pool's columns: "),
        (["select", ws, "-s", "k-center", "-n", 5, "--balance-by", "score", "-o", tmp_path / "a.jsonl"],
         'error: --balance-by score: 9 distinct values among the eligible samples (0, 1, 2, 3, 4, ...) for a subset '
         "of 5; balance by a column with at most 5 values, or select more samples"),
    ]
    assert_one_line_errors(cases, capsys, tmp_path / "a.jsonl", tmp_path / "g")
    assert SelectSettings.from_cli({"strategy": "random", "size": 3, "balance_by": "source"}).balance_by == "source"


class _Ignores:
    """A third-party strategy that takes the first N rows whatever the quotas."""

    name, takes_level, row_order, seed_sensitive = "first-rows", False, "none", False

    def needs(self, **options):
        from divscope.select.protocol import Needs

        return Needs()

    def select(self, context, n, d, seed, **options):
        return np.arange(n), {}


def test_a_strategy_that_ignores_the_quotas_is_refused(pool):
    from divscope.select.registry import register_strategy, unregister_strategy

    register_strategy(_Ignores())
    try:
        selector = Selector(pool.workspace)
        assert len(selector.select("first-rows", 17).rows) == 17
        with pytest.raises(DivscopeError, match=r"^strategy first-rows does not honour --balance-by"):
            selector.select("first-rows", 17, balance="origin")  # 10 / 6 / 1 / 0 of origin, not 8 / 5 / 3 / 1
    finally:
        unregister_strategy("first-rows")
