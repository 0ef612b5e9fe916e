"""Run folders and model files.

A run folder (default ``runs/<name>``) holds:

- ``config.toml``: the fully resolved experiment config;
- ``history.csv``: one row per evaluation (step, epoch, eta, cost/loss/accuracy on train and val);
- ``results.json``: final metrics, timings, seed, versions, BLAS threads, status;
- ``model.safetensors``: weights, batch-norm state and standardization statistics, with the
  architecture in its metadata (enough to evaluate and predict on its own);
- ``checkpoint.safetensors``: the training state while the run is unfinished;
- ``cost.png``, ``loss.png``, ``accuracy.png``.

Every file is written atomically: to a temporary file in the same folder, flushed, fsynced and
renamed, so a killed process never leaves a half-written file under a final name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import DataError
from .network import Network, NetworkConfig

__all__ = [
    "atomic_write",
    "save_model",
    "load_model",
    "write_history",
    "read_history",
    "HISTORY_FIELDS",
]

MODEL_FORMAT = "klayer-model-1"
HISTORY_FIELDS = (
    "step",
    "epoch",
    "eta",
    "train_cost",
    "train_loss",
    "train_accuracy",
    "val_cost",
    "val_loss",
    "val_accuracy",
)


def atomic_write(path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_model(path, network: Network, mean=None, std=None, extra: dict | None = None) -> Path:
    """Save one network (not a stack) with its standardization statistics as safetensors."""
    tensors = {f"param.{k}": np.ascontiguousarray(v) for k, v in network.params.items()}
    tensors.update({f"bn.{k}": np.ascontiguousarray(v) for k, v in network.bn_state.items()})
    if mean is not None:
        tensors["data.mean"] = np.asarray(mean, np.float64)
        tensors["data.std"] = np.asarray(std, np.float64)
    meta = {"format": MODEL_FORMAT, "network": json.dumps(network.config.to_dict())}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return atomic_write(path, st_save(tensors, metadata=meta))


def _read_safetensors(path):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    try:
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {})
    except (SafetensorError, ValueError, json.JSONDecodeError, OverflowError) as e:
        raise DataError(path, f"not a valid safetensors file ({e})") from None
    return tensors, meta


def load_model(path):
    """Read a model file.

    Returns
    -------
    network : Network
    mean, std : (d,) float64 arrays or None
    meta : dict of the remaining metadata (JSON-decoded)
    """
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != MODEL_FORMAT:
        raise DataError(path, f"not a klayer model (format {meta.get('format')!r})")
    try:
        cfg = json.loads(meta.pop("network"))
        cfg["hidden"] = tuple(cfg["hidden"])
        config = NetworkConfig(**cfg)
        params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
        bn_state = {k[3:]: v for k, v in tensors.items() if k.startswith("bn.")}
        missing = sorted(set(config.param_names()) - set(params))
        if missing:
            raise DataError(path, f"missing parameter {missing[0]}")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise DataError(path, f"bad model metadata ({e})") from None
    meta.pop("format")
    extra = {k: json.loads(v) for k, v in meta.items()}
    return Network(config, params, bn_state), tensors.get("data.mean"), tensors.get("data.std"), extra


def write_history(path, rows: list[dict]) -> Path:
    """``history.csv`` from a list of dicts with :data:`HISTORY_FIELDS`."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.10g}" if isinstance(r[k], float) else r[k]) for k in HISTORY_FIELDS})
    return atomic_write(path, buf.getvalue())


def write_rows(path, rows: list[dict]) -> Path:
    """A CSV of dict rows that share their keys (e.g. ``diagnostics.csv``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return atomic_write(path, buf.getvalue())


def read_history(path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of numbers."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ("step",) else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def write_json(path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
