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

__all__ = ["DataConfig", "Dataset", "feature_stats", "standardize", "split_raw", "prepare", "load_dataset"]

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
    for i in range(0, N, chunk):
        total += X[i : i + chunk].sum(axis=0, dtype=np.float64)
    mean = total / N
    sq = np.zeros(d)
    for i in range(0, N, chunk):
        c = X[i : i + chunk] - mean
        sq += np.einsum("ij,ij->j", c, c)
    std = np.sqrt(sq / N)
    std[std == 0] = 1.0  # a constant feature (MNIST borders) is centred, not scaled
    return mean, std


def standardize(X: np.ndarray, mean, std, dtype="float32", chunk: int = 4096) -> np.ndarray:
    """``(X - mean) / std`` into a new array of ``dtype``, chunk by chunk."""
    dtype = np.dtype(dtype)
    out = np.empty(X.shape, dtype)
    m = mean.astype(dtype)
    inv = (1.0 / std).astype(dtype)
    for i in range(0, len(X), chunk):
        o = out[i : i + chunk]
        np.subtract(X[i : i + chunk], m, out=o, dtype=dtype)
        o *= inv
    return out


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
    mean, std = feature_stats(Xtr)
    return Dataset(
        standardize(Xtr, mean, std, dtype),
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


def load_dataset(config: DataConfig, root=None, dtype="float32", progress=None) -> Dataset:
    """Read, split and standardize the data that ``config`` describes.

    ``root`` (from ``--data``) overrides ``config.path``; without either, ``$KLAYER_DATA`` or the
    user cache is used.
    """
    root = root if root is not None else config.path
    if config.dataset == "idx":
        if root is None:
            raise ConfigError("data.path (or --data) must name the folder of IDX files")
        raw = load_idx_folder(root)
    else:
        names = ("data_batch_1", "data_batch_2", "test_batch") if config.split == "batch1" else None
        kwargs = {"batches": names} if names else {}
        raw = load_cifar10(root, config.layout, download_missing=config.download, progress=progress, **kwargs)
    return prepare(raw, config.split, config.n_val, dtype)
