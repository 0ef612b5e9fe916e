"""Splits and standardization, as the assignments do them.

Split protocols (``DataConfig.split``):

- ``"batch1"``: train on ``data_batch_1``, validate on ``data_batch_2`` (assignment 2's first part).
- ``"all"``: all five training batches, the last ``n_val`` images for validation (5000 in
  assignment 3, 1000 in assignment 2's last part; any size works).

The test set is always the test batch. Features are standardized per feature with the mean and
standard deviation of the training split only, applied to every split. The splits stay raw
(``uint8`` pixels) in memory; :meth:`Dataset.features` standardizes a mini-batch or a chunk at a
time, so no float copy of the data is ever made.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ..errors import ConfigError, DataError
from ..schema import Bool, Float, Int, Text, fail, schema
from .cifar10 import RawData, load_cifar10
from .idx import load_idx_folder
from .validate import check_labels, check_rows

__all__ = [
    "DataConfig",
    "Dataset",
    "feature_stats",
    "standardize",
    "split_raw",
    "prepare",
    "load_dataset",
    "load_raw",
]


# the largest image a row may hold: [3, 1024, 1024]; a fully connected first layer of 50 units on it
# is 157 million weights (630 MB in float32), each image 3 MB
MAX_IMAGE_FEATURES = 3 * 1024 * 1024


@schema("data")
class DataConfig:
    """Where the data is and how it is split: the ``[data]`` table of an experiment file.

    Attributes
    ----------
    dataset : ``"cifar10"``, ``"idx"`` (a folder of MNIST-style files) or ``"images"`` (an image
        folder, one sub-folder per class: :mod:`klayer.data.images`).
    path : data folder, batches folder or archive (a non-empty string); None means ``--data``,
        ``$KLAYER_DATA`` or the user cache. Required for ``dataset = "idx"`` or ``"images"`` unless
        ``--data`` is given.
    layout : CIFAR-10 layout, ``"auto"``, ``"python"``, ``"binary"`` or ``"matlab"``.
    split : ``"all"`` or ``"batch1"`` (CIFAR-10 only).
    n_val : validation images taken from the end of the training data under ``split="all"``,
        at least 1 (and fewer than the training images, checked when the data is loaded).
    download : fetch CIFAR-10 (verified md5) when it is not found.
    image_shape : ``[channels, height, width]`` images are resized to (``"images"`` only;
        default ``[3, 32, 32]``; at most ``MAX_IMAGE_FEATURES`` = 3 x 1024 x 1024 values).
    whiten : ``"none"`` or ``"zca"``: ZCA-whiten the standardized features (computed once from
        the training split; :mod:`klayer.data.whiten`). Augmentation then acts on whitened images.
    zca_eps : ZCA's regularization, relative to the mean eigenvalue of the covariance (> 0).
    """

    dataset: Literal["cifar10", "idx", "images"] = "cifar10"
    path: Annotated[Text, Field(min_length=1)] | None = None
    layout: Literal["auto", "python", "binary", "matlab"] = "auto"
    split: Literal["all", "batch1"] = "all"
    n_val: Annotated[Int, Field(ge=1)] = 5000
    download: Bool = True
    image_shape: tuple[Annotated[Int, Field(ge=1, le=4096)], ...] | None = None
    whiten: Literal["none", "zca"] = "none"
    zca_eps: Annotated[Float, Field(gt=0)] = 0.1

    @model_validator(mode="after")
    def _cross(self):
        if self.dataset != "cifar10" and self.split != "all":
            fail(f"`split` {self.split!r} is CIFAR-10 only; {self.dataset} data takes split = 'all'")
        if self.image_shape is not None:
            if self.dataset != "images":
                fail(f"`image_shape` must be left out unless `dataset` is 'images', got `dataset` = {self.dataset!r}")
            if len(self.image_shape) != 3 or self.image_shape[0] not in (1, 3):
                fail(f"`image_shape` must be [channels (1 or 3), height, width], got {list(self.image_shape)}")
            size = int(np.prod(self.image_shape))
            if size > MAX_IMAGE_FEATURES:
                fail(
                    f"`image_shape` {list(self.image_shape)} gives {size:,} features per image, more than "
                    f"{MAX_IMAGE_FEATURES:,} ([3, 1024, 1024]): every image and the first layer's weights would "
                    "not fit in memory; choose a smaller shape (CIFAR-10 is [3, 32, 32])"
                )
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """The splits of a data set, kept raw, with the training split's statistics.

    ``X_*: (N, d)`` are the raw features (``uint8`` pixels for images) and ``y_*: (N,)`` int64
    labels. Standardization happens on the fly, a mini-batch or chunk at a time
    (:meth:`features`), so the data stays in memory at one byte per pixel.

    Attributes
    ----------
    mean, std : (d,) float64 per-feature statistics of the training split.
    n_classes : C.
    source : where the data came from (a path and layout).
    classes : class names, ``C`` strings.
    image_shape : ``(channels, height, width)`` of one row, or None for non-image features.
    dtype : dtype of the standardized features (``"float32"`` or ``"float64"``).
    input_map : None, or ``(mean, std, Z, X_test_raw)`` when the rows are ZCA-whitened: a raw
        row ``x`` became ``((x - mean) / std) @ Z`` (see :meth:`deployable`); the raw test rows
        are kept to evaluate saved models, which take raw rows (:meth:`raw_test`).
    """

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
    classes: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] | None = None
    dtype: str = "float32"
    input_map: tuple | None = None

    def __post_init__(self):
        if not self.classes:
            self.classes = tuple(str(c) for c in range(self.n_classes))
        self._m = self._inv = None

    @property
    def input_size(self) -> int:
        return self.X_train.shape[1]

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def deployable(self, params: dict) -> tuple[dict, np.ndarray, np.ndarray]:
        """Parameters and standardization statistics of a network that takes raw rows: the
        whitening, if any, is folded into the first layer (:func:`klayer.data.whiten.fold_into`)."""
        if self.input_map is None:
            return params, self.mean, self.std
        from .whiten import fold_into

        mean, std, Z, _ = self.input_map
        return fold_into(params, Z), mean, std

    def raw_test(self) -> np.ndarray:
        """The raw test rows, as a saved model (:meth:`deployable`) takes them."""
        return self.X_test if self.input_map is None else self.input_map[3]

    def validate(self) -> Dataset:
        """Check every split before training: real, finite features of one width, labels in
        ``[0, n_classes)``, finite statistics. Raises DataError naming the split, row and column."""
        d = self.input_size
        for split in ("train", "val", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            where = f"{self.source or 'data set'} ({split} split)"
            check_rows(X, where, d)
            check_labels(y, where, self.n_classes, len(X))
        for name in ("mean", "std"):
            a = np.asarray(getattr(self, name))
            if a.shape != (d,) or not np.isfinite(a).all():
                raise DataError(self.source or "data set", f"{name} must be {d} finite numbers")
        if not (np.asarray(self.std) > 0).all():
            raise DataError(self.source or "data set", "std must be positive")
        return self

    def standardization(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, 1 / std)`` in float64, ``(d,)`` each, the affine map :meth:`features` applies;
        None when it is the identity (whitened rows)."""
        self._coefficients(np.dtype(self.dtype))
        if self._identity:
            return None
        return np.asarray(self.mean, np.float64), 1.0 / np.asarray(self.std, np.float64)

    def _coefficients(self, dtype: np.dtype):
        if self._m is None or self._m.dtype != dtype:
            self._m, self._inv = np.asarray(self.mean).astype(dtype), (1.0 / np.asarray(self.std)).astype(dtype)
            # mean 0 and std 1 (whitened rows): x - 0 and x * 1 are x, bit for bit
            self._identity = not self._m.any() and bool((self._inv == 1).all())
        return self._m, self._inv

    def features(self, X: np.ndarray, dtype=None, out: np.ndarray | None = None) -> np.ndarray:
        """Standardized rows ``(X - mean) / std`` of raw ``X: (n, d)``, as ``dtype`` (default
        :attr:`dtype`), written into ``out`` when given. Bit-identical to standardizing the whole
        split at once: ``float(X) - float(mean)``, then times ``float(1 / std)``."""
        dtype = np.dtype(dtype or (out.dtype if out is not None else self.dtype))
        m, inv = self._coefficients(dtype)
        if out is None:
            out = np.empty(X.shape, dtype)
        # the cast first, then in place: the same numbers as ``np.subtract(X, m, dtype=dtype)``
        # (which casts X to dtype before subtracting), without the ufunc's slow casting loop
        np.copyto(out, X, casting="unsafe")
        if not self._identity:
            out -= m
            out *= inv
        return out


def feature_stats(X: np.ndarray, chunk: int = 4096):
    """Per-feature mean and standard deviation (1/N) of raw ``X: (N, d)``, in float64, chunked.

    8-bit data is summed in float32 chunks of 256 rows, exactly (256 * 255**2 < 2**24), and
    accumulated in float64; other data takes two passes (mean, then squared deviations). A
    constant feature (MNIST's borders) gets std 1: it is centred, not scaled.
    """
    N, d = X.shape
    if X.dtype == np.uint8:
        s1, s2 = np.zeros(d), np.zeros(d)
        buf = np.empty((256, d), np.float32)
        for i in range(0, N, 256):
            c = buf[: min(256, N - i)]
            c[...] = X[i : i + 256]
            s1 += c.sum(axis=0)
            s2 += np.einsum("ij,ij->j", c, c)
        mean = s1 / N
        var = np.maximum(s2 / N - mean**2, 0.0)
    else:
        mean = np.zeros(d)
        for i in range(0, N, chunk):
            mean += X[i : i + chunk].astype(np.float64).sum(axis=0)
        mean /= N
        var = np.zeros(d)
        for i in range(0, N, chunk):
            c = X[i : i + chunk] - mean
            var += np.einsum("ij,ij->j", c, c)
        var /= N
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return mean, std


def standardize(X: np.ndarray, mean, std, dtype="float32", chunk: int = 1024) -> np.ndarray:
    """``(X - mean) / std`` of a whole array into a new array of ``dtype``, chunk by chunk."""
    dtype = np.dtype(dtype)
    out = np.empty(X.shape, dtype)
    m, inv = np.asarray(mean).astype(dtype), (1.0 / np.asarray(std)).astype(dtype)
    for i in range(0, len(X), chunk):
        o = out[i : i + chunk]
        np.subtract(X[i : i + chunk], m, out=o, dtype=dtype, casting="unsafe")
        o *= inv
    return out


def split_raw(raw: RawData, split: str = "all", n_val: int = 5000):
    """Raw uint8 ``(X, y)`` for train, val and test, as views where possible."""
    b = raw.batches
    if raw.layout in ("idx", "images"):
        if split != "all":
            raise ConfigError(f"split {split!r} is CIFAR-10 only; use split='all' for {raw.layout} data")
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


def _warn(message: str) -> None:
    print(f"klayer: warning: {message}", file=sys.stderr)


def prepare(
    raw: RawData,
    split: str = "all",
    n_val: int = 5000,
    dtype="float32",
    whiten: str = "none",
    zca_eps: float = 0.1,
    log=_warn,
) -> Dataset:
    """Split ``raw`` and compute the training split's statistics (standardization is applied
    on the fly by :meth:`Dataset.features`).

    With ``whiten="zca"`` every split is standardized and ZCA-whitened once, here
    (:mod:`klayer.data.whiten`), and kept as ``dtype`` rows: the Dataset then standardizes
    nothing (mean 0, std 1) and records the map from raw rows in ``input_map``. ``log`` is told
    in one line when the training split has no more rows than features: its covariance is then
    singular, and the whitening blows up directions that the training rows never vary in.
    """
    (Xtr, ytr), (Xva, yva), (Xte, yte) = split_raw(raw, split, n_val)
    mean, std = feature_stats(Xtr)
    input_map = None
    if whiten == "zca":
        from .whiten import zca_matrix

        n, d = Xtr.shape
        if n <= d:
            log(
                f"{raw.source}: ZCA whitening from {n} training rows of {d} features: their covariance has rank at "
                f"most {n - 1} < {d}, so the whitening is poorly estimated and accuracy usually suffers; use more "
                "training rows (a smaller data.n_val, data.split = 'all') or data.whiten = 'none'"
            )

        raw_test = Xte
        Xtr, Xva, Xte = (standardize(X, mean, std, dtype) for X in (Xtr, Xva, Xte))
        Z = zca_matrix(Xtr, zca_eps, source=f"{raw.source} (train split)")
        Zt = Z.astype(dtype)
        for X in (Xtr, Xva, Xte):
            for i in range(0, len(X), 4096):
                X[i : i + 4096] = X[i : i + 4096] @ Zt
        input_map = (mean, std, Z, raw_test)
        mean, std = np.zeros_like(mean), np.ones_like(std)
    return Dataset(
        Xtr, ytr, Xva, yva, Xte, yte, mean, std, raw.n_classes, raw.source, tuple(raw.classes), raw.image_shape, dtype,
        input_map,
    )  # fmt: skip


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
    if config.dataset == "images":
        from .images import load_image_folder

        if root is None:
            raise ConfigError("data.path (or --data) must name the image folder (one sub-folder per class)")
        return load_image_folder(root, config.image_shape or (3, 32, 32))
    names = ("data_batch_1", "data_batch_2", "test_batch") if config.split == "batch1" else None
    kwargs = {"batches": names} if names else {}
    return load_cifar10(root, config.layout, download_missing=config.download, progress=progress, **kwargs)


def load_dataset(config: DataConfig, root=None, dtype="float32", progress=None) -> Dataset:
    """Read, split and standardize (and whiten) the data that ``config`` describes (see
    :func:`load_raw`)."""
    raw = load_raw(config, root, progress)
    return prepare(raw, config.split, config.n_val, dtype, config.whiten, config.zca_eps)
