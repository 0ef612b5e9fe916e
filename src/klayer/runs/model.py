"""Model files: one trained network with everything needed to use it on raw data.

A model file is a safetensors file (see :mod:`klayer.runs.tensorfile`, SHA-256 verified) with

- tensors ``param.W1, param.b1, param.gamma1, ...`` (the network's dtype), ``bn.mu1, bn.var1,
  ...`` (batch-norm running averages), ``data.mean, data.std`` (float64 training statistics);
- metadata ``format`` (``klayer-model-2``), ``network`` (the architecture as JSON), ``classes``
  (the class names as a JSON list) and any extra JSON fields (``name``, ``test_accuracy``, ...).

:func:`load_model` checks all of it against the architecture before anything is used: every
tensor present with the right dtype and shape, nothing unexpected, every value finite, a
plausible architecture. Problems are :class:`~klayer.errors.ModelFileError` (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..network import Network, NetworkConfig
from .tensorfile import read_tensors, write_tensors

__all__ = ["SavedModel", "save_model", "load_model", "MODEL_FORMAT", "MAX_WIDTH", "check_network_tensors"]

MODEL_FORMAT = "klayer-model-2"
MAX_WIDTH = 2**20  # widths, input sizes and class counts beyond this are refused as absurd


class SavedModel(NamedTuple):
    """What a model file holds: ``network, mean, std, meta`` (unpacks as a 4-tuple)."""

    network: Network
    mean: np.ndarray | None
    std: np.ndarray | None
    meta: dict

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, one per output."""
        return tuple(self.meta.get("classes") or (str(c) for c in range(self.network.config.n_classes)))

    def features(self, X: np.ndarray) -> np.ndarray:
        """Raw rows ``X: (n, d)`` standardized with the training statistics, in the network's dtype."""
        dtype = np.dtype(self.network.config.dtype)
        if self.mean is None:
            return np.asarray(X, dtype)
        out = np.subtract(X, self.mean.astype(dtype), dtype=dtype, casting="unsafe")
        out *= (1.0 / self.std).astype(dtype)
        return out

    def predict_proba(self, X: np.ndarray, chunk: int = 2500) -> np.ndarray:
        """Class probabilities ``(n, C)`` of raw rows, in evaluation mode."""
        return self.network.predict_proba(X, chunk, prep=self.features)


def save_model(path, network: Network, mean=None, std=None, extra: dict | None = None, classes=None) -> Path:
    """Save one network (not a stack), its standardization statistics and class names, atomically."""
    tensors = {f"param.{k}": v for k, v in network.params.items()}
    tensors.update({f"bn.{k}": v for k, v in network.bn_state.items()})
    if mean is not None:
        tensors["data.mean"] = np.asarray(mean, np.float64)
        tensors["data.std"] = np.asarray(std, np.float64)
    C = network.config.n_classes
    classes = [str(c) for c in (classes if classes is not None else range(C))]
    if len(classes) != C:
        raise ConfigError(f"{len(classes)} class names for a network with {C} outputs")
    meta = {"format": MODEL_FORMAT, "network": json.dumps(network.config.to_dict()), "classes": json.dumps(classes)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items() if k not in meta})
    return write_tensors(path, tensors, meta)


def network_config_from_json(text: str, path) -> NetworkConfig:
    """A NetworkConfig from the ``network`` metadata field, validated; errors name the field."""
    try:
        d = json.loads(text)
    except ValueError:
        raise ModelFileError(path, "metadata field network is not valid JSON") from None
    if not isinstance(d, dict):
        raise ModelFileError(path, "metadata field network is not a JSON object")
    fields = {"input_size": int, "hidden": list, "n_classes": int, "batch_norm": bool}
    for key, tp in fields.items():
        v = d.get(key)
        if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise ModelFileError(path, f"metadata field network.{key} is {v!r}, expected {tp.__name__}")
    sizes = [("input_size", d["input_size"]), ("n_classes", d["n_classes"])]
    sizes += [(f"hidden[{i}]", m) for i, m in enumerate(d["hidden"])]
    for key, v in sizes:
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WIDTH:
            raise ModelFileError(path, f"metadata field network.{key}={v!r} is not a plausible size (1..{MAX_WIDTH})")
    if len(d["hidden"]) > 1000:
        raise ModelFileError(path, f"metadata field network.hidden has an absurd {len(d['hidden'])} layers")
    try:
        return NetworkConfig(**{**d, "hidden": tuple(d["hidden"])})
    except (ConfigError, TypeError, ValueError) as e:
        raise ModelFileError(path, f"metadata field network: {e}") from None


def check_network_tensors(path, config: NetworkConfig, params: dict, bn_state: dict, lead: tuple = ()) -> None:
    """Every parameter and running statistic present, of the network's dtype and shape, finite.

    ``lead`` is a leading shape in front of every array (``(K,)`` for a checkpointed stack)."""
    dtype = np.dtype(config.dtype)
    sizes = config.sizes
    expected = {}
    for l in range(1, config.n_layers + 1):
        expected[f"param.W{l}"] = (sizes[l], sizes[l - 1])
        expected[f"param.b{l}"] = (sizes[l],)
        if config.batch_norm and l < config.n_layers:
            for n in (f"param.gamma{l}", f"param.beta{l}", f"bn.mu{l}", f"bn.var{l}"):
                expected[n] = (sizes[l],)
    have = {**{f"param.{k}": v for k, v in params.items()}, **{f"bn.{k}": v for k, v in bn_state.items()}}
    for name in sorted(set(have) - set(expected)):
        raise ModelFileError(path, f"unexpected tensor {name} for the architecture in the metadata")
    for name, shape in expected.items():
        if name not in have:
            raise ModelFileError(path, f"tensor {name} is missing")
        a = have[name]
        if a.dtype != dtype:
            raise ModelFileError(path, f"tensor {name} is {a.dtype}, the network is {dtype}")
        if a.shape != (*lead, *shape):
            raise ModelFileError(path, f"tensor {name} has shape {a.shape}, the architecture needs {(*lead, *shape)}")
        if not np.isfinite(a).all():
            raise ModelFileError(path, f"tensor {name} holds non-finite values")
        if name.startswith("bn.var") and (a < 0).any():
            raise ModelFileError(path, f"tensor {name} holds negative variances")


def load_model(path) -> SavedModel:
    """Read and verify a model file.

    Returns
    -------
    SavedModel ``(network, mean, std, meta)``: ``mean, std`` are (d,) float64 arrays or None;
    ``meta`` holds the JSON-decoded metadata (``classes``, ``name``, ...).

    Raises
    ------
    ModelFileError
        Anything wrong with the file, naming the tensor or field.
    """
    path = Path(path)
    tensors, meta = read_tensors(path, "model file")
    if meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(path, f"not a klayer model (metadata field format is {meta.get('format')!r})")
    if "network" not in meta:
        raise ModelFileError(path, "metadata field network is missing")
    config = network_config_from_json(meta.pop("network"), path)
    meta.pop("format")
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    bn_state = {k[3:]: v for k, v in tensors.items() if k.startswith("bn.")}
    other = sorted(k for k in tensors if not k.startswith(("param.", "bn.", "data.")))
    if other:
        raise ModelFileError(path, f"unexpected tensor {other[0]}")
    check_network_tensors(path, config, params, bn_state)
    mean, std = tensors.get("data.mean"), tensors.get("data.std")
    if (mean is None) != (std is None):
        raise ModelFileError(path, f"tensor {'data.std' if std is None else 'data.mean'} is missing")
    if mean is not None:
        for name, a in (("data.mean", mean), ("data.std", std)):
            if a.shape != (config.input_size,) or a.dtype != np.float64:
                expected = f"float64 ({config.input_size},)"
                raise ModelFileError(path, f"tensor {name} is {a.dtype} {a.shape}, expected {expected}")
            if not np.isfinite(a).all():
                raise ModelFileError(path, f"tensor {name} holds non-finite values")
        if not (std > 0).all():
            raise ModelFileError(path, "tensor data.std holds values that are not positive")
    extra = {}
    for k, v in meta.items():
        try:
            extra[k] = json.loads(v)
        except ValueError:
            raise ModelFileError(path, f"metadata field {k} is not valid JSON") from None
    classes = extra.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or len(classes) != config.n_classes
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ModelFileError(path, f"metadata field classes must list {config.n_classes} class names")
    return SavedModel(Network(config, params, bn_state), mean, std, extra)
