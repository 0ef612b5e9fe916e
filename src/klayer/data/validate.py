"""Checks at the front door: rows of features and labels given by a user, named in errors.

Every problem is a :class:`~klayer.errors.DataError` naming the file (or source), and where it
applies the first offending row and column (0-based).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DataError

__all__ = ["check_rows", "check_labels", "check_magnitude", "load_npy"]


def _check_npy_size(path) -> None:
    """Raise DataError if a ``.npy`` header claims more data than the file holds, before anything
    is allocated (a 128-byte file can claim a shape of 10**11 rows). Anything else that is wrong
    with the file is left for ``numpy.load`` to report."""
    try:
        with open(path, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                return
            fh.seek(0)
            version = npy_format.read_magic(fh)
            read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read(fh)
            held = os.fstat(fh.fileno()).st_size - fh.tell()
    except (OSError, ValueError, EOFError, TypeError):
        return
    if dtype.hasobject:  # pickled objects: refused by numpy.load
        return
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > held:
        raise DataError(
            path, f"header claims shape {shape} of {dtype} ({claimed} bytes) but the file holds {held} (truncated?)"
        )


def load_npy(path) -> np.ndarray:
    """A ``.npy`` file without pickles; unreadable files are a DataError naming them, and so is a
    header claiming more data than the file holds (checked before anything is allocated)."""
    _check_npy_size(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read as .npy ({e})") from None
    except MemoryError:
        raise DataError(path, "too large to load into memory") from None
    if not isinstance(a, np.ndarray):
        raise DataError(path, "holds several arrays (.npz); give one .npy array")
    return a


def check_rows(X: np.ndarray, source, width: int | None = None) -> np.ndarray:
    """``X`` as an ``(n, d)`` array of real numbers: finite, real, of the expected width.

    A single row ``(d,)`` becomes ``(1, d)``. Booleans, strings, objects and complex numbers are
    refused; so are NaN and infinities (naming the first row and column).
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if np.iscomplexobj(X):
        raise DataError(source, f"holds complex numbers ({X.dtype}); expected real features")
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number):
        raise DataError(source, f"has dtype {X.dtype}; expected real numbers (e.g. uint8 pixels or floats)")
    if X.ndim != 2:
        raise DataError(source, f"has shape {X.shape}; expected (n, {width if width else 'd'})")
    if width is not None and X.shape[1] != width:
        raise DataError(source, f"rows have {X.shape[1]} features, the model expects {width}")
    if len(X) == 0:
        raise DataError(source, "holds no rows")
    if np.issubdtype(X.dtype, np.floating):
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(source, f"row {r}, column {c} is {X[r, c]}; every feature must be finite")
    return X


def check_labels(y: np.ndarray, source, n_classes: int, n_rows: int | None = None) -> np.ndarray:
    """``y`` as an ``(n,)`` int64 array of class indices in ``[0, n_classes)``."""
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(source, f"labels have shape {y.shape}; expected (n,)")
    if n_rows is not None and len(y) != n_rows:
        raise DataError(source, f"{len(y)} labels for {n_rows} rows")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(source, f"labels have dtype {y.dtype}; expected integers")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(source, f"row {i}: label {y[i].item()} is not an integer")
    # the range is checked in the labels' own dtype, before the cast: uint64 2**64 - 1 or a float
    # 1e300 would otherwise become a different number (and the float cast would warn)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(source, f"row {i}: label {y[i].item()} is outside the classes 0..{n_classes - 1}")
    return y.astype(np.int64)


def check_magnitude(X: np.ndarray, source, mean=None, std=None, dtype="float32", chunk: int = 4096) -> np.ndarray:
    """Refuse finite rows too large for a network computing in ``dtype``.

    A feature fails when it, or its standardized value ``(x - mean) / std``, exceeds ``dtype``'s
    largest number (3.4e38 for float32): the network's arithmetic would overflow to infinity and
    turn every probability into NaN. The first offending row and column are named, with the value
    as given. ``X: (n, d)`` finite rows (:func:`check_rows`); ``mean, std``: ``(d,)`` or None.
    """
    limit = float(np.finfo(np.dtype(dtype)).max)
    for i in range(0, len(X), chunk):
        c = np.asarray(X[i : i + chunk], np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            bad = np.abs(c) > limit
            if mean is not None:
                bad |= ~(np.abs((c - mean) / std) <= limit)
        if bad.any():
            r, col = np.argwhere(bad)[0]
            value = np.asarray(X)[i + r, col].item()
            scaled = "" if mean is None else " once standardized with its statistics"
            raise DataError(
                source,
                f"row {i + r}, column {col} is {value}, too large for the model's {np.dtype(dtype)} arithmetic"
                f"{scaled} (beyond {limit:.3g})",
            )
    return X
