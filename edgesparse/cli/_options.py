"""Typer options generated from a pass's pydantic Config, so a pass parameter is written once.

A Config field `finetune_epochs: int = Field(0, description=...)` becomes `--finetune-epochs` with
that type, default and description as its help; a `Literal` becomes a choice; a bool that defaults
to False is a flag, one that defaults to True a `--x/--no-x` pair (or only `--no-x` with
`negated`). `ConfigOption` says where a command differs from a recipe (a short name, its own
default, a negated flag), nothing more; `config_values` turns the parsed options back into the
Config's keyword arguments.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

_UNSET: Any = object()


@dataclass(frozen=True)
class ConfigOption:
    field: str
    short: str | None = None          # e.g. "-c"
    negated: bool = False             # a True-by-default bool offered only as --no-<field>
    default: Any = _UNSET             # the command's own default, e.g. None: "decided from the data"
    help: str | None = None           # only where the option reads differently from the recipe key


def parameter(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A hand-written command parameter (an argument or an option that is no Config field)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def config_parameter(config: type, spec: ConfigOption | str) -> inspect.Parameter:
    spec = ConfigOption(spec) if isinstance(spec, str) else spec
    field = config.model_fields[spec.field]
    annotation = field.annotation
    if getattr(annotation, "__origin__", None) in (list, dict, tuple, set):
        raise TypeError(f"{config.__name__}.{spec.field} is a {annotation}: no command option for it")
    default = field.get_default(call_default_factory=True) if spec.default is _UNSET else spec.default
    if default is None:
        annotation = Optional[annotation]
    name = spec.field
    if spec.negated:
        if annotation is not bool or default is not True:
            raise TypeError(f"{config.__name__}.{spec.field}: only a True-by-default bool can be negated")
        name, default = f"no_{spec.field}", False
    flag = "--" + name.replace("_", "-")
    names = (f"{flag}/--no-{flag[2:]}",) if annotation is bool and default is True else (flag,)
    names += (spec.short,) if spec.short else ()
    option = typer.Option(default, *names, help=spec.help or field.description)
    return parameter(name, annotation, option)


def command(func: Callable, params: list[inspect.Parameter]) -> Callable:
    """`func(**values)` as a typer command whose parameters are `params`, in this order."""
    def run(**values):
        return func(**values)

    run.__name__, run.__doc__ = func.__name__, func.__doc__
    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def config_values(config: type, values: dict[str, Any]) -> dict[str, Any]:
    """Parsed options -> `config`'s keyword arguments (`no_x=True` is `x=False`)."""
    out = {}
    for key, value in values.items():
        if key.startswith("no_") and key[3:] in config.model_fields:
            key, value = key[3:], not value
        if key not in config.model_fields:
            raise TypeError(f"{key} is not a field of {config.__name__}")
        out[key] = value
    return out
