"""A strict reader of MATLAB level-5 MAT-files (``save -v6`` / ``-v7``), for numeric and char arrays.

Why not ``scipy.io.loadmat``: fed corrupt bytes it can write out of bounds and crash the process
later (found by this project's fuzzing), so a corrupt file could take klayer down instead of
getting a one-line error. This reader checks every length against the bytes that are there
before it reads anything, caps decompression, and returns only what CIFAR-10 batches and
students' files hold: real numeric, logical and char arrays of any shape. Cells, structs,
objects, sparse and complex arrays are refused with one line, as are MATLAB v4 and v7.3 (HDF5)
files.

Format: a 128-byte header (text, subsystem offset, version ``0x0100``, endian indicator ``IM``
or ``MI``), then data elements, each a tag (type, byte count; or the 4-byte "small element" form)
and its data padded to 8 bytes. ``miCOMPRESSED`` elements hold one zlib-compressed element.
``miMATRIX`` elements hold array flags, dimensions, the name and the real part, column-major.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import DataError

__all__ = ["read_mat", "MAX_BYTES"]

MAX_BYTES = 2**31  # largest array or decompressed element we accept

_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_CHAR = {16: "u1", 17: "u2", 18: "u4", 4: "u2", 2: "u1"}  # utf8, utf16, utf32, uint16, uint8
_MX = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_MX_NAMES = {1: "cell array", 3: "object", 5: "sparse matrix", 16: "function handle", 17: "opaque"}
_MI_MATRIX, _MI_COMPRESSED, _MX_CHAR, _MX_STRUCT = 14, 15, 4, 2


class _Reader:
    def __init__(self, data: bytes, path, endian: str):
        self.data, self.path, self.e = data, path, endian

    def fail(self, problem: str):
        raise DataError(self.path, f"not a valid MATLAB file ({problem})")

    def u32(self, buf: bytes, pos: int) -> int:
        return int(np.frombuffer(buf, self.e + "u4", 1, pos)[0])

    def tag(self, buf: bytes, pos: int) -> tuple[int, int, int, int]:
        """``(type, nbytes, data_start, next_element)`` of the element at ``pos`` of ``buf``."""
        if pos + 8 > len(buf):
            self.fail(f"element tag at byte {pos} is cut off")
        first = self.u32(buf, pos)
        if first >> 16:  # small element: type and size in one word, data in the next four bytes
            mtype, n = first & 0xFFFF, first >> 16
            if n > 4:
                self.fail(f"small element at byte {pos} claims {n} bytes")
            return mtype, n, pos + 4, pos + 8
        mtype, n = first, self.u32(buf, pos + 4)
        end = pos + 8 + n
        if end > len(buf):
            self.fail(f"element at byte {pos} claims {n} bytes, only {len(buf) - pos - 8} remain")
        return mtype, n, pos + 8, end if mtype == _MI_COMPRESSED else pos + 8 + (n + 7) // 8 * 8

    def numeric(self, buf, mtype, n, start, types) -> np.ndarray:
        if mtype not in types:
            self.fail(f"unexpected data type {mtype}")
        dt = np.dtype(self.e + types[mtype])
        if n % dt.itemsize:
            self.fail(f"{n} bytes is not a whole number of {dt} values")
        return np.frombuffer(buf, dt, n // dt.itemsize, start)

    def matrix(self, buf: bytes, start: int, end: int, depth: int = 0) -> tuple[str, np.ndarray | dict]:
        pos = start
        parts = []
        while pos < end and len(parts) < 3:
            mtype, n, dstart, pos = self.tag(buf, pos)
            if dstart + n > end:
                self.fail("an array's part runs past its element")
            parts.append((mtype, n, dstart))
        if len(parts) < 3:
            self.fail("an array lacks its flags, dimensions or name")
        (ft, fn, fs), (dt_, dn, ds), (nt, nn, ns) = parts[:3]
        if ft != 6 or fn != 8 or dt_ != 5 or nt not in (1, 2):
            self.fail("malformed array header")
        flags = self.u32(buf, fs)
        mx, complex_ = flags & 0xFF, bool(flags & 0x800)
        name = bytes(buf[ns : ns + nn]).decode("latin-1")
        if mx in _MX_NAMES:
            self.fail(f"variable {name!r} is a {_MX_NAMES[mx]}; only numeric, char and struct arrays are read")
        if mx == _MX_STRUCT:
            return name, self.struct(buf, pos, end, name, dt_, dn, ds, depth)
        if pos < end:
            mtype, n, dstart, _ = self.tag(buf, pos)
            if dstart + n > end:
                self.fail("an array's part runs past its element")
            parts.append((mtype, n, dstart))
        if complex_:
            self.fail(f"variable {name!r} is complex")
        if mx != _MX_CHAR and mx not in _MX:
            self.fail(f"variable {name!r} has unknown class {mx}")
        dims = self.numeric(buf, dt_, dn, ds, {5: "i4"})
        if len(dims) < 2 or (dims < 0).any():
            self.fail(f"variable {name!r} has dimensions {dims.tolist()}")
        count = int(np.prod(dims.astype(np.int64)))
        if count > MAX_BYTES:
            self.fail(f"variable {name!r} is too large ({dims.tolist()})")
        if len(parts) < 4:
            if count:
                self.fail(f"variable {name!r} has no data")
            values = np.zeros(0, _MX.get(mx, "u2"))
        else:
            rt, rn, rs = parts[3]
            values = self.numeric(buf, rt, rn, rs, _MI_CHAR if mx == _MX_CHAR else _MI)
            if len(values) != count:
                self.fail(f"variable {name!r} has {len(values)} values for dimensions {dims.tolist()}")
        shape = tuple(int(d) for d in dims)
        if mx == _MX_CHAR:
            chars = values.reshape(shape, order="F")
            return name, np.array(["".join(map(chr, row)) for row in chars.reshape(shape[0], -1)])
        if flags & 0x200:  # logical
            return name, values.reshape(shape, order="F").astype(bool)
        return name, values.astype(_MX[mx]).reshape(shape, order="F")

    def struct(self, buf, pos, end, name, dt_, dn, ds, depth) -> dict:
        """A 1 x 1 struct: field-name length, field names, then one array element per field."""
        dims = self.numeric(buf, dt_, dn, ds, {5: "i4"})
        if dims.tolist() != [1, 1]:
            self.fail(f"variable {name!r} is a struct array of size {dims.tolist()}; only 1 x 1 structs are read")
        if depth > 8:
            self.fail(f"variable {name!r} nests structs too deeply")
        lt, ln, ls, pos = self.tag(buf, pos)
        nt, nn, ns, pos = self.tag(buf, pos)
        if lt != 5 or ln != 4 or nt not in (1, 2) or ns + nn > end:
            self.fail(f"variable {name!r}: malformed struct field names")
        width = int(self.numeric(buf, lt, ln, ls, {5: "i4"})[0])
        if width < 1 or nn % width:
            self.fail(f"variable {name!r}: malformed struct field names")
        raw = bytes(buf[ns : ns + nn])
        fields = [raw[i : i + width].split(b"\0")[0].decode("latin-1") for i in range(0, nn, width)]
        out = {}
        for field in fields:
            mtype, n, start, pos = self.tag(buf, pos)
            if mtype != _MI_MATRIX or start + n > end:
                self.fail(f"variable {name!r}: field {field!r} is not an array")
            out[field] = self.matrix(buf, start, start + n, depth + 1)[1]
        return out

    def elements(self, buf: bytes, depth: int = 0) -> dict:
        out = {}
        pos = 0
        while pos < len(buf):
            if len(buf) - pos < 8 and not any(buf[pos:]):
                break  # trailing padding
            mtype, n, start, nxt = self.tag(buf, pos)
            if mtype == _MI_COMPRESSED:
                if depth:
                    self.fail("nested compressed element")
                d = zlib.decompressobj()
                try:
                    inner = d.decompress(bytes(buf[start : start + n]), MAX_BYTES)
                except zlib.error as e:
                    self.fail(f"corrupt compressed element at byte {pos}: {e}")
                if d.unconsumed_tail:
                    self.fail(f"compressed element at byte {pos} expands beyond {MAX_BYTES} bytes")
                out.update(self.elements(inner, depth + 1))
            elif mtype == _MI_MATRIX:
                name, value = self.matrix(buf, start, start + n)
                out[name] = value
            else:
                self.fail(f"unexpected top-level element type {mtype} at byte {pos}")
            pos = nxt
        return out


def read_mat(data: bytes, path) -> dict[str, np.ndarray]:
    """The variables of a MAT-file's bytes: name -> array (char arrays as arrays of str).

    Raises
    ------
    DataError
        Anything malformed, truncated, too large or unsupported, in one line naming ``path``.
    """
    data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(data) >= 8 and bytes(data[:8]) == b"\x89HDF\r\n\x1a\n" or bytes(data[512:520]) == b"\x89HDF\r\n\x1a\n":
        raise DataError(path, "MATLAB v7.3 (HDF5) files are not supported; save with -v7 or -v6")
    if len(data) < 128:
        raise DataError(path, f"not a valid MATLAB file ({len(data)} bytes, shorter than its header)")
    marker = bytes(data[126:128])
    if marker not in (b"IM", b"MI"):
        raise DataError(path, "not a MATLAB level-5 MAT-file (no endian indicator; v4 files are not supported)")
    reader = _Reader(bytes(data), path, "<" if marker == b"IM" else ">")
    version = int(np.frombuffer(reader.data, reader.e + "u2", 1, 124)[0])
    if version != 0x0100:
        raise DataError(path, f"not a valid MATLAB file (version {version:#06x})")
    return reader.elements(memoryview(reader.data)[128:])
