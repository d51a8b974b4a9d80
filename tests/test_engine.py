"""The selection engine (DESIGN.md, "The engine (exact specification)"; docs/engine.md)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from divscope.errors import DivscopeError
from divscope.features.incidence import Incidence
from divscope.select import Engine, Selection, level_to_k
from divscope.select.engine import PRUNINGS, SPACINGS, TYPELESS
from divscope.select.reference import reference_prune, reference_select

LEVELS = [i / 6 for i in range(7)]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def incidences(draw, max_samples=30, max_types=10):
    ns = draw(st.integers(1, max_samples))
    nt = draw(st.integers(1, max_types))
    p = draw(st.sampled_from([0.1, 0.25, 0.5]))
    a = draw(arrays(np.float64, (ns, nt), elements=st.floats(0, 1, allow_nan=False, width=32)))
    return sp.csr_matrix(a < p)


# Every engine option (docs/engine.md): the properties below hold for each combination.
OPTIONS = st.fixed_dictionaries({"typeless": st.sampled_from(TYPELESS), "pruning": st.sampled_from(PRUNINGS),
                                 "spacing": st.sampled_from(SPACINGS)})


def _size(data, m: sp.csr_matrix, opts: dict) -> int:
    """A feasible N: at most the typed samples when typeless ones are excluded (none feasible: skip the example)."""
    eligible = m.shape[0] if opts["typeless"] == "include" else int(np.count_nonzero(np.diff(m.indptr)))
    assume(eligible > 0)
    return data.draw(st.integers(1, eligible))


def _types_in_pool(m: sp.csr_matrix, rows: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(m[rows].indices, minlength=m.shape[1])))


def _covered(m: sp.csr_matrix, ids: np.ndarray) -> int:
    return _types_in_pool(m, ids)


# --------------------------------------------------------------------------------------------------------------
# Hand-worked example: 6 samples, 4 types (A=0, B=1, C=2, D=3)
#
#   s0 {A, B}   s1 {A}   s2 {A, C}   s3 {B, D}   s4 {A, C}   s5 {} (typeless)
#
# Carrier counts: A 4, B 2, C 2, D 1. Pruning (no ties arise, so the order is the same for every seed):
#   step 0: D (1 carrier)          -> s3 leaves;            counts A 4, B 1, C 2
#   step 1: B (1)                  -> s0 leaves;            counts A 3, C 2
#   step 2: C (2)                  -> s2, s4 leave;         counts A 1
#   step 3: A (1)                  -> s1 leaves
# removal order D, B, C, A; leave steps s0 1, s1 3, s2 2, s3 0, s4 2, s5 4 (= k_max, typeless never leaves).
# Pools with typeless samples included (``typeless="include"``; the default excludes s5, see the next test):
#   pool(0) = {s5}                       |1|
#   pool(1) = {s1, s5}          (A)      |2|
#   pool(2) = {s1, s2, s4, s5}  (C, A)   |4|
#   pool(3) = pool(2) + {s0}    (B,C,A)  |5|
#   pool(4) = everything                 |6|
# k_max = 4; k_min(N) = 0, 1, 2, 2, 3, 4 for N = 1..6; N = 7 is infeasible.
# Selections:
#   N=3, d=0   -> k = 2: the typed pool samples are exactly s1, s2, s4 and typeless samples only come after the
#                 typed candidates are exhausted, so the set is {1, 2, 4}; covered {A, C} = 2.
#   N=4, d=0   -> k = 2: {1, 2, 4} in some order, then the typeless s5 last.
#   N=3, d=0.5 -> k = floor(2 + 0.5 * 2 + 0.5) = 3: types B, C, A, all at c = 0. B's only candidate in pool(3)
#                 is s0, and B stays at c = 0 (hence eligible, at the front of the queue) until s0 is chosen, so
#                 every order of ties ends with s0 chosen; working the cases (B first: s0, then C: s2|s4, then C
#                 again: the other; A first with s1: then B -> s0 and C -> s2|s4, or C then B; A first with s2|s4:
#                 then B -> s0, then one more of A/C) shows all three types are covered every time, and the
#                 typeless s5 is never chosen (four typed candidates for three places).
#   N=6, any d -> k = 4, all six samples, s5 last.
# --------------------------------------------------------------------------------------------------------------

HAND = sp.csr_matrix(np.array([
    [1, 1, 0, 0],
    [1, 0, 0, 0],
    [1, 0, 1, 0],
    [0, 1, 0, 1],
    [1, 0, 1, 0],
    [0, 0, 0, 0],
], dtype=bool))


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_hand_worked_example(seed):
    eng = Engine(Incidence(HAND, ["A", "B", "C", "D"], "micro", "response"), seed=seed, typeless="include")
    assert eng.removal_order().tolist() == [3, 1, 2, 0]  # D, B, C, A
    assert eng._pruning().leave_step.tolist() == [1, 3, 2, 0, 2, 4]
    assert eng.pool_sizes().tolist() == [1, 2, 4, 5, 6]
    assert [eng.pool(k).tolist() for k in range(5)] == [[5], [1, 5], [1, 2, 4, 5], [0, 1, 2, 4, 5],
                                                        [0, 1, 2, 3, 4, 5]]
    assert [eng.k_range(n) for n in range(1, 7)] == [(0, 4), (1, 4), (2, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(DivscopeError, match="N <= 6"):
        eng.k_range(7)

    sel = eng.select(3, 0)
    assert (sel.k, sel.k_min, sel.k_max, sel.pool_size, sel.types_covered) == (2, 2, 4, 4, 2)
    assert sorted(sel.ids.tolist()) == [1, 2, 4]

    sel = eng.select(4, 0)
    assert sorted(sel.ids[:3].tolist()) == [1, 2, 4] and sel.ids[3] == 5

    sel = eng.select(3, 0.5)
    assert (sel.k, sel.pool_size, sel.types_covered) == (3, 5, 3)
    assert 0 in sel.ids and 5 not in sel.ids and 3 not in sel.ids

    for d in LEVELS:
        sel = eng.select(6, d)
        assert sel.k == 4 and sorted(sel.ids.tolist()) == list(range(6)) and sel.ids[-1] == 5
    with pytest.raises(DivscopeError):
        eng.select(7, 0.5)


# --------------------------------------------------------------------------------------------------------------
# The fast engine against the literal reference
# --------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**32))
def test_pruning_order_matches_reference(m, seed):
    eng = Engine(m, seed=seed)
    pr = eng._pruning()
    order, leave = reference_prune(m, pr.tie_rank)
    assert np.array_equal(pr.order, order)
    assert np.array_equal(pr.leave_step, leave)


@SETTINGS
@given(m=incidences(max_samples=25), seed=st.integers(0, 1000), data=st.data())
def test_selection_matches_reference(m, seed, data):
    opts = data.draw(OPTIONS)
    n = _size(data, m, opts)
    eng = Engine(m, seed=seed, **opts)
    for d in (0.0, 1 / 3, 0.5, 1.0):
        sel = eng.select(n, d)
        ids, k, k_min, k_max, covered = reference_select(m, n, d, seed=seed, **opts)
        assert np.array_equal(sel.ids, ids)
        assert (sel.k, sel.k_min, sel.k_max, sel.types_covered) == (k, k_min, k_max, covered)


# --------------------------------------------------------------------------------------------------------------
# Properties the design pins
# --------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**32), data=st.data())
def test_selection_properties(m, seed, data):
    opts = data.draw(OPTIONS)
    n = _size(data, m, opts)
    eng = Engine(m, seed=seed, **opts)
    k_min, k_max = eng.k_range(n)
    prev_k = -1
    for d in LEVELS:
        sel = eng.select(n, d)
        assert isinstance(sel, Selection)
        assert sel.ids.dtype == np.int64 and len(sel.ids) == n                      # exact N
        assert len(np.unique(sel.ids)) == n                                          # no duplicate
        pool = eng.pool(sel.k)
        assert np.isin(sel.ids, pool).all()                                          # inside pool(k)
        assert sel.pool_size == len(pool) >= n
        assert k_min <= sel.k <= k_max and sel.k >= prev_k                           # k non-decreasing in d
        prev_k = sel.k
        assert sel.types_covered == _covered(m, sel.ids)
        if opts["typeless"] == "exclude":
            assert np.diff(m.indptr)[sel.ids].min() > 0                               # typed samples only
        again = Engine(m, seed=seed, **opts).select(n, d)                            # determinism
        assert again.ids.tobytes() == sel.ids.tobytes() and again == sel


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**32), data=st.data())
def test_k_range_and_pools_brute_force(m, seed, data):
    """Type pruning: pool(k) = the samples whose types all lie among the last k removed (typed ones only, by
    default). Sample pruning has its own brute force in test_engine_options.py."""
    typeless = data.draw(st.sampled_from(TYPELESS))
    n = _size(data, m, {"typeless": typeless})
    eng = Engine(m, seed=seed, typeless=typeless)
    order = eng.removal_order()
    col = np.asarray(m.sum(axis=0)).ravel()
    k_max = int(np.count_nonzero(col))
    assert len(order) == k_max and set(order.tolist()) == set(np.flatnonzero(col).tolist())
    dense = m.toarray()
    sizes = []
    for k in range(k_max + 1):
        kept = np.zeros(m.shape[1], bool)
        kept[order[k_max - k:]] = True
        inside = ~(dense & ~kept).any(axis=1)  # every type of the sample among the last k
        brute = np.flatnonzero(inside & (dense.any(axis=1) | (typeless == "include")))
        assert np.array_equal(eng.pool(k), brute)
        sizes.append(len(brute))
    assert eng.k_range(n) == (next(k for k in range(k_max + 1) if sizes[k] >= n), k_max)
    with pytest.raises(DivscopeError):
        eng.k_range(m.shape[0] + 1)
    with pytest.raises(DivscopeError):
        eng.select(m.shape[0] + 1, 0.5)
    if sizes[-1] < m.shape[0]:  # typeless samples excluded: N up to the typed ones only
        with pytest.raises(DivscopeError, match="--typeless include"):
            eng.select(sizes[-1] + 1, 0.5)


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**32), data=st.data())
def test_row_order_independence_up_to_the_seed(m, seed, data):
    """Rows permuted together with their keys: the same original samples, chosen in the same order. The type
    columns (with their names) may be permuted too."""
    ns, nt = m.shape
    opts = data.draw(OPTIONS)
    n = _size(data, m, opts)
    rperm = np.asarray(data.draw(st.permutations(range(ns))), np.int64)
    cperm = np.asarray(data.draw(st.permutations(range(nt))), np.int64)
    keys = np.asarray([f"record-{i}" for i in range(ns)])
    names = [f"type-{j}" for j in range(nt)]
    base = Engine(Incidence(m, names, "meso", "instruction"), seed=seed, sample_keys=keys, **opts)
    perm = Engine(Incidence(m[rperm][:, cperm], [names[j] for j in cperm], "meso", "instruction"), seed=seed,
                  sample_keys=keys[rperm], **opts)
    assert np.array_equal(cperm[perm.removal_order()], base.removal_order())
    for d in (0.0, 0.5, 1.0):
        a = base.select(n, d)
        b = perm.select(n, d)
        assert np.array_equal(rperm[b.ids], a.ids)
        assert (a.k, a.k_min, a.types_covered, a.pool_size) == (b.k, b.k_min, b.types_covered, b.pool_size)


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**32), data=st.data())
def test_types_covered_weaker_monotonicity(m, seed, data):
    """types covered is NOT always non-decreasing in d (see the counterexample below and docs/engine.md). What
    holds: with T(k) = types present in pool(k) (non-decreasing in k), min(N, T(k)) <= covered <= T(k); hence
    covered(d1) <= covered(d2) for d1 <= d2 whenever N >= T(k(d2))."""
    opts = data.draw(OPTIONS)
    n = _size(data, m, opts)
    eng = Engine(m, seed=seed, **opts)
    rows = []
    for d in LEVELS:
        sel = eng.select(n, d)
        t_k = _types_in_pool(m, eng.pool(sel.k))
        assert min(n, t_k) <= sel.types_covered <= t_k
        rows.append((sel.k, t_k, sel.types_covered))
    for (_, t1, c1), (_, t2, c2) in zip(rows, rows[1:], strict=False):
        assert t1 <= t2
        if n >= t2:
            assert c1 <= c2


def test_types_covered_counterexample():
    """Two pairs s1, s1' = {a, b}, s2, s2' = {c, d} and singletons s3 = {e}, s4 = {f}, N = 2. pool(4) holds
    the pairs: two picks cover 4 types. At k = 6 the singleton types e, f join (they are pruned first, having one
    carrier each), and when one of them is first in the seeded tie order the first pick covers one type only,
    so covered drops to 2 or 3 as d goes from 0.5 to 1. The sampler is kept as specified; documented in
    docs/engine.md."""
    m = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0],
                                [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], bool))
    inc = Incidence(m, list("abcdef"), "micro", "response")
    drops = []
    for seed in range(20):
        eng = Engine(inc, seed=seed)
        assert eng.k_range(2) == (2, 6)
        mid, top = eng.select(2, 0.5), eng.select(2, 1.0)
        assert mid.k == 4 and top.k == 6 and mid.types_covered == 4
        if top.types_covered < mid.types_covered:
            drops.append(seed)
    assert drops  # the counterexample is real for some seeds ...
    assert len(drops) < 20  # ... and not for others


def test_macro_reduces_to_k_largest_clusters():
    rng = np.random.default_rng(5)
    sizes = rng.permutation(np.r_[rng.integers(1, 40, size=25), [7, 7, 7]])  # includes tied sizes
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    m = sp.csr_matrix((np.ones(len(labels), bool), labels, np.arange(len(labels) + 1)),
                      shape=(len(labels), len(sizes)))
    eng = Engine(m, seed=3)
    desc = np.sort(sizes)[::-1]
    for k in range(len(sizes) + 1):
        pool = eng.pool(k)
        kept = np.unique(labels[pool])
        assert len(kept) == k and np.array_equal(np.sort(sizes[kept])[::-1], desc[:k])  # the k largest
        assert len(pool) == sizes[kept].sum()                                              # whole clusters
    for n in (1, 10, 50, 200, int(sizes.sum())):
        k_min, _ = eng.k_range(n)
        assert k_min == int(np.searchsorted(np.cumsum(desc), n)) + 1
        prev = 0
        for d in LEVELS:
            sel = eng.select(n, d)
            counts = np.bincount(labels[sel.ids], minlength=len(sizes))
            assert sel.types_covered == min(n, sel.k) >= prev  # monotone at the macro level
            prev = sel.types_covered
            open_ = counts[np.isin(np.arange(len(sizes)), labels[eng.pool(sel.k)]) & (counts < sizes)]
            if len(open_):  # clusters not exhausted are balanced within one; exhausted ones hold no more
                assert open_.max() - open_.min() <= 1
                assert counts.max() <= open_.min() + 1


# --------------------------------------------------------------------------------------------------------------
# Details and errors
# --------------------------------------------------------------------------------------------------------------


def test_level_to_k_rounds_half_up():
    assert level_to_k(0.5, 0, 1) == 1          # Python's round(0.5) == 0
    assert level_to_k(0.5, 0, 5) == 3          # round(2.5) == 2
    assert level_to_k(1 / 6, 0, 3) == 1        # 0.5 despite floating error
    assert level_to_k(5 / 6, 10, 13) == 13     # 12.5
    assert [level_to_k(d, 4, 10) for d in LEVELS] == [4, 5, 6, 7, 8, 9, 10]
    assert level_to_k(0.0, 3, 3) == level_to_k(1.0, 3, 3) == 3


@pytest.mark.parametrize("d", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_level(d):
    with pytest.raises(DivscopeError, match=r"\[0, 1\]"):
        Engine(HAND).select(2, d)


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_bad_size(n):
    with pytest.raises(DivscopeError, match="positive integer"):
        Engine(HAND).select(n, 0.5)


def test_bad_seed_keys_and_k():
    with pytest.raises(DivscopeError, match="seed"):
        Engine(HAND, seed=-1)
    with pytest.raises(DivscopeError, match="seed"):
        Engine(HAND).select(2, 0.5, seed=1.5)
    with pytest.raises(DivscopeError, match="one key per pool row"):
        Engine(HAND, sample_keys=[1, 2, 3])
    with pytest.raises(DivscopeError, match="k must be"):
        Engine(HAND).pool(5)


def test_infeasible_message_is_one_line():
    with pytest.raises(DivscopeError) as e:
        Engine(HAND).select(100, 0.0)
    assert "\n" not in str(e.value) and "N <= 6" in str(e.value)


def test_seed_override_and_call_order():
    """select(seed=s) on any engine equals Engine(seed=s).select; the lazily sorted candidate lists carried from
    one call to the next do not change any result."""
    rng = np.random.default_rng(0)
    m = sp.csr_matrix(rng.random((300, 40)) < 0.08)
    fresh = {d: Engine(m, seed=9).select(60, d) for d in LEVELS}
    eng = Engine(m, seed=0)
    other = eng.select(60, 0.5)
    for d in reversed(LEVELS):
        assert eng.select(60, d, seed=9) == fresh[d]
    assert eng.select(60, 0.5) == other
    assert Engine(m, seed=1).select(60, 0.5).ids.tobytes() != other.ids.tobytes()


def test_typeless_pool_and_integer_keys():
    m = sp.csr_matrix((5, 3), dtype=bool)  # no type occurs: k_max = 0, every sample is in pool(0) if included
    eng = Engine(m, seed=4, sample_keys=np.array([10, -3, 7, 99, 2**40]), typeless="include")
    assert eng.k_range(5) == (0, 0)
    sel = eng.select(3, 1.0)
    assert sel.k == 0 and sel.types_covered == 0 and len(set(sel.ids.tolist())) == 3
    with pytest.raises(DivscopeError, match="only 0 of the 5 eligible samples carry a type"):
        eng.select(3, 1.0, typeless="exclude")
    perm = np.array([4, 2, 0, 3, 1])
    eng2 = Engine(m, seed=4, sample_keys=np.array([10, -3, 7, 99, 2**40])[perm], typeless="include")
    assert np.array_equal(perm[eng2.select(3, 1.0).ids], sel.ids)


def test_accepts_incidence_and_matrix_alike():
    """An Incidence whose type names are the column numbers, the sparse matrix and the dense array give the same
    selections; other type names (the tie order and candidate orders hash the names), other rows, or another
    seed give other selections, so the comparison can tell inputs apart."""
    rng = np.random.default_rng(3)
    dense = rng.random((60, 12)) < 0.2
    m = sp.csr_matrix(dense)
    inc = Incidence(m, [str(i) for i in range(12)], "meso", "instruction")
    renamed = Incidence(m, [f"tag-{i}" for i in range(12)], "meso", "instruction")
    other = sp.csr_matrix(np.roll(dense, 1, axis=0))
    same, differs_by_name, differs_by_rows = 0, 0, 0
    for seed in range(5):
        for d in (0.0, 0.5, 1.0):
            a = Engine(inc, seed=seed).select(20, d)
            assert a == Engine(m, seed=seed).select(20, d) == Engine(dense, seed=seed).select(20, d)
            assert a.to_dict()["ids"] == a.ids.tolist() and a.to_dict()["seed"] == seed
            same += 1
            differs_by_name += Engine(renamed, seed=seed).select(20, d).ids.tolist() != a.ids.tolist()
            differs_by_rows += Engine(other, seed=seed).select(20, d).ids.tolist() != a.ids.tolist()
    assert same == 15 and differs_by_name >= 12 and differs_by_rows >= 12
    assert Engine(m, seed=0).select(20, 0.5) != Engine(m, seed=1).select(20, 0.5)


def test_larger_random_pool_matches_reference():
    rng = np.random.default_rng(11)
    zipf = 1.0 / np.arange(1, 61)
    m = sp.csr_matrix(rng.random((400, 60)) < 0.25 * zipf / zipf.mean() * 0.3)
    eng = Engine(m, seed=5)
    for d in LEVELS:
        sel = eng.select(80, d)
        ids, k, *_ = reference_select(m, 80, d, seed=5)
        assert np.array_equal(sel.ids, ids) and sel.k == k


NO_NUMBA = r"""
import json, sys, warnings
sys.modules["numba"] = None  # `from numba import njit` now raises ImportError, as without the package
import numpy as np, scipy.sparse as sp
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")  # count every emission: the once-per-process rule must be divscope's own
    from divscope.select import Engine, kernels
    imported = len(caught)
    m = sp.csr_matrix(np.random.default_rng(0).random((50, 8)) < 0.3)
    ids = [Engine(m, seed=s).select(10, d).ids.tolist() for s in (0, 1) for d in (0.0, 1.0)]
print(json.dumps({"have_numba": kernels.HAVE_NUMBA, "imported": imported, "ids": ids,
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


def test_missing_numba_warns_once_and_gives_the_same_ids():
    """Without numba the kernels run as plain Python: identical selections, and one warning per process (at the
    first kernel call, not at import) that names the fix."""
    import json
    import subprocess
    import sys
    import warnings

    proc = subprocess.run([sys.executable, "-c", NO_NUMBA], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["have_numba"] is False and got["imported"] == 0
    assert len(got["warnings"]) == 1, got["warnings"]
    category, message = got["warnings"][0]
    assert category == "NumbaMissingWarning" and "pip install numba" in message and "plain Python" in message
    m = sp.csr_matrix(np.random.default_rng(0).random((50, 8)) < 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with numba installed: no warning at all
        assert got["ids"] == [Engine(m, seed=s).select(10, d).ids.tolist() for s in (0, 1) for d in (0.0, 1.0)]


# --------------------------------------------------------------------------------------------------------------
# The seed-independent arrays (CSC view, hashes): built by the parallel transpose, restricted to a sub-pool, given
# back to a new engine; and one engine serving every seed.
# --------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(m=incidences(max_samples=40, max_types=12), chunks=st.integers(1, 7))
def test_transpose_is_scipys_sorted_csc(m, chunks):
    from divscope.select import kernels

    cindptr, crows = kernels.transpose(m.indptr.astype(np.int64), m.indices.astype(np.int32), m.shape[1], chunks)
    csc = m.tocsc()
    csc.sort_indices()
    assert cindptr.tolist() == csc.indptr.tolist() and crows.tolist() == csc.indices.tolist()


@SETTINGS
@given(m=incidences(), seed=st.integers(0, 2**31), data=st.data())
def test_given_and_restricted_arrays_select_what_a_fresh_engine_does(m, seed, data):
    from divscope.select.engine import restrict_arrays

    keys = [f"rec-{i}" for i in range(m.shape[0])]
    full = Engine(m, seed=seed, sample_keys=keys)
    rows = np.asarray(sorted(data.draw(st.sets(st.integers(0, m.shape[0] - 1), min_size=1))), np.int64)
    if data.draw(st.booleans()):
        rows = rows[::-1].copy()  # a sub-pool in another order: the CSC is left to the engine
    sub = restrict_arrays(full.arrays(), rows, m.shape[0])
    assert ("crows" in sub) == (len(rows) < 2 or bool(np.all(np.diff(rows) > 0)))
    fresh = Engine(m[rows], seed=seed, sample_keys=[keys[i] for i in rows])
    given_ = Engine(m[rows], seed=seed, sample_keys=[keys[i] for i in rows], arrays=sub)
    assert all(np.array_equal(given_.arrays()[k], fresh.arrays()[k]) for k in ("cindptr", "crows", "key_hash"))
    n = data.draw(st.integers(1, len(rows)))
    for d in (0.0, 0.5, 1.0):
        assert given_.select(n, d, typeless="include") == fresh.select(n, d, typeless="include")


def test_arrays_of_another_incidence_are_refused():
    same_shape = Engine(sp.csr_matrix(np.ones(HAND.shape, bool))).arrays()  # 24 nonzeros, HAND has 9
    with pytest.raises(ValueError, match="CSC of another matrix"):
        Engine(HAND, arrays=same_shape)
    wider = Engine(sp.random(6, 7, density=0.5, random_state=1, format="csr").astype(bool)).arrays()
    with pytest.raises(ValueError, match="hashes of another pool"):
        Engine(HAND, arrays={"type_hash": wider["type_hash"]})


def test_one_engine_serves_every_seed():
    """``for_seed`` views share the prunings and candidate orders and select exactly what fresh engines do."""
    m = sp.random(60, 12, density=0.25, random_state=3, format="csr").astype(bool)
    base = Engine(m, seed=0)
    views = {s: base.for_seed(s) for s in (0, 1, 5)}
    for s, view in views.items():
        assert view.seed == s
        assert [view.select(20, d) for d in LEVELS] == [Engine(m, seed=s).select(20, d) for d in LEVELS]
    assert len({id(v._prunings) for v in views.values()} | {id(base._prunings)}) == 1
    assert sorted(seed for seed, _ in base._prunings) == [0, 1, 5]
