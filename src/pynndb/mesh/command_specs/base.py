"""What a command spec is: a frozen request dataclass whose fields are the command's params, validated in one place.

The request class's docstring is the command's help text (HELP, ``--help`` of the CLI verb, the Plugin verb).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pynndb.errors import InvalidArgument, InvalidArgumentType

MISSING: Any = dataclasses.MISSING


def describe(help: str, *, default: Any = MISSING, positional: bool = False) -> Any:
    """A request field: its help text, its default (none: required), and whether the CLI takes it as an argument."""
    return dataclasses.field(default=default, metadata={"help": help, "positional": positional})


@dataclass(frozen=True)
class Param:
    """One parameter of a command: name, accepted types, allowed values (for a Literal), required or default."""

    name: str
    kinds: tuple[type, ...]
    required: bool
    default: Any
    choices: tuple[str, ...] | None
    help: str
    positional: bool

    def check(self, value: Any) -> Any:
        """Return `value` if it is acceptable (an int where a float is expected becomes a float), else raise."""
        if isinstance(value, bool) and bool not in self.kinds or not isinstance(value, self.kinds):
            raise InvalidArgument(f"parameter {self.name!r} has the wrong type")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(repr(choice) for choice in self.choices)
            raise InvalidArgument(f"parameter {self.name!r} must be one of {allowed}, not {value!r}")
        if float in self.kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


@dataclass(frozen=True)
class Spec:
    """A command: wire name, request class (params), result summary, and its verb in `Plugin` and the CLI."""

    name: str
    request: type
    result: str
    verb: str | None
    group: str
    params: tuple[Param, ...]

    @property
    def help(self) -> str:
        return inspect.getdoc(self.request) or ""

    @property
    def summary(self) -> str:
        return self.help.splitlines()[0] if self.help else ""

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The params with defaults filled in, or InvalidArgument (code ``bad_params``) naming what is wrong."""
        if not self.params and (params is None or isinstance(params, dict) and not params):
            return {}  # PING, NODES, STATUS...: the common case costs nothing
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidArgument("params must be an object")
        unknown = sorted(set(params) - {param.name for param in self.params})
        if unknown:
            raise InvalidArgument(f"{self.name} takes no parameter {unknown[0]!r}")
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in params and params[param.name] is not None:
                values[param.name] = param.check(params[param.name])
            elif param.required:
                raise InvalidArgument(f"missing parameter {param.name!r}")
            elif param.default is not None:
                values[param.name] = param.default  # an absent optional param without a default stays absent
        if hasattr(self.request, "check"):
            self.request(
                **{param.name: values.get(param.name) for param in self.params}
            ).check()  # rules across fields (exactly one of two, a UUID's form)
        return values

    def parse(self, params: Mapping[str, Any] | None) -> Any:
        """The validated params as an instance of the request class."""
        return self.request(**self.validate(params))


def _kinds(hint: Any) -> tuple[tuple[type, ...], tuple[str, ...] | None]:
    """Accepted runtime types and allowed values of a field's type hint (str, int, float, bool, Literal, list[...],
    X | None)."""
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] if _is_union(hint) else [hint]
    kinds: list[type] = []
    choices: list[str] = []
    for option in options:
        if typing.get_origin(option) is Literal:
            choices.extend(typing.get_args(option))
            kinds.append(str)
        elif option is float:
            kinds.extend([float, int])
        elif typing.get_origin(option) is list:
            kinds.append(list)  # its items are checked by the request's `check`
        elif isinstance(option, type):
            kinds.append(option)
        else:
            raise InvalidArgumentType(f"unsupported parameter type {option!r}")  # a spec's mistake, at import time
    return tuple(dict.fromkeys(kinds)), tuple(choices) if choices else None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def command(name: str, group: str, result: str, verb: str | None = None) -> Any:
    """Class decorator: make a frozen request dataclass and attach its `Spec` as ``SPEC``."""

    def wrap(cls: type) -> type:
        cls = dataclass(frozen=True)(cls)
        hints = typing.get_type_hints(cls)
        params = []
        for field in dataclasses.fields(cls):
            kinds, choices = _kinds(hints[field.name])
            required = field.default is MISSING
            params.append(
                Param(
                    field.name,
                    kinds,
                    required,
                    None if required else field.default,
                    choices,
                    str(field.metadata.get("help", "")),
                    bool(field.metadata.get("positional", False)),
                )
            )
        cls.SPEC = Spec(name, cls, result, verb, group, tuple(params))  # type: ignore[attr-defined]
        return cls

    return wrap


def specs_of(*classes: type) -> dict[str, Spec]:
    """Name -> Spec for the request classes of one group, in their order."""
    return {cls.SPEC.name: cls.SPEC for cls in classes}  # type: ignore[attr-defined]
