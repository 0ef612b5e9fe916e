"""Configuration: the typed schema of experiment and study files, ``--set`` overrides, the command
line's number checks, the report's folder check, and fuzzing of the TOML loaders."""

import ast
import dataclasses
import json
import re
import shutil

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

import klayer.suite.runner
import klayer.suite.studies
from klayer.cli import build_parser, main
from klayer.config import (
    AugmentConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    experiment_keys,
    from_dict,
    load_experiment,
    parse_override,
)
from klayer.data import DataConfig
from klayer.errors import ConfigError
from klayer.sanity import overfit
from klayer.suite import load_study, suite_files
from klayer.sweep import lockstep_groups

from .conftest import ROOT, tiny_dataset

EXP = ROOT / "experiments"
BASE = EXP / "a3_3layer.toml"  # no batch norm: batch_size 1 is in range
FUZZ = settings.get_profile("ci")


def load(*overrides):
    return load_experiment(BASE, overrides)


def error(fn, *args, **kwargs) -> str:
    """The message of the ConfigError ``fn(*args, **kwargs)`` raises; it is one line."""
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def toml_value(v) -> str:
    return tomli_w.dumps({"v": v})[4:].strip()


# -- the experiment files --------------------------------------------------------------------------
def test_every_experiment_file_loads():
    files = [f for f in sorted(EXP.glob("*.toml")) if "[study]" not in f.read_text()]
    names = {f.stem for f in files}
    assert {"a2_2layer", "a3_3layer", "a3_3layer_bn", "a3_9layer", "a3_9layer_bn"} <= names
    for f in files:
        assert load_experiment(f).name == f.stem
    bn = load_experiment(EXP / "a3_3layer_bn.toml")
    assert bn.model.hidden == (50, 50) and bn.model.batch_norm
    assert (bn.train.lam, bn.train.n_s, bn.train.n_cycles, bn.train.batch_size) == (0.005, 2250, 2, 100)
    assert (bn.train.eta_min, bn.train.eta_max, bn.data.n_val) == (1e-5, 1e-1, 5000)


def test_error_messages_name_the_file_and_the_key(tmp_path):
    x = tmp_path / "x.toml"
    cases = {
        "[train]\nlam = -0.1\n": "train.lam must be >= 0, got -0.1",
        "[train]\nlamda = 0.1\n": "unknown key train.lamda (did you mean train.lam?)",
        "[train]\nbatch_size = true\n": "train.batch_size: expected an integer, got true",
        "[train]\neta_min = 0.2\neta_max = 0.1\n": "train.eta_min (0.2) must not exceed train.eta_max (0.1)",
        "[modle]\nhidden = [5]\n": "unknown key modle (did you mean model?)",
        "train = 5\n": "train: expected a table, got 5",
        "[model]\nhidden = [50, 0]\n": "model.hidden[1] must be >= 1, got 0",
        "[train]\nschedule = 'cyclc'\n": (
            "train.schedule must be one of cyclic, triangular2, exp_range, constant, decay, one_cycle, cosine, "
            "got 'cyclc' (did you mean cyclic?)"
        ),
        "[train\n": None,  # invalid TOML
        "\xff": None,
    }
    for text, expected in cases.items():
        x.write_bytes(text.encode("latin-1") if text == "\xff" else text.encode())
        msg = error(load_experiment, x)
        if expected is None:
            assert msg.startswith(f"{x}: ") and ("invalid TOML" in msg or "not UTF-8" in msg)
        else:
            assert msg == f"{x}: {expected}"
    assert (
        error(load_experiment, tmp_path / "missing.toml") == f"{tmp_path / 'missing.toml'}: experiment file not found"
    )
    assert "is a folder" in error(load_experiment, tmp_path)


# -- ranges ---------------------------------------------------------------------------------------
# key, values just outside the range, values on or just inside its boundaries, overrides needed
RANGES = [
    ("model.hidden", [[0], [-1], [2**20 + 1], [50, 0]], [[1], [2**20], [], [3, 1, 4]], []),
    ("model.sigma", [0, -1e-3], [1e-300, 10], []),
    ("model.eps", [0, -1e-10], [1e-300], []),
    ("model.dropout", [-0.01, 1, 1.5], [0, 0.999], []),
    ("model.input_dropout", [-0.01, 1], [0, 0.999], []),
    ("model.init", ["kaiming", "He", ""], ["he", "xavier", "normal"], []),
    ("data.n_val", [0, -1], [1, 49999], []),
    ("data.dataset", ["mnist", "CIFAR10"], ["cifar10", "idx", "images"], []),
    (
        "data.image_shape",
        [[2, 32, 32], [3, 0, 32], [3, 32], [3, 32, 5000]],
        [[3, 32, 32], [1, 28, 28]],
        ["data.dataset='images'"],
    ),
    ("data.layout", ["pickle"], ["auto", "python", "binary", "matlab"], []),
    ("data.whiten", ["pca", "ZCA", "yes"], ["none", "zca"], []),
    ("data.zca_eps", [0, -0.1], [1e-300, 10], []),
    ("data.split", ["batch2", "ALL"], ["all", "batch1"], []),
    ("train.lam", [-1e-12, -1], [0, 1e6], []),
    ("train.batch_size", [0, -5], [1, 10**6], []),
    (
        "train.schedule",
        ["triangle", "Cyclic"],
        ["cyclic", "triangular2", "exp_range", "constant", "decay", "one_cycle", "cosine"],
        [],
    ),
    ("train.eta_min", [-1e-12], [0, 0.1], []),
    ("train.eta_max", [0, -1], [1e-300, 1e3], ["train.eta_min=0"]),
    ("train.n_s", [0, -1], [1], []),
    ("train.n_cycles", [0], [1], []),
    ("train.eta", [0, -0.1], [1e-300], []),
    ("train.decay", [0, -0.5, 1.0000001], [1, 1e-300], []),
    ("train.n_epochs", [0], [1], []),
    ("train.exp_gamma", [0, -1, 1.01], [1, 1e-300], ["train.schedule='exp_range'"]),
    ("train.warmup", [-0.01, 1], [0, 0.999], ["train.schedule='cosine'"]),
    ("train.optimizer", ["rmsprop", "SGD"], ["sgd", "adam", "adamw"], []),
    ("train.momentum", [-0.1, 1], [0, 0.999], []),
    ("train.beta1", [-0.1, 1], [0, 0.999], []),
    ("train.beta2", [-0.1, 1], [0, 0.999], []),
    ("train.adam_eps", [0, -1e-8], [1e-300], []),
    ("train.weight_decay", [-1e-9], [0, 10], ["train.optimizer='adamw'"]),
    ("train.label_smoothing", [-0.1, 1], [0, 0.999], []),
    ("train.bn_alpha", [-0.1, 1, 1.5], [0, 0.999], []),
    ("train.evals_per_cycle", [0], [1], []),
    ("train.eval_train_subset", [-1], [0, 1], []),
    ("train.seed", [-1, 2**63], [0, 2**63 - 1], []),
    ("train.shuffle_seed", [-1, 2**63], [0, 2**63 - 1], []),
    ("train.dtype", ["float16", "double"], ["float32", "float64"], []),
    ("train.checkpoint_every", [-1], [0], []),
    ("train.blas_threads", [0, -1, 257, 100000], [1, 256], []),
    ("augment.translate", [-1, 17], [0, 16], []),
    ("augment.padding", ["wrap", "zeros"], ["zero", "reflect", "edge"], []),
    ("augment.crop_scale", [0, -0.5, 1.01], [1e-300, 1], []),
    ("augment.jitter", [-0.01, 1.01], [0, 1], []),
]
BOOL_KEYS = {
    "model.batch_norm",
    "data.download",
    "train.nesterov",
    "train.snapshots",
    "train.diagnostics",
    "augment.flip",
}
FLOAT_KEYS = [
    "data.zca_eps",
    "model.sigma",
    "model.eps",
    "model.dropout",
    "model.input_dropout",
    "train.lam",
    "train.eta_min",
    "train.eta_max",
    "train.eta",
    "train.decay",
    "train.exp_gamma",
    "train.warmup",
    "train.momentum",
    "train.beta1",
    "train.beta2",
    "train.adam_eps",
    "train.weight_decay",
    "train.label_smoothing",
    "train.bn_alpha",
    "augment.crop_scale",
    "augment.jitter",
]


def test_every_key_has_its_range_tested():
    assert {k for k, *_ in RANGES} | BOOL_KEYS | {"data.path"} == set(experiment_keys())


@pytest.mark.parametrize(
    "key,value,extra", [(k, v, extra) for k, bad, _, extra in RANGES for v in bad], ids=lambda x: repr(x)[:30]
)
def test_out_of_range_values_are_refused_naming_the_key(key, value, extra):
    msg = error(load, *extra, f"{key}={toml_value(value)}")
    assert msg.startswith(f"{BASE}: {key}")
    assert " must be " in msg


@pytest.mark.parametrize(
    "key,value,extra", [(k, v, extra) for k, _, good, extra in RANGES for v in good], ids=lambda x: repr(x)[:30]
)
def test_boundary_values_are_accepted(key, value, extra):
    section, name = key.split(".")
    got = getattr(getattr(load(*extra, f"{key}={toml_value(value)}"), section), name)
    assert got == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+inf"])
def test_nan_and_infinities_are_refused(key, value):
    assert error(load, f"{key}={value}") == f"{BASE}: {key} must be a finite number, got {value.lstrip('+')}"


# -- types ----------------------------------------------------------------------------------------
TYPES = [
    ("train.batch_size=true", "train.batch_size: expected an integer, got true"),
    ("train.n_s=2.5", "train.n_s: expected an integer, got 2.5"),
    ("train.n_s='100'", "train.n_s: expected an integer, got '100'"),
    ("train.n_s=abc", "train.n_s: expected an integer, got 'abc'"),
    ("train.seed=inf", "train.seed: expected an integer, got inf"),
    ("train.seed=1979-05-27", "train.seed: expected an integer, got 1979-05-27"),
    ("train.lam='0.1'", "train.lam: expected a number, got '0.1'"),
    ("train.lam=abc", "train.lam: expected a number, got 'abc'"),
    ("train.lam=true", "train.lam: expected a number, got true"),
    ("train.lam=[0.1]", "train.lam: expected a number, got [0.1]"),
    ("train.lam={a = 1}", "train.lam: expected a number, got a table"),
    ("train.lam=", "train.lam: expected a number, got ''"),
    ("model.batch_norm=1", "model.batch_norm: expected true or false, got 1"),
    ("model.batch_norm='true'", "model.batch_norm: expected true or false, got 'true'"),
    ("model.hidden=5", "model.hidden: expected a list, got 5"),
    ("model.hidden='50,50'", "model.hidden: expected a list, got '50,50'"),
    ("model.hidden=[1, 'a']", "model.hidden[1]: expected an integer, got 'a'"),
    ("model.hidden=[1, true]", "model.hidden[1]: expected an integer, got true"),
    ("model.hidden=[[1]]", "model.hidden[0]: expected an integer, got [1]"),
    ("data.path=5", "data.path: expected a string, got 5"),
    ("data.path=''", "data.path must not be empty"),
    ("data.download='no'", "data.download: expected true or false, got 'no'"),
    ("data.dataset=1", "data.dataset must be one of cifar10, idx, images, got 1"),
    ("train.shuffle_seed='none'", "train.shuffle_seed: expected an integer, got 'none'"),
    ("augment.flip=1", "augment.flip: expected true or false, got 1"),
    ("augment.translate=2.5", "augment.translate: expected an integer, got 2.5"),
    ("name=5", "name: expected a string, got 5"),
    ("name=''", "name must not be empty"),
    ("name='a/b'", "name must be a plain name (no / or \\), got 'a/b'"),
    ("description=[1]", "description: expected a string, got [1]"),
]


@pytest.mark.parametrize("override,expected", TYPES)
def test_wrong_types_are_named(override, expected):
    assert error(load, override) == f"{BASE}: {expected}"


def test_numbers_convert_only_where_they_mean_the_same():
    cfg = load("train.lam=1", "train.n_s=1e3", "train.seed=2.0", "model.hidden=[20.0, 10]")
    assert cfg.train.lam == 1.0 and type(cfg.train.lam) is float  # an integer for a number
    assert cfg.train.n_s == 1000 and type(cfg.train.n_s) is int  # an integral number for an integer
    assert cfg.train.seed == 2 and type(cfg.train.seed) is int
    assert cfg.model.hidden == (20, 10) and all(type(w) is int for w in cfg.model.hidden)


# -- cross-field rules ----------------------------------------------------------------------------
CROSS = [
    (["train.eta_min=0.2", "train.eta_max=0.1"], "train.eta_min (0.2) must not exceed train.eta_max (0.1)"),
    (["train.nesterov=true"], "train.nesterov = true needs train.optimizer = 'sgd' and train.momentum > 0"),
    (
        ["train.nesterov=true", "train.momentum=0.9", "train.optimizer='adam'"],
        "train.nesterov = true needs train.optimizer = 'sgd'",
    ),
    (["train.weight_decay=0.01"], "train.weight_decay applies to train.optimizer = 'adamw' only, got 'sgd'"),
    (["train.weight_decay=0.01", "train.optimizer='adam'"], "train.weight_decay applies to train.optimizer = 'adamw'"),
    (["train.warmup=0.1"], "train.warmup applies to the cosine and one_cycle schedules only"),
    (["train.warmup=0.1", "train.schedule='decay'"], "train.warmup applies to the cosine and one_cycle"),
    (["train.exp_gamma=0.99"], "train.exp_gamma applies to the exp_range schedule only, got train.schedule = 'cyclic'"),
    (["model.batch_norm=true", "train.batch_size=1"], "model.batch_norm = true needs train.batch_size >= 2, got 1"),
    (["data.dataset='idx'", "data.split='batch1'"], "data.split 'batch1' is CIFAR-10 only"),
]


@pytest.mark.parametrize("overrides,expected", CROSS)
def test_cross_field_rules(overrides, expected):
    assert error(load, *overrides).startswith(f"{BASE}: {expected}")


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.eta_min=0.1", "train.eta_max=0.1"],
        ["train.nesterov=true", "train.momentum=0.9"],
        ["train.weight_decay=0.01", "train.optimizer='adamw'"],
        ["train.warmup=0.1", "train.schedule='one_cycle'"],
        ["train.warmup=0.1", "train.schedule='cosine'"],
        ["train.exp_gamma=0.99", "train.schedule='exp_range'"],
        ["model.batch_norm=true", "train.batch_size=2"],
        ["data.dataset='idx'", "data.split='all'"],
    ],
)
def test_cross_field_rules_allow_what_they_should(overrides):
    load(*overrides)


# -- unknown keys and overrides ---------------------------------------------------------------------
UNKNOWN = [
    ("train.lamda=1", "unknown key train.lamda (did you mean train.lam?)"),
    ("model.hiden=[5]", "unknown key model.hiden (did you mean model.hidden?)"),
    ("augment.flp=true", "unknown key augment.flp (did you mean augment.flip?)"),
    ("data.n_vall=5", "unknown key data.n_vall (did you mean data.n_val?)"),
    ("train.qqqq=1", "unknown key train.qqqq"),
]


@pytest.mark.parametrize("override,expected", UNKNOWN)
def test_unknown_keys_suggest_the_nearest(override, expected):
    msg = error(load, override)
    assert msg == f"{BASE}: {expected}"


def test_override_syntax():
    assert parse_override("train.eta=1e-3") == ("train", "eta", 1e-3)
    assert parse_override("augment.flip=true") == ("augment", "flip", True)
    assert parse_override("name='x'") == ("", "name", "x")
    assert parse_override("train.lam=abc") == ("train", "lam", "abc")  # not TOML: a string
    assert parse_override("train.lam=1\nx=2") == ("train", "lam", "1\nx=2")  # one value, never two
    assert error(parse_override, "train.lam") == "override 'train.lam' must look like section.key=value"
    assert error(parse_override, "lam=1").endswith("(did you mean train.lam?)")
    msg = error(parse_override, "training.lam=1")
    assert msg.startswith("unknown section 'training'") and msg.endswith("(did you mean train?)")
    assert "must look like section.key" in error(parse_override, "train.lam.x=1")


def test_constructors_validate_too():
    assert error(TrainConfig, lam=-1) == "train.lam must be >= 0, got -1"
    assert error(TrainConfig, lamda=1) == "unknown key train.lamda (did you mean train.lam?)"
    assert error(ModelConfig, hidden=(50, 0)) == "model.hidden[1] must be >= 1, got 0"
    assert error(DataConfig, n_val=0) == "data.n_val must be >= 1, got 0"
    assert error(AugmentConfig, translate=17) == "augment.translate must be <= 16, got 17"
    assert error(TrainConfig, eta_min=1.0, eta_max=0.5) == "train.eta_min (1.0) must not exceed train.eta_max (0.5)"
    assert error(ExperimentConfig, name="") == "name must not be empty"
    bn = ModelConfig(batch_norm=True)
    assert error(ExperimentConfig, model=bn, train=TrainConfig(batch_size=1)).startswith("model.batch_norm = true")
    assert error(from_dict, {"train": {"lam": -1}}) == "train.lam must be >= 0, got -1"  # no file: no prefix
    assert error(from_dict, [1]).startswith("expected a table")


def test_configs_are_frozen_hashable_value_objects():
    a, b = load(), load()
    assert a == b and hash(a) == hash(b) and a is not b
    assert load("train.lam=0.5") != a
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.train.lam = 1.0
    assert dataclasses.asdict(a)["train"]["lam"] == a.train.lam
    assert dataclasses.replace(a.train, lam=0.5).lam == 0.5
    with pytest.raises(ConfigError, match="train.lam must be >= 0"):
        dataclasses.replace(a.train, lam=-0.5)
    r = a.replace(name="b", train={"seed": 3}, augment={"flip": True})
    assert (r.name, r.train.seed, r.augment.flip, r.train.lam) == ("b", 3, True, a.train.lam)
    assert error(a.replace, train={"seed": -1}) == "train.seed must be >= 0, got -1"
    assert error(a.replace, train={"sed": 1}) == "unknown key train.sed (did you mean train.seed?)"
    assert load("train.shuffle_seed=7").train.data_seed == 7 and load("train.seed=5").train.data_seed == 5
    net = a.model.network_config(12, 4, "float64")
    assert (net.input_size, net.hidden, net.n_classes, net.dtype) == (12, (50, 50), 4, "float64")


def test_schedule_families():
    from klayer.config import CYCLIC_SCHEDULES, SCHEDULES

    assert set(CYCLIC_SCHEDULES) == {"cyclic", "triangular2", "exp_range"} < set(SCHEDULES)
    for s in SCHEDULES:
        assert TrainConfig(schedule=s).cyclic == (s in CYCLIC_SCHEDULES)


# -- round trips ----------------------------------------------------------------------------------
# a value other than the default for every key, and the overrides it needs
VALUES = {
    "model.hidden": ([7, 3], []),
    "model.batch_norm": (True, []),
    "model.init": ("normal", []),
    "model.sigma": (0.25, []),
    "model.eps": (1e-5, []),
    "model.dropout": (0.5, []),
    "model.input_dropout": (0.2, []),
    "data.dataset": ("images", []),
    "data.path": ("/some/where", []),
    "data.layout": ("binary", []),
    "data.split": ("batch1", []),
    "data.n_val": (1000, []),
    "data.image_shape": ([1, 16, 16], ["data.dataset='images'"]),
    "data.whiten": ("zca", []),
    "data.zca_eps": (0.5, []),
    "data.download": (False, []),
    "train.lam": (0.125, []),
    "train.batch_size": (64, []),
    "train.schedule": ("triangular2", []),
    "train.eta_min": (0.001, []),
    "train.eta_max": (0.5, []),
    "train.n_s": (123, []),
    "train.n_cycles": (4, []),
    "train.eta": (0.3, []),
    "train.decay": (0.95, []),
    "train.n_epochs": (7, []),
    "train.exp_gamma": (0.9999, ["train.schedule='exp_range'"]),
    "train.warmup": (0.3, ["train.schedule='one_cycle'"]),
    "train.optimizer": ("adam", []),
    "train.momentum": (0.9, []),
    "train.nesterov": (True, ["train.momentum=0.9"]),
    "train.beta1": (0.8, []),
    "train.beta2": (0.99, []),
    "train.adam_eps": (1e-6, []),
    "train.weight_decay": (0.05, ["train.optimizer='adamw'"]),
    "train.label_smoothing": (0.1, []),
    "train.bn_alpha": (0.5, []),
    "train.evals_per_cycle": (3, []),
    "train.eval_train_subset": (500, []),
    "train.seed": (2**63 - 1, []),
    "train.shuffle_seed": (11, []),
    "train.dtype": ("float64", []),
    "train.checkpoint_every": (0, []),
    "train.snapshots": (True, []),
    "train.blas_threads": (2, []),
    "train.diagnostics": (True, []),
    "augment.flip": (True, []),
    "augment.translate": (4, []),
    "augment.padding": ("reflect", []),
    "augment.crop_scale": (0.35, []),
    "augment.jitter": (0.4, []),
}


def test_round_trip_covers_every_key():
    assert set(VALUES) == set(experiment_keys())
    defaults = ExperimentConfig()
    for key, (value, _) in VALUES.items():
        section, name = key.split(".")
        assert getattr(getattr(defaults, section), name) != (tuple(value) if isinstance(value, list) else value), key


@pytest.mark.parametrize("key", sorted(VALUES))
def test_every_key_round_trips_through_set_and_toml(key, tmp_path):
    value, extra = VALUES[key]
    cfg = load(*extra, f"{key}={toml_value(value)}")
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == (tuple(value) if isinstance(value, list) else value)
    assert cfg.to_dict()[section][name] == value
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    again = load_experiment(tmp_path / "c.toml")
    assert again == cfg and hash(again) == hash(cfg)
    assert from_dict(cfg.to_dict()) == cfg


def test_a_config_with_every_key_changed_round_trips(tmp_path):
    skip = {"train.nesterov", "train.weight_decay", "data.split", "train.schedule", "train.optimizer"}
    over = [f"{k}={toml_value(v)}" for k, (v, _) in VALUES.items() if k not in skip]
    over += ["train.schedule='one_cycle'", "train.exp_gamma=1", "name='every'", "description='all of them'"]
    cfg = load(*over)
    (tmp_path / "every.toml").write_text(cfg.to_toml())
    assert load_experiment(tmp_path / "every.toml") == cfg
    assert set(cfg.to_dict()) == {"name", "description", "model", "data", "train", "augment"}
    assert "shuffle_seed" not in load().to_dict()["train"]  # None is left out: TOML has no null


def test_lockstep_grouping_sees_the_augment_section():
    a, b, c = load(), load("train.lam=0.1"), load("augment.flip=true")
    assert lockstep_groups([a, b, c]) == [[0, 1], [2]]


# -- studies ---------------------------------------------------------------------------------------
GRADCHECK = {"kind": "gradcheck", "depths": [2], "batch_sizes": [10], "hs": [1e-5]}
SANITY = {"kind": "sanity", "n": 20, "n_epochs": 2, "batch_size": 10}
RUNS = {"kind": "runs", "experiments": ["a2_2layer"], "set": ["train.n_s=10"]}
SEARCH = {"kind": "search", "base": "a2_2layer", "key": "train.lam", "low": 1e-4, "high": 1e-1, "coarse_n": 3}
GRID = {
    "kind": "grid",
    "experiments": ["a3_3layer_bn"],
    "key": "model.sigma",
    "values": [0.1, 0.01],
    "set": ["model.init='normal'"],
}
KINDS = {"gradcheck": GRADCHECK, "sanity": SANITY, "runs": RUNS, "search": SEARCH, "grid": GRID}


@pytest.fixture
def exp_dir(tmp_path):
    d = tmp_path / "exp"
    d.mkdir()
    for name in ("a2_2layer", "a3_3layer_bn"):
        shutil.copy(EXP / f"{name}.toml", d)
    (d / "broken.toml").write_text("[train]\nlam = -1\n")
    return d


def write_study(folder, study, quick=None, stem="s", **top):
    doc = {**top, "study": study}
    if quick is not None:
        doc["quick"] = quick
    path = folder / f"{stem}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def changed(_base: dict, **changes) -> dict:
    d = {**_base, **changes}
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_study_loads_with_its_defaults(exp_dir, kind):
    st_ = load_study(write_study(exp_dir, KINDS[kind]))
    assert st_["kind"] == kind and st_["name"] == "s" and st_["order"] == 99
    defaults = {
        "gradcheck": {"lams": [0.0], "features": 20, "max_entries": 100},
        "sanity": {"hidden": [50], "eta": 0.01, "lam": 0.0},
        "runs": {"set": ["train.n_s=10"]},
        "search": {"fine_n": 0, "decades": 0.5, "sampling": "grid", "search_seed": 0, "set": [], "final_set": []},
        "grid": {"set": ["model.init='normal'"]},
    }[kind]
    for k, v in defaults.items():
        assert st_[k] == v, k


def test_quick_overrides_and_appends(exp_dir):
    path = write_study(exp_dir, RUNS, quick={"set": ["train.n_cycles=2"], "order": 3})
    assert load_study(path)["set"] == ["train.n_s=10"]
    q = load_study(path, quick=True)
    assert q["set"] == ["train.n_s=10", "train.n_cycles=2"] and q["order"] == 3


def test_suite_study_files_validate():
    names = {load_study(f)["name"] for f in suite_files(EXP)}
    assert len(names) == 8


BAD_STUDIES = [
    (changed(GRADCHECK, depths=[5]), None, "study.depths[0] must be one of 2, 3, 4, 9, got 5"),
    (changed(GRADCHECK, depths=[]), None, "study.depths must not be empty"),
    (changed(GRADCHECK, batch_sizes=[1]), None, "study.batch_sizes[0] must be >= 2, got 1"),
    (changed(GRADCHECK, batch_sizes=[10, True]), None, "study.batch_sizes[1]: expected an integer, got true"),
    (changed(GRADCHECK, hs=[0.0]), None, "study.hs[0] must be > 0, got 0.0"),
    (changed(GRADCHECK, hs=[float("nan")]), None, "study.hs[0] must be a finite number, got nan"),
    (changed(GRADCHECK, hs=None), None, "study.hs is required"),
    (changed(GRADCHECK, lams=[-0.1]), None, "study.lams[0] must be >= 0, got -0.1"),
    (changed(GRADCHECK, features=0), None, "study.features must be >= 1, got 0"),
    (changed(GRADCHECK, features=3073), None, "study.features must be <= 3072, got 3073"),
    (changed(GRADCHECK, max_entries=0), None, "study.max_entries must be >= 1, got 0"),
    (changed(GRADCHECK, depth=[2]), None, "unknown key study.depth (did you mean study.depths?)"),
    (changed(GRADCHECK, set=["train.lam=1"]), None, "unknown key study.set"),
    (changed(GRADCHECK, order=-1), None, "study.order must be >= 0, got -1"),
    (changed(SANITY, n=1), None, "study.n must be >= 2, got 1"),
    (changed(SANITY, batch_size=1), None, "study.batch_size must be >= 2, got 1"),
    (changed(SANITY, batch_size=30), None, "study.batch_size (30) must not exceed study.n (20)"),
    (changed(SANITY, eta=0), None, "study.eta must be > 0, got 0"),
    (changed(SANITY, n_epochs=0), None, "study.n_epochs must be >= 1, got 0"),
    (changed(SANITY, hidden=[0]), None, "study.hidden[0] must be >= 1, got 0"),
    (changed(SANITY, lam=-1), None, "study.lam must be >= 0, got -1"),
    (changed(RUNS, experiments=[]), None, "study.experiments must not be empty"),
    (changed(RUNS, experiments=["a2_2layr"]), None, "study.experiments: no experiment"),
    (changed(RUNS, experiments=["../a2_2layer"]), None, "study.experiments[0] must be a plain name"),
    (changed(RUNS, experiments="a2_2layer"), None, "study.experiments: expected a list, got 'a2_2layer'"),
    (changed(RUNS, set=["garbage"]), None, "study.set[0]: override 'garbage' must look like section.key=value"),
    (changed(RUNS, set="train.lam=1"), None, "study.set: expected a list, got 'train.lam=1'"),
    (changed(RUNS, set=["train.lamda=1"]), None, "unknown key train.lamda (did you mean train.lam?)"),
    (changed(RUNS, set=["train.lam=-1"]), None, "study.set for a2_2layer: "),
    (changed(RUNS, experiments=["a2_2layer", "broken"]), None, "study.experiments for broken: "),
    (changed(SEARCH, low=0), None, "study.low must be > 0, got 0"),
    (changed(SEARCH, low=0.5), None, "study.low (0.5) must be below study.high (0.1)"),
    (changed(SEARCH, high=None), None, "study.high is required"),
    (changed(SEARCH, coarse_n=0), None, "study.coarse_n must be >= 1, got 0"),
    (changed(SEARCH, fine_n=-1), None, "study.fine_n must be >= 0, got -1"),
    (changed(SEARCH, decades=0), None, "study.decades must be > 0, got 0"),
    (
        changed(SEARCH, sampling="rand"),
        None,
        "study.sampling must be one of grid, random, got 'rand' (did you mean random?)",
    ),
    (changed(SEARCH, search_seed=-1), None, "study.search_seed must be >= 0, got -1"),
    (
        changed(SEARCH, key="train.lamda"),
        None,
        "study.key: unknown experiment key 'train.lamda' (did you mean train.lam?)",
    ),
    (changed(SEARCH, key="train.seed"), None, "study.key for a2_2layer: "),  # seeds are integers, not 1e-4
    (changed(SEARCH, final_set=["train.n_s=0"]), None, "study.final_set for a2_2layer: "),
    (changed(SEARCH, base="nope"), None, "study.base: no experiment"),
    (changed(GRID, values=[]), None, "study.values must not be empty"),
    (changed(GRID, values=["a"]), None, "study.values[0]: expected a number, got 'a'"),
    (changed(GRID, values=[0.1, -1.0]), None, "study.values for a3_3layer_bn: "),
    (changed(GRID, key="model.sgima"), None, "(did you mean model.sigma?)"),
    (
        changed(GRID, kind="serch"),
        None,
        "study.kind must be one of gradcheck, sanity, runs, search, grid, got 'serch' (did you mean search?)",
    ),
    (changed(GRID, kind=None), None, "study.kind is required"),
    (changed(GRID, kind=3), None, "study.kind must be one of gradcheck, sanity, runs, search, grid, got 3"),
    (SEARCH, {"coarse_n": 0}, "quick.coarse_n must be >= 1, got 0"),
    (SEARCH, {"coarse": 1}, "unknown key quick.coarse (did you mean quick.coarse_n?)"),
    (SEARCH, {"kind": "runs"}, "quick.kind: a study's kind cannot change in [quick]"),
    (SEARCH, {"low": 0.5}, "quick.low (0.5) must be below study.high (0.1)"),
    (RUNS, {"set": ["train.lamda=1"]}, "quick.set for a2_2layer: "),
    (RUNS, {"set": "x"}, "quick.set: expected a list, got 'x'"),
    (RUNS, {"experiments": ["nope"]}, "quick.experiments: no experiment"),
    (SANITY, 5, "quick: expected a table, got 5"),
]


@pytest.mark.parametrize("study,quick,expected", BAD_STUDIES, ids=[e[:40] for *_, e in BAD_STUDIES])
def test_reproduce_refuses_a_bad_study_before_training(exp_dir, tmp_path, monkeypatch, capsys, study, quick, expected):
    ran = []
    monkeypatch.setattr(klayer.suite.runner, "run_study", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(klayer.suite.studies, "run_many", lambda *a, **k: ran.append(a))
    good = write_study(exp_dir, GRADCHECK, stem="a_good")  # listed first: nothing runs, even so
    bad = write_study(exp_dir, study, quick)
    out = tmp_path / "out"
    assert main(["reproduce", str(good), str(bad), "--out", str(out), "--seeds", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klayer: error: {bad}: ") and err.count("\n") == 1, err
    assert expected in err
    assert not ran and not out.exists()


@pytest.mark.parametrize(
    "doc,expected",
    [
        ({"study": 5}, "study: expected a table, got 5"),
        ({"study": GRADCHECK, "descripton": "x"}, "unknown key descripton (did you mean description?)"),
        ({"study": GRADCHECK, "name": "a/b"}, "name must be a plain name"),
        ({"study": GRADCHECK, "name": 5}, "name: expected a string, got 5"),
        ({"name": "x"}, "not a study (no [study] table)"),
    ],
)
def test_study_file_top_level(exp_dir, doc, expected):
    path = exp_dir / "t.toml"
    path.write_text(tomli_w.dumps(doc))
    assert error(load_study, path).startswith(f"{path}: {expected}")


def test_reproduce_refuses_two_studies_of_one_name(exp_dir, tmp_path, capsys):
    a = write_study(exp_dir, GRADCHECK, stem="one", name="same")
    b = write_study(exp_dir, SANITY, stem="two", name="same")
    assert main(["reproduce", str(a), str(b), "--out", str(tmp_path / "o")]) == 1
    assert "study name 'same' is also the name of" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_suite_files_validate_every_study(exp_dir):
    write_study(exp_dir, GRADCHECK, stem="ok")
    assert suite_files(exp_dir) == [exp_dir / "ok.toml"]
    write_study(exp_dir, changed(SEARCH, coarse_n=0), stem="bad")
    assert "study.coarse_n must be >= 1" in error(suite_files, exp_dir)


# -- the command line's numbers -------------------------------------------------------------------
CLI_BAD = [
    (["train", "x.toml", "--seed", "-1"], "--seed"),
    (["train", "x.toml", "--seed", "1.5"], "--seed"),
    (["train", "x.toml", "--seed", str(2**63)], "--seed"),
    (["train", "x.toml", "--blas-threads", "0"], "--blas-threads"),
    (["evaluate", "m", "--lam", "-0.1"], "--lam"),
    (["evaluate", "m", "--lam", "nan"], "--lam"),
    (["evaluate", "m", "--lam", "1e999"], "--lam"),
    (["predict", "m", "r.npy", "--show", "-1"], "--show"),
    (["sanity", "--n", "1"], "--n"),
    (["sanity", "--n", "ten"], "--n"),
    (["sanity", "--epochs", "0"], "--epochs"),
    (["sanity", "--eta", "0"], "--eta"),
    (["sanity", "--eta", "inf"], "--eta"),
    (["sanity", "--batch-size", "0"], "--batch-size"),
    (["sanity", "--lam", "-1"], "--lam"),
    (["sanity", "--seed", "-1"], "--seed"),
    (["sanity", "--target", "0"], "--target"),
    (["sanity", "--target", "-inf"], "--target"),
    (["sanity", "--hidden", "0"], "--hidden"),
    (["sanity", "--hidden", "50,x"], "--hidden"),
    (["sanity", "--hidden", str(2**20 + 1)], "--hidden"),
    (["reproduce", "--seeds", "0"], "--seeds"),
    (["reproduce", "--jobs", "0"], "--jobs"),
    (["reproduce", "--jobs", "two"], "--jobs"),
    (["train", "x.toml", "--blas-threads", "257"], "--blas-threads"),
    (["gradcheck", "--hidden", str(2**20 + 1)], "--hidden"),
    (["gradcheck", "--hidden", "0"], "--hidden"),
    (["gradcheck", "--batch-size", str(10**5 + 1)], "--batch-size"),
    (["gradcheck", "--h", "1e300"], "--h"),
    (["gradcheck", "--h", "1e-5,2"], "--h"),
    (["lr-range", "x.toml", "--eta-end", "1e308"], "--eta-end"),
    (["lr-range", "x.toml", "--eta-start", "0"], "--eta-start"),
]


@pytest.mark.parametrize("argv,flag", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_cli_numbers_are_range_checked(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"klayer {argv[0]}: error: argument {flag}")


@pytest.mark.parametrize(
    "argv,attr,value",
    [
        (["train", "x.toml", "--seed", "0"], "seed", 0),
        (["train", "x.toml", "--seed", str(2**63 - 1)], "seed", 2**63 - 1),
        (["train", "x.toml", "--blas-threads", "1"], "blas_threads", 1),
        (["evaluate", "m", "--lam", "0"], "lam", 0.0),
        (["predict", "m", "r.npy", "--show", "0"], "show", 0),
        (["sanity", "--n", "2"], "n", 2),
        (["sanity", "--epochs", "1"], "epochs", 1),
        (["sanity", "--eta", "1e-300"], "eta", 1e-300),
        (["sanity", "--batch-size", "1"], "batch_size", 1),
        (["sanity", "--lam", "0"], "lam", 0.0),
        (["sanity", "--seed", "0"], "seed", 0),
        (["sanity", "--target", "1e-300"], "target", 1e-300),
        (["sanity", "--hidden", f"1,{2**20}"], "hidden", (1, 2**20)),
        (["sanity", "--hidden", "none"], "hidden", ()),
        (["reproduce", "--seeds", "1"], "seeds", 1),
        (["reproduce", "--jobs", "1"], "jobs", 1),
        (["train", "x.toml", "--blas-threads", "256"], "blas_threads", 256),
        (["gradcheck", "--hidden", f"{2**20},1"], "hidden", (2**20, 1)),
        (["gradcheck", "--hidden", ""], "hidden", ()),
        (["gradcheck", "--batch-size", str(10**5)], "batch_size", 10**5),
        (["gradcheck", "--h", "1e-7,1"], "h", (1e-7, 1.0)),
        (["lr-range", "x.toml", "--eta-end", "1000"], "eta_end", 1000.0),
    ],
)
def test_cli_boundary_numbers_are_accepted(argv, attr, value):
    assert getattr(build_parser().parse_args(argv), attr) == value


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["sanity", "--batch-norm", "--batch-size", "1"], "--batch-norm needs --batch-size >= 2, got 1"),
        (["sanity", "--n", "10", "--batch-size", "20"], "--batch-size 20 exceeds --n 10"),
    ],
)
def test_cli_arguments_checked_together(argv, expected, capsys, tmp_path):
    assert main([*argv, "--data", str(tmp_path / "nodata"), "--no-download"]) == 2
    assert capsys.readouterr().err == f"klayer: error: {expected}\n"


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    import klayer.cli

    def allocate(args):
        raise MemoryError("Unable to allocate 48.0 GiB for an array with shape (4096, 4096, 768)")

    monkeypatch.setattr(klayer.cli, "cmd_gradcheck", allocate)
    assert main(["gradcheck", "--source", "random"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klayer: error: out of memory: Unable to allocate 48.0 GiB") and err.count("\n") == 1


def test_sanity_n_beyond_the_data_is_one_line(rng):
    data = tiny_dataset(rng)  # 300 training rows: n up to 150
    assert error(overfit, data, n=151).startswith("sanity check: n=151 must be between 2 and 150")
    assert overfit(data, n=150, n_epochs=1, batch_size=50)[-1]["epoch"] == 1


def test_sanity_cli_n_beyond_the_data(cifar_dir, capsys):
    assert main(["sanity", "--n", "30000", "--data", str(cifar_dir), "--no-download", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klayer: error: sanity check: n=30000 must be between 2 and 22500") and err.count("\n") == 1


def test_cli_helpers_for_lists():
    import argparse

    from klayer.cliargs import float_list, hidden_sizes

    steps = float_list(above=0)
    assert steps("1e-5,1e-3") == (1e-5, 1e-3) and steps(" 2 ") == (2.0,)
    for bad in ["", "1e-5,,1e-3", "0", "-1", "nan", "1e999", "x"]:
        with pytest.raises(argparse.ArgumentTypeError):
            steps(bad)
    assert float_list(0)("0,1") == (0.0, 1.0)
    assert hidden_sizes("50, 30") == (50, 30) and hidden_sizes("") == () and hidden_sizes("None") == ()
    for bad in ["0", "50,-1", "1.5", f"{2**20 + 1}"]:
        with pytest.raises(argparse.ArgumentTypeError):
            hidden_sizes(bad)


def _subparsers(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    raise AssertionError("no sub-commands")


def _message_flags() -> set[tuple[str, str]]:
    """Every ``--flag`` in a string literal of klayer's source (messages, help, docstrings)."""
    found = set()
    for path in sorted((ROOT / "src" / "klayer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    found.add((flag, path.name))
    return found


def test_every_flag_a_message_suggests_exists():
    parser = build_parser()
    commands = _subparsers(parser)
    flags = {o for p in [parser, *commands.values()] for o in p._option_string_actions}
    mentioned = _message_flags()
    assert {f for f, _ in mentioned} >= {"--resume", "--retrain", "--out", "--data", "--no-download"}
    missing = sorted(f"{flag} ({where})" for flag, where in mentioned if flag not in flags)
    assert not missing, f"messages suggest flags no command has: {missing}"
    # train's own messages (resume, retrain, a new folder, no download) point at train's flags
    train = commands["train"]._option_string_actions
    assert {"--resume", "--retrain", "--out", "--data", "--no-download", "--set"} <= set(train)


# -- klayer report on a folder with nothing in it ---------------------------------------------------
def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def _make(root, what):
    if what == "missing":
        return root / "missing"
    path = root / what
    if what == "file":
        path.write_text("x")
        return path
    path.mkdir()
    if what == "unrelated":
        (path / "a.csv").write_text("1")
    elif what == "suite-without-studies":
        (path / "suite.json").write_text(json.dumps({"studies": ["gone"]}))
        (path / "other").mkdir()
        (path / "other" / "study.json").write_text("{}")  # not listed in suite.json
    return path


@pytest.mark.parametrize(
    "what,expected",
    [
        ("missing", "no such folder"),
        ("empty", "nothing to report"),
        ("file", "not a folder"),
        ("unrelated", "nothing to report"),
        ("suite-without-studies", "nothing to report"),
    ],
)
def test_report_on_a_folder_with_nothing_to_report_is_an_error(tmp_path, capsys, what, expected):
    root = tmp_path / "root"
    root.mkdir()
    path = _make(root, what)
    before = _files(root)
    assert main(["report", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"klayer: error: {path}: {expected}") and err.count("\n") == 1, err
    assert _files(root) == before  # nothing written, not even an empty figures folder
    assert main(["report", str(path), "--out", str(tmp_path / "elsewhere")]) == 1
    assert not (tmp_path / "elsewhere").exists()


def test_report_on_a_study_folder_still_works(tmp_path):
    from klayer.suite import build_report

    sdir = tmp_path / "s"
    sdir.mkdir()
    (sdir / "study.json").write_text(json.dumps({"name": "s", "kind": "runs", "experiments": [], "runs": []}))
    md, html = build_report([sdir])
    assert md == sdir / "report.md" and html.is_file() and "## s" in md.read_text()


# -- fuzzing the loaders: only klayer's one-line ConfigError, never another exception ---------------
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    for name in ("a2_2layer", "a3_3layer_bn"):
        shutil.copy(EXP / f"{name}.toml", d)
    return d


def only_config_errors(fn, *args):
    """Run a loader; it may succeed or raise ConfigError with one short line, nothing else."""
    try:
        fn(*args)
    except ConfigError as e:
        msg = str(e)
        assert msg and len(msg.splitlines()) == 1 and len(msg) < 1000, msg


EXPERIMENT_FILES = [f.read_bytes() for f in sorted(EXP.glob("a*.toml"))]
STUDY_DOCS = [
    *(tomli_w.dumps({"name": k, "study": v, "quick": {}}).encode() for k, v in KINDS.items()),
    tomli_w.dumps({"study": SEARCH, "quick": {"coarse_n": 2, "set": ["train.n_s=5"], "final_set": []}}).encode(),
]
TOKENS = [
    "-1", "0", "1", "2.5", "1e999", "-inf", "nan", "true", "'x'", '"a/b"', "[]", "[0]", "[1, 'a']", "{}",
    "{a = 1}", str(2**63), str(-(2**70)), "1979-05-27", "'train.lam=-1'", "['train.lamda=1']", "['nope']",
    "'grid'", "'cosine'", "'adamw'", "[[1]]", "0.999", "1.0", "'\\u0000'", "\"\"\"x\ny\"\"\"",
]  # fmt: skip


@st.composite
def mutated(draw, sources):
    """A valid file with a few edits: bytes flipped, inserted or deleted, values swapped for
    awkward TOML values, lines duplicated or dropped, keys misspelt."""
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["byte", "insert", "delete", "value", "value", "line", "key"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "byte" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            lines = bytes(data).split(b"\n")
            j = draw(st.integers(0, len(lines) - 1))
            if op == "value" and b" = " in lines[j]:
                lines[j] = lines[j].split(b" = ")[0] + b" = " + draw(st.sampled_from(TOKENS)).encode()
            elif op == "line":
                lines.insert(draw(st.integers(0, len(lines))), lines[j]) if draw(st.booleans()) else lines.pop(j)
            elif op == "key" and b" = " in lines[j]:
                k = lines[j].split(b" = ")[0]
                c = draw(st.integers(0, max(0, len(k) - 1)))
                lines[j] = k[:c] + draw(st.sampled_from([b"x", b"", b"_", b"s"])) + k[c + 1 :] + lines[j][len(k) :]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


toml_scalars = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=8)
    | st.sampled_from(["he", "cosine", "adamw", "idx", "reflect", "grid", "train.lam", "a2_2layer", "train.lam=1"])
    | st.dates()
)
toml_values = (
    toml_scalars
    | st.lists(toml_scalars, max_size=3)
    | st.dictionaries(st.sampled_from("abk"), toml_scalars, max_size=2)
)


@st.composite
def restructured(draw, docs, keys):
    """A valid document with values replaced, keys added and tables swapped, written as TOML."""
    import tomllib

    doc = tomllib.loads(draw(st.sampled_from(docs)).decode())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(keys)).split(".")
        table = doc
        for p in path[:-1]:
            if not isinstance(table.get(p), dict):
                table[p] = {}
            table = table[p]
        table[path[-1]] = draw(toml_values)
    return tomli_w.dumps(doc).encode()


def test_fuzz_profile_runs_2000_examples_per_loader():
    assert FUZZ.max_examples >= 2000


@settings(FUZZ)
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_fuzz_experiment_file_arbitrary_bytes(fuzz_dir, data):
    path = fuzz_dir / "fuzz_exp.toml"
    path.write_bytes(data)
    only_config_errors(load_experiment, path)


@settings(FUZZ)
@given(data=mutated(EXPERIMENT_FILES))
def test_fuzz_experiment_file_mutated(fuzz_dir, data):
    path = fuzz_dir / "fuzz_exp.toml"
    path.write_bytes(data)
    only_config_errors(load_experiment, path)


EXPERIMENT_KEYS = [
    *experiment_keys(),
    "name",
    "description",
    "model",
    "train",
    "augment",
    "modle",
    "train.lamda",
    "x.y",
]


@settings(FUZZ)
@given(data=restructured(EXPERIMENT_FILES, EXPERIMENT_KEYS), overrides=st.lists(st.text(max_size=30), max_size=2))
def test_fuzz_experiment_values_and_overrides(fuzz_dir, data, overrides):
    path = fuzz_dir / "fuzz_exp.toml"
    path.write_bytes(data)
    only_config_errors(load_experiment, path, overrides)


@settings(FUZZ)
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(str.encode), quick=st.booleans())
def test_fuzz_study_file_arbitrary_bytes(fuzz_dir, data, quick):
    path = fuzz_dir / "fuzz_study.toml"
    path.write_bytes(data)
    only_config_errors(load_study, path, quick)


@settings(FUZZ)
@given(data=mutated(STUDY_DOCS), quick=st.booleans())
def test_fuzz_study_file_mutated(fuzz_dir, data, quick):
    path = fuzz_dir / "fuzz_study.toml"
    path.write_bytes(data)
    only_config_errors(load_study, path, quick)


STUDY_KEYS = sorted(
    {f"study.{k}" for d in KINDS.values() for k in d}
    | {f"quick.{k}" for d in KINDS.values() for k in d}
    | {
        "study.set",
        "study.final_set",
        "study.fine_n",
        "study.lams",
        "quick.set",
        "name",
        "description",
        "study",
        "quick",
        "studdy.kind",
    }
)


@settings(FUZZ)
@given(data=restructured(STUDY_DOCS, STUDY_KEYS), quick=st.booleans())
def test_fuzz_study_values(fuzz_dir, data, quick):
    path = fuzz_dir / "fuzz_study.toml"
    path.write_bytes(data)
    only_config_errors(load_study, path, quick)


def test_a_huge_image_shape_is_refused_before_any_image_is_read(tmp_path):
    """data.image_shape = [3, 4096, 4096] was accepted and ran out of memory only after resizing
    the images (50 million features each); shapes beyond [3, 1024, 1024] are refused in one line."""
    exp = tmp_path / "big.toml"
    for shape, ok in (
        ([3, 4096, 4096], False),
        ([1, 2048, 2048], False),
        ([3, 1024, 1025], False),
        ([3, 1024, 1024], True),
    ):
        exp.write_text(f'[data]\ndataset = "images"\nimage_shape = {shape}\n')
        if ok:
            assert load_experiment(exp).data.image_shape == tuple(shape)
            continue
        with pytest.raises(ConfigError) as e:
            load_experiment(exp)
        assert str(e.value).startswith(f"{exp}: data.image_shape {shape} gives ") and "more than 3,145,728" in str(
            e.value
        )
        assert "\n" not in str(e.value)
