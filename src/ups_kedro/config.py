"""Strict conversion of parameter mappings into typed dataclasses.

Every stage turns its ``parameters_<stage>.yml`` block into a frozen dataclass at the node
boundary with :func:`parse`.  An unknown or misspelt key, a value of the wrong type or a
missing required key fails at once with a :class:`ConfigError` naming the full key path
(``operator.train.lr``) and, for typos, the closest valid key.  Defaults live in exactly one
place: the dataclass field.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ups_kedro.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A parameter is unknown, missing, of the wrong type or inconsistent."""


def parse(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``, recursively and strictly.

    Args:
        cls: a dataclass type; nested dataclass-typed fields are parsed recursively.
        values: the mapping from the parameters file (``None`` means all defaults).
        where: the key path of ``values`` used in error messages, e.g. ``"operator"``.

    Returns:
        An instance of ``cls``.  If it defines ``validate()``, that is called too, so cross-field
        consistency checks run at the same boundary.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(values).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(_unknown_message(where, unknown, list(fields)))
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name in values:
            kwargs[name] = _coerce(hints[name], values[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key} is required but missing; add it to the parameters file")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        # Model/training configs take an optional key-path prefix for their messages.
        takes_where = len(inspect.signature(validate).parameters) > 0
        try:
            validate(where) if takes_where else validate()
        except ConfigError:
            raise
        except ValueError as err:
            msg = str(err)
            raise ConfigError(msg if takes_where else f"{where}: {msg}") from err
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict/list/scalars (tuples become lists), for logging and checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _unknown_message(where: str, unknown: list[str], valid: list[str]) -> str:
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        parts.append(f"'{where}.{key}'{hint}")
    return (
        f"unknown parameter(s) {', '.join(parts)}; valid keys under '{where}' are: "
        f"{', '.join(sorted(valid))}"
    )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:  # noqa: PLR0911, PLR0912 - a type dispatch
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            f"{key} = {value!r} does not match any of {' | '.join(_type_name(a) for a in args)}"
        )
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key} = {value!r} is not one of {choices}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, key)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key} must be of type {tp.__name__}, got {value!r}")
    return value
