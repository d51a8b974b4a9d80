"""The engine's randomness, measured: "uniformly at random" and "a seeded random order" (DESIGN.md, "The engine").

test_engine.py checks the engine against ``reference_select``, which shares the engine's hashing (``_mix``,
``_salts``, ``_type_rank``): a biased hash would bias both alike and pass. These tests share nothing with the
engine but its public API. The expected distributions come from the specification alone:

* ``spec_distribution`` below enumerates every tie order of the types (each 1 / T!), runs the pruning and the
  sampler of the specification on it, and branches on every uniform choice (each unchosen candidate of the
  chosen type with probability 1 / #candidates; typeless fill: each remaining typeless sample alike), giving
  the exact probability of every ordered selection, as fractions;
* ``test_oracle_agrees_with_hand_computed_shares`` checks that enumerator against shares worked out by hand;
* the engine is then run with 3,000-4,000 consecutive seeds and its selections compared with those exact
  probabilities by a chi-square test at alpha = 1e-4.

The seeds are fixed (0..S-1), so every test is deterministic: it passes or fails the same way on every run and
cannot flake. A wrong sampler fails by a wide margin: replacing the splitmix64 mixer by the identity (so the
candidate order of a type becomes ``row ^ constant``) makes the first of three candidates come up 1/2 : 1/4 : 1/4
instead of 1/3 each, and p-values fall far below 1e-4 (see the report of the change that added this file).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare

from divscope.features.incidence import Incidence
from divscope.select import Engine
from divscope.select.baselines import random_subset

ALPHA = 1e-4
SEEDS = 3000


# --------------------------------------------------------------------------------------------------------------
# The specification, enumerated exactly (no hashing, no seeds)
# --------------------------------------------------------------------------------------------------------------


def spec_distribution(rows: list[frozenset[str]], n: int, d: float, typeless_mode: str = "include",
                      ) -> dict[tuple[int, ...], Fraction]:
    """Exact probability of every ordered selection of ``n`` rows at level ``d``, per DESIGN.md's engine spec.

    ``rows[s]`` is the set of type names of sample s (empty = typeless: with ``typeless="include"`` in every
    pool, filled last; with ``typeless_mode="exclude"`` in no pool)."""
    types = sorted({t for r in rows for t in r})
    n_types = len(types)
    out: Counter[tuple[int, ...]] = Counter()
    orders = list(itertools.permutations(types))
    for perm in orders:
        rank = {t: i for i, t in enumerate(perm)}
        # 1. reverse greedy pruning: remove the remaining type with the fewest remaining carriers (ties: rank)
        remaining_types, remaining = set(types), set(range(len(rows)))
        removal: list[str] = []
        while remaining_types:
            carriers = {t: sum(1 for s in remaining if t in rows[s]) for t in remaining_types}
            t = min(remaining_types, key=lambda u, c=carriers: (c[u], rank[u]))
            removal.append(t)
            remaining_types.discard(t)
            remaining -= {s for s in remaining if t in rows[s]}

        def pool(k: int, removal=removal) -> list[int]:
            kept = set(removal[n_types - k:])
            return [s for s in range(len(rows)) if rows[s] <= kept and (rows[s] or typeless_mode == "include")]

        # 2. level to k (halves round up)
        k_min = next(k for k in range(n_types + 1) if len(pool(k)) >= n)
        k = min(n_types, max(k_min, math.floor(k_min + d * (n_types - k_min) + 0.5 + 1e-9)))
        in_pool = pool(k)
        kept_types = removal[n_types - k:]
        typeless = [s for s in in_pool if not rows[s]]

        # 3. type-aware sampling, every uniform choice branched
        def walk(chosen: tuple[int, ...], prob: Fraction, rank=rank, in_pool=in_pool, kept_types=kept_types,
                 typeless=typeless) -> None:
            if len(chosen) == n:
                out[chosen] += prob
                return
            c = {t: sum(1 for s in chosen if t in rows[s]) for t in kept_types}
            cands = {t: [s for s in in_pool if t in rows[s] and s not in chosen] for t in kept_types}
            live = [t for t in kept_types if cands[t]]
            if live:
                t = min(live, key=lambda u: (c[u], rank[u]))
                options = cands[t]
            else:  # no typed candidate left: typeless samples in a uniformly random order
                options = [s for s in typeless if s not in chosen]
            for s in options:
                walk((*chosen, s), prob / len(options))

        walk((), Fraction(1, len(orders)))
    assert sum(out.values()) == 1
    return dict(out)


def as_sets(dist: dict[tuple[int, ...], Fraction]) -> dict[frozenset[int], Fraction]:
    out: Counter[frozenset[int]] = Counter()
    for seq, p in dist.items():
        out[frozenset(seq)] += p
    return dict(out)


def assert_distribution(observed: Counter, expected: dict, label: str) -> None:
    """Every observed outcome is possible under the spec, and the counts fit the exact probabilities
    (chi-square; outcomes with an expected count below 5 are pooled into one cell)."""
    total = sum(observed.values())
    impossible = {k: v for k, v in observed.items() if expected.get(k, 0) == 0}
    assert not impossible, f"{label}: outcomes the specification never produces: {impossible}"
    keys = sorted(expected, key=lambda k: (-expected[k], sorted(k) if isinstance(k, frozenset) else k))
    exp = np.array([float(expected[k]) * total for k in keys])
    obs = np.array([observed.get(k, 0) for k in keys], dtype=float)
    small = exp < 5
    if small.any():
        exp = np.r_[exp[~small], exp[small].sum()]
        obs = np.r_[obs[~small], obs[small].sum()]
    if len(exp) < 2:
        return
    p = chisquare(obs, exp).pvalue
    table = ", ".join(f"{k}: {observed.get(k, 0)} vs {float(expected[k]) * total:.0f}" for k in keys[:12])
    assert p > ALPHA, f"{label}: chi-square p = {p:.3g} over {total} seeds; observed vs expected: {table}"


def _matrix(rows: list[frozenset[str]]) -> tuple[sp.csr_matrix, list[str]]:
    names = sorted({t for r in rows for t in r})
    dense = np.array([[t in r for t in names] for r in rows], dtype=bool).reshape(len(rows), len(names))
    return sp.csr_matrix(dense), names


def _run(rows: list[frozenset[str]], n: int, d: float, seeds: int, keys=None, typeless: str = "include") -> Counter:
    m, names = _matrix(rows)
    eng = Engine(Incidence(m, [f"type-{t}" for t in names], "meso", "instruction"), seed=0, sample_keys=keys,
                 typeless=typeless)
    return Counter(tuple(int(i) for i in eng.select(n, d, seed=s).ids) for s in range(seeds))


def R(*types: str) -> frozenset[str]:
    return frozenset(types)


# --------------------------------------------------------------------------------------------------------------
# The enumerator against hand-computed shares
# --------------------------------------------------------------------------------------------------------------


def test_oracle_agrees_with_hand_computed_shares() -> None:
    third, quarter, half, sixth = Fraction(1, 3), Fraction(1, 4), Fraction(1, 2), Fraction(1, 6)
    # One type, three carriers: the first pick is uniform.
    assert spec_distribution([R("a")] * 3, 1, 1.0) == {(0,): third, (1,): third, (2,): third}
    # A = {s0, s1}, B = {s2}: the first type is A or B by the tie order (1/2 each), then a uniform candidate.
    assert spec_distribution([R("a"), R("a"), R("b")], 1, 1.0) == {(0,): quarter, (1,): quarter, (2,): half}
    # Three singleton types: the selection order is the tie order, a uniformly random permutation.
    assert spec_distribution([R("a"), R("b"), R("c")], 3, 1.0) == {p: sixth for p in
                                                                    itertools.permutations(range(3))}
    # Pruning: d (1 carrier) goes first; a, b, c (2 carriers each) tie, so each is the last type with chance
    # 1/3. N = 2 at d = 0 is pool(1) = the two carriers of the last type, in either order.
    rows = [R("a"), R("a"), R("b"), R("b"), R("c"), R("c"), R("d")]
    assert spec_distribution(rows, 2, 0.0) == {p: sixth for p in [(0, 1), (1, 0), (2, 3), (3, 2), (4, 5),
                                                                   (5, 4)]}
    # Typed candidates first, then the typeless in a uniform order.
    assert spec_distribution([R(), R("a"), R()], 2, 1.0) == {(1, 0): half, (1, 2): half}
    # No type at all: the whole pool in a uniformly random order.
    assert spec_distribution([R()] * 3, 3, 0.0) == {p: sixth for p in itertools.permutations(range(3))}
    # Typeless samples excluded (the default): they are never chosen, and pools shrink by them.
    assert spec_distribution([R(), R("a"), R("a"), R()], 1, 0.0, "exclude") == {(1,): half, (2,): half}


# --------------------------------------------------------------------------------------------------------------
# The engine against the exact distributions
# --------------------------------------------------------------------------------------------------------------

OVERLAP = [R("a"), R("a", "b"), R("b"), R("b", "c"), R("c"), R("d"), R(), R("a", "c")]

CASES = {
    # name: (rows, N, d)
    "first-pick-of-3": ([R("a")] * 3, 1, 1.0),
    "first-pick-of-5": ([R("a")] * 5, 1, 0.0),
    "two-types-unequal": ([R("a"), R("a"), R("b")], 1, 1.0),
    "type-tie-order": ([R("a"), R("b"), R("c")], 3, 1.0),
    "pruning-ties": ([R("a"), R("a"), R("b"), R("b"), R("c"), R("c"), R("d")], 2, 0.0),
    "typeless-fill": ([R(), R("a"), R(), R("b"), R()], 4, 1.0),
    "typeless-only": ([R()] * 4, 4, 0.0),
    "overlap-n2-d0": (OVERLAP, 2, 0.0),
    "overlap-n3-d0.5": (OVERLAP, 3, 0.5),
    "overlap-n4-d1": (OVERLAP, 4, 1.0),
    # typeless samples excluded (the default): never chosen, and k_min is found among typed samples only
    "typeless-excluded": ([R(), R("a"), R(), R("b"), R(), R("a"), R("b", "c")], 3, 0.0, "exclude"),
    "overlap-excluded-n3-d0.5": (OVERLAP, 3, 0.5, "exclude"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_selection_follows_the_specified_distribution(case: str) -> None:
    """Ordered selections over 3,000 seeds against their exact probabilities; then the unordered sets alone
    (a coarser test with more power per outcome)."""
    rows, n, d, *typeless = CASES[case]
    exact = spec_distribution(rows, n, d, *typeless)
    seen = _run(rows, n, d, SEEDS, typeless=(typeless or ["include"])[0])
    assert_distribution(seen, exact, f"{case}, ordered")
    sets: Counter[frozenset[int]] = Counter()
    for seq, count in seen.items():
        sets[frozenset(seq)] += count
    assert_distribution(sets, as_sets(exact), f"{case}, as sets")


@pytest.mark.parametrize("case", ["first-pick-of-3", "type-tie-order", "overlap-n3-d0.5", "typeless-fill"])
def test_distribution_with_string_record_keys(case: str) -> None:
    """Record ids as sample keys (hashed, as the strategies pass them): the same exact distribution."""
    rows, n, d, *_ = CASES[case]
    keys = np.array([f"sharegpt/{1000 + 7 * i}" for i in range(len(rows))])
    assert_distribution(_run(rows, n, d, SEEDS, keys), spec_distribution(rows, n, d), f"{case}, string keys")


def test_each_sample_equally_likely_first_on_a_larger_single_type() -> None:
    """One type with 12 carriers (a macro cluster): the first pick over 3,600 seeds, 1/12 each, and every
    sample's inclusion in N = 4 picks, 4/12 each (the first pick must not drift towards any row number)."""
    m = sp.csr_matrix(np.ones((12, 1), bool))
    eng = Engine(m)
    sels = [eng.select(4, 1.0, seed=s).ids for s in range(3600)]
    first = Counter(int(ids[0]) for ids in sels)
    assert_distribution(first, {(i): Fraction(1, 12) for i in range(12)}, "first of 12")
    sets = Counter(frozenset(int(i) for i in ids) for ids in sels)
    assert len(sets) > 300  # of C(12, 4) = 495 possible sets
    incl = np.bincount(np.concatenate(sels), minlength=12)
    # each inclusion count is Binomial(3600, 1/3): sd 28.3; 5 sd is a one-in-a-million deviation per row
    assert np.abs(incl - 1200).max() < 5 * math.sqrt(3600 * (1 / 3) * (2 / 3)), incl.tolist()


# --------------------------------------------------------------------------------------------------------------
# The random baseline: every sample equally likely, every subset equally likely
# --------------------------------------------------------------------------------------------------------------


def test_random_subset_is_uniform() -> None:
    """N = 3 of 7 ids over 3,500 seeds: each of the C(7, 3) = 35 subsets 1/35; the first element 1/7 each; every
    ordered triple 1/210; each id included 3/7 of the time."""
    ids = [f"rec-{c}" for c in "abcdefg"]
    sels = [random_subset(ids, 3, seed=s) for s in range(3500)]
    assert_distribution(Counter(frozenset(int(i) for i in r) for r in sels),
                        {frozenset(c): Fraction(1, 35) for c in itertools.combinations(range(7), 3)}, "subsets")
    assert_distribution(Counter(int(r[0]) for r in sels), {i: Fraction(1, 7) for i in range(7)}, "first element")
    assert_distribution(Counter(tuple(int(i) for i in r) for r in sels),
                        {p: Fraction(1, 210) for p in itertools.permutations(range(7), 3)}, "ordered triples")
    incl = np.bincount(np.concatenate(sels), minlength=7)
    assert np.abs(incl - 1500).max() < 5 * math.sqrt(3500 * (3 / 7) * (4 / 7)), incl.tolist()
