"""Checkpoints that survive any fault: two slots, verified on read, the newest good one resumed.

A checkpoint is written to ``checkpoint.next.safetensors`` (atomically), then the current
``checkpoint.safetensors`` becomes ``checkpoint.prev.safetensors`` and the new one takes its
name. At every instant at least one complete checkpoint exists under one of the three names, so a
``kill -9``, a full disk or a failed write during checkpointing loses at most the updates since
the previous checkpoint. :func:`read_checkpoint` verifies every candidate (SHA-256 and shapes)
and resumes the newest good one; when a newer one is corrupt it says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, OutputError
from ..io import atomic_write
from .tensorfile import encode_tensors, read_tensors

__all__ = ["CHECKPOINT", "write_checkpoint", "read_checkpoint", "restore", "remove_checkpoints", "checkpoint_files"]

CHECKPOINT = "checkpoint.safetensors"
_PREV = "checkpoint.prev.safetensors"
_NEXT = "checkpoint.next.safetensors"
FORMAT = "klayer-checkpoint-2"


def checkpoint_files(folder) -> list[Path]:
    """The checkpoint files present in ``folder``, newest slot first."""
    folder = Path(folder)
    return [folder / n for n in (_NEXT, CHECKPOINT, _PREV) if (folder / n).is_file()]


def write_checkpoint(folder, tensors: dict, meta: dict) -> Path:
    """Write a new checkpoint beside the previous good one, replacing it only when complete."""
    folder = Path(folder)
    data = encode_tensors(tensors, {"format": FORMAT, **meta})
    atomic_write(folder / _NEXT, data)
    try:
        if (folder / CHECKPOINT).exists():
            os.replace(folder / CHECKPOINT, folder / _PREV)
        os.replace(folder / _NEXT, folder / CHECKPOINT)
    except OSError as e:
        raise OutputError(folder / CHECKPOINT, e) from None
    return folder / CHECKPOINT


def _step(meta: dict, path) -> int:
    try:
        return int(json.loads(meta["state"])["t"])
    except (KeyError, ValueError, TypeError):
        raise ModelFileError(path, "metadata field state is missing or corrupt") from None


def read_checkpoint(folder, log=None):
    """The newest checkpoint in ``folder`` that verifies.

    Returns
    -------
    ``(tensors, meta, path)``, or None when there is no checkpoint at all.

    Raises
    ------
    ModelFileError
        Every checkpoint present is corrupt (the message lists why, file by file).
    """
    good, bad = [], []
    for path in checkpoint_files(folder):
        try:
            tensors, meta = read_tensors(path, "checkpoint")
            if meta.get("format") != FORMAT:
                raise ModelFileError(path, f"not a klayer checkpoint (format {meta.get('format')!r})")
            good.append((_step(meta, path), tensors, meta, path))
        except ModelFileError as e:
            bad.append(e)
    if not good:
        if bad:
            raise ModelFileError(folder, "no usable checkpoint: " + "; ".join(str(e) for e in bad))
        return None
    t, tensors, meta, path = max(good, key=lambda g: g[0])
    if bad and log is not None:
        log(f"{'; '.join(str(e) for e in bad)}: resuming from {path.name} at update step {t}")
    return tensors, meta, path


def restore(trainer, tensors: dict, meta: dict, path) -> None:
    """Load a checkpoint into ``trainer`` after checking every tensor against the trainer's own."""
    expected, _ = trainer.state()
    for name, a in expected.items():
        b = tensors.get(name)
        if b is None:
            raise ModelFileError(path, f"tensor {name} is missing")
        if b.shape != np.shape(a) or (name != "perm" and b.dtype != np.asarray(a).dtype):
            raise ModelFileError(path, f"tensor {name} is {b.dtype} {b.shape}; this run needs {a.dtype} {np.shape(a)}")
        if name.startswith(("param.", "bn.", "opt.")) and not np.isfinite(b).all():
            raise ModelFileError(path, f"tensor {name} holds non-finite values")
    try:
        trainer.load_state(tensors, meta)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(path, f"metadata field state is inconsistent ({e})") from None


def remove_checkpoints(folder) -> None:
    """Delete every checkpoint slot (the run is finished)."""
    for path in checkpoint_files(folder):
        path.unlink(missing_ok=True)
