"""One settings object per stage: the single source of every option's name, type, default and help.

Each stage declares a pydantic model (``MicroSettings``, ``SelectOptions``, ``TrainSettings``, ...). The YAML spec
uses the model itself as its section, and the CLI options are derived from its fields by :func:`cli_options`, so
a default is written once and the two can never drift (``tests/test_settings.py`` checks every command).

Field conventions (``setting(default, help, ...)``):

* the CLI name is ``--field-name``; ``short`` adds e.g. ``-n``; ``cli=False`` keeps a field out of the CLI
  (spec only, e.g. dicts), ``flags={"--lora": "lora", "--full": "full"}`` turns a choice into switches;
* ``bool`` fields become ``--x/--no-x``; ``Literal`` fields a choice; ``list`` fields take a comma list on the
  CLI (``--sizes 1000,2000``) and a YAML list in the spec.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from divscope.errors import DivscopeError, did_you_mean

_CLI = "cli"


def setting(default: Any = ..., help: str = "", *, short: str | None = None, cli: bool = True,
            flags: dict[str, Any] | None = None, metavar: str | None = None, **field_kwargs: Any) -> Any:
    """A settings field: its default and help, plus how it shows on the command line."""
    extra = {_CLI: {"enabled": cli, "short": short, "flags": flags, "metavar": metavar}}
    if "default_factory" in field_kwargs:
        return Field(description=help, json_schema_extra=extra, **field_kwargs)
    return Field(default, description=help, json_schema_extra=extra, **field_kwargs)


def level_value(v: Any) -> Any:
    """A diversity level as a float: a number, or text that is a decimal or an exact fraction (``1/6``, parsed by
    ``fractions.Fraction``, never evaluated); other values are left to the field's own validation."""
    if not isinstance(v, str):
        return v
    try:
        return float(Fraction(v.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"level {v!r} is not a number: give a decimal or a fraction in [0, 1] (0.5, 1/6)") from None


Level = Annotated[float, BeforeValidator(level_value)]  # a diversity level; the CLI takes "1/6" as well as 0.5


class Settings(BaseModel):
    """Base of every stage's settings: unknown keys are errors (a typo must never fall back to a default)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _comma_lists(cls, v: Any, info: Any) -> Any:
        """``"1000,2000"`` (the CLI form) for a list field."""
        field = cls.model_fields.get(info.field_name)
        if isinstance(v, str) and field is not None and _list_item(field.annotation) is not None:
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @classmethod
    def from_cli(cls, values: dict[str, Any]) -> Any:
        """The settings from a click callback's keyword arguments (other arguments are ignored); a mistake names
        the option (``--length-range: ...``)."""
        return parse(cls, {k: v for k, v in values.items() if k in cls.model_fields}, cli=True)

    def changed(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what a user chose), JSON-able."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v != _default_json(type(self), k)}


def parse(model: type[BaseModel], data: dict[str, Any], origin: str = "", cli: bool = False) -> Any:
    """Validate ``data``; a mistake is one line naming the key (``origin: key: message``, or the option)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see examples/*.yaml)"
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if cli and err["loc"]:
            where = "--" + str(err["loc"][0]).replace("_", "-")
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise DivscopeError(f"{origin + ': ' if origin else ''}{where}: {msg}{more}") from None


def _default_json(model: type[BaseModel], name: str) -> Any:
    field = model.model_fields[name]
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


# ------------------------------------------------------------------------------------------------- CLI


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _list_item(annotation: Any) -> Any:
    ann = _strip_optional(annotation)
    if get_origin(ann) is list:
        return (get_args(ann) or (str,))[0]
    return None


def cli_spec(model: type[BaseModel], name: str) -> dict[str, Any]:
    """How field ``name`` shows on the CLI: ``param_decls``, ``type``, ``default``, ``is_flag``, ``help``..."""

    field = model.model_fields[name]
    extra = ((field.json_schema_extra or {}) if isinstance(field.json_schema_extra, dict) else {}).get(_CLI, {})
    required = field.is_required()
    default = None if required else _default_json(model, name)
    ann = _strip_optional(field.annotation)
    long = "--" + name.replace("_", "-")
    decls = [long] + ([extra["short"]] if extra.get("short") else [])
    spec: dict[str, Any] = {"param_decls": decls, "help": field.description or "", "default": default,
                            "required": required, "show_default": default not in (None, [], {}),
                            "metavar": extra.get("metavar")}
    if ann is bool:
        spec.update(param_decls=[f"{long}/--no-{long[2:]}"], is_flag=True)
    elif get_origin(ann) is Literal:
        spec["type"] = choice(get_args(ann))
    elif _list_item(field.annotation) is not None:
        spec.update(type=str, default=None if default is None else ",".join(str(x) for x in default))
        spec["metavar"] = spec["metavar"] or "A,B,..."
    elif ann in (int, float, str):
        spec["type"] = ann
    else:
        spec["type"] = str  # unions such as ``int | list[float]``: the model's validator parses the text
    return spec


@functools.cache
def _choice_type() -> Any:
    import click

    class Choice(click.Choice):
        """click's choice whose invalid-value message names the closest choice (``did you mean 'micro'?``)."""

        def get_invalid_choice_message(self, value: Any, ctx: Any) -> str:
            return super().get_invalid_choice_message(value, ctx) + did_you_mean(value, self.choices)

    return Choice


def choice(values: Iterable[Any]) -> Any:
    """A ``click.Choice`` of ``values`` whose error suggests the closest value; every choice option uses it."""
    return _choice_type()([str(v) for v in values])


def cli_fields(model: type[BaseModel], exclude: Iterable[str] = ()) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if name not in exclude and extra.get(_CLI, {}).get("enabled", True):
            out.append(name)
    return out


def cli_options(model: type[BaseModel], exclude: Iterable[str] = ()) -> Callable[[Any], Any]:
    """A click decorator adding one option per CLI field of ``model`` (in field order)."""
    import click

    names = cli_fields(model, exclude)

    def deco(f: Any) -> Any:
        for name in reversed(names):
            field = model.model_fields[name]
            extra = (field.json_schema_extra or {}).get(_CLI, {})  # type: ignore[union-attr]
            if extra.get("flags"):
                default = _default_json(model, name)
                for flag, value in reversed(list(extra["flags"].items())):
                    # Switches share one destination: only the default one may carry a default, or click lets
                    # the last switch's implicit False win when none is given.
                    kwargs = {"default": True} if value == default else {}
                    f = click.option(flag, name, flag_value=value, **kwargs,
                                     help=f"{(field.description or name).rstrip('.')} ({value})"
                                     + (" [default]" if value == default else ""))(f)
                continue
            spec = cli_spec(model, name)
            decls = spec.pop("param_decls")
            f = click.option(*decls, name, **{k: v for k, v in spec.items() if v is not None or k == "default"})(f)
        return f

    return deco
