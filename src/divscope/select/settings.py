"""The select stage's settings: what ``divscope select`` / ``divscope grid`` take and the spec's ``selection:``.

``SelectOptions`` are the options every strategy shares (baseline options, the length band, the ``where``
eligibility filter); ``SelectSettings`` adds one request (strategy, level, size, seed), ``GridSettings`` a whole
grid (strategies x sizes x levels x seeds x replicates).

Replicates: replicate r of a cell selects with seed ``s + 1000 r`` (s from ``seeds`` / ``baseline_seeds``) and, in a
study, trains with ``train.seed + 1000 r``; ``hold`` keeps one of the two at r = 0's. Replicate 0 is the cell
without replicates, so its seeds are the ones a study without replicates uses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from divscope.errors import DivscopeError
from divscope.select.builtin import (
    DEFAULT_PRUNING,
    DEFAULT_SIDE,
    DEFAULT_SPACING,
    DEFAULT_THRESHOLD,
    DEFAULT_TYPELESS,
)
from divscope.select.registry import BASELINES, STRATEGIES, get_strategy, parse_strategies
from divscope.settings import Level, Settings, level_value, setting

REPLICATE_STRIDE = 1000  # replicate r's seeds are the base seeds + REPLICATE_STRIDE * r


def replicate_seed(seed: int, replicate: int, held: bool = False) -> int:
    """The seed of ``replicate`` derived from a base seed (the base seed itself when held fixed or r = 0)."""
    return seed if held else seed + REPLICATE_STRIDE * replicate


STRATEGY_HELP = ("instruction-macro | instruction-meso | instruction-micro | response-macro | response-meso | "
                 "response-micro | random | k-center | distance")


class SelectOptions(Settings):
    side: Literal["instruction", "response"] = setting(DEFAULT_SIDE, "k-center / distance: which side's "
                                                       "embeddings.")
    score_column: str | None = setting(None, "distance: numeric metadata column to walk by (high first) "
                                       "[response length].")
    threshold: float = setting(DEFAULT_THRESHOLD, "distance: keep a sample if its cosine distance to every kept one exceeds "
                               "this.")
    typeless: Literal["exclude", "include"] = setting(
        DEFAULT_TYPELESS, "The six diversity strategies: samples with no type on the strategy's axis are not "
        "eligible (exclude), or are in every pool and fill last (include: the behaviour before this option).")
    spacing: Literal["k", "coverage"] = setting(
        DEFAULT_SPACING, "Diversity levels: k linear in [k_min, k_max] (k, the paper's), or types covered by the "
        "subset evenly spaced from the lowest to the highest achievable (coverage; for small N).")
    pruning: Literal["types", "samples"] = setting(
        DEFAULT_PRUNING, "Pools D_k: remove the type with the fewest carriers (types), or the sample whose removal "
        "loses the fewest types (samples: the paper's Algorithm 1 as worded, for comparison).")
    length_range: list[int | None] | None = setting(
        None, "Length control: select only samples whose --length-side has MIN..MAX target tokens (inclusive; "
        "MIN: or :MAX for one end).", metavar="MIN:MAX")
    length_side: Literal["instruction", "response"] = setting("response", "Side whose length --length-range "
                                                              "bounds.")
    length_tokenizer: str | None = setting(None, "Tokenizer that measures lengths: smollm2 | llama2 | llama3 | "
                                           "HF id [the target model's].")
    where: str | None = setting(
        None, "Eligibility filter over record metadata and the derived columns instruction_tokens, response_tokens "
        "(lengths in --length-tokenizer tokens), turns (user turns) and source, e.g. \"score >= 4 and turns == 1\": "
        "== != < <= > >=, in [..], and, or, not, parentheses.", metavar="EXPR")
    balance_by: str | None = setting(
        None, "Stratified selection: keep each value's share of this column (metadata, source, turns: any --where "
        "column) within one sample of its share in the eligible pool, for every strategy.", metavar="COLUMN")
    features: list[str] | None = setting(
        None, "Feature builds to select with, where a level and side has several (`divscope features WS` lists "
        "them): cache keys (a unique prefix is enough) or OPTION=VALUE of their options (unit=words, "
        "runtime=onnx); comma-separated. A level and side with one build uses it.", metavar="KEY|OPTION=VALUE,...")

    @field_validator("length_range", mode="before")
    @classmethod
    def _length_range(cls, v: Any) -> Any:
        from divscope.select.lengths import parse_length_range

        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(x, str) for x in v) and len(v) == 1:
            v = v[0]  # "400:600" arrives split on commas as ["400:600"]
        try:
            return list(parse_length_range(v))
        except DivscopeError as e:
            raise ValueError(str(e)) from None

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, v: Any) -> Any:
        """The canonical form of the expression (one spelling per filter); a syntax error names the token."""
        from divscope.select.where import parse_where

        if v is None:
            return None
        try:
            return parse_where(v).text
        except DivscopeError as e:
            raise ValueError(str(e).removeprefix("where: ")) from None

    def strategy_options(self) -> dict[str, Any]:
        """The options every strategy is given (a strategy takes what it uses); the manifest's ``request.options``
        records them, the engine's only away from their values before they existed (``subsets.request_of``)."""
        return {"side": self.side, "score_column": self.score_column, "threshold": self.threshold,
                "typeless": self.typeless, "spacing": self.spacing, "pruning": self.pruning}


# The per-strategy options each built-in strategy uses (the filters -- length band, where -- apply to all).
USES: dict[str, tuple[str, ...]] = {
    **{name: ("diversity", "typeless", "spacing", "pruning") for name in STRATEGIES},
    "random": (), "k-center": ("side",), "distance": ("side", "score_column", "threshold"),
}
PER_STRATEGY = ("diversity", "side", "score_column", "threshold", "typeless", "spacing", "pruning")
assert set(USES) == set(STRATEGIES) | set(BASELINES)


def ignored_options(strategy: str, given: list[str]) -> list[str]:
    """The options among ``given`` (field names) that built-in ``strategy`` ignores; [] for a third-party
    strategy, whose use of the options is its own."""
    uses = USES.get(strategy)
    return [] if uses is None else [g for g in given if g in PER_STRATEGY and g not in uses]


class SelectSettings(SelectOptions):
    strategy: str = setting(help=STRATEGY_HELP, short="-s")
    diversity: Level | None = setting(None, "Level in [0, 1] (the six diversity strategies): a decimal or a fraction "
                                      "(1/6).", short="-d", metavar="D")
    size: int = setting(help="Exact number of samples N.", short="-n")
    seed: int = setting(0, "Selection seed (the same seed gives the same subset).")


class GridSettings(SelectOptions):
    strategies: list[str] = setting(help="all (the six), baselines, or names: " + STRATEGY_HELP,
                                    default_factory=lambda: ["all", "random"])
    levels: int | list[Level] = setting(7, "Number of levels d = 0 .. 1 evenly spaced, or the levels themselves "
                                        "(0,0.5,1 or fractions: 0,1/6,1/3).", metavar="COUNT|D,D,...")
    sizes: list[int] = setting(help="Subset sizes N.", default_factory=lambda: [1000], min_length=1)
    seeds: list[int] = setting(help="Selection seeds (each gives a full grid).", default_factory=lambda: [0],
                               min_length=1)
    baseline_seeds: list[int] | None = setting(None, "Seeds of the baselines [--seeds].")
    replicates: int = setting(1, f"Replicates R of every cell, the baselines' too: replicate r selects with seed + "
                              f"{REPLICATE_STRIDE} r and (in a study) trains with train.seed + {REPLICATE_STRIDE} r.")
    replicates_for: dict[str, int] | None = setting(
        None, "Replicates of the strategies named, in place of --replicates for them, e.g. "
        "instruction-micro=2,response-micro=2 (the others keep --replicates).", metavar="STRATEGY=R,...")
    hold: Literal["none", "selection", "training"] = setting(
        "none", "Keep one seed fixed across replicates: selection (the same subsets, training seeds differ) | "
        "training (one training seed, subsets differ) | none.")

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        try:
            return parse_strategies(",".join(v))
        except DivscopeError as e:
            raise ValueError(str(e)) from None

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        if isinstance(v, str):  # the CLI form: a count, or comma-separated levels
            try:
                v = int(v) if v.strip().isdigit() else [level_value(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"levels {v!r}: give a count (7) or levels (0,0.5,1 or 0,1/6,1/3)") from None
        if isinstance(v, list):  # the spec's list may hold fractions as text
            v = [level_value(x) for x in v]
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError("levels must be >= 1 (7 in the paper)")
        if isinstance(v, list) and (not v or any(not 0 <= float(x) <= 1 for x in v)):
            raise ValueError("explicit levels must lie in [0, 1]")
        return v

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("sizes must be >= 1")
        return v

    @field_validator("replicates")
    @classmethod
    def _replicates(cls, v: int) -> int:
        if v < 1:
            raise ValueError("replicates must be >= 1")
        return v

    @field_validator("replicates_for", mode="before")
    @classmethod
    def _replicates_for(cls, v: Any) -> Any:
        """The CLI form ``name=R,name=R``, or the spec's mapping; names must be strategies, R >= 1."""
        if isinstance(v, str):
            pairs = [p.strip() for p in v.split(",") if p.strip()]
            if any(p.count("=") != 1 for p in pairs):
                raise ValueError(f"{v!r}: give STRATEGY=R pairs separated by commas (response-micro=2)")
            v = {k.strip(): r.strip() for k, r in (p.split("=") for p in pairs)}
        if isinstance(v, dict):
            for name, r in v.items():
                parse_strategy_name(name)
                if isinstance(r, bool) or not (isinstance(r, int) or (isinstance(r, str) and r.isdigit())) \
                        or int(r) < 1:
                    raise ValueError(f"{name}: replicates must be a whole number >= 1, not {r!r}")
            v = {name: int(r) for name, r in sorted(v.items())} or None
        return v

    @model_validator(mode="after")
    def _distinct_replicates(self) -> GridSettings:
        """Two (seed, replicate) pairs must not select with one seed: that replicate would repeat another cell."""
        leveled = [s for s in self.strategies if get_strategy(s).takes_level]
        others = [s for s in self.strategies if s not in leveled]
        for seeds, names in ((self.seeds, leveled), (self.baseline_seeds or self.seeds, others)):
            most = max((self.replicates_of(n) for n in names), default=1)
            seen: dict[int, int] = {}
            for s in seeds:
                for r in range(most):
                    x = self.selection_seed(s, r)
                    if x in seen and seen[x] != s:
                        raise ValueError(f"seeds {seen[x]} and {s} both give selection seed {x} across "
                                         f"{most} replicates; use seeds that differ by other than a "
                                         f"multiple of {REPLICATE_STRIDE}")
                    seen[x] = s
        return self

    def replicates_of(self, strategy: str) -> int:
        """Replicates of ``strategy``'s cells: its ``replicates_for`` entry, else ``replicates``."""
        return (self.replicates_for or {}).get(strategy, self.replicates)

    def has_replicates(self) -> bool:
        """Whether any strategy of the grid has 2 or more replicates."""
        return any(self.replicates_of(s) > 1 for s in self.strategies)

    def selection_seed(self, seed: int, replicate: int) -> int:
        """Replicate ``replicate``'s selection seed for base seed ``seed`` (from ``seeds`` / ``baseline_seeds``)."""
        return replicate_seed(seed, replicate, self.hold == "selection")

    def train_seed(self, seed: int, replicate: int) -> int:
        """Replicate ``replicate``'s training seed for ``train.seed`` = ``seed``."""
        return replicate_seed(seed, replicate, self.hold == "training")

    def level_values(self) -> list[float]:
        return levels_of(self.levels) if isinstance(self.levels, int) else [float(x) for x in self.levels]


def parse_strategy_name(name: str) -> str:
    """``name`` if it is one registered strategy (not ``all`` / ``baselines``), else a ValueError naming it."""
    try:
        found = parse_strategies(name)
    except DivscopeError as e:
        raise ValueError(str(e)) from None
    if found != [name]:
        raise ValueError(f"{name!r}: name one strategy, not a group")
    return name


def levels_of(count: int) -> list[float]:
    """``count`` evenly spaced diversity levels in [0, 1] (the paper: 7 -> 0, 1/6, ..., 1)."""
    if count < 1:
        raise DivscopeError("--levels must be >= 1")
    return [0.0] if count == 1 else [i / (count - 1) for i in range(count)]
