"""MNIST-style IDX files (``*-idx3-ubyte``, ``*-idx1-ubyte``), plain or gzipped.

Format (LeCun et al.): two zero bytes, a type byte (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C
int32, 0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 size per
dimension, then the data in C order, big-endian. The header is checked against the file's size
(for gzip: the size in its trailer) before any array is allocated.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import MAX_DEFLATE_RATIO, read_at_most
from .cifar10 import RawData
from .validate import check_labels

__all__ = ["read_idx", "parse_idx", "load_idx_folder"]

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _header(head: bytes, path):
    if len(head) < 4:
        raise DataError(path, "too short for an IDX header")
    if head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
        raise DataError(path, f"bad IDX magic number 0x{head[:4].hex()}")
    ndim = head[3]
    if not 1 <= ndim <= 4:
        raise DataError(path, f"IDX with {ndim} dimensions (expected 1 to 4)")
    if len(head) < 4 + 4 * ndim:
        raise DataError(path, "truncated IDX header")
    shape = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    dtype = np.dtype(_TYPES[head[2]])
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return shape, dtype, 4 + 4 * ndim, n_bytes


def parse_idx(data: bytes, path) -> np.ndarray:
    """An IDX array from the bytes of an uncompressed file."""
    shape, dtype, offset, n_bytes = _header(data[:20], path)
    if len(data) - offset != n_bytes:
        raise DataError(path, f"IDX header says {n_bytes} data bytes for shape {shape}, file has {len(data) - offset}")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzipped (``.gz`` or gzip magic) or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror})") from None
    if raw[:2] != b"\x1f\x8b":
        return parse_idx(raw, path)
    # gzip: validate the header against the trailer's size (mod 2**32) before inflating it all
    if len(raw) < 18:
        raise DataError(path, "truncated gzip file")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
            head = g.read(20)
            shape, dtype, offset, n_bytes = _header(head, path)
            if (offset + n_bytes) % 2**32 != struct.unpack("<I", raw[-4:])[0]:
                raise DataError(path, f"IDX header (shape {shape}) disagrees with the gzip size")
            if offset + n_bytes > MAX_DEFLATE_RATIO * len(raw):
                raise DataError(
                    path,
                    f"IDX header says {n_bytes} data bytes for shape {shape}, more than {len(raw)} gzip bytes can hold",
                )
            body = head + read_at_most(g, offset + n_bytes + 1 - len(head))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"corrupt gzip data ({e})") from None
    return parse_idx(body, path)


_NAMES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find(folder: Path, key: str) -> Path:
    for base in _NAMES[key]:
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(folder / _NAMES[key][0], "missing IDX file (plain or .gz)")


def load_idx_folder(folder) -> RawData:
    """MNIST or Fashion-MNIST from a folder with the four standard IDX files.

    Images of 2 dimensions are grey; images of 3 are colour, channels first (``(N, C, H, W)``,
    ``C`` 1 or 3) or last (``(N, H, W, C)``, made channel-major like CIFAR-10's rows).

    Returns
    -------
    RawData with batches ``train`` and ``test``: ``X (N, rows*cols) uint8``, ``y (N,) int64``.
    """
    folder = Path(folder)
    batches = {}
    for part in ("train", "test"):
        ip, lp = _find(folder, f"{part}_images"), _find(folder, f"{part}_labels")
        X, y = read_idx(ip), read_idx(lp)
        if X.ndim < 2 or X.dtype != np.uint8:
            raise DataError(ip, f"expected uint8 images of 2 or more dimensions, got {X.dtype} {X.shape}")
        if len(X) == 0:
            raise DataError(ip, f"holds no images (shape {X.shape})")
        if 0 in X.shape[1:]:
            raise DataError(ip, f"images of zero size (shape {X.shape})")
        if y.ndim != 1 or len(y) != len(X):
            raise DataError(lp, f"{y.shape} labels for {len(X)} images")
        y = check_labels(y, lp, 10)
        if X.ndim == 4 and X.shape[1] not in (1, 3) and X.shape[3] in (1, 3):
            X = X.transpose(0, 3, 1, 2)  # colour images (N, H, W, C) as channel-major rows, like CIFAR-10's
        batches[part] = (X.reshape(len(X), -1), y)
        shape = X.shape[1:]
    image_shape = (1, *shape) if len(shape) == 2 else shape if len(shape) == 3 and shape[0] in (1, 3) else None
    return RawData(batches, str(folder), "idx", 10, tuple(str(c) for c in range(10)), image_shape)
