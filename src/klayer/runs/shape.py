"""Shape checks of the JSON that klayer reads back: ``results.json``, checkpoint state, the
suite's ``study.json``, ``gradcheck.json``, ``sanity.json`` and ``suite.json``.

A file written by klayer is trusted only once its content has the shape klayer wrote: a damaged
or hand-edited file is named with the first field that is wrong, in one line, instead of
failing later with a KeyError or TypeError far from its cause.

A *spec* is one of

- a type name: ``"int"``, ``"num"`` (int or float, never a bool), ``"frac"`` (a number in
  [0, 1]), ``"str"``, ``"bool"``, ``"any"``; with a trailing ``?`` it may also be null;
- ``[spec]``: a list whose every item matches ``spec``;
- ``{key: spec}``: an object holding every key (a key ending in ``?`` is optional); other keys
  are allowed; ``{"*": spec}``: an object whose every value matches ``spec``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..schema import dotted, show

__all__ = [
    "ShapeError",
    "check",
    "read_checked",
    "read_results",
    "results_problem",
    "RESULTS_COMPLETE",
    "RESULTS_DIVERGED",
]


class ShapeError(ValueError):
    """A value does not have the expected shape; ``str()`` names the field."""


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_SCALARS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "num": (_is_num, "a number"),
    "frac": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "any": (lambda v: True, "anything"),
}


def _where(parts) -> str:
    return f"field {dotted(parts)}" if parts else "the content"


def check(value, spec, parts=()) -> None:
    """Raise :class:`ShapeError` naming the first field of ``value`` that does not match ``spec``."""
    if isinstance(spec, str):
        nullable = spec.endswith("?")
        ok, what = _SCALARS[spec.rstrip("?")]
        if value is None and nullable:
            return
        if not ok(value):
            raise ShapeError(f"{_where(parts)} is {show(value)}, expected {what}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ShapeError(f"{_where(parts)} is {show(value)}, expected a list")
        for i, item in enumerate(value):
            check(item, spec[0], (*parts, i))
    else:
        if not isinstance(value, dict):
            raise ShapeError(f"{_where(parts)} is {show(value)}, expected an object")
        if list(spec) == ["*"]:
            for key, item in value.items():
                check(item, spec["*"], (*parts, key))
            return
        for key, sub in spec.items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                raise ShapeError(f"{_where((*parts, name))} is missing")
            check(value[name], sub, (*parts, name))


def read_checked(path, spec) -> tuple[object | None, str | None]:
    """``(content, None)`` for a JSON file matching ``spec``; ``(None, problem)`` when it is
    missing, unreadable, not JSON or of the wrong shape (``problem`` names the file and field)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: missing"
    except OSError as e:
        return None, f"{path}: cannot read ({e.strerror or e})"
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deeply
        return None, f"{path}: not valid JSON"
    try:
        check(value, spec)
    except ShapeError as e:
        return None, f"{path}: {e}"
    return value, None


# what klayer reads back from a run's results.json (the CLI, reproduce's searches, the report):
# required, or typed when present
RESULTS_COMPLETE = {
    "status": "str",
    "test_accuracy": "frac",
    "final": {"val_accuracy": "num", "train_accuracy?": "num"},
    "name?": "str",
    "test_loss?": "num",
    "test_cost?": "num",
    "best_val_accuracy?": "num",
    "updates?": "int",
    "epochs?": "num",
    "wall_seconds?": "num",
    "seconds_per_epoch?": "num",
    "seed?": "int",
    "snapshot_ensemble?": {"test_accuracy": "frac"},
}
RESULTS_DIVERGED = {"status": "str", "diverged_at_step": "int", "name?": "str", "seed?": "int"}


def results_problem(res) -> str | None:
    """Why ``res`` (a parsed ``results.json``) is not a finished run's results, or None."""
    if not isinstance(res, dict):
        return f"the content is {show(res)}, expected an object"
    status = res.get("status")
    if status not in ("complete", "diverged"):
        return f"field status is {show(status) if 'status' in res else 'missing'}, expected 'complete' or 'diverged'"
    try:
        check(res, RESULTS_COMPLETE if status == "complete" else RESULTS_DIVERGED)
    except ShapeError as e:
        return str(e)
    return None


def read_results(path) -> tuple[dict | None, str | None]:
    """A finished run's ``results.json`` (complete or diverged) and None, or None and the
    one-line problem naming the file and field (missing, not JSON, unfinished, wrong shape)."""
    res, problem = read_checked(path, "any")
    if problem is None:
        problem = results_problem(res)
        if problem is not None:
            problem = f"{path}: {problem}"
    return (res, None) if problem is None else (None, problem)
