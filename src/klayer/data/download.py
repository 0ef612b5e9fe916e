"""Verified downloads: stream to a temporary file, check its md5, only then move it into place."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ChecksumError, DataError

__all__ = ["md5sum", "download"]


def md5sum(path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest, md5s: set[str] | None, progress: bool | None = None, timeout=60):
    """Download ``url`` to ``dest``, verified against the accepted ``md5s``.

    The data goes to a temporary file beside ``dest``; it is renamed to ``dest`` only when it is
    complete and its md5 is one of ``md5s`` (None accepts any). On any failure, the temporary
    file is removed and nothing is left at ``dest``.

    Returns
    -------
    Path of ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise DataError(url, f"download failed ({e})") from None
            with response:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                got = 0
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=None if progress is None else not progress,
                ) as bar:
                    while True:
                        try:
                            block = response.read(1 << 20)
                        except OSError as e:
                            raise DataError(url, f"download interrupted ({e})") from None
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        got += len(block)
                        bar.update(len(block))
                if total is not None and got != total:
                    raise DataError(url, f"download incomplete: {got} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if md5s is not None and digest not in md5s:
            raise ChecksumError(url, f"md5 mismatch: got {digest}, expected {' or '.join(sorted(md5s))}")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest
