"""Experiment configuration: one TOML file per experiment, ``--set section.key=value`` overrides.

An experiment file has a ``name``, an optional ``description`` and three tables, whose keys are
the fields of :class:`ModelConfig`, :class:`~klayer.data.DataConfig` and :class:`TrainConfig`::

    name = "a3_3layer_bn"
    [model]
    hidden = [50, 50]
    batch_norm = true
    [data]
    split = "all"
    n_val = 5000
    [train]
    lam = 0.005
    n_s = 2250
    n_cycles = 2

Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from .data.prepare import DataConfig
from .errors import ConfigError
from .network import NetworkConfig

__all__ = ["ModelConfig", "TrainConfig", "ExperimentConfig", "load_experiment", "parse_override", "read_toml"]

SCHEDULES = ("cyclic", "constant", "decay")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; input size and class count come from the data. See :class:`NetworkConfig`."""

    hidden: tuple[int, ...] = (50, 50)
    batch_norm: bool = False
    init: str = "he"
    sigma: float = 1e-1
    eps: float = 1e-10

    def network_config(self, input_size: int, n_classes: int, dtype: str) -> NetworkConfig:
        return NetworkConfig(
            input_size,
            self.hidden,
            n_classes,
            self.batch_norm,
            self.init,
            self.sigma,
            self.eps,
            dtype,
        )


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch gradient descent.

    Attributes
    ----------
    lam : L2 penalty ``lam * sum ||W||^2``.
    batch_size : images per update; each epoch reshuffles and takes ``N // batch_size`` contiguous
        batches (the remainder is left out of that epoch).
    schedule : ``"cyclic"`` (triangular, ``eta_min..eta_max``, step ``n_s``, ``n_cycles`` cycles),
        ``"constant"`` (``eta`` for ``n_epochs``) or ``"decay"`` (``eta * decay**epoch``).
    evals_per_cycle : evaluations per cycle (per epoch for constant/decay schedules), plus one at
        step 0.
    eval_train_subset : evaluate the training cost on this many fixed random training images
        (0: all of them).
    momentum : heavy-ball momentum (0 disables it).
    bn_alpha : running averages ``mu_av = bn_alpha * mu_av + (1 - bn_alpha) * mu``.
    seed : initialization and shuffling; ``shuffle_seed`` overrides the shuffling's seed
        (networks trained in lockstep share it).
    dtype : ``"float32"`` (fast) or ``"float64"``.
    checkpoint_every : updates between checkpoints (0: only at the end and on Ctrl-C).
    blas_threads : BLAS threads of this training process.
    diagnostics : record per-layer activation and gradient statistics at every evaluation, on a
        fixed batch of 500 training images (see :mod:`klayer.diagnostics`).
    """

    lam: float = 0.0
    batch_size: int = 100
    schedule: str = "cyclic"
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 500
    n_cycles: int = 1
    eta: float = 0.01
    decay: float = 1.0
    n_epochs: int = 10
    momentum: float = 0.0
    bn_alpha: float = 0.9
    evals_per_cycle: int = 10
    eval_train_subset: int = 0
    seed: int = 0
    shuffle_seed: int | None = None
    dtype: str = "float32"
    checkpoint_every: int = 1000
    blas_threads: int = 1
    diagnostics: bool = False

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        positive = ("batch_size", "n_s", "n_cycles", "n_epochs", "evals_per_cycle", "blas_threads")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        for key in (
            "lam",
            "eta_min",
            "eta_max",
            "eta",
            "decay",
            "momentum",
            "eval_train_subset",
            "checkpoint_every",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must not be negative, got {getattr(self, key)}")
        if not 0 <= self.bn_alpha <= 1 or self.momentum >= 1:
            raise ConfigError("train.bn_alpha must be in [0, 1] and train.momentum below 1")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"train.dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def data_seed(self) -> int:
        return self.seed if self.shuffle_seed is None else self.shuffle_seed


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: name, model, data and training settings."""

    name: str = "experiment"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"]["hidden"] = list(self.model.hidden)
        # TOML has no null: leave out keys whose value is None
        for section in ("model", "data", "train"):
            d[section] = {k: v for k, v in d[section].items() if v is not None}
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def replace(self, **sections) -> ExperimentConfig:
        """A copy with ``section={key: value}`` changes, type-checked."""
        return from_dict(_merge(self.to_dict(), sections), "replace")


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _merge(base: dict, changes: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in changes.items():
        if isinstance(v, dict):
            out.setdefault(k, {}).update(v)
        else:
            out[k] = v
    return out


def _coerce(value, tp, key: str):
    """``value`` as type ``tp`` (int, float, bool, str, tuple[int, ...], X | None) or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            if value == ["none"] or value == ["None"]:
                value = []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of integers, got {value!r}")
        return tuple(_coerce(v, int, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _section(cls, values: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover
        raise ConfigError(f"{prefix}: {e}") from None


def from_dict(d: dict, source: str = "config") -> ExperimentConfig:
    """An ExperimentConfig from a TOML-shaped dict; errors name the offending key."""
    top = {"name", "description", *_SECTIONS}
    unknown = sorted(set(d) - top)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(top))})")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = d.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        sections[name] = _section(cls, values, name)
    return ExperimentConfig(
        name=_coerce(d.get("name", Path(str(source)).stem), str, "name"),
        description=_coerce(d.get("description", ""), str, "description"),
        **sections,
    )


def parse_override(text: str) -> tuple[str, str, object]:
    """``"train.lam=0.01"`` -> ``("train", "lam", 0.01)``; the value is read as TOML if it can be."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if key in ("name", "description"):
        return "", key, value
    if key.count(".") != 1:
        raise ConfigError(f"override key {key!r} must look like section.key (model, data or train)")
    section, name = key.split(".")
    if section not in _SECTIONS:
        raise ConfigError(f"unknown section {section!r} in {key!r} (model, data or train)")
    return section, name, value


def read_toml(path, what: str = "experiment") -> dict:
    """A TOML file as a dict; a missing or invalid file is a ConfigError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def load_experiment(path, overrides=()) -> ExperimentConfig:
    """Read an experiment TOML file and apply ``section.key=value`` overrides."""
    path = Path(path)
    d = read_toml(path)
    d.setdefault("name", path.stem)
    for text in overrides:
        section, key, value = parse_override(text)
        if section:
            d.setdefault(section, {})[key] = value
        else:
            d[key] = value
    return from_dict(d, str(path))
