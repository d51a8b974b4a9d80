"""The experiment spec: one YAML file describes a whole study (pool, features, grid, training, evaluation).

Validated with pydantic; unknown keys are errors (a typo must not silently fall back to a default), and every
error names the bad key. YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from divscope.errors import DivscopeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolSpec(_Strict):
    source: list[str] = Field(default_factory=lambda: ["builtin:demo"], min_length=1)
    format: str | None = None
    exclude_eval_overlap: list[str] = Field(default_factory=lambda: ["alpaca_eval", "arena_hard", "mt_bench",
                                                                    "ifeval"])

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class MicroSpec(_Strict):
    tokenizer: str = "smollm2"
    unit: Literal["tokens", "words"] = "tokens"
    low: int | None = None
    high: int | None = None


class MacroSpec(_Strict):
    embedder: str = "minilm"
    min_cluster_size: int | None = None
    noise: Literal["nearest", "own"] = "nearest"


class MesoSpec(_Strict):
    tagger: Literal["offline", "endpoint"] = "offline"
    options: dict[str, Any] = Field(default_factory=dict)


class FeaturesSpec(_Strict):
    micro: MicroSpec = Field(default_factory=MicroSpec)
    macro: MacroSpec = Field(default_factory=MacroSpec)
    meso: MesoSpec = Field(default_factory=MesoSpec)


class SelectionSpec(_Strict):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    strategies: list[str] = Field(default_factory=lambda: ["all", "random"])
    levels: int | list[float] = 7
    sizes: list[int] = Field(default_factory=lambda: [1000], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baseline_seeds: list[int] | None = None  # default: seeds
    side: Literal["instruction", "response"] = "instruction"  # k-center / distance baselines
    score_column: str | None = None
    threshold: float = 0.1
    # Length control (the paper's ablation): only pool rows whose length_side lies in [min, max] target tokens
    # (inclusive; null = open end) are selectable. "MIN:MAX" or [MIN, MAX]. length_tokenizer: null = the
    # tokenizer of train.model (the target model).
    length_range: list[int | None] | None = None
    length_side: Literal["instruction", "response"] = "response"
    length_tokenizer: str | None = None

    @field_validator("length_range", mode="before")
    @classmethod
    def _length_range(cls, v: Any) -> Any:
        from divscope.select.lengths import parse_length_range

        if v is None:
            return None
        try:
            return list(parse_length_range(v))
        except DivscopeError as e:
            raise ValueError(str(e)) from None

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from divscope.select.strategies import parse_strategies

        try:
            return parse_strategies(",".join(v))
        except DivscopeError as e:
            raise ValueError(str(e)) from None

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: int | list[float]) -> int | list[float]:
        if isinstance(v, int) and v < 1:
            raise ValueError("levels must be >= 1 (7 in the paper)")
        if isinstance(v, list) and (not v or any(not 0 <= x <= 1 for x in v)):
            raise ValueError("explicit levels must lie in [0, 1]")
        return v

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("sizes must be >= 1")
        return v

    def level_values(self) -> list[float]:
        from divscope.select.subsets import levels_of

        return levels_of(self.levels) if isinstance(self.levels, int) else list(self.levels)


class TrainSpec(_Strict):
    model: str = "smollm2"
    method: Literal["lora", "full"] = "lora"
    epochs: float = 1.0
    max_steps: int = -1
    lr: float | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_len: int = 256
    lora_r: int = 8
    seed: int = 0
    save_steps: int = 50
    gradient_checkpointing: bool = False


class EvalSpec(_Strict):
    eval_set: str = "alpaca_eval"
    method: Literal["nll", "judge", "ifeval"] = "nll"
    limit: int | None = 100
    max_len: int = 512
    batch_size: int = 8
    options: dict[str, Any] = Field(default_factory=dict)


class VariantSpec(_Strict):
    """An ablation: the base study with some ``features`` / ``selection`` options changed (a deep override).

    Only the keys written in the variant override the base; the rest is inherited. Serialised as those keys
    only, so the stored spec reads back to the same variant.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)

    @field_serializer("features", "selection")
    def _only_overrides(self, v: BaseModel) -> dict[str, Any]:
        return v.model_dump(mode="json", exclude_unset=True)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options" \
            else v
    return out


# Options added after studies were already run: left out of the fingerprint while at their default, so the
# fingerprint of a spec that does not use them is the one older versions computed.
_NEW_AT_DEFAULT: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("variants",), []),
    (("selection", "length_range"), None),
    (("selection", "length_side"), "response"),
    (("selection", "length_tokenizer"), None),
)


class ExperimentSpec(_Strict):
    name: str = "study"
    pool: PoolSpec = Field(default_factory=PoolSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: list[EvalSpec] = Field(default_factory=lambda: [EvalSpec()], min_length=1)
    primary: str | None = None  # "<eval_set>.<method>" that analysis uses; default: the first evaluation
    variants: list[VariantSpec] = Field(default_factory=list)  # ablations, each run as its own sub-study

    @model_validator(mode="after")
    def _primary(self) -> ExperimentSpec:
        names = [f"{e.eval_set}.{e.method}" for e in self.evaluate]
        if self.primary is not None and self.primary not in names:
            raise ValueError(f"primary {self.primary!r} is not one of the evaluations: {', '.join(names)}")
        seen: set[str] = set()
        for v in self.variants:
            if v.name in seen:
                raise ValueError(f"variant name {v.name!r} is used twice")
            seen.add(v.name)
            self.variant_spec(v.name)  # the merged spec must be valid too
        return self

    def variant_spec(self, name: str) -> ExperimentSpec:
        """The full spec of variant ``name``: the base with the variant's features/selection keys over it."""
        v = next((v for v in self.variants if v.name == name), None)
        if v is None:
            raise DivscopeError(f"no variant {name!r}: the spec has {', '.join(x.name for x in self.variants) or 'none'}")
        data = self.model_dump(mode="json")
        data.pop("variants")
        data["name"] = f"{self.name}/{v.name}"
        data["features"] = _deep_merge(data["features"], v.features.model_dump(mode="json", exclude_unset=True))
        data["selection"] = _deep_merge(data["selection"], v.selection.model_dump(mode="json", exclude_unset=True))
        return ExperimentSpec.model_validate(data)

    def primary_eval(self) -> EvalSpec:
        if self.primary is None:
            return self.evaluate[0]
        return next(e for e in self.evaluate if f"{e.eval_set}.{e.method}" == self.primary)

    def fingerprint(self, variants: bool = True) -> str:
        """Identity of the study (``variants=False``: of the base study alone, so variants can be added)."""
        data = self.model_dump(mode="json")
        if not variants:
            data["variants"] = []
        for path, default in _NEW_AT_DEFAULT:
            *parents, key = path
            block = data
            for p in parents:
                block = block[p]
            if block.get(key, default) == default:
                block.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_spec(data: Any, origin: str = "spec") -> ExperimentSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DivscopeError(f"{origin}: the top level must be a mapping of keys (name, pool, selection, ...)")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see examples/*.yaml)"
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise DivscopeError(f"{origin}: {_where(err['loc'])}: {msg}{more}") from None


def load_spec(path: str | Path) -> ExperimentSpec:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DivscopeError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: plain data, never Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise DivscopeError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise DivscopeError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    if data is None:
        raise DivscopeError(f"{path}: empty spec; write at least `name: ...` (see examples/*.yaml)")
    return parse_spec(data, str(path))


def _unique_key_loader() -> type:
    """yaml.SafeLoader that refuses a key given twice in one mapping: YAML keeps the last one silently, so a
    pasted-twice ``sizes:`` would change the study without a word."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader

