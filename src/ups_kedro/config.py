"""Strict conversion of parameter mappings into typed dataclasses.

Every stage turns its ``parameters_<stage>.yml`` block into a frozen dataclass at the node
boundary with :func:`parse`.  An unknown or misspelt key, a value of the wrong type or a
missing required key fails at once with a :class:`ConfigError` naming the full key path
(``operator.train.optimizer.lr``) and, for typos, the closest valid key.  Defaults live in
exactly one place: the dataclass field.

Bounds are declared once, on the field: ``lr: float = bounded(1e-3, gt=0)``.  The parser checks
them (``operator.train.optimizer.lr must be > 0, got -1``); checks that relate several fields
live in the class's ``check(where)`` method.  A config class that derives from :class:`Checked`
also gets ``validate(where)``: the same checks, recursively, for configs built in code.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ups_kedro.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A parameter is unknown, missing, of the wrong type or inconsistent."""


_BOUNDS = ("ge", "gt", "le", "lt")


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` (which names the key path) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            note: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with declared bounds, checked by :func:`parse` and :func:`validate`.

    ``ge``/``gt``/``le``/``lt``: inclusive/exclusive lower/upper bounds; for a list or tuple they
    apply to every entry; ``None`` passes when the field's type allows it.  Bounded numbers must
    also be finite.  ``note`` is appended to the message, e.g. ``"(0: none)"``.
    """
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if note:
        meta["note"] = note
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _bound_text(meta: Mapping[str, Any]) -> str:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{_fmt(lo[1])}, {_fmt(hi[1])}{hi[0]}"
    if lo:
        return f"{'≥' if lo[0] == '[' else '>'} {_fmt(lo[1])}"
    assert hi is not None
    return f"{'≤' if hi[0] == ']' else '<'} {_fmt(hi[1])}"


def _in_bounds(value: Any, meta: Mapping[str, Any]) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (("ge" not in meta or value >= meta["ge"]) and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"])
            and ("lt" not in meta or value < meta["lt"]))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) type, else None."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        for arg in get_args(tp):
            if get_origin(arg) is Literal:
                return get_args(arg)
    return None


def check_bounds(obj: Any, where: str) -> None:
    """Raise :class:`ConfigError` for the first field of ``obj`` outside its declared bounds.

    Also checks ``Literal`` choices, which the parser checks on the way in, for configs built
    in code.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue  # the type decides whether None is allowed (the parser checked it)
        choices = _choices(hints.get(f.name))
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}.{f.name} must be one of {choices}, got {value!r}")
        if not any(k in f.metadata for k in _BOUNDS):
            continue
        items = value if isinstance(value, (list, tuple)) else (value,)
        if not all(_in_bounds(v, f.metadata) for v in items):
            optional = type(None) in get_args(hints.get(f.name))
            text = _bound_text(f.metadata) + (" or null" if optional else "")
            what = " entries must each" if isinstance(value, (list, tuple)) else " must"
            note = f" {f.metadata['note']}" if "note" in f.metadata else ""
            raise ConfigError(f"{where}.{f.name}{what} be {text}{note}, got {value}")


class Checked:
    """Mixin of config dataclasses: declared bounds plus an optional cross-field ``check``.

    :func:`parse` runs both for every level it builds; :meth:`validate` does the same for a
    config built in code (e.g. ``TrainConfig(epochs=1, batch_size=8)``), recursively.
    """

    #: Key path used in messages when :meth:`validate` is called without one.
    WHERE: ClassVar[str] = "config"

    def check(self, where: str) -> None:
        """Cross-field consistency checks; raise :class:`ConfigError` naming ``where.<key>``."""

    def validate(self, where: str | None = None) -> None:
        """Check the declared bounds and :meth:`check` here and in every nested config.

        A config that already passed under the same key path (e.g. parsed by :func:`parse`,
        then handed to ``training.launcher.fit``) is not checked again: frozen, it cannot have
        changed.
        """
        where = self.WHERE if where is None else where
        if getattr(self, "_checked_as", None) != where:
            validate(self, where)


def validate(obj: Any, where: str) -> None:
    """Bounds and cross-field checks of ``obj`` and every nested :class:`Checked` config."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Checked):
            validate(value, f"{where}.{f.name}")
    _check_level(obj, where)


def _check_level(obj: Any, where: str) -> None:
    """The checks of one level (nested configs were checked when they were built)."""
    if isinstance(obj, Checked):
        check_bounds(obj, where)
        obj.check(where)
        object.__setattr__(obj, "_checked_as", where)  # not a field: equality, to_dict unchanged
        return
    legacy = getattr(obj, "validate", None)  # classes that predate Checked: validate([where])
    if callable(legacy):
        takes_where = len(inspect.signature(legacy).parameters) > 0
        try:
            legacy(where) if takes_where else legacy()
        except ConfigError:
            raise
        except ValueError as err:
            msg = str(err)
            raise ConfigError(msg if takes_where else f"{where}: {msg}") from err


def follow_data(cfg: T, where: str, **values: Any) -> T:
    """``cfg`` with the fields that follow the data set to ``values``.

    A field left at its default (``None``: "follow the data") takes the data's value; a field
    set to anything else must already equal it, so a stale hand-set size fails here, before any
    training, with the key named.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    for name, value in values.items():
        current = getattr(cfg, name)
        if current is not None and current != defaults[name] and current != value:
            raise ConfigError(f"{where}.{name}={current} must equal the data's {value} (or be "
                              "left out to follow the data)")
    return dataclasses.replace(cfg, **values)  # type: ignore[type-var]


def parse(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``, recursively and strictly.

    Args:
        cls: a dataclass type; nested dataclass-typed fields are parsed recursively.
        values: the mapping from the parameters file (``None`` means all defaults).
        where: the key path of ``values`` used in error messages, e.g. ``"operator"``.

    Returns:
        An instance of ``cls`` whose declared bounds and ``check(where)`` (cross-field
        consistency) have passed, level by level, each exactly once.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where} must be a mapping of keys to values, got {type(values).__name__}")
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
        elif dataclasses.is_dataclass(_dataclass_type(hints[name])):
            # A defaulted nested config is checked like a given one (its bounds, its check).
            kwargs[name] = _default_nested(field, key)
    obj = cls(**kwargs)
    _check_level(obj, where)
    return obj


def _dataclass_type(tp: Any) -> Any:
    """The dataclass inside ``tp`` (``X`` or ``X | None``), else ``None``."""
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def _default_nested(field: dataclasses.Field, key: str) -> Any:
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING \
        else field.default  # type: ignore[misc]
    if value is not None:
        validate(value, key)
    return value


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
