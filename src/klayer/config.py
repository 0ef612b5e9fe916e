"""Experiment and study files: one typed schema, validated before any data is loaded.

An experiment file has a ``name``, an optional ``description`` and four tables, whose keys are
the fields of :class:`ModelConfig`, :class:`~klayer.data.DataConfig`, :class:`TrainConfig` and
:class:`AugmentConfig` (every key has a default)::

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

``--set section.key=value`` overrides a key (the value is read as TOML). A config field, a TOML
key and an override key are the same name.

Every value is checked for its type and range, and a few rules tie keys together
(``eta_min <= eta_max``, ``nesterov`` only with SGD momentum, ...). An error is one line naming
the file and the dotted key: ``experiments/x.toml: train.lam must be >= 0, got -0.1``; an unknown
key gets the nearest valid one suggested. Types follow :mod:`klayer.schema`: booleans are never
numbers, integers are accepted for numbers, integral numbers (``1e3``) for integers, and NaN and
infinities never.

A *study* file (:func:`study_from_dict`; see :mod:`klayer.suite`) has a ``[study]`` table whose
``kind`` selects its schema (:class:`GradcheckStudy`, :class:`SanityStudy`, :class:`RunsStudy`,
:class:`SearchStudy`, :class:`GridStudy`) and an optional ``[quick]`` table that overrides any of
its keys for ``--quick`` (``set`` entries are appended).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .data.prepare import DataConfig
from .errors import ConfigError
from .network import NetworkConfig
from .schema import MAX_WIDTH, Bool, Float, Int, Str, Text, dotted, fail, keys_of, message, schema, show, suggest

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "AugmentConfig",
    "ExperimentConfig",
    "from_dict",
    "load_experiment",
    "same_config",
    "parse_override",
    "read_toml",
    "experiment_keys",
    "study_from_dict",
    "GradcheckStudy",
    "SanityStudy",
    "RunsStudy",
    "SearchStudy",
    "GridStudy",
    "SCHEDULES",
    "CYCLIC_SCHEDULES",
    "OPTIMIZERS",
    "GRADCHECK_HIDDEN",
]

SCHEDULES = ("cyclic", "triangular2", "exp_range", "constant", "decay", "one_cycle", "cosine")
CYCLIC_SCHEDULES = ("cyclic", "triangular2", "exp_range")
"""Schedules that run ``2 * n_s * n_cycles`` updates; the others run ``n_epochs`` epochs."""
OPTIMIZERS = ("sgd", "adam", "adamw")


def _plain_name(v: str) -> str:
    if "/" in v or "\\" in v or v in (".", ".."):
        raise PydanticCustomError(
            "klayer_value", "{text}", {"text": f"must be a plain name (no / or \\), got {show(v)}"}
        )
    if len(v.encode()) > 200:
        raise PydanticCustomError(
            "klayer_value", "{text}", {"text": "must be at most 200 bytes long (it names a folder)"}
        )
    return v


Name = Annotated[Text, Field(min_length=1), AfterValidator(_plain_name)]
"""A non-empty name that is also a folder name (``runs/<name>``)."""
Width = Annotated[Int, Field(ge=1, le=MAX_WIDTH)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]  # [0, 1)
NonNegative = Annotated[Float, Field(ge=0)]
Positive = Annotated[Float, Field(gt=0)]
Count = Annotated[Int, Field(ge=1)]
MAX_THREADS = 256  # more BLAS threads than any machine here has cores only slows a run down
NonNegInt = Annotated[Int, Field(ge=0)]


@schema("model")
class ModelConfig:
    """Architecture: the ``[model]`` table. Input size and class count come from the data; see
    :class:`~klayer.network.NetworkConfig`.

    Attributes
    ----------
    hidden : widths of the hidden layers, each in ``[1, 2**20]`` (empty: a linear classifier).
    batch_norm : batch normalization before every hidden ReLU (needs ``train.batch_size >= 2``).
    init : ``"he"``, ``"xavier"`` or ``"normal"`` (``N(0, sigma**2)``).
    sigma : > 0, the standard deviation of ``init = "normal"``.
    eps : > 0, added to the batch variance.
    dropout : in ``[0, 1)``, inverted dropout on every hidden layer's output, in training only
        (0 disables it).
    input_dropout : in ``[0, 1)``, the same on the input features.
    """

    hidden: tuple[Width, ...] = (50, 50)
    batch_norm: Bool = False
    init: Literal["he", "xavier", "normal"] = "he"
    sigma: Positive = 1e-1
    eps: Positive = 1e-10
    dropout: Fraction = 0.0
    input_dropout: Fraction = 0.0

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
            self.dropout,
            self.input_dropout,
        )


@schema("train")
class TrainConfig:
    """Mini-batch training: the ``[train]`` table.

    Attributes
    ----------
    lam : >= 0, the L2 penalty ``lam * sum ||W||^2``.
    batch_size : >= 1, images per update; each epoch reshuffles and takes ``N // batch_size``
        contiguous batches (the remainder is left out of that epoch).
    schedule : the learning rate, a function of the update step ``t``:
        ``"cyclic"`` (triangular between ``eta_min`` and ``eta_max``, half-cycle ``n_s`` updates),
        ``"triangular2"`` (the same, the amplitude halved every cycle), ``"exp_range"`` (the
        amplitude times ``exp_gamma**t``), ``"constant"`` (``eta``), ``"decay"``
        (``eta * decay**epoch``), ``"one_cycle"`` (up from ``eta_min`` to ``eta_max`` over the
        ``warmup`` fraction of the updates, then down) or ``"cosine"`` (cosine annealing from
        ``eta_max`` to ``eta_min``, after a linear ``warmup``). The cyclic family (cyclic,
        triangular2, exp_range) runs ``2 * n_s * n_cycles`` updates, the others ``n_epochs``
        epochs.
    eta_min, eta_max : ``0 <= eta_min <= eta_max``, ``eta_max > 0``.
    n_s : >= 1, updates per half cycle; n_cycles : >= 1.
    eta : > 0, the rate of the constant and decay schedules; decay : in ``(0, 1]``, per epoch.
    n_epochs : >= 1, epochs of the non-cyclic schedules.
    exp_gamma : in ``(0, 1]``, exp_range's amplitude factor per update (1: none; exp_range only).
    warmup : in ``[0, 1)``, the fraction of all updates spent warming up (cosine and one_cycle
        only; for one_cycle, its rising part).
    optimizer : ``"sgd"``, ``"adam"`` or ``"adamw"``.
    momentum : in ``[0, 1)``, SGD's heavy-ball momentum (0 disables it).
    nesterov : Nesterov momentum (SGD with ``momentum > 0`` only).
    beta1, beta2 : in ``[0, 1)``, Adam's moment decay rates; adam_eps : > 0.
    weight_decay : >= 0, AdamW's decoupled weight decay (adamw only; ``lam`` is the L2 penalty).
    label_smoothing : in ``[0, 1)``, the weight of the uniform distribution mixed into the
        one-hot targets.
    bn_alpha : in ``[0, 1)``, running averages ``mu_av = bn_alpha * mu_av + (1 - bn_alpha) * mu``.
    evals_per_cycle : >= 1, evaluations per cycle (per epoch for the non-cyclic schedules), plus
        one at step 0.
    eval_train_subset : >= 0, evaluate the training cost on this many fixed random training
        images (0: all of them).
    seed : in ``[0, 2**63)``, initialization and shuffling; ``shuffle_seed`` (None or in
        ``[0, 2**63)``) overrides the shuffling's seed (networks trained in lockstep share it).
    dtype : ``"float32"`` (fast) or ``"float64"``.
    checkpoint_every : >= 0, updates between checkpoints (0: only at the end and on Ctrl-C).
    snapshots : also save a model at the end of every cycle.
    blas_threads : 1 .. 256, BLAS threads of this training process (and of its evaluation pass).
    diagnostics : record per-layer activation and gradient statistics at every evaluation, on a
        fixed batch of 500 training images (see :mod:`klayer.diagnostics`).
    """

    lam: NonNegative = 0.0
    batch_size: Count = 100
    schedule: Literal["cyclic", "triangular2", "exp_range", "constant", "decay", "one_cycle", "cosine"] = "cyclic"
    eta_min: NonNegative = 1e-5
    eta_max: Positive = 1e-1
    n_s: Count = 500
    n_cycles: Count = 1
    eta: Positive = 0.01
    decay: Annotated[Float, Field(gt=0, le=1)] = 1.0
    n_epochs: Count = 10
    exp_gamma: Annotated[Float, Field(gt=0, le=1)] = 1.0
    warmup: Fraction = 0.0
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: Fraction = 0.0
    nesterov: Bool = False
    beta1: Fraction = 0.9
    beta2: Fraction = 0.999
    adam_eps: Positive = 1e-8
    weight_decay: NonNegative = 0.0
    label_smoothing: Fraction = 0.0
    bn_alpha: Fraction = 0.9
    evals_per_cycle: Count = 10
    eval_train_subset: NonNegInt = 0
    seed: NonNegInt = 0
    shuffle_seed: NonNegInt | None = None
    dtype: Literal["float32", "float64"] = "float32"
    checkpoint_every: NonNegInt = 1000
    snapshots: Bool = False
    blas_threads: Annotated[Int, Field(ge=1, le=MAX_THREADS)] = 1
    diagnostics: Bool = False

    @model_validator(mode="after")
    def _cross(self):
        if self.eta_min > self.eta_max:
            fail(f"`eta_min` ({self.eta_min}) must not exceed `eta_max` ({self.eta_max})")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            fail(
                f"`nesterov` = true needs `optimizer` = 'sgd' and `momentum` > 0 "
                f"(got {self.optimizer!r} and {self.momentum})"
            )
        if self.weight_decay and self.optimizer != "adamw":
            fail(
                f"`weight_decay` applies to `optimizer` = 'adamw' only, got {self.optimizer!r} "
                "(`lam` is the L2 penalty)"
            )
        if self.warmup and self.schedule not in ("cosine", "one_cycle"):
            fail(f"`warmup` applies to the cosine and one_cycle schedules only, got `schedule` = {self.schedule!r}")
        if self.exp_gamma != 1 and self.schedule != "exp_range":
            fail(f"`exp_gamma` applies to the exp_range schedule only, got `schedule` = {self.schedule!r}")
        return self

    @property
    def data_seed(self) -> int:
        return self.seed if self.shuffle_seed is None else self.shuffle_seed

    @property
    def cyclic(self) -> bool:
        """True for the schedules that run ``2 * n_s * n_cycles`` updates."""
        return self.schedule in CYCLIC_SCHEDULES


@schema("augment")
class AugmentConfig:
    """Training-time data augmentation of image rows: the ``[augment]`` table (all off by default).

    Attributes
    ----------
    flip : random horizontal flip with probability 1/2.
    translate : in ``[0, 16]``, random shift by up to this many pixels in each direction; below the
        images' height and width (checked against the data).
    padding : what a shift brings in: ``"zero"``, ``"reflect"`` or ``"edge"``.
    crop_scale : in ``(0, 1]``, random-resized crop's minimum area fraction (1 disables it).
    jitter : in ``[0, 1]``, colour jitter strength (0 disables it).
    """

    flip: Bool = False
    translate: Annotated[Int, Field(ge=0, le=16)] = 0
    padding: Literal["zero", "reflect", "edge"] = "zero"
    crop_scale: Annotated[Float, Field(gt=0, le=1)] = 1.0
    jitter: Annotated[Float, Field(ge=0, le=1)] = 0.0


@schema()
class ExperimentConfig:
    """A whole experiment: name, description, model, data, training and augmentation settings."""

    name: Name = "experiment"
    description: Str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _cross(self):
        if self.model.batch_norm and self.train.batch_size < 2:
            fail(f"`model.batch_norm` = true needs `train.batch_size` >= 2, got {self.train.batch_size}")
        shape, T = self.data.image_shape, self.augment.translate
        if T and shape is not None and len(shape) == 3 and T >= min(shape[1:]):
            # other data sets' image sizes are known once loaded: the trainer checks them then
            fail(
                f"`augment.translate` = {T} must be below the height and width of `data.image_shape` = "
                f"{list(shape)}: a shift of {min(shape[1:])} pixels or more moves the whole image out"
            )
        return self

    def to_dict(self) -> dict:
        """The config as a TOML-shaped dict (keys whose value is None left out: TOML has no null)."""
        d = asdict(self)
        for section in _SECTIONS:
            d[section] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d[section].items() if v is not None}
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def replace(self, **sections) -> ExperimentConfig:
        """A copy with ``section={key: value}`` (or ``name=...``) changes, type-checked."""
        return from_dict(_merge(self.to_dict(), sections))


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "augment": AugmentConfig}
_EXPERIMENT = TypeAdapter(ExperimentConfig)


def experiment_keys() -> list[str]:
    """Every dotted key of an experiment (``model.hidden``, ..., ``augment.jitter``)."""
    return [f"{s}.{k}" for s, cls in _SECTIONS.items() for k in keys_of(cls)]


def _merge(base: dict, changes: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def _where(source) -> str:
    return f"{source}: " if source else ""


def from_dict(d: dict, source=None) -> ExperimentConfig:
    """An ExperimentConfig from a TOML-shaped dict. A missing name is ``source``'s stem; errors
    are ConfigErrors naming ``source`` (a file name, when there is one) and the key."""
    if not isinstance(d, dict):
        raise ConfigError(f"{_where(source)}expected a table of experiment settings, got {show(d)}")
    if "name" not in d:
        d = {**d, "name": Path(str(source)).stem if source else "experiment"}
    try:
        return _EXPERIMENT.validate_python(d)
    except ValidationError as e:
        raise ConfigError(_where(source) + message(e)) from None


def parse_override(text: str) -> tuple[str, str, object]:
    """``"train.lam=0.01"`` -> ``("train", "lam", 0.01)``; the value is read as TOML if it can
    be, else kept as a string (which the schema then refuses where a string does not belong)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        parsed = tomllib.loads(f"v = {raw}")
        value = parsed["v"] if list(parsed) == ["v"] else raw
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw
    if key in ("name", "description"):
        return "", key, value
    if key.count(".") != 1:
        same = [k for k in experiment_keys() if k.split(".")[1] == key]
        hint = f" (did you mean {same[0]}?)" if len(same) == 1 else ""
        raise ConfigError(f"override key {key!r} must look like section.key ({', '.join(_SECTIONS)}){hint}")
    section, name = key.split(".")
    if section not in _SECTIONS:
        raise ConfigError(
            f"unknown section {section!r} in {key!r} ({', '.join(_SECTIONS)}){suggest(section, _SECTIONS)}"
        )
    return section, name, value


def read_toml(path, what: str = "experiment") -> dict:
    """A TOML file as a dict; a missing, unreadable or invalid file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what} file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a {what} file (not UTF-8 text at byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML (nested too deeply)") from None


def same_config(path, config: ExperimentConfig) -> bool:
    """Whether the experiment file at ``path`` (a run folder's ``config.toml``) describes
    ``config``: compared as configs, so a file written before a key with a default was added
    still matches. A missing or invalid file does not."""
    try:
        return load_experiment(path) == config
    except ConfigError:
        return False


def load_experiment(path, overrides=()) -> ExperimentConfig:
    """Read an experiment TOML file and apply ``section.key=value`` overrides."""
    path = Path(path)
    d = read_toml(path)
    d.setdefault("name", path.stem)
    for text in overrides:
        section, key, value = parse_override(text)
        if not section:
            d[key] = value
            continue
        table = d.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}: expected a table, got {show(table)}")
        table[key] = value
    return from_dict(d, str(path))


# -- study files -----------------------------------------------------------------------------------
def _override(text: str) -> str:
    try:
        parse_override(text)
    except ConfigError as e:
        raise PydanticCustomError("klayer_value", "{text}", {"text": f": {e}"}) from None
    return text


def _experiment_key(key: str) -> str:
    if key not in experiment_keys():
        raise PydanticCustomError(
            "klayer_value",
            "{text}",
            {"text": f": unknown experiment key {show(key)}{suggest(key, experiment_keys())}"},
        )
    return key


Override = Annotated[Str, AfterValidator(_override)]
"""A ``section.key=value`` override; whether the experiment accepts it is checked when the study
is loaded (:func:`klayer.suite.load_study`)."""
ExperimentKey = Annotated[Str, AfterValidator(_experiment_key)]
Experiments = Annotated[tuple[Name, ...], Field(min_length=1)]
GRADCHECK_HIDDEN = {2: (50,), 3: (50, 50), 4: (50, 50, 50), 9: (50, 30, 20, 20, 10, 10, 10, 10)}
"""The hidden widths of each depth a gradcheck study can check."""


@schema("study")
class GradcheckStudy:
    """``kind = "gradcheck"``: gradient-check tables for ``depths`` x batch norm (off, on) x
    ``batch_sizes`` x ``lams``, one column per step ``hs``.

    Attributes
    ----------
    depths : non-empty, each 2, 3, 4 or 9 (:data:`GRADCHECK_HIDDEN`).
    batch_sizes : non-empty, each >= 2 (every batch size is also checked with batch norm).
    lams : non-empty, each >= 0. hs : non-empty, each > 0.
    features : in ``[1, 3072]``, the first input features used.
    max_entries : >= 1, entries checked per parameter.
    order : >= 0, the study's place in the suite.
    optional : left out of ``klayer reproduce`` unless its file is named (or ``--all``); for
        studies too long for the default suite, such as the bonus ablation.
    """

    kind: Literal["gradcheck"]
    depths: Annotated[tuple[Literal[2, 3, 4, 9], ...], Field(min_length=1)]
    batch_sizes: Annotated[tuple[Annotated[Int, Field(ge=2)], ...], Field(min_length=1)]
    hs: Annotated[tuple[Positive, ...], Field(min_length=1)]
    lams: Annotated[tuple[NonNegative, ...], Field(min_length=1)] = (0.0,)
    features: Annotated[Int, Field(ge=1, le=3072)] = 20
    max_entries: Count = 100
    order: NonNegInt = 99
    optional: Bool = False


@schema("study")
class SanityStudy:
    """``kind = "sanity"``: overfit ``n`` training images with and without batch norm.

    Attributes
    ----------
    n : >= 2 (the next ``n`` images validate, so the data must have ``2 n`` training images).
    hidden : hidden widths, each in ``[1, 2**20]``. eta : > 0. n_epochs : >= 1.
    batch_size : in ``[2, n]`` (batch norm needs two). lam : >= 0. order : >= 0.
    """

    kind: Literal["sanity"]
    n: Annotated[Int, Field(ge=2)] = 100
    hidden: tuple[Width, ...] = (50,)
    eta: Positive = 0.01
    n_epochs: Count = 200
    batch_size: Annotated[Int, Field(ge=2)] = 10
    lam: NonNegative = 0.0
    order: NonNegInt = 99
    optional: Bool = False

    @model_validator(mode="after")
    def _cross(self):
        if self.batch_size > self.n:
            fail(f"`batch_size` ({self.batch_size}) must not exceed `n` ({self.n})")
        return self


@schema("study")
class RunsStudy:
    """``kind = "runs"``: each of ``experiments`` (names of ``experiments/<name>.toml``), with the
    ``set`` overrides, over the seeds."""

    kind: Literal["runs"]
    experiments: Experiments
    set: tuple[Override, ...] = ()
    order: NonNegInt = 99
    optional: Bool = False


@schema("study")
class SearchStudy:
    """``kind = "search"``: one numeric ``key`` of the experiment ``base``, coarse over
    ``[low, high]`` (``0 < low < high``, ``coarse_n >= 1`` values, ``sampling`` grid or random,
    seeded by ``search_seed >= 0``), fine over ``best * 10**[-decades, decades]`` (``decades > 0``,
    ``fine_n >= 0`` values; 0 skips it), then the best value with ``final_set`` over the seeds."""

    kind: Literal["search"]
    base: Name
    key: ExperimentKey
    low: Positive
    high: Positive
    coarse_n: Count
    fine_n: NonNegInt = 0
    decades: Positive = 0.5
    sampling: Literal["grid", "random"] = "grid"
    search_seed: NonNegInt = 0
    set: tuple[Override, ...] = ()
    final_set: tuple[Override, ...] = ()
    order: NonNegInt = 99
    optional: Bool = False

    @model_validator(mode="after")
    def _cross(self):
        if self.low >= self.high:
            fail(f"`low` ({self.low}) must be below `high` ({self.high})")
        return self


@schema("study")
class GridStudy:
    """``kind = "grid"``: each of ``experiments`` for every number in ``values`` (non-empty) of
    ``key``, with the ``set`` overrides, over the seeds."""

    kind: Literal["grid"]
    experiments: Experiments
    key: ExperimentKey
    values: Annotated[tuple[Float, ...], Field(min_length=1)]
    set: tuple[Override, ...] = ()
    order: NonNegInt = 99
    optional: Bool = False


Study = GradcheckStudy | SanityStudy | RunsStudy | SearchStudy | GridStudy
STUDY_KINDS = {
    "gradcheck": GradcheckStudy,
    "sanity": SanityStudy,
    "runs": RunsStudy,
    "search": SearchStudy,
    "grid": GridStudy,
}
_STUDY = TypeAdapter(Annotated[Study, Field(discriminator="kind")])


@schema()
class _StudyFile:
    name: Name | None = None
    description: Str = ""
    study: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)


def _validate_study(d: dict, source: str, prefix) -> Study:
    try:
        return _STUDY.validate_python(d)
    except ValidationError as e:
        raise ConfigError(_where(source) + message(e, prefix, tagged=True)) from None


def study_from_dict(d: dict, source: str) -> tuple[str, str, Study, Study]:
    """A study file's ``(name, description, study, quick_study)``, both variants validated.

    ``quick_study`` is ``[study]`` with ``[quick]``'s keys replacing its own, except ``set``,
    whose entries are appended. Errors name the table the bad value came from."""
    if "study" not in d:
        raise ConfigError(f"{source}: not a study (no [study] table); train single experiments with klayer train")
    try:
        top = _StudyFile.__pydantic_validator__.validate_python(d)
    except ValidationError as e:
        raise ConfigError(_where(source) + message(e)) from None
    full = _validate_study(top.study, source, "study.")
    q = top.quick
    allowed = [k for k in keys_of(type(full)) if k != "kind"]
    for k in q:
        if k == "kind":
            raise ConfigError(f"{source}: quick.kind: a study's kind cannot change in [quick]")
        if k not in allowed:
            raise ConfigError(f"{source}: unknown key {dotted(['quick', k])}{suggest(k, allowed, 'quick.')}")
    merged = {**top.study, **q}
    if "set" in q:
        if not isinstance(q["set"], list):
            raise ConfigError(f"{source}: quick.set: expected a list, got {show(q['set'])}")
        merged["set"] = [*top.study.get("set", []), *q["set"]]
    quick = _validate_study(merged, source, lambda k: "quick." if k in q else "study.")
    name = top.name or Path(str(source)).stem
    return name, top.description, full, quick
