"""Writing files so that a fault never leaves a partial file under a final name.

Every output of klayer (JSON, CSV, TOML, safetensors, PNG, HTML) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, are flushed and
fsynced, and the file is renamed over its final name (then the folder is fsynced). A full disk,
a read-only folder or a ``kill -9`` therefore leaves either the old file or the new one, never a
mixture; an ``OSError`` becomes an :class:`~klayer.errors.OutputError` that names the path and
the cause.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import OutputError

__all__ = [
    "atomic_write",
    "write_json",
    "read_json",
    "write_rows",
    "save_figure",
    "ensure_dir",
    "read_at_most",
    "MAX_DEFLATE_RATIO",
]

# deflate cannot compress better than about 1032:1: a header claiming more is forged
MAX_DEFLATE_RATIO = 1100


def _file_mode() -> int:
    """The mode an ordinary new file gets here (0o666 less the umask); mkstemp's is 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def ensure_dir(path) -> Path:
    """Create folder ``path`` (and parents); an OSError becomes an OutputError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(path, e) from None
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename.

    Raises
    ------
    OutputError
        The folder could not be created or the file not written; no temporary file is left and
        any previous file at ``path`` is unchanged.
    """
    path = Path(path)
    ensure_dir(path.parent)
    if isinstance(data, str):
        data = data.encode()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def write_json(path, obj, allow_nan: bool = True) -> Path:
    """``obj`` as indented, key-sorted JSON (NumPy scalars and arrays allowed), atomically.
    ``allow_nan=False``: RFC 8259 JSON, a NaN or infinity raises ValueError before anything is
    written."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=allow_nan)
    return atomic_write(path, text + "\n")


def read_json(path) -> dict | None:
    """A JSON file's content, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_rows(path, rows: list[dict], fields=None, float_format: str = ".10g") -> Path:
    """A CSV of dict rows (columns ``fields``, default the first row's keys), atomically."""
    fields = list(fields or rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (format(r[k], float_format) if isinstance(r[k], float) else r[k]) for k in fields})
    return atomic_write(path, buf.getvalue())


def save_figure(fig, path, **kwargs) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kwargs)
    return atomic_write(path, buf.getvalue())


def read_at_most(f, n: int, chunk: int = 1 << 24) -> bytes:
    """Up to ``n`` bytes of the binary file ``f``, read in chunks, so that a size taken from an
    untrusted header allocates only what the file really holds."""
    parts, left = [], n
    while left > 0:
        part = f.read(min(left, chunk))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
