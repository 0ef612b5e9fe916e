"""Safetensors files that prove their own integrity: a SHA-256 per tensor and of the metadata.

Model files and checkpoints are safetensors files whose metadata holds ``sha256``: a JSON object
mapping every tensor name (and ``__metadata__``, for the other metadata) to the hex SHA-256 of
its dtype, shape and bytes. :func:`read_tensors` checks the container (header length, offsets:
a truncated file names the tensor that is cut off), then every digest, so a flipped bit anywhere
is reported with the tensor or field it hit. Every problem is a
:class:`~klayer.errors.ModelFileError` that names the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..errors import ModelFileError
from ..io import atomic_write

__all__ = ["tensor_digest", "encode_tensors", "write_tensors", "read_tensors", "MAX_HEADER"]

MAX_HEADER = 100 * 2**20  # bytes of JSON header we are willing to parse


def tensor_digest(a: np.ndarray) -> str:
    """Hex SHA-256 of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _meta_digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def encode_tensors(tensors: dict, meta: dict) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` and ``meta`` (str -> str) with digests.

    The same tensors and metadata give the same bytes: safetensors writes the metadata in the
    order of a Rust hash map, different at every call, so the header is written again with the
    metadata's keys sorted (the tensors' entries and data unchanged; their offsets are relative
    to the end of the header)."""
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    digests = {k: tensor_digest(v) for k, v in tensors.items()}
    digests["__metadata__"] = _meta_digest(meta)
    raw = st_save(tensors, metadata={**meta, "sha256": json.dumps(digests, sort_keys=True)})
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def write_tensors(path, tensors: dict, meta: dict) -> Path:
    """Write :func:`encode_tensors` atomically to ``path``."""
    return atomic_write(path, encode_tensors(tensors, meta))


def _header(raw: bytes, path) -> dict:
    if len(raw) < 8:
        raise ModelFileError(path, f"not a safetensors file (only {len(raw)} bytes)")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER:
        raise ModelFileError(path, f"not a safetensors file (header length {n})")
    if 8 + n > len(raw):
        raise ModelFileError(path, f"truncated: the header needs {8 + n} bytes, the file has {len(raw)}")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(path, "corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "corrupt safetensors header (not a JSON object)")
    body = len(raw) - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise ModelFileError(path, "corrupt safetensors metadata")
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(path, f"tensor {name}: corrupt header entry") from None
        if end > body:
            raise ModelFileError(path, f"truncated: tensor {name} ends at byte {end} of a {body}-byte data section")
    return header


def read_tensors(path, kind: str = "file") -> tuple[dict, dict]:
    """Read and verify a file written by :func:`write_tensors`.

    Returns
    -------
    tensors : dict name -> array; meta : dict of the metadata strings (without ``sha256``).

    Raises
    ------
    ModelFileError
        Missing, unreadable, truncated or corrupt file, a missing digest, or a tensor or the
        metadata not matching its digest; the message names the file and the tensor or field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path, f"{kind} not found") from None
    except IsADirectoryError:
        raise ModelFileError(path, f"is a folder, not a {kind}") from None
    except OSError as e:
        raise ModelFileError(path, f"cannot read ({e.strerror or e})") from None
    _header(raw, path)
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError, TypeError, OverflowError) as e:
        raise ModelFileError(path, f"corrupt safetensors data ({e})") from None
    n = int.from_bytes(raw[:8], "little")
    meta = dict(json.loads(raw[8 : 8 + n]).get("__metadata__", {}))
    if "sha256" not in meta:
        raise ModelFileError(path, f"no sha256 in the metadata: not a {kind} written by this klayer")
    try:
        digests = json.loads(meta.pop("sha256"))
        if not isinstance(digests, dict):
            raise ValueError
    except ValueError:
        raise ModelFileError(path, "corrupt metadata field sha256") from None
    if digests.get("__metadata__") != _meta_digest(meta):
        changed = [k for k in sorted(meta)] or ["(none)"]
        raise ModelFileError(path, f"metadata does not match its SHA-256 (corrupt field among {', '.join(changed)})")
    for name in sorted(set(digests) - {"__metadata__"} - set(tensors)):
        raise ModelFileError(path, f"tensor {name} is missing")
    for name, a in sorted(tensors.items()):
        if name not in digests:
            raise ModelFileError(path, f"tensor {name} has no SHA-256 (not written by klayer)")
        if tensor_digest(a) != digests[name]:
            raise ModelFileError(path, f"tensor {name} does not match its SHA-256 (corrupt data)")
    return tensors, meta
