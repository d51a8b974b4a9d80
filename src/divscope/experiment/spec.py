"""The experiment spec: one YAML file describes a whole study (pool, features, grid, training, evaluation).

Validated with pydantic; unknown keys are errors (a typo must not silently fall back to a default), and every
error names the bad key. YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from divscope.errors import DivscopeError
from divscope.evaluate.settings import HOW_TO_ASK, EvalSettings
from divscope.features.settings import (
    DEFAULT_RUNTIME,
    LEGACY_RUNTIME,
    MacroSettings,
    MesoSettings,
    MicroSettings,
)
from divscope.features.tagging import REQUEST_OPTIONS
from divscope.io.settings import IngestSettings
from divscope.metrics.settings import MetricSettings
from divscope.select.builtin import ENGINE_DEFAULTS, LEGACY_OPTIONS
from divscope.select.settings import GridSettings
from divscope.settings import parse
from divscope.train.settings import ADDED_LATER as TRAIN_ADDED_LATER
from divscope.train.settings import HOW_TO_RUN, TrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolSpec(IngestSettings):
    """The pool: its sources, plus the ingest stage's settings (``strict``, ``repair``) as ``divscope ingest``
    takes them."""

    source: list[str] = Field(default_factory=lambda: ["builtin:demo"], min_length=1)
    format: str | None = None
    exclude_eval_overlap: list[str] = Field(default_factory=lambda: ["alpaca_eval", "arena_hard", "mt_bench",
                                                                    "ifeval"])

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class FeaturesSpec(_Strict):
    """Each level's section is that level's settings object (the options of ``divscope featurize``)."""

    micro: MicroSettings = Field(default_factory=MicroSettings)
    macro: MacroSettings = Field(default_factory=MacroSettings)
    meso: MesoSettings = Field(default_factory=MesoSettings)


# The stages' settings objects are the spec's sections: one source for the CLI options and the spec fields.
SelectionSpec = GridSettings
TrainSpec = TrainSettings
EvalSpec = EvalSettings


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
# fingerprint of a spec that does not use them is the one older versions computed ("*": every list element).
_NEW_AT_DEFAULT: tuple[tuple[str, ...], ...] = (
    ("variants",), ("metrics",), ("pool", "strict"), ("pool", "repair"),
    ("pool", "dedup"), ("pool", "near_threshold"),
    ("selection", "length_range"), ("selection", "length_side"), ("selection", "length_tokenizer"),
    ("selection", "where"), ("selection", "balance_by"), ("selection", "features"),
    ("selection", "replicates"), ("selection", "hold"), ("selection", "replicates_for"),
    *(("selection", k) for k, v in LEGACY_OPTIONS.items() if ENGINE_DEFAULTS[k] == v),  # spacing, pruning
    ("features", "micro", "lowercase"),
    *(("features", "macro", k) for k in ("min_samples", "reduce", "dims", "seed", "impl", "name_words",
                                         "runtime")),
    *(("features", "meso", k) for k in ("min_count", "merge_threshold", "max_kept_tags", "lemmatize",
                                        "max_failure_rate", "chunk_size")),
    *(("train", k) for k in ("warmup_ratio", "weight_decay", "lora_alpha", "lora_dropout", "logging_steps",
                             "device", "extra", *TRAIN_ADDED_LATER)),
    *(("evaluate", "*", k) for k in ("seed", "device", "max_new_tokens", "endpoint", "judge_model", "api_key_env",
                                     "concurrency", "nll_weighting", "end_of_turn", "judge_prompt", "generator",
                                     "generator_endpoint", "generator_model", "judge_max_tokens")),
)
# ``evaluate[].max_new_tokens`` was 512 by default before it became the set's own (None): every stored spec
# holds 512. It is left out of the fingerprint at that value too, so such a study continues; its judge and
# ifeval results are then recomputed at the new length (their parameters hold it), never mixed.
_LEGACY_EVAL_DEFAULTS = {"max_new_tokens": 512}


# Options added with a default that changes behaviour (typeless: exclude): left out of the fingerprint at the value
# that reproduces older versions, so a study they ran keeps its fingerprint and one run with the new default is
# another study. A stored spec (study.json) that lacks such a key was run with that value: ``stored_spec``.
_LEGACY_VALUES = {k: v for k, v in LEGACY_OPTIONS.items() if ENGINE_DEFAULTS[k] != v}


# The embedding runtime (features.macro.runtime, metrics.runtime) defaults to ``auto``, which a study resolves
# before it starts (study.check_study) and stores resolved. ``torch`` ran before runtimes existed: a stored spec
# without the key ran on torch (stored_spec), and the fingerprint leaves out torch as it leaves out the default, so
# studies run before keep theirs. ``auto`` itself is never a study's (only an unresolved spec's).
_RUNTIME_BLOCKS: tuple[tuple[str, ...], ...] = (("features", "macro"), ("metrics",))


def stored_spec(data: Any) -> Any:
    """A spec as study.json stores it, with the options an older version did not write set to the value it
    behaved as (selection ``typeless: include``, embedding ``runtime: torch``): a study it ran must not continue
    under the new default."""
    if isinstance(data, dict) and isinstance(data.get("selection"), dict):
        data = {**data, "selection": {**_LEGACY_VALUES, **data["selection"]}}
    if isinstance(data, dict) and isinstance(data.get("features"), dict) \
            and isinstance(data["features"].get("macro", {}), dict):
        data = {**data, "features": {**data["features"],
                                     "macro": {"runtime": LEGACY_RUNTIME, **data["features"].get("macro", {})}}}
    if isinstance(data, dict) and isinstance(data.get("metrics", {}), dict):
        data = {**data, "metrics": {"runtime": LEGACY_RUNTIME, **data.get("metrics", {})}}
    return data


def _defaults() -> dict[str, Any]:
    return ExperimentSpec().model_dump(mode="json") | {"evaluate": [EvalSettings().model_dump(mode="json")]}


def _drop_at_default(data: Any, default: Any, path: tuple[str, ...]) -> None:
    *parents, key = path
    blocks, defaults = [data], [default]
    for p in parents:
        if p == "*":
            blocks = [x for b in blocks for x in b]
            defaults = [defaults[0][0]] * len(blocks)
        else:
            blocks, defaults = [b[p] for b in blocks], [d[p] for d in defaults]
    for block, dflt in zip(blocks, defaults, strict=True):
        if key in block and block[key] == dflt.get(key):
            block.pop(key)


class ExperimentSpec(_Strict):
    name: str = "study"
    pool: PoolSpec = Field(default_factory=PoolSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: list[EvalSpec] = Field(default_factory=lambda: [EvalSpec()], min_length=1)
    metrics: MetricSettings = Field(default_factory=MetricSettings)  # every metric card of the study
    primary: str | None = None  # "<eval_set>.<method>" that analysis uses; default: the first evaluation
    variants: list[VariantSpec] = Field(default_factory=list)  # ablations, each run as its own sub-study

    @model_validator(mode="after")
    def _primary(self) -> ExperimentSpec:
        names = [e.name for e in self.evaluate]
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
        return next(e for e in self.evaluate if e.name == self.primary)

    def fingerprint(self, variants: bool = True) -> str:
        """Identity of the study (``variants=False``: of the base study alone, so variants can be added)."""
        data = self.model_dump(mode="json")
        if not variants:
            data["variants"] = []
        defaults = _defaults()
        for path in _RUNTIME_BLOCKS:  # torch, what ran before runtimes existed, is left out like the default
            block = data
            for k in path:
                block = block[k]
            if block.get("runtime") == LEGACY_RUNTIME:
                block["runtime"] = DEFAULT_RUNTIME
        for path in _NEW_AT_DEFAULT:
            _drop_at_default(data, defaults, path)
        for key, legacy in _LEGACY_VALUES.items():
            if data["selection"].get(key) == legacy:
                data["selection"].pop(key)
        for key in REQUEST_OPTIONS:  # the endpoint tagger's: likewise
            data["features"]["meso"]["options"].pop(key, None)
        for entry in data["evaluate"]:
            for key in HOW_TO_ASK:  # timeouts, retries, concurrency: how requests are sent, not what they answer
                entry.pop(key, None)
            for key, legacy in _LEGACY_EVAL_DEFAULTS.items():
                if entry.get(key) == legacy:
                    entry.pop(key)
        for key in HOW_TO_RUN:  # processes, sharding, checkpoints kept: how cells run, not what they compute
            data["train"].pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def parse_spec(data: Any, origin: str = "spec") -> ExperimentSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DivscopeError(f"{origin}: the top level must be a mapping of keys (name, pool, selection, ...)")
    return parse(ExperimentSpec, data, origin)


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

