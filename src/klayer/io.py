"""Writing files so that a fault never leaves a partial file under a final name.

Every output of klayer (JSON, CSV, TOML, safetensors, PNG, HTML) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, are flushed and
fsynced, and the file is renamed over its final name (then the folder is fsynced). A full disk,
a read-only folder or a ``kill -9`` therefore leaves either the old file or the new one, never a
mixture; an ``OSError`` becomes an :class:`~klayer.errors.OutputError` that names the path and
the cause. A ``kill -9`` in the middle of a write also leaves the hidden temporary file
(``.NAME.XXXXXXXX.tmp``); the next writer of that folder, holding :func:`folder_lock`, removes it
with :func:`remove_stale_temporaries`. :func:`sole_writer` does both: every folder klayer writes
(a run folder, a study folder, a reproduce or report folder) is written inside it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .errors import KlayerError, OutputError

__all__ = [
    "atomic_write",
    "write_json",
    "read_json",
    "write_rows",
    "save_figure",
    "ensure_dir",
    "read_at_most",
    "folder_lock",
    "remove_stale_temporaries",
    "sole_writer",
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


# atomic_write's temporary names: mkstemp's prefix ".NAME.", 8 characters of its alphabet, ".tmp"
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when it was killed
    mid-write; return them. Only regular files named as :func:`atomic_write` names them
    (``.NAME.XXXXXXXX.tmp``) go; nothing else is touched, subfolders are not entered.

    The caller must be the folder's only writer (it holds :func:`folder_lock`): a temporary file
    of a write under way elsewhere would be removed from under it.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    except OSError as e:
        raise OutputError(folder, e) from None
    for entry in entries:
        if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OutputError(entry.path, e) from None
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def folder_lock(folder, what: str = "folder"):
    """Hold an exclusive advisory lock (``flock``) on ``folder`` itself (no lock file) while the
    block runs: one writer at a time. A second klayer process asking for it gets a KlayerError
    at once; the lock goes with the process (``kill -9`` included). On a file system without
    ``flock`` on folders (or without ``fcntl``), nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Path(folder)
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise OutputError(folder, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KlayerError(
                f"{folder}: another klayer process is writing this {what}; wait for it to end or use another folder"
            ) from None
        except OSError:  # no flock here (some network file systems): go on unlocked
            pass
        yield Path(folder)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def sole_writer(folder, what: str = "folder", subfolders=()):
    """Be the only writer of ``folder`` while the block runs: create it, hold :func:`folder_lock`
    on it (KlayerError naming it when another klayer process writes it), then remove the
    temporary files that writes killed midway left in it and in its ``subfolders`` (those written
    under the same lock: a run's ``snapshots``, a report's ``figures``). Yields the folder; the
    lock goes when the block ends, however it ends (an error, Ctrl-C; ``kill -9`` too)."""
    folder = ensure_dir(folder)
    with folder_lock(folder, what):
        remove_stale_temporaries(folder)
        for sub in subfolders:
            remove_stale_temporaries(folder / sub)
        yield folder


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def _finite(o):
    """``o`` with every NaN or infinite float (NumPy's too) made None, containers rebuilt."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, float | np.floating):
        return float(o) if np.isfinite(o) else None
    return o


def write_json(path, obj, nonfinite: str = "null") -> Path:
    """``obj`` as indented, key-sorted JSON (NumPy scalars and arrays allowed), atomically.

    The file is always RFC 8259 JSON, which has no NaN or infinity: ``nonfinite="null"`` writes
    them as ``null`` (a diverged loss in a history: readers take null for "no finite value");
    ``nonfinite="refuse"``: a NaN or infinity raises ValueError before anything is written."""
    if nonfinite not in ("null", "refuse"):
        raise ValueError(f"nonfinite must be 'null' or 'refuse', got {nonfinite!r}")
    if nonfinite == "null":
        obj = _finite(obj)
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
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
