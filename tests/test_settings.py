"""One source for every setting: each command's options and the spec's fields agree in name, type and default."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

import click
import pytest

from divscope.analysis.settings import CompareSettings, PlanSettings
from divscope.cli import cli
from divscope.errors import DivscopeError
from divscope.evaluate.settings import EvalSettings, RespondSettings
from divscope.experiment.spec import ExperimentSpec, FeaturesSpec, parse_spec
from divscope.features.settings import MacroSettings, MesoSettings, MicroSettings
from divscope.io.settings import IngestSettings
from divscope.metrics.settings import MetricSettings
from divscope.select.settings import GridSettings, SelectSettings
from divscope.settings import Settings, cli_fields, cli_options
from divscope.train.settings import TrainSettings

# command -> its settings objects; and the options that are not settings (paths, modes, the engine).
COMMANDS: dict[str, tuple[type[Settings], ...]] = {
    "featurize": (MicroSettings, MacroSettings, MesoSettings), "select": (SelectSettings,),
    "grid": (GridSettings,), "train": (TrainSettings,), "evaluate": (EvalSettings,), "metrics": (MetricSettings,),
    "plan": (PlanSettings,), "ingest": (IngestSettings,), "compare": (CompareSettings, MetricSettings),
    "respond": (RespondSettings,),
}
NOT_SETTINGS = {"out", "fmt", "level", "side", "meso_options", "rebuild", "engine", "ray_address", "ray_cpus",
                "force", "help", "html"}
# The spec section of each stage (the spec *is* the settings object, so a default cannot differ).
SPEC_SECTIONS = {MicroSettings: ("features", "micro"), MacroSettings: ("features", "macro"),
                 MesoSettings: ("features", "meso"), GridSettings: ("selection",), TrainSettings: ("train",),
                 MetricSettings: ("metrics",)}


def _expected_type(annotation: Any) -> tuple[str, Any]:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return "flag", None
    if get_origin(annotation) is Literal:
        return "choice", sorted(str(a) for a in get_args(annotation))
    if annotation in (int, float):
        return "number", {int: "integer", float: "float"}[annotation]
    return "text", None


def _as_value(param: click.Option, annotation: Any) -> Any:
    """A list field's CLI default is its comma text: compare it as the list it parses to."""
    lists = [a for a in (annotation, *get_args(annotation)) if get_origin(a) is list]
    if isinstance(param.default, str) and lists:
        item = get_args(lists[0])[0]
        return [item(x) if item in (int, float) else x for x in param.default.split(",")]
    return param.default


def drift(command: click.Command, models: tuple[type[Settings], ...]) -> list[str]:
    """Every way ``command``'s options disagree with its settings objects (name, type, default, required)."""
    problems = []
    options = [p for p in command.params if isinstance(p, click.Option)]
    by_name: dict[str, list[click.Option]] = {}
    for p in options:
        by_name.setdefault(str(p.name), []).append(p)
    fields = {name: model for model in models for name in cli_fields(model)}
    for stray in sorted(set(by_name) - set(fields) - NOT_SETTINGS):
        problems.append(f"--{stray} is declared outside the settings object")
    for name, model in fields.items():
        field, opts = model.model_fields[name], by_name.get(name, [])
        if not opts:
            problems.append(f"{name}: no CLI option")
            continue
        if len(opts) > 1:  # switches such as --lora/--full share one destination
            if [o.flag_value for o in opts if o.default is True] != [field.default]:
                problems.append(f"{name}: default switch differs from {field.default!r}")
            continue
        p = opts[0]
        if f"--{name.replace('_', '-')}" not in p.opts and not any(o.startswith(f"--{name.replace('_', '-')}/")
                                                                    for o in p.opts):
            problems.append(f"{name}: option named {p.opts}")
        kind, detail = _expected_type(field.annotation)
        if kind == "flag" and not p.is_flag:
            problems.append(f"{name}: not a flag")
        elif kind == "choice" and (not isinstance(p.type, click.Choice) or sorted(p.type.choices) != detail):
            problems.append(f"{name}: choices {getattr(p.type, 'choices', p.type)} != {detail}")
        elif kind == "number" and p.type.name != detail:
            problems.append(f"{name}: type {p.type.name} != {detail}")
        if field.is_required() != p.required:
            problems.append(f"{name}: required {p.required} != {field.is_required()}")
        elif not field.is_required() and _as_value(p, field.annotation) != field.get_default(
                call_default_factory=True):
            problems.append(f"{name}: CLI default {p.default!r} != {field.get_default(call_default_factory=True)!r}")
    return problems


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_option_is_a_settings_field_with_its_name_type_and_default(command: str) -> None:
    assert drift(cli.commands[command], COMMANDS[command]) == []


@pytest.mark.parametrize("model", [m for models in COMMANDS.values() for m in models], ids=lambda m: m.__name__)
def test_derived_options_parse_to_the_settings_defaults(model: type[Settings]) -> None:
    """Behaviour, not declarations: an empty command line, parsed by click through the derived options, yields
    the model's defaults (switches such as --lora/--full included: the last switch once overrode the default)."""
    seen: dict[str, Any] = {}
    command = click.Command("c", params=[], callback=lambda **v: seen.update(v))
    command = cli_options(model)(command.callback)
    required = {"strategy": "random", "size": 3, "endpoint": "http://h/v1", "model": "m"}
    args = [x for k, v in required.items() if k in model.model_fields for x in (f"--{k}", str(v))]
    click.command("c")(command).main(args, standalone_mode=False)
    given = {k: v for k, v in required.items() if k in model.model_fields}
    assert model.from_cli(seen) == model(**given)


@pytest.mark.parametrize("rogue", [
    click.Option(["--max-len", "max_len"], default=512, type=int),      # a default declared twice, drifted
    click.Option(["--max-len", "max_len"], default=256, type=float),    # the wrong type
    click.Option(["--max-length", "max_len"], default=256, type=int),   # another name
    click.Option(["--warmup", "warmup"], default=0.1, type=float),      # a setting outside the object
])
def test_the_drift_check_sees_a_hand_declared_option(rogue: click.Option) -> None:
    train = cli.commands["train"]
    params = [p for p in train.params if p.name != rogue.name] + [rogue]
    if rogue.name != "max_len":
        params = list(train.params) + [rogue]
    assert drift(click.Command("train", params=params), COMMANDS["train"]) != []


@pytest.mark.parametrize("model", sorted(SPEC_SECTIONS, key=lambda m: m.__name__))
def test_spec_sections_are_the_settings_objects_and_default_alike(model: type[Settings]) -> None:
    path = SPEC_SECTIONS[model]
    owner: Any = ExperimentSpec if len(path) == 1 else FeaturesSpec
    assert owner.model_fields[path[-1]].annotation is model
    section: Any = parse_spec({})
    for key in path:
        section = getattr(section, key)
    default = model()
    for name in model.model_fields:
        if name != "strategies":  # validated: "all" expands to the six names in both
            assert getattr(section, name) == getattr(default, name), (model.__name__, name)
    assert ExperimentSpec.model_fields["evaluate"].annotation == list[EvalSettings]
    assert parse_spec({}).evaluate[0] == EvalSettings()


def test_the_pool_section_is_the_ingest_settings_plus_its_sources() -> None:
    from divscope.experiment.spec import PoolSpec

    assert ExperimentSpec.model_fields["pool"].annotation is PoolSpec and issubclass(PoolSpec, IngestSettings)
    pool = parse_spec({}).pool
    for name in IngestSettings.model_fields:
        assert getattr(pool, name) == getattr(IngestSettings(), name), name


def test_every_seed_is_explicit_in_the_spec() -> None:
    spec = parse_spec({"selection": {"seeds": [3]}, "train": {"seed": 4}, "evaluate": [{"seed": 5}],
                       "metrics": {"seed": 6}, "features": {"macro": {"seed": 7}}})
    assert (spec.selection.seeds, spec.train.seed, spec.evaluate[0].seed, spec.metrics.seed,
            spec.features.macro.seed) == ([3], 4, 5, 6, 7)


def test_cli_mistakes_name_the_option() -> None:
    with pytest.raises(DivscopeError, match="^--length-range: length range"):
        SelectSettings.from_cli({"strategy": "random", "size": 3, "length_range": "9:3"})
    with pytest.raises(DivscopeError, match="^--sizes: "):
        GridSettings.from_cli({"sizes": "10,x"})
