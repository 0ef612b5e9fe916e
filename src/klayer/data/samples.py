"""A few rows for quick checks: the first CIFAR-10 training images, or Gaussian data."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .cifar10 import find_cifar10
from .prepare import DataConfig, feature_stats, load_raw, split_raw, standardize

__all__ = ["sample_rows"]

N_FEATURES = 3072  # of the Gaussian fallback, as CIFAR-10


def sample_rows(root, n: int, d: int | None, rng: np.random.Generator, source: str = "auto"):
    """The first ``n`` rows and ``d`` features of CIFAR-10 or of Gaussian data.

    Parameters
    ----------
    root : folder or archive searched for CIFAR-10 (never downloaded).
    n : rows, at least 1.
    d : leading features to keep, at least 1; None keeps all.
    rng : Generator for the Gaussian data and its labels.
    source : ``"auto"`` (CIFAR-10 if found under ``root``, else Gaussian), ``"cifar"`` or
        ``"random"``.

    Returns
    -------
    X : (n, d) float64, CIFAR-10 standardized with the training split's statistics (split
        ``"all"``), or standard normal; y : (n,) int labels in ``[0, 10)``;
    description : str, where the rows came from.
    """
    if n < 1 or (d is not None and d < 1):
        raise ConfigError(f"need at least one row and one feature, got n={n}, d={d}")
    if source in ("auto", "cifar") and find_cifar10(root) is not None:
        raw = load_raw(DataConfig(download=False), root)
        (X_train, y_train), _, _ = split_raw(raw)
        mean, std = feature_stats(X_train)
        X, y, description = standardize(X_train[:n], mean, std, "float64"), y_train[:n], f"CIFAR-10 ({raw.source})"
    elif source == "cifar":
        raise DataError(root, "no CIFAR-10 found here (source 'cifar' never downloads)")
    else:
        X, y, description = rng.standard_normal((n, N_FEATURES)), rng.integers(0, 10, n), "random Gaussian data"
    if len(X) < n or (d is not None and d > X.shape[1]):
        raise ConfigError(f"asked for {n} rows of {d} features, {description} has {len(X)} of {X.shape[1]}")
    return np.ascontiguousarray(X[:, :d]), np.asarray(y), description
