"""CIFAR-10 in its three official layouts, from an archive or its extracted folder.

Layouts (Krizhevsky, 2009; https://www.cs.toronto.edu/~kriz/cifar.html):

========  =======================  =========================  =====================================
layout    archive                  folder                     batch files
========  =======================  =========================  =====================================
python    cifar-10-python.tar.gz   cifar-10-batches-py        ``data_batch_1..5``, ``test_batch``:
                                                              pickled dicts (``b"data"``, ``b"labels"``)
binary    cifar-10-binary.tar.gz   cifar-10-batches-bin       ``*.bin``: per image 1 label byte and
                                                              3072 pixel bytes
matlab    cifar-10-matlab.tar.gz   cifar-10-batches-mat       ``*.mat``: ``data`` and ``labels``
========  =======================  =========================  =====================================

Every batch comes back as ``X: (N, 3072) uint8`` (1024 red, 1024 green, 1024 blue values, each
32x32 row-major) and ``y: (N,) int64`` in ``[0, 10)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .archive import read_members
from .download import download
from .matfile import read_mat
from .safe_pickle import safe_loads
from .validate import check_labels

__all__ = [
    "BATCHES",
    "LAYOUTS",
    "CLASSES",
    "RawData",
    "default_data_dir",
    "find_cifar10",
    "load_cifar10",
    "parse_python_batch",
    "parse_binary_batch",
    "parse_matlab_batch",
]

BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
N_FEATURES = 3072
N_CLASSES = 10
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Layout:
    name: str
    archive: str
    folder: str
    suffix: str
    md5s: frozenset  # accepted md5 of the archive


LAYOUTS = {
    "python": Layout(
        "python",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        "",
        # the official archive, and the shared JPEG-re-encoded copy used on the project's machines
        frozenset({"c58f30108f718f92721af3b95e74349a", "fc8832d3986e8d0d7b203ef24c08baea"}),
    ),
    "binary": Layout(
        "binary",
        "cifar-10-binary.tar.gz",
        "cifar-10-batches-bin",
        ".bin",
        frozenset({"c32a1d4ab5d03f1284b67883e8d87530"}),
    ),
    "matlab": Layout(
        "matlab",
        "cifar-10-matlab.tar.gz",
        "cifar-10-batches-mat",
        ".mat",
        frozenset({"70270af85842c9e89bb428ec9976c926"}),
    ),
}


@dataclass
class RawData:
    """Unprocessed batches: name -> ``(X uint8 (N, D), y int64 (N,))``, and where they came from."""

    batches: dict
    source: str
    layout: str
    n_classes: int = N_CLASSES
    classes: tuple[str, ...] = CLASSES
    image_shape: tuple[int, int, int] | None = (3, 32, 32)


def default_data_dir() -> Path:
    """``$KLAYER_DATA``, else ``$XDG_CACHE_HOME/klayer`` (``~/.cache/klayer``)."""
    env = os.environ.get("KLAYER_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "klayer"


def _check_batch(X, y, path, n_features=N_FEATURES, n_classes=N_CLASSES):
    if X.ndim != 2 or X.shape[1] != n_features:
        raise DataError(path, f"data has shape {X.shape}, expected (N, {n_features})")
    if len(y) != len(X):
        raise DataError(path, f"{len(y)} labels for {len(X)} images")
    if len(X) == 0:
        raise DataError(path, "batch holds no images")
    if y.min() < 0 or y.max() >= n_classes:
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise DataError(path, f"label {bad} out of range [0, {n_classes})")
    return X, y.astype(np.int64)


def parse_python_batch(data: bytes, path):
    """A pickled batch (python layout), unpickled with the restricted unpickler."""
    d = safe_loads(data, path)
    if not isinstance(d, dict):
        raise DataError(path, f"expected a dict, found {type(d).__name__}")
    for key in (b"data", b"labels"):
        if key not in d and key.decode() not in d:
            raise DataError(path, f"missing key {key.decode()!r}")
    X = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8:
        raise DataError(path, "'data' is not a uint8 array")
    try:
        y = np.asarray(labels)
    except Exception:
        raise DataError(path, "'labels' is not a list of integers") from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(path, "'labels' is not a list of integers")
    return _check_batch(X, y, path)


def parse_binary_batch(data: bytes, path):
    """A ``.bin`` batch: records of 1 label byte and 3072 pixel bytes."""
    rec = N_FEATURES + 1
    if len(data) == 0 or len(data) % rec:
        raise DataError(path, f"size {len(data)} bytes is not a positive multiple of {rec} (truncated?)")
    a = np.frombuffer(data, np.uint8).reshape(-1, rec)
    return _check_batch(a[:, 1:], a[:, 0].astype(np.int64), path)


def _whole_pixels(X: np.ndarray, path) -> np.ndarray:
    """``X`` as uint8 when every value is a whole number in 0..255; else DataError naming the first
    value that is not (its row and column)."""
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise DataError(path, f"data has shape {X.shape}, expected (N, {N_FEATURES})")
    with np.errstate(invalid="ignore"):
        bad = ~((X >= 0) & (X <= 255))  # NaN fails both
        if X.dtype.kind == "f":
            bad |= X != np.round(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(path, f"'data': row {i}, column {j}: value {X[i, j].item()} is not a whole number in 0..255")
    return X.astype(np.uint8)


def parse_matlab_batch(data: bytes, path):
    """A ``.mat`` batch (MATLAB v5) with ``data (N, 3072)`` and ``labels (N, 1)``: integers, or whole
    numbers stored as MATLAB's default double (pixels in 0..255, labels in 0..9)."""
    d = read_mat(data, path)
    for key in ("data", "labels"):
        if key not in d:
            raise DataError(path, f"missing variable {key!r}")
    X, y = d["data"], np.asarray(d["labels"])
    if isinstance(X, np.ndarray) and X.dtype != np.uint8 and X.dtype != bool and X.dtype.kind in "iuf":
        X = _whole_pixels(X, path)  # MATLAB's default double, or another integer class
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8:
        raise DataError(path, "'data' is not a uint8 matrix")
    if np.issubdtype(y.dtype, np.floating):  # MATLAB's default class: whole numbers in range only
        y = check_labels(y.reshape(-1), f"{path}: 'labels'", N_CLASSES)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(path, "'labels' is not an integer vector")
    return _check_batch(X, y.reshape(-1), path)  # range-checked before the cast to int64


_PARSERS = {
    "python": parse_python_batch,
    "binary": parse_binary_batch,
    "matlab": parse_matlab_batch,
}


def _folder_has(folder: Path, layout: Layout) -> bool:
    return (folder / f"data_batch_1{layout.suffix}").is_file()


def find_cifar10(root, layout: str = "auto"):
    """Where CIFAR-10 is under ``root``: ``(kind, path, layout)`` or None.

    ``root`` may be a batches folder, a folder holding one (or its archive), or an archive file.
    Folders win over archives (they load faster); layouts are tried as python, binary, matlab.
    """
    root = Path(root)
    names = list(LAYOUTS) if layout == "auto" else [layout]
    if root.is_file():
        for name in names:
            if root.name == LAYOUTS[name].archive:
                return "archive", root, name
        return "archive", root, names[0]
    for name in names:
        lay = LAYOUTS[name]
        for folder in (root / lay.folder, root):
            if folder.is_dir() and _folder_has(folder, lay):
                return "folder", folder, name
        if (root / lay.archive).is_file():
            return "archive", root / lay.archive, name
    return None


def load_cifar10(
    root=None,
    layout: str = "auto",
    download_missing: bool = False,
    batches=BATCHES,
    url: str | None = None,
    md5: str | None = None,
    progress: bool | None = None,
) -> RawData:
    """Read CIFAR-10 batches, downloading the archive first if absent and allowed.

    Parameters
    ----------
    root : data folder (default :func:`default_data_dir`), batches folder or archive path.
    layout : ``"auto"``, ``"python"``, ``"binary"`` or ``"matlab"``.
    download_missing : fetch the archive (python layout under ``"auto"``) when nothing is found.
    batches : names of the batches to read.
    url, md5 : download address and expected md5 (default: the official URL, the known md5s;
        also settable by ``$KLAYER_CIFAR10_URL`` and ``$KLAYER_CIFAR10_MD5``).

    Returns
    -------
    RawData with ``batches[name] = (X uint8 (N, 3072), y int64 (N,))``.
    """
    if layout not in ("auto", *LAYOUTS):
        raise DataError(layout, f"unknown CIFAR-10 layout; use auto, {', '.join(LAYOUTS)}")
    root = Path(root) if root is not None else default_data_dir()
    found = find_cifar10(root, layout)
    if found is None:
        if not download_missing:
            raise DataError(
                root,
                "no CIFAR-10 here (looked for the python, binary and matlab layouts, as folders "
                "and .tar.gz); drop --no-download (data.download = true) to fetch it, or point --data / "
                "KLAYER_DATA at it",
            )
        lay = LAYOUTS["python" if layout == "auto" else layout]
        url = url or os.environ.get("KLAYER_CIFAR10_URL") or OFFICIAL_URL + lay.archive
        md5 = md5 or os.environ.get("KLAYER_CIFAR10_MD5")
        if root.suffix == ".gz":
            raise DataError(root, "archive not found")
        download(url, root / lay.archive, {md5} if md5 else set(lay.md5s), progress=progress)
        found = ("archive", root / lay.archive, lay.name)
    kind, path, name = found
    lay = LAYOUTS[name]
    parse = _PARSERS[name]
    files = {b + lay.suffix: b for b in batches}
    out = {}
    if kind == "folder":
        for fname, b in files.items():
            p = path / fname
            if not p.is_file():
                raise DataError(p, "missing batch file")
            out[b] = parse(p.read_bytes(), p)
    else:
        raw = read_members(path, files)
        for fname, b in files.items():
            if b not in raw:
                raise DataError(path, f"missing batch {fname!r} in the archive")
            out[b] = parse(raw.pop(b), f"{path}:{fname}")
    return RawData(out, str(path), name)
