"""One battery of contract checks for every selection strategy, in the manner of scikit-learn's estimator checks
(DESIGN.md: "Every strategy implements one protocol and passes one shared battery of contract checks").

    from divscope.select.checks import battery_pool, parametrize_with_checks
    POOL = battery_pool(tmp_dir, "builtin:sharegpt-pairs?n=200&seed=3")   # featurizes what strategies need

    @parametrize_with_checks(["my-strategy"])          # a registered name; None = every registered strategy
    def test_contract(strategy, check):
        check(strategy, POOL)

Each check runs real selections through ``Selector`` on a real featurized pool and raises ``CheckFailed`` (an
AssertionError) saying what broke; a check that does not apply to a strategy (say, seed sensitivity of a
deterministic one) returns without asserting. The battery itself is tested against deliberately broken
strategies (tests/test_strategy_battery.py).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divscope.errors import DivscopeError, MissingFeaturesError
from divscope.io.workspace import Workspace
from divscope.select.arguments import check_d, check_n, check_seed
from divscope.select.protocol import ROW_ORDERS, Needs, Strategy
from divscope.select.registry import get_strategy, strategy_names
from divscope.select.strategies import Selector, Subset


class CheckFailed(AssertionError):
    """A strategy broke its contract; the message says how."""


@dataclass(frozen=True)
class BatteryPool:
    """What the checks run on. ``workspace``: a pool with every feature the checked strategies need; ``bare``:
    a pool without any feature. ``size``: the N the checks select (feasible for every strategy at every level
    and on the ``mask`` sub-pool); ``options``: passed to every selection."""

    workspace: Path
    bare: Path
    size: int = 12
    levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(Workspace(self.workspace).pool)

    def mask(self) -> np.ndarray:
        """A fixed eligibility mask: about half the rows (a length filter would look like this)."""
        return np.random.default_rng(12345).random(self.n_rows) < 0.5

    def permutation(self) -> np.ndarray:
        return np.random.default_rng(54321).permutation(self.n_rows)


Check = Callable[[str, BatteryPool], None]


def battery_pool(path: str | Path, source: Any, strategies: Iterable[str] | None = None, size: int = 12,
                 options: dict[str, Any] | None = None) -> BatteryPool:
    """Ingest ``source`` into ``path/ws`` and featurize what ``strategies`` (default: every registered one) need;
    ``path/bare`` gets the same pool and no features."""
    from divscope.features.featurize import featurize
    from divscope.features.macro import load_embeddings
    from divscope.io.ingest import ingest

    path, options = Path(path), dict(options or {})
    ws, bare = path / "ws", path / "bare"
    ingest(source, ws)
    bare.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws / "pool.parquet", bare / "pool.parquet")
    for name in strategies or strategy_names():
        needs = get_strategy(name).needs(**options)
        if needs.incidence:
            side, level = needs.incidence
            featurize(ws, level, side)
        if needs.embeddings:
            load_embeddings(ws, needs.embeddings)
    return BatteryPool(ws, bare, size, options=options)


# -- helpers ---------------------------------------------------------------------------------------------------

def _fail(strategy: str, what: str) -> CheckFailed:
    return CheckFailed(f"{strategy}: {what}")


def _level(strategy: str, pool: BatteryPool, i: int = 1) -> float | None:
    return pool.levels[min(i, len(pool.levels) - 1)] if get_strategy(strategy).takes_level else None


def _levels(strategy: str, pool: BatteryPool) -> tuple[float | None, ...]:
    return pool.levels if get_strategy(strategy).takes_level else (None,)


_DEFAULT: Any = object()  # "the battery's default" (None is a value the checks pass on purpose)


def _select(pool: BatteryPool, strategy: str, n: Any = _DEFAULT, d: Any = _DEFAULT, seed: Any = 0,
            selector: Selector | None = None, eligible: np.ndarray | None = None, ws: Path | None = None) -> Subset:
    """One selection through a Selector (fresh unless given), with the battery's size, level and options."""
    sel = selector or Selector(ws or pool.workspace, eligible)
    return sel.select(strategy, pool.size if n is _DEFAULT else n, _level(strategy, pool) if d is _DEFAULT else d,
                      seed, **pool.options)


def _message(validate: Callable[[], Any]) -> str:
    """The message a shared validator gives for an invalid argument."""
    try:
        validate()
    except DivscopeError as e:
        return str(e)
    raise AssertionError("expected the validator to reject this argument")  # pragma: no cover


def _one_line(strategy: str, what: str, e: DivscopeError, message: str | None = None) -> DivscopeError:
    if "\n" in str(e) or not str(e).strip():
        raise _fail(strategy, f"{what}: the error must be one non-empty line, got {str(e)!r}") from e
    if message is not None and str(e) != message:
        raise _fail(strategy, f"{what}: expected the shared message {message!r}, got {str(e)!r}") from e
    return e


def _expect_error(strategy: str, what: str, fn: Callable[[], Any], message: str | None = None) -> DivscopeError:
    """``fn`` must raise a one-line DivscopeError (with exactly ``message`` when given)."""
    try:
        fn()
    except DivscopeError as e:
        return _one_line(strategy, what, e, message)
    except Exception as e:
        raise _fail(strategy, f"{what}: expected a DivscopeError, got {type(e).__name__}: {e}") from e
    raise _fail(strategy, f"{what}: accepted (expected a one-line DivscopeError)")


def _chosen_ids(pool: BatteryPool, sub: Subset) -> list[str]:
    ids = Selector(pool.workspace).ids
    return [ids[r] for r in sub.rows.tolist()]


# -- the checks ------------------------------------------------------------------------------------------------

def check_declaration(strategy: str, pool: BatteryPool) -> None:
    """Registered under its name and declares the protocol's attributes with the right types."""
    s = get_strategy(strategy)
    if not isinstance(s, Strategy) or s.name != strategy:
        raise _fail(strategy, f"registered object {s!r} does not follow the Strategy protocol under this name")
    if not isinstance(s.takes_level, bool) or not isinstance(s.seed_sensitive, bool) or s.row_order not in ROW_ORDERS:
        raise _fail(strategy, "takes_level / seed_sensitive must be bool and row_order one of " + ", ".join(ROW_ORDERS))
    needs = s.needs(**pool.options)
    if not isinstance(needs, Needs) or (needs.incidence is not None and (
            not isinstance(needs.incidence, tuple) or len(needs.incidence) != 2)):
        raise _fail(strategy, f"needs() must return Needs(incidence=(side, level) | None, embeddings=side | None), "
                              f"got {needs!r}")


def check_exact_size(strategy: str, pool: BatteryPool) -> None:
    """Exactly N rows for N = 1, the battery size and the whole pool, at every level; or a one-line error
    (never a short or long set). The battery size must succeed."""
    total = pool.n_rows
    for d in _levels(strategy, pool):
        for n in (1, pool.size, total):
            try:
                sub = _select(pool, strategy, n=n, d=d)
            except DivscopeError as e:
                if n == pool.size:
                    raise _fail(strategy, f"N={n}, d={d}: the battery size must be feasible, got: {e}") from e
                _one_line(strategy, f"N={n}, d={d}", e)
                continue
            if len(sub.rows) != n or sub.size != n:
                raise _fail(strategy, f"N={n}, d={d}: returned {len(sub.rows)} rows (size field {sub.size})")
            if sub.strategy != strategy or sub.seed != 0 or sub.diversity != d:
                raise _fail(strategy, f"N={n}: the subset records strategy={sub.strategy!r}, seed={sub.seed!r}, "
                                      f"diversity={sub.diversity!r}")


def check_distinct_rows(strategy: str, pool: BatteryPool) -> None:
    """No row is chosen twice (at every level, for two sizes and two seeds)."""
    for d in _levels(strategy, pool):
        for n, seed in ((pool.size, 0), (2 * pool.size, 1)):
            rows = _select(pool, strategy, n=n, d=d, seed=seed).rows.tolist()
            if len(set(rows)) != len(rows):
                raise _fail(strategy, f"N={n}, d={d}, seed={seed}: duplicate rows {sorted(rows)}")


def check_rows_in_pool(strategy: str, pool: BatteryPool) -> None:
    """``select`` returns integer local rows within the sub-pool it was given, and a JSON-able info dict (the
    manifest); the Selector's rows are pool rows."""
    s = get_strategy(strategy)
    eligible = np.flatnonzero(pool.mask())
    ctx = Selector(pool.workspace, eligible)
    for d in _levels(strategy, pool):
        local, info = s.select(ctx, pool.size, d, 0, **pool.options)
        local = np.asarray(local)
        if local.ndim != 1 or (len(local) and local.dtype.kind not in "iu"):
            raise _fail(strategy, f"d={d}: select must return a 1-D integer array, got {local.dtype} {local.shape}")
        if len(local) and (local.min() < 0 or local.max() >= len(eligible)):
            raise _fail(strategy, f"d={d}: local rows outside [0, {len(eligible)}): {sorted(local.tolist())}")
        try:
            json.dumps(info, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise _fail(strategy, f"d={d}: info must be a JSON-able dict for the manifest ({e})") from e
        rows = _select(pool, strategy, d=d).rows
        if rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= pool.n_rows:
            raise _fail(strategy, f"d={d}: rows outside the pool: {sorted(rows.tolist())}")


def check_same_seed_same_subset(strategy: str, pool: BatteryPool) -> None:
    """Same request, same seed: identical rows in identical order and identical info, whether asked again after
    other requests on the same Selector or on a fresh one."""
    for d in _levels(strategy, pool):
        sel = Selector(pool.workspace)
        first = _select(pool, strategy, d=d, selector=sel)
        for other_seed in (1, 2):
            _select(pool, strategy, d=d, seed=other_seed, selector=sel)
        for other_d in _levels(strategy, pool):
            _select(pool, strategy, d=other_d, selector=sel)
        for label, again in (("same selector", _select(pool, strategy, d=d, selector=sel)),
                             ("fresh selector", _select(pool, strategy, d=d))):
            if not np.array_equal(first.rows, again.rows) or first.info != again.info:
                raise _fail(strategy, f"d={d}, seed 0 twice ({label}): {first.rows.tolist()} then "
                                      f"{again.rows.tolist()}")


def check_seed_changes_subset(strategy: str, pool: BatteryPool) -> None:
    """A seed-sensitive strategy chooses another set for some other seed (at the highest level, whose pool is
    the largest). Deterministic strategies (``seed_sensitive = False``) are exempt."""
    if not get_strategy(strategy).seed_sensitive:
        return
    d = pool.levels[-1] if get_strategy(strategy).takes_level else None
    base = set(_select(pool, strategy, d=d).rows.tolist())
    if all(set(_select(pool, strategy, d=d, seed=s).rows.tolist()) == base for s in (1, 2, 3, 4)):
        raise _fail(strategy, "seeds 0..4 all choose the same subset: the seed is ignored (or declare "
                              "seed_sensitive = False)")


def check_row_order_independence(strategy: str, pool: BatteryPool) -> None:
    """Permuting the pool's rows (each keeping its record id) changes nothing but row numbers: the same samples
    (``row_order = "set"``) in the same order (``"sequence"``); checked on the whole pool and on the ``mask``
    sub-pool."""
    promise = get_strategy(strategy).row_order
    if promise == "none":
        return
    perm, eligible = pool.permutation(), np.flatnonzero(pool.mask())
    shuffled = eligible[np.random.default_rng(7).permutation(len(eligible))]
    for original, permuted in ((None, perm), (eligible, shuffled)):
        for d in _levels(strategy, pool):
            a = _chosen_ids(pool, _select(pool, strategy, d=d, eligible=original))
            b = _chosen_ids(pool, _select(pool, strategy, d=d, eligible=permuted))
            if (a != b) if promise == "sequence" else (set(a) != set(b)):
                raise _fail(strategy, f"d={d}: permuted rows choose {b}, the original order {a} "
                                      f"(promise: {promise})")


def check_eligibility_respected(strategy: str, pool: BatteryPool) -> None:
    """With an eligibility mask every chosen row is eligible and the manifest says how many were; asking for
    every eligible row gives exactly those (or a one-line error)."""
    mask = pool.mask()
    for d in _levels(strategy, pool):
        for n in (pool.size, int(mask.sum())):
            try:
                sub = _select(pool, strategy, n=n, d=d, eligible=mask)
            except DivscopeError as e:
                if n == pool.size:
                    raise _fail(strategy, f"N={n}, d={d} on the mask: the battery size must be feasible: {e}") from e
                _one_line(strategy, f"N={n} (all eligible), d={d}", e)
                continue
            bad = [r for r in sub.rows.tolist() if not mask[r]]
            if bad or len(sub.rows) != n:
                raise _fail(strategy, f"N={n}, d={d}: ineligible rows {bad} chosen ({len(sub.rows)} rows)")
            if sub.info.get("eligible") != int(mask.sum()):
                raise _fail(strategy, f"info['eligible'] = {sub.info.get('eligible')}, mask has {int(mask.sum())}")


def check_rejects_bad_size(strategy: str, pool: BatteryPool) -> None:
    """N <= 0, non-integer N, and N larger than the (eligible) pool: the shared one-line message of check_n."""
    total, mask = pool.n_rows, pool.mask()
    for n in (0, -3, 2.5, "5", True, None, total + 1):
        _expect_error(strategy, f"N={n!r}", lambda n=n: _select(pool, strategy, n=n),
                      _message(lambda n=n: check_n(n, total)))
    over = int(mask.sum()) + 1
    _expect_error(strategy, f"N={over} on the mask", lambda: _select(pool, strategy, n=over, eligible=mask),
                  _message(lambda: check_n(over, over - 1)))


def check_rejects_bad_seed(strategy: str, pool: BatteryPool) -> None:
    """Negative, fractional, boolean, string or missing seeds: the shared one-line message of check_seed."""
    for seed in (-1, 1.5, True, "0", None):
        _expect_error(strategy, f"seed={seed!r}", lambda seed=seed: _select(pool, strategy, seed=seed),
                      _message(lambda seed=seed: check_seed(seed)))


def check_rejects_bad_level(strategy: str, pool: BatteryPool) -> None:
    """Level-taking strategies: d outside [0, 1], not a number, or missing gives check_d's one-line message.
    Others ignore d and record that (``info["diversity_ignored"]``, diversity None)."""
    if get_strategy(strategy).takes_level:
        for d in (-0.1, 1.5, math.nan, math.inf, True, "0.5", None):
            _expect_error(strategy, f"d={d!r}", lambda d=d: _select(pool, strategy, d=d),
                          _message(lambda d=d: check_d(d, strategy)))
        return
    plain = _select(pool, strategy, d=None)
    for d in (0.5, 7):
        sub = _select(pool, strategy, d=d)
        if sub.diversity is not None or sub.info.get("diversity_ignored") is not True:
            raise _fail(strategy, f"d={d} must be ignored and recorded as ignored, got diversity={sub.diversity!r},"
                                  f" info={sub.info}")
        if not np.array_equal(sub.rows, plain.rows):
            raise _fail(strategy, f"d={d} changed the subset of a strategy that takes no level")
    if "diversity_ignored" in plain.info:
        raise _fail(strategy, "d=None recorded as ignored")


def check_missing_features(strategy: str, pool: BatteryPool) -> None:
    """On a pool without features: a strategy that needs some fails with one line (a MissingFeaturesError)
    naming the ``divscope featurize`` command for them; one that needs none selects as usual."""
    needs = get_strategy(strategy).needs(**pool.options)
    if needs.incidence is None and needs.embeddings is None:
        if len(_select(pool, strategy, ws=pool.bare).rows) != pool.size:
            raise _fail(strategy, "needs no features but did not select N rows from a pool without features")
        return
    e = _expect_error(strategy, "no features", lambda: _select(pool, strategy, ws=pool.bare))
    wanted = [f"--level {needs.incidence[1]} --side {needs.incidence[0]}"] if needs.incidence else []
    wanted += [f"--side {needs.embeddings}"] if needs.embeddings else []
    if not isinstance(e, MissingFeaturesError) or "divscope featurize" not in str(e) \
            or not any(w in str(e) for w in wanted):
        raise _fail(strategy, f"missing features: expected a MissingFeaturesError naming `divscope featurize ... "
                              f"{' or '.join(wanted)}`, got {type(e).__name__}: {e}")


def _typed(pool: BatteryPool, strategy: str, eligible: np.ndarray | None = None) -> np.ndarray | None:
    """Whether each (eligible) row carries a type on the strategy's axis; None if it reads no incidence."""
    needs = get_strategy(strategy).needs(**pool.options)
    if needs.incidence is None:
        return None
    sel = Selector(pool.workspace, eligible)
    return np.diff(sel.incidence(*needs.incidence).matrix[sel.rows].indptr) > 0


def check_typeless_respected(strategy: str, pool: BatteryPool) -> None:
    """A strategy that reports ``typeless`` in its manifest honours it: under ``exclude`` no chosen sample lacks a
    type on its axis, ``typeless_samples`` / ``typed_samples`` count the eligible rows of each kind, and asking
    for more than the typed ones is a one-line error naming ``--typeless include``. Others are exempt."""
    mask = pool.mask()
    for eligible in (None, mask):
        typed = _typed(pool, strategy, eligible)
        for d in _levels(strategy, pool):
            info = _select(pool, strategy, d=d, eligible=eligible).info
            if typed is None or "typeless" not in info:
                return
            if (info.get("typeless_samples"), info.get("typed_samples")) != (int((~typed).sum()), int(typed.sum())):
                raise _fail(strategy, f"d={d}: manifest counts {info.get('typeless_samples')} typeless and "
                                      f"{info.get('typed_samples')} typed samples, the pool has "
                                      f"{int((~typed).sum())} and {int(typed.sum())}")
            if info["typeless"] != "exclude":
                continue
            sub = _select(pool, strategy, n=int(typed.sum()), d=d, eligible=eligible)  # every typed sample
            rows = Selector(pool.workspace, eligible).rows  # ascending: local row = position
            if not typed[np.searchsorted(rows, sub.rows)].all():
                raise _fail(strategy, f"d={d}: typeless samples chosen under typeless: exclude")
            if (~typed).any():
                over = int(typed.sum()) + 1
                e = _expect_error(strategy, f"N = typed + 1, d={d}", lambda e=eligible, n=over, d=d:
                                  _select(pool, strategy, n=n, d=d, eligible=e))
                if "--typeless include" not in str(e):
                    raise _fail(strategy, f"too few typed samples: the error must name --typeless include, got {e}")


def check_coverage_spacing(strategy: str, pool: BatteryPool) -> None:
    """A strategy that reports ``spacing: coverage`` covers at least each level's target, the target is the
    level placed evenly (halves up) in ``coverage_range``, and k does not decrease with d. Others are exempt."""
    if not get_strategy(strategy).takes_level:
        return
    for seed in (0, 1):
        prev_k = -1
        for d in sorted(pool.levels):
            info = _select(pool, strategy, d=d, seed=seed).info
            if info.get("spacing") != "coverage":
                return
            lo, hi = info["coverage_range"]
            target = info["coverage_target"]
            if not lo <= target <= hi or target != math.floor(lo + d * (hi - lo) + 0.5 + 1e-9):
                raise _fail(strategy, f"d={d}: coverage target {target} is not level d of [{lo}, {hi}]")
            if info["types_covered"] < target or info["k"] < prev_k:
                raise _fail(strategy, f"d={d}, seed {seed}: covers {info['types_covered']} types for target "
                                      f"{target} at k = {info['k']} (previous level's k: {prev_k})")
            prev_k = info["k"]


CHECKS: tuple[Check, ...] = (
    check_declaration, check_exact_size, check_distinct_rows, check_rows_in_pool, check_same_seed_same_subset,
    check_seed_changes_subset, check_row_order_independence, check_eligibility_respected, check_rejects_bad_size,
    check_rejects_bad_seed, check_rejects_bad_level, check_missing_features, check_typeless_respected,
    check_coverage_spacing,
)


def strategy_checks(strategies: Iterable[str] | None = None) -> list[tuple[str, Check]]:
    """(strategy name, check) pairs for ``pytest.mark.parametrize``; default: every registered strategy."""
    return [(name, check) for name in (strategies or strategy_names()) for check in CHECKS]


def check_id(value: Any) -> str:
    """pytest id of a pair's member: the strategy name or the check's name."""
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def parametrize_with_checks(strategies: Iterable[str] | None = None) -> Any:
    """A ``pytest.mark.parametrize("strategy, check", ...)`` decorator over ``strategy_checks`` (needs pytest)."""
    import pytest

    return pytest.mark.parametrize(("strategy", "check"), strategy_checks(strategies), ids=check_id)


def run_checks(strategy: str, pool: BatteryPool) -> dict[str, str | None]:
    """Every check on one strategy without pytest: check name -> failure message, or None if it passed."""
    out: dict[str, str | None] = {}
    for check in CHECKS:
        try:
            check(strategy, pool)
            out[check.__name__] = None
        except Exception as e:  # a crash is a failure of the contract too
            out[check.__name__] = f"{type(e).__name__}: {e}"
    return out
