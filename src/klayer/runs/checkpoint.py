"""Checkpoints that survive any fault: two slots, verified on read, the newest good one resumed.

A checkpoint is written to ``checkpoint.next.safetensors`` (atomically), then the current
``checkpoint.safetensors`` becomes ``checkpoint.prev.safetensors`` and the new one takes its
name. At every instant at least one complete checkpoint exists under one of the three names, so a
``kill -9``, a full disk or a failed write during checkpointing loses at most the updates since
the previous checkpoint. :func:`read_checkpoint` verifies every candidate (SHA-256 and shapes)
and resumes the newest good one; when a newer one is corrupt it says so.

A checkpoint whose digests hold but whose values could not have been written by this run (a
forged or hand-edited file: ``perm`` not a permutation, ``t`` outside the run's updates, history
rows or divergence steps that do not fit ``t``) is refused by :func:`validate` with the same
one-line message naming the tensor or field, and skipped like a corrupt one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, OutputError
from ..io import atomic_write
from .history import HISTORY_FIELDS
from .shape import ShapeError, check
from .tensorfile import encode_tensors, read_tensors

__all__ = [
    "CHECKPOINT",
    "write_checkpoint",
    "read_checkpoint",
    "validate",
    "restore",
    "remove_checkpoints",
    "checkpoint_files",
]

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


def read_checkpoint(folder, log=None, validator=None):
    """The newest checkpoint in ``folder`` that verifies (and passes ``check``).

    ``validator(tensors, meta, path)``, when given, raises ModelFileError for a checkpoint that
    verifies but cannot be resumed (:func:`validate`); such a checkpoint is skipped like a
    corrupt one.

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
            if validator is not None:
                validator(tensors, meta, path)
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


_STATE = {
    "t": "int",
    "perm_epoch": "int",
    "rng": {},
    "rng_augment": {},
    "rng_dropout": [{}],
    "history": [[{k: "int" if k == "step" else "num" for k in HISTORY_FIELDS}]],
    "diverged": ["int?"],
    "train_seconds": "num",
    "eval_seconds": "num",
    "K": "int",
    "kernels?": "str",
    "callbacks": {"diagnostics?": {"rows?": [[{"step": "int"}]]}},
}


def _evaluated_steps(trainer, t: int) -> list[int]:
    """The update steps at which the trainer has evaluated once it has made ``t`` updates."""
    T, every = trainer.total_steps, trainer.eval_every
    steps = [0, *range(every, t + 1, every)]
    return steps + [T] if t == T and steps[-1] != T else steps


def validate(trainer, tensors: dict, meta: dict, path) -> dict:
    """The checkpoint's state (parsed), once every tensor and field fits ``trainer``.

    Checks every tensor's shape and dtype against the trainer's own, that ``perm`` is a
    permutation of the training rows, that ``t`` is within ``0..total_steps`` and ``perm_epoch``
    is the epoch of update ``t - 1``, that the history rows are the evaluations up to ``t``, and
    the divergence steps, times and random states.

    Raises
    ------
    ModelFileError
        Names the checkpoint and the tensor or field that does not fit.
    """
    expected, _ = trainer.state()
    for name, a in expected.items():
        b = tensors.get(name)
        if b is None:
            raise ModelFileError(path, f"tensor {name} is missing")
        if b.shape != np.shape(a) or (name != "perm" and b.dtype != np.asarray(a).dtype):
            raise ModelFileError(path, f"tensor {name} is {b.dtype} {b.shape}; this run needs {a.dtype} {np.shape(a)}")
        if name.startswith(("param.", "bn.", "opt.")) and not np.isfinite(b).all():
            raise ModelFileError(path, f"tensor {name} holds non-finite values")
    perm = tensors["perm"]
    if not np.issubdtype(perm.dtype, np.integer):
        raise ModelFileError(path, f"tensor perm is {perm.dtype}; this run needs integer row indices")
    if not np.array_equal(np.sort(perm), np.arange(len(perm))):
        raise ModelFileError(path, f"tensor perm is not a permutation of the {len(perm)} training rows")
    try:
        state = json.loads(meta["state"])
        check(state, _STATE)
    except (KeyError, ValueError, RecursionError) as e:
        why = f": {e}" if isinstance(e, ShapeError) else " is missing or not JSON"
        raise ModelFileError(path, f"metadata field state{why}") from None
    K, T, t = trainer.K, trainer.total_steps, state["t"]

    def bad(field, problem):
        return ModelFileError(path, f"metadata field state: field {field} {problem}")

    if state["K"] != K:
        raise bad("K", f"is {state['K']}; this run trains {K} network(s)")
    if not 0 <= t <= T:
        raise bad("t", f"is {t}, outside this run's update steps 0..{T}")
    epoch = (t - 1) // trainer.steps_per_epoch if t > 0 else -1
    if state["perm_epoch"] != epoch:
        raise bad("perm_epoch", f"is {state['perm_epoch']}; update step {t} needs {epoch}")
    steps = _evaluated_steps(trainer, t)
    for field in ("history", "diverged", "rng_dropout"):
        if len(state[field]) != K:
            raise bad(field, f"holds {len(state[field])} entries; this run trains {K} network(s)")
    for i, rows in enumerate(state["history"]):
        if [r["step"] for r in rows] != steps:
            raise bad(f"history[{i}]", f"does not hold the evaluations at steps 0..{t} of this run")
    for i, d in enumerate(state["diverged"]):
        if d is not None and (K == 1 or not 0 <= d < t):
            raise bad(f"diverged[{i}]", f"is {d}; nothing diverged before update step {t} of this run")
    for field in ("train_seconds", "eval_seconds"):
        if not 0 <= state[field] < float("inf"):
            raise bad(field, f"is {state[field]}, not a duration")
    rngs = [("rng", trainer.rng, state["rng"]), ("rng_augment", trainer.augment_rng, state["rng_augment"])]
    rngs += [
        (f"rng_dropout[{i}]", r, s)
        for i, (r, s) in enumerate(zip(trainer.dropout_rngs, state["rng_dropout"], strict=True))
    ]
    for field, rng, s in rngs:
        try:
            type(rng.bit_generator)().state = s  # a fresh generator: the trainer's is not touched
        except (KeyError, TypeError, ValueError, OverflowError):
            raise bad(field, "is not a random generator state") from None
    rows = state["callbacks"].get("diagnostics", {}).get("rows", [])
    if rows and (len(rows) != K or not all(isinstance(v, int | float) for r in rows for x in r for v in x.values())):
        raise bad("callbacks.diagnostics.rows", f"are not {K} network(s)' rows of numbers")
    return state


def restore(trainer, tensors: dict, meta: dict, path) -> None:
    """Load a checkpoint into ``trainer`` after checking it with :func:`validate`."""
    validate(trainer, tensors, meta, path)
    try:
        trainer.load_state(tensors, meta)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(path, f"metadata field state is inconsistent ({e})") from None


def remove_checkpoints(folder) -> None:
    """Delete every checkpoint slot (the run is finished)."""
    for path in checkpoint_files(folder):
        path.unlink(missing_ok=True)
