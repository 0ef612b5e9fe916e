"""Range-checked argparse types for the ``klayer`` command line.

Each helper is an argparse ``type=``: it turns the text into a number or refuses it with
``argparse.ArgumentTypeError``, so a bad value is a usage error (exit status 2, argparse's usage
line and one ``error:`` line, no traceback)::

    p.add_argument("--seed", type=nonneg_int)
    p.add_argument("--eta", type=positive_float)
    p.add_argument("--n", type=int_range(2))
    p.add_argument("--tol", type=finite_float(above=0, below=1))

Integers are written in decimal (``1e3`` is not an integer) and are at most ``2**63 - 1``;
floats must be finite (``nan``, ``inf`` and ``1e999`` are refused). :class:`UsageError` is for
the checks that involve two arguments, made once they are all parsed.
"""

from __future__ import annotations

import argparse
import math

from .errors import KlayerError
from .schema import MAX_INT, MAX_WIDTH

__all__ = [
    "int_range",
    "positive_int",
    "nonneg_int",
    "finite_float",
    "positive_float",
    "nonneg_float",
    "float_list",
    "hidden_sizes",
    "UsageError",
    "MAX_INT",
    "MAX_WIDTH",
]


class UsageError(KlayerError):
    """Arguments that are fine one by one but not together; the CLI exits with status 2."""

    exit_code = 2


def _int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_range(min: int | None = None, max: int = MAX_INT):
    """An argparse type: an integer in ``[min, max]``."""

    def parse(text: str) -> int:
        v = _int(text)
        if min is not None and v < min:
            raise argparse.ArgumentTypeError(f"must be an integer >= {min}, got {text!r}")
        if v > max:
            raise argparse.ArgumentTypeError(f"must be an integer <= {max}, got {text!r}")
        return v

    parse.__name__ = "integer"  # argparse names the type in "invalid <name> value" messages
    return parse


positive_int = int_range(1)
"""An integer >= 1 (counts, sizes, epochs, workers)."""
nonneg_int = int_range(0)
"""An integer >= 0 (seeds, rows to show)."""


def _float(text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def finite_float(min: float | None = None, max: float | None = None, *, above=None, below=None):
    """An argparse type: a finite float with ``min <= v <= max`` and ``above < v < below`` (each
    bound optional)."""

    def parse(text: str) -> float:
        v = _float(text)
        for bound, ok, op in (
            (min, lambda b: v >= b, ">="),
            (max, lambda b: v <= b, "<="),
            (above, lambda b: v > b, ">"),
            (below, lambda b: v < b, "<"),
        ):
            if bound is not None and not ok(bound):
                raise argparse.ArgumentTypeError(f"must be a finite number {op} {bound}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


positive_float = finite_float(above=0)
"""A finite float > 0 (learning rates, thresholds)."""
nonneg_float = finite_float(min=0)
"""A finite float >= 0 (penalties)."""


def float_list(min: float | None = None, *, above=None):
    """An argparse type: comma-separated finite floats, each checked as :func:`finite_float`."""
    one = finite_float(min, above=above)

    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in text.split(",")]
        if not text.strip() or any(not p.strip() for p in parts):
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        return tuple(one(p) for p in parts)

    parse.__name__ = "numbers"
    return parse


def hidden_sizes(text: str) -> tuple[int, ...]:
    """An argparse type: hidden widths ``50,50`` (each in ``[1, 2**20]``); ``""`` or ``none``
    for no hidden layer."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    width = int_range(1, MAX_WIDTH)
    try:
        return tuple(width(v) for v in text.split(","))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"hidden widths: {e} (in {text!r})") from None
