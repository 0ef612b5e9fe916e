"""``history.csv``: one row per evaluation of a run."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError
from ..io import write_rows

__all__ = ["HISTORY_FIELDS", "write_history", "read_history"]

HISTORY_FIELDS = (
    "step",
    "epoch",
    "eta",
    "train_cost",
    "train_loss",
    "train_accuracy",
    "val_cost",
    "val_loss",
    "val_accuracy",
)


def write_history(path, rows: list[dict]) -> Path:
    """``history.csv`` from a list of dicts with :data:`HISTORY_FIELDS`, atomically."""
    return write_rows(path, rows, HISTORY_FIELDS)


def read_history(path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of numbers."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            return [
                {k: (int(v) if k == "step" else float(v)) for k, v in row.items() if k in HISTORY_FIELDS}
                for row in csv.DictReader(f)
            ]
    except (OSError, ValueError, TypeError) as e:
        raise DataError(path, f"cannot read the history ({e})") from None
