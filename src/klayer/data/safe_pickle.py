"""A restricted unpickler: CIFAR-10 batches load, anything that would run code does not.

A pickle can name any importable callable and call it while loading (``os.system`` is the usual
example). CIFAR batches need only three globals: ``numpy.ndarray``, ``numpy.dtype`` and
``numpy.core.multiarray._reconstruct`` (``numpy._core`` in NumPy 2). Batches re-saved by Python 3
with protocol 2 also store ``bytes`` as ``_codecs.encode(text, "latin1")``; that one is allowed
through a wrapper that accepts the latin-1 codec only. Batches written with protocol 5
(``pickle.HIGHEST_PROTOCOL``) store arrays as ``numpy._core.numeric._frombuffer``, and labels
given as a list of NumPy integers are ``numpy._core.multiarray.scalar``; both are allowed through
stand-ins too. Every other global is refused before anything is imported or called.

Even the allowed numpy globals never see the pickle's arguments: they are replaced by stand-ins
that validate the array's shape, dtype (plain numeric types only) and byte count and then build
it with ``numpy.frombuffer``. Crafted ``__setstate__`` arguments reach no C code (fuzzing found
that numpy's own reconstruction could be crashed by them).

A few KB of pickle can also describe 2**40 objects by referring to one list (or tuple) from two
places at every level of a chain. Two guards keep loading linear in the file's size: dict keys and
set items must be plain scalars (hashing a shared-reference tuple would walk every path through
it), and materialization visits at most :func:`node_budget` objects.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from ..errors import DataError

__all__ = ["safe_loads", "node_budget"]

MAX_ELEMENTS = 2**31
_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin-1", errors="strict")


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` may use it."""


class _DType:
    """Stands for ``numpy.dtype(name, align, copy)``; its pickled state may set the byte order."""

    def __init__(self, name, align=False, copy=True):
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if not isinstance(name, str) or name.lstrip("<>|=") not in _DTYPES:
            raise pickle.UnpicklingError(f"dtype {name!r} is not allowed")
        self.dtype = np.dtype(name.lstrip("<>|="))

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2:
            raise pickle.UnpicklingError("bad dtype state")
        order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"bad byte order {order!r}")
        if self.dtype.itemsize > 1 and order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _Array:
    """Stands for an array while unpickling; :meth:`__setstate__` validates its state and builds
    the array from the raw bytes with ``numpy.frombuffer`` (numpy never sees crafted state)."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NDArrayClass:
            raise pickle.UnpicklingError("_reconstruct of something other than ndarray")
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("bad array state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and 0 <= n < MAX_ELEMENTS for n in shape):
            raise pickle.UnpicklingError(f"bad array shape {shape!r}")
        if not isinstance(dtype, _DType) or not isinstance(fortran, bool):
            raise pickle.UnpicklingError("bad array dtype or order")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, bytes):
            raise pickle.UnpicklingError("array data is not bytes")
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n > MAX_ELEMENTS or n * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(f"{len(raw)} data bytes for shape {shape} of {dtype.dtype}")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls, shape, typecode):
    return _Array(cls, shape, typecode)


def _frombuffer(buf, dtype, shape, order):
    """Stands for ``numpy._core.numeric._frombuffer``: an array of protocol 5, its data in band."""
    if order not in ("C", "F") or not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError("bad array buffer or order")
    array = _Array(_NDArrayClass, (0,), b"b")
    array.__setstate__((shape, dtype, order == "F", bytes(buf)))
    return array


def _scalar(dtype, raw):
    """Stands for ``numpy._core.multiarray.scalar``: one number of a plain numeric dtype."""
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("bad scalar dtype")
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError(f"bad {dtype.dtype} scalar data")
    return np.frombuffer(raw, dtype.dtype)[0]


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): _NDArrayClass,
    ("numpy", "dtype"): _DType,
}


class _Refused(Exception):
    pass


_HASHABLE = (str, bytes, int, float, bool, type(None))


def _plain_keys(load, keys):
    """``load`` (an opcode's handler) after checking that the dict keys or set items it is about
    to hash are plain scalars: hashing a tuple walks it, and a tuple that refers to one tuple from
    two places at every level is a few bytes of pickle but 2**40 steps of hashing."""

    def checked(self):
        for k in keys(self.stack):
            if type(k) not in _HASHABLE:
                raise pickle.UnpicklingError(f"a dict key or set item of type {type(k).__name__}")
        load(self)

    return checked


class _RestrictedUnpickler(pickle._Unpickler):  # the Python one: its handlers can be wrapped
    dispatch = dict(pickle._Unpickler.dispatch)
    for _op, _keys in (
        (pickle.SETITEM, lambda st: st[-2:-1]),
        (pickle.SETITEMS, lambda st: st[0::2]),
        (pickle.DICT, lambda st: st[0::2]),
        (pickle.ADDITEMS, lambda st: st),
        (pickle.FROZENSET, lambda st: st),
    ):
        dispatch[_op[0]] = _plain_keys(dispatch[_op[0]], _keys)
    del _op, _keys

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class _TooLarge(Exception):
    pass


def _materialize(obj, budget: list, depth=0):
    """Replace the stand-ins of a loaded object by real arrays (dicts, lists and tuples walked).

    The walk visits the object *tree*: an object referenced twice is visited twice. A pickle can
    reference one list from two places at every level of a 40-level chain (a few KB of opcodes,
    2**40 visits), so every visit spends one unit of ``budget[0]``, which is sized from the file:
    the walk stays linear in the file's size and a shared-reference bomb is refused.
    """
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if depth > 50:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without its data")
        return obj.array
    if isinstance(obj, (_DType, _NDArrayClass)) or obj is _NDArrayClass:
        raise pickle.UnpicklingError("a bare dtype or class where data was expected")
    if isinstance(obj, dict):
        return {_materialize(k, budget, depth + 1): _materialize(v, budget, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, budget, depth + 1) for v in obj)
    return obj


def node_budget(n_bytes: int) -> int:
    """How many objects a pickle of ``n_bytes`` may expand to: every object of a pickle written
    without shared references costs at least one opcode byte, so a tree larger than this can only
    come from references to one object made many times over."""
    return 2 * n_bytes + 1024


def safe_loads(data: bytes, path) -> object:
    """Unpickle ``data`` (read from ``path``, named in errors) allowing only CIFAR's globals.

    Raises
    ------
    DataError
        If the pickle refers to any other global, is not a valid pickle, or its objects, counted
        as a tree, outnumber what its size allows (:func:`node_budget`).
    """
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        return _materialize(loaded, [node_budget(len(data))])
    except _TooLarge:
        raise DataError(
            path,
            f"refused to unpickle: its objects expand to more than {node_budget(len(data))} items, far more "
            f"than {len(data)} bytes can hold without references to one object repeated many times over",
        ) from None
    except _Refused as e:
        raise DataError(path, f"refused to unpickle: it refers to {e}, which could run code") from None
    except Exception as e:  # truncated or garbage data: pickle raises many kinds of errors
        raise DataError(path, f"not a valid CIFAR pickle ({type(e).__name__}: {e})") from None
