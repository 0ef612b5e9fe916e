"""Tar archives read in place or extracted, refusing members that could escape the target."""

from __future__ import annotations

import lzma
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

from ..errors import DataError
from ..io import MAX_DEFLATE_RATIO, read_at_most

__all__ = ["check_member", "read_members", "safe_extract"]

# what a corrupt or truncated (compressed) tar stream raises while it is read
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


def check_member(member: tarfile.TarInfo, archive) -> None:
    """Raise DataError if ``member`` is an absolute path, climbs out with ``..``, is a link that
    points outside the archive's tree, or is a device or fifo."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(archive, f"unsafe member {name!r}: absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise DataError(archive, f"unsafe member {name!r}: path with '..'")
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise DataError(archive, f"unsafe member {name!r}: link to {target!r} outside the archive")
    if member.ischr() or member.isblk() or member.isfifo():
        raise DataError(archive, f"unsafe member {name!r}: device or fifo")


def _check_end(tar: tarfile.TarFile, archive, limit: int) -> None:
    """Raise DataError unless the tar stream ends where the member listing stopped.

    ``tarfile`` takes an unreadable header after the first member for the end of the archive,
    silently; a damaged archive would then look like one that lacks its later members. A real end
    is followed by zero blocks only, so anything else (or a gzip error) after it is damage.
    """
    stop = tar.offset
    try:
        tar.fileobj.seek(stop)
        read = 0
        while read < limit:
            chunk = tar.fileobj.read(1 << 20)
            if not chunk:
                return
            if chunk.count(0) != len(chunk):
                break
            read += len(chunk)
        else:
            return
    except _ARCHIVE_ERRORS as e:
        raise DataError(archive, f"damaged archive: unreadable after byte {stop} of the tar stream ({e})") from None
    raise DataError(archive, f"damaged archive: unreadable tar header at byte {stop} of the tar stream")


def _open(archive) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except FileNotFoundError:
        raise DataError(archive, "file not found") from None
    except _ARCHIVE_ERRORS as e:
        raise DataError(archive, f"not a readable tar archive ({e})") from None


def read_members(archive, wanted: dict[str, str]) -> dict[str, bytes]:
    """Read regular-file members in place, without extracting anything.

    Parameters
    ----------
    archive : path of a ``.tar`` / ``.tar.gz``.
    wanted : map from a member's base name (``"data_batch_1"``) to the key it is returned under.

    Returns
    -------
    dict key -> bytes for the wanted members found (the caller reports missing ones). Every
    member is checked with :func:`check_member`, whether wanted or not.
    """
    found = {}
    size = Path(archive).stat().st_size if Path(archive).is_file() else 0
    limit = MAX_DEFLATE_RATIO * max(size, 1024)
    with _open(archive) as tar:
        try:
            for member in tar:
                check_member(member, archive)
                base = posixpath.basename(member.name)
                if member.isfile() and base in wanted:
                    if member.size > limit:
                        raise DataError(
                            archive,
                            f"member {member.name!r} claims {member.size} bytes, "
                            f"more than the {size}-byte archive can hold",
                        )
                    data = read_at_most(tar.extractfile(member), member.size)
                    if len(data) != member.size:
                        raise tarfile.ReadError("unexpected end of data")
                    found[wanted[base]] = data
            _check_end(tar, archive, limit)
        except DataError:  # a ValueError too: keep it as it is
            raise
        except _ARCHIVE_ERRORS as e:
            raise DataError(archive, f"corrupt or truncated archive ({e})") from None
    return found


def safe_extract(archive, dest) -> Path:
    """Extract ``archive`` into ``dest`` after checking every member; return ``dest``.

    All members are checked before the first byte is written, and extraction also uses the
    standard library's ``data`` filter where available, as a second line of defence.
    """
    dest = Path(dest)
    with _open(archive) as tar:
        try:
            members = tar.getmembers()
            size = Path(archive).stat().st_size
            _check_end(tar, archive, MAX_DEFLATE_RATIO * max(size, 1024))
        except DataError:  # a ValueError too: keep it as it is
            raise
        except _ARCHIVE_ERRORS as e:
            raise DataError(archive, f"corrupt or truncated archive ({e})") from None
        for member in members:
            check_member(member, archive)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706
                tar.extractall(dest, members=members)
        except _ARCHIVE_ERRORS as e:
            raise DataError(archive, f"extraction failed ({e})") from None
    real = os.path.realpath(dest)
    for member in members:
        p = os.path.realpath(dest / member.name)
        if os.path.commonpath([real, p]) != real:  # pragma: no cover - caught by check_member
            raise DataError(archive, f"unsafe member {member.name!r}")
    return dest
