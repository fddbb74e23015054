"""Shared validation of the model config dataclasses (fail fast, name the key at fault).

Every model config is a small frozen dataclass whose `__post_init__` calls
`check_config`. The rules follow the type hints:

- ``bool`` / ``str`` / ``float`` / ``int`` fields must hold that type (an int is a fine float);
- ``int`` fields and every entry of a ``tuple[int, ...]`` field are sizes or counts: >= 1;
- ``Literal[...]`` fields must hold one of the listed values;
- ``X | None`` fields accept None as well;
- a field named ``dropout`` must lie in [0, 1);
- a list given for a tuple field (e.g. from YAML) is turned into a tuple.
"""

from __future__ import annotations

import types
from dataclasses import fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"check_config does not know the type hint {hint!r}")


_NAMES = {bool: "a bool", int: "an int >= 1", float: "a number", str: "a string"}


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is tuple:
        return f"a list of ({_describe(get_args(hint)[0])})"
    if hint is type(None):
        return "None"
    return _NAMES.get(hint, repr(hint))


def check_config(config: Any) -> None:
    """Validate (and normalise lists to tuples in) a frozen config dataclass in place."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(config, f.name, value)
        where = f"{type(config).__name__}.{f.name}"
        if not _matches(value, hints[f.name]):
            raise ValueError(f"{where} must be {_describe(hints[f.name])}, got {value!r}")
        if f.name == "dropout" and not 0.0 <= value < 1.0:
            raise ValueError(f"{where} must lie in [0, 1), got {value!r}")
