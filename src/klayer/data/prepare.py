"""Splits and standardization, as the assignments do them.

Split protocols (``DataConfig.split``):

- ``"batch1"``: train on ``data_batch_1``, validate on ``data_batch_2`` (assignment 2's first part).
- ``"all"``: all five training batches, the last ``n_val`` images for validation (5000 in
  assignment 3, 1000 in assignment 2's last part; any size works).

The test set is always the test batch. Features are standardized per feature with the mean and
standard deviation of the training split only, applied to every split, chunk by chunk into
preallocated arrays of the requested dtype (no float64 copy of the data is ever made).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, DataError
from .cifar10 import RawData, load_cifar10
from .idx import load_idx_folder

__all__ = [
    "DataConfig",
    "Dataset",
    "feature_stats",
    "fit_standardize",
    "standardize",
    "split_raw",
    "prepare",
    "load_dataset",
    "load_raw",
]

SPLITS = ("all", "batch1")


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split.

    Attributes
    ----------
    dataset : ``"cifar10"`` or ``"idx"`` (a folder of MNIST-style files).
    path : data folder, batches folder or archive; None means ``--data``, ``$KLAYER_DATA`` or the
        user cache.
    layout : CIFAR-10 layout, ``"auto"``, ``"python"``, ``"binary"`` or ``"matlab"``.
    split : ``"all"`` or ``"batch1"``.
    n_val : validation images taken from the end of the training data under ``split="all"``.
    download : fetch CIFAR-10 (verified md5) when it is not found.
    """

    dataset: str = "cifar10"
    path: str | None = None
    layout: str = "auto"
    split: str = "all"
    n_val: int = 5000
    download: bool = True

    def __post_init__(self):
        if self.dataset not in ("cifar10", "idx"):
            raise ConfigError(f"data.dataset must be cifar10 or idx, got {self.dataset!r}")
        if self.split not in SPLITS:
            raise ConfigError(f"data.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.n_val < 1:
            raise ConfigError(f"data.n_val must be at least 1, got {self.n_val}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """Standardized splits: ``X_*: (N, d)`` float arrays, ``y_*: (N,)`` int64 labels."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_classes: int = 10
    source: str = ""

    @property
    def input_size(self) -> int:
        return self.X_train.shape[1]

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def feature_stats(X: np.ndarray, chunk: int = 4096):
    """Per-feature mean and standard deviation (1/N) of ``X: (N, d)``, in float64, chunked."""
    N, d = X.shape
    total = np.zeros(d)
    sq = np.zeros(d)
    for i in range(0, N, chunk):
        c = X[i : i + chunk].astype(np.float64)
        total += c.sum(axis=0)
        sq += np.einsum("ij,ij->j", c, c)
    mean = total / N
    var = np.maximum(sq / N - mean**2, 0.0)
    if not np.issubdtype(X.dtype, np.integer):  # two-pass for real-valued data, for accuracy
        sq = np.zeros(d)
        for i in range(0, N, chunk):
            c = X[i : i + chunk] - mean
            sq += np.einsum("ij,ij->j", c, c)
        var = sq / N
    std = np.sqrt(var)
    std[std == 0] = 1.0  # a constant feature (MNIST borders) is centred, not scaled
    return mean, std


def _standardize_inplace(out: np.ndarray, mean, std, chunk: int = 1024):
    m = mean.astype(out.dtype)
    inv = (1.0 / std).astype(out.dtype)
    for i in range(0, len(out), chunk):
        o = out[i : i + chunk]
        o -= m
        o *= inv


def standardize(X: np.ndarray, mean, std, dtype="float32", chunk: int = 1024) -> np.ndarray:
    """``(X - mean) / std`` into a new array of ``dtype``, chunk by chunk."""
    out = np.empty(X.shape, np.dtype(dtype))
    for i in range(0, len(X), chunk):
        out[i : i + chunk] = X[i : i + chunk]
    _standardize_inplace(out, mean, std, chunk)
    return out


def fit_standardize(X: np.ndarray, dtype="float32"):
    """Training statistics and the standardized training data, in two passes and no float64 copy.

    For 8-bit data, the first pass casts chunks of 256 rows into the output and sums them and
    their squares in float32, exactly (256 * 255**2 < 2**24), accumulating in float64; the second
    standardizes the output in place.

    Returns
    -------
    out : (N, d) array of ``dtype``; mean, std : (d,) float64.
    """
    if X.dtype != np.uint8:
        mean, std = feature_stats(X)
        return standardize(X, mean, std, dtype), mean, std
    N, d = X.shape
    out = np.empty(X.shape, np.dtype(dtype))
    s1, s2 = np.zeros(d), np.zeros(d)
    buf = np.empty((256, d), np.float32)
    for i in range(0, N, 256):
        c = buf[: min(256, N - i)]
        c[...] = X[i : i + 256]
        s1 += c.sum(axis=0)
        s2 += np.einsum("ij,ij->j", c, c)
        out[i : i + 256] = c
    mean = s1 / N
    std = np.sqrt(np.maximum(s2 / N - mean**2, 0.0))
    std[std == 0] = 1.0
    _standardize_inplace(out, mean, std)
    return out, mean, std


def split_raw(raw: RawData, split: str = "all", n_val: int = 5000):
    """Raw uint8 ``(X, y)`` for train, val and test, as views where possible."""
    b = raw.batches
    if raw.layout == "idx":
        if split != "all":
            raise ConfigError(f"split {split!r} is CIFAR-10 only; use split='all' for IDX data")
        X, y = b["train"]
        test = b["test"]
    elif split == "batch1":
        return b["data_batch_1"], b["data_batch_2"], b["test_batch"]
    else:
        names = [n for n in b if n.startswith("data_batch_")]
        X = np.concatenate([b[n][0] for n in sorted(names)])
        y = np.concatenate([b[n][1] for n in sorted(names)])
        test = b["test_batch"]
    if not 0 < n_val < len(y):
        raise DataError(raw.source, f"n_val={n_val} must be between 1 and {len(y) - 1}")
    return (X[:-n_val], y[:-n_val]), (X[-n_val:], y[-n_val:]), test


def prepare(raw: RawData, split: str = "all", n_val: int = 5000, dtype="float32") -> Dataset:
    """Split ``raw`` and standardize every split with the training split's statistics."""
    (Xtr, ytr), (Xva, yva), (Xte, yte) = split_raw(raw, split, n_val)
    Xtr_s, mean, std = fit_standardize(Xtr, dtype)
    return Dataset(
        Xtr_s,
        ytr.copy(),
        standardize(Xva, mean, std, dtype),
        yva.copy(),
        standardize(Xte, mean, std, dtype),
        yte.copy(),
        mean,
        std,
        raw.n_classes,
        raw.source,
    )


def load_raw(config: DataConfig, root=None, progress=None) -> RawData:
    """Read the unprocessed batches that ``config`` needs.

    ``root`` (from ``--data``) overrides ``config.path``; without either, ``$KLAYER_DATA`` or the
    user cache is used.
    """
    root = root if root is not None else config.path
    if config.dataset == "idx":
        if root is None:
            raise ConfigError("data.path (or --data) must name the folder of IDX files")
        return load_idx_folder(root)
    names = ("data_batch_1", "data_batch_2", "test_batch") if config.split == "batch1" else None
    kwargs = {"batches": names} if names else {}
    return load_cifar10(root, config.layout, download_missing=config.download, progress=progress, **kwargs)


def load_dataset(config: DataConfig, root=None, dtype="float32", progress=None) -> Dataset:
    """Read, split and standardize the data that ``config`` describes (see :func:`load_raw`)."""
    return prepare(load_raw(config, root, progress), config.split, config.n_val, dtype)
