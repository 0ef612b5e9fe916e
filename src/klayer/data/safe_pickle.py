"""A restricted unpickler: CIFAR-10 batches load, anything that would run code does not.

A pickle can name any importable callable and call it while loading (``os.system`` is the usual
example). CIFAR batches need only three globals: ``numpy.ndarray``, ``numpy.dtype`` and
``numpy.core.multiarray._reconstruct`` (``numpy._core`` in NumPy 2). Batches re-saved by Python 3
with protocol 2 also store ``bytes`` as ``_codecs.encode(text, "latin1")``; that one is allowed
through a wrapper that accepts the latin-1 codec only. Every other global is refused before
anything is imported or called.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from ..errors import DataError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["safe_loads"]


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin-1", errors="strict")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Refused(Exception):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def safe_loads(data: bytes, path) -> object:
    """Unpickle ``data`` (read from ``path``, named in errors) allowing only CIFAR's globals.

    Raises
    ------
    DataError
        If the pickle refers to any other global, or is not a valid pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as e:
        raise DataError(path, f"refused to unpickle: it refers to {e}, which could run code") from None
    except Exception as e:  # truncated or garbage data: pickle raises many kinds of errors
        raise DataError(path, f"not a valid CIFAR pickle ({type(e).__name__}: {e})") from None
