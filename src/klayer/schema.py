"""Typed values and one-line errors for klayer's configuration schemas (pydantic v2).

Every section of an experiment or study file is a frozen pydantic dataclass made by
:func:`schema`: attribute access, ``dataclasses.asdict``, ``dataclasses.replace``, equality and
hashing work as for plain dataclasses. Unknown keys are refused with the nearest known key
suggested, and a bad value, whether it comes from a file, a ``--set`` override or a constructor
call, is a :class:`~klayer.errors.ConfigError` with one line naming the dotted key.

The same rules hold for every key:

- booleans are never numbers, and strings are never parsed as numbers or booleans;
- an integer is accepted where a number is expected (``lam = 1``);
- a number with an integral value is accepted where an integer is expected (``n_s = 1e3``,
  ``n_s = 500.0``), anything else is refused (``n_s = 2.5``);
- NaN and infinities are refused everywhere; integers are at most ``2**63 - 1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Callable
from typing import Annotated

from annotated_types import Le
from pydantic import AfterValidator, AllowInfNan, BeforeValidator, ConfigDict, Strict, ValidationError, model_validator
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

from .errors import ConfigError

__all__ = [
    "Int",
    "Float",
    "Bool",
    "Str",
    "Text",
    "MAX_INT",
    "MAX_WIDTH",
    "schema",
    "fail",
    "message",
    "suggest",
    "closest",
    "show",
    "keys_of",
    "dotted",
]

MAX_INT = 2**63 - 1
MAX_WIDTH = 2**20
"""The widest hidden layer a config or the command line accepts."""


def _integral(v):
    """``2.0`` and ``1e3`` as integers (TOML writes some integers as floats); anything else as is."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _printable(v: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise PydanticCustomError(
            "klayer_value", "{text}", {"text": f"must not contain control characters, got {show(v)}"}
        )
    return v


Int = Annotated[int, BeforeValidator(_integral), Strict(), Le(MAX_INT)]
"""An integer; an integral float (``1e3``) is accepted, a boolean never."""
Float = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number; an integer is accepted, a boolean or a string never."""
Bool = Annotated[bool, Strict()]
"""``true`` or ``false``; never a number or a string."""
Str = Annotated[str, Strict()]
"""Any string."""
Text = Annotated[str, Strict(), AfterValidator(_printable)]
"""A string without control characters (names and paths)."""

_CONFIG = ConfigDict(extra="forbid")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def keys_of(cls) -> list[str]:
    """The keys (field names) of a schema class, in order."""
    return [f.name for f in dataclasses.fields(cls)]


def closest(word, choices) -> str | None:
    """The choice closest to ``word`` (difflib), or None if none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word, choices, prefix: str = "") -> str:
    """`` (did you mean PREFIX+X?)`` for the choice X closest to ``word``, or an empty string."""
    near = closest(word, choices)
    return f" (did you mean {prefix}{near}?)" if near is not None else ""


def show(v, depth: int = 0) -> str:
    """A value as the user wrote it, TOML-style, on one short line."""
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, dict):
        s = "a table"
    elif isinstance(v, list | tuple):
        s = (
            "[...]"
            if depth > 2
            else "[" + ", ".join(show(x, depth + 1) for x in v[:8]) + (", ...]" if len(v) > 8 else "]")
        )
    elif isinstance(v, str):
        s = repr(v)
    elif v is None:
        s = "nothing"
    elif isinstance(v, int):
        s = str(v) if v.bit_length() < 200 else ("-" if v < 0 else "") + "a huge integer"
    else:
        s = str(v)
    s = s.replace("\n", " ").replace("\r", " ")
    return s if len(s) <= 60 else s[:57] + "..."


def _key(part) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    part = str(part)
    return part if _PLAIN_KEY.fullmatch(part) else repr(part)


def dotted(parts) -> str:
    """``("model", "hidden", 1)`` -> ``model.hidden[1]``."""
    out = ""
    for p in parts:
        k = _key(p)
        out += k if (k.startswith("[") or not out) else "." + k
    return out


def fail(text: str):
    """Raise a cross-field error from inside a validator. Keys in backquotes in ``text``
    (`` `eta_min` ``) are written out with the section's dotted prefix (``train.eta_min``)."""
    raise PydanticCustomError("klayer", "{text}", {"text": text})


def _check_keys(cls, data):
    """Refuse unknown keys, suggesting the nearest known one (runs before field validation)."""
    if isinstance(data, ArgsKwargs):
        given = list(data.kwargs or {})
    elif isinstance(data, dict):
        given = list(data)
    else:
        return data
    known = keys_of(cls)
    for k in given:
        if k not in known:
            raise PydanticCustomError("klayer_unknown", "unknown key", {"key": str(k), "known": known})
    return data


def schema(section: str = ""):
    """Class decorator: a frozen pydantic dataclass with unknown keys refused and constructor
    errors raised as one-line ConfigErrors naming ``section.key``."""

    def wrap(cls):
        cls._check_keys = model_validator(mode="before")(classmethod(_check_keys))
        cls = _pydantic_dataclass(cls, config=_CONFIG, frozen=True)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise ConfigError(message(e, f"{section}." if section else "")) from None

        cls.__init__ = __init__
        return cls

    return wrap


_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dataclass_type": "a table",
    "dataclass_exact_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def message(error: ValidationError, prefix: str | Callable[[str], str] = "", tagged: bool = False) -> str:
    """The first error of a pydantic ValidationError as one line naming the dotted key.

    ``prefix`` goes in front of every key (``"train."``), or is a function of the key's first
    part. ``tagged``: the schema is a union discriminated on ``kind``, whose tag pydantic puts in
    front of the location."""
    err = error.errors(include_url=False)[0]
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    loc = list(err["loc"])
    if tagged and kind not in ("union_tag_invalid", "union_tag_not_found") and loc:
        loc = loc[1:]

    def full(parts) -> str:
        d = dotted(parts)
        if not d:
            return ""
        p = prefix(str(parts[0])) if callable(prefix) else prefix
        return p + d

    key = full(loc)
    if kind == "klayer_unknown":
        near = closest(ctx["key"], ctx["known"])
        hint = f" (did you mean {full([*loc, near])}?)" if near is not None else ""
        return f"unknown key {full([*loc, ctx['key']])}{hint}"
    if kind == "klayer":
        return re.sub(r"`([A-Za-z0-9_.]+)`", lambda m: full([*loc, *m[1].split(".")]), ctx["text"])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        tag_key = full(["kind"])
        if kind == "union_tag_not_found" or not isinstance(value, dict) or "kind" not in value:
            return f"{tag_key} is required (one of {', '.join(tags)})" if tags else f"{tag_key} is required"
        got = value["kind"]
        hint = suggest(got, tags) if isinstance(got, str) else ""
        return f"{tag_key} must be one of {', '.join(tags)}, got {show(got)}{hint}"
    where = f"{key}: " if key else ""
    if kind == "klayer_value":
        text = ctx["text"]  # "must ..." follows the key; ": ..." is a message of its own
        return (f"{key}{text}" if text.startswith(":") else f"{key} {text}") if key else text.lstrip(": ")
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{key} must be {_BOUNDS[kind]} {bound}, got {show(value)}"
    if kind == "finite_number":
        return f"{key} must be a finite number, got {show(value)}"
    if kind == "literal_error":
        choices = [c.strip("'") for c in re.split(r", | or ", ctx.get("expected", ""))]
        hint = suggest(value, choices) if isinstance(value, str) else ""
        return f"{key} must be one of {', '.join(choices)}, got {show(value)}{hint}"
    if kind in ("too_short", "string_too_short"):
        return f"{key} must not be empty"
    if kind == "missing" or kind == "missing_argument":
        return f"{key} is required"
    if kind in _TYPES:
        return f"{where}expected {_TYPES[kind]}, got {show(value)}"
    return f"{where}{' '.join(str(err['msg']).split())}"  # pragma: no cover (not raised by klayer's schemas)
