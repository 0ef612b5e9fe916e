"""Checks at the front door: rows of features and labels given by a user, named in errors.

Every problem is a :class:`~klayer.errors.DataError` naming the file (or source), and where it
applies the first offending row and column (0-based).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["check_rows", "check_labels", "load_npy"]


def load_npy(path) -> np.ndarray:
    """A ``.npy`` file without pickles; unreadable files are a DataError naming them."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot read as .npy ({e})") from None
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
            raise DataError(source, f"row {i}: label {y[i]} is not an integer")
    out = y.astype(np.int64)
    bad = (out < 0) | (out >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(source, f"row {i}: label {out[i]} is outside the classes 0..{n_classes - 1}")
    return out
