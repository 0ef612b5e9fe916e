"""Hostile and degenerate inputs found by an adversarial review of the command line: each is one
line naming the file (or data set), a non-zero exit, no warnings and nothing written as if
complete. Every file is small and made here."""

import gzip
import io
import json
import pickle
import re
import struct
import tarfile
import warnings

import numpy as np
import pytest

from klayer import Network, NetworkConfig
from klayer.cli import main
from klayer.data.cifar10 import RawData, load_cifar10
from klayer.data.idx import load_idx_folder
from klayer.data.prepare import prepare
from klayer.data.safe_pickle import node_budget, safe_loads
from klayer.data.validate import check_labels, load_npy
from klayer.errors import DataError
from klayer.inference import evaluate_models, predict_inputs
from klayer.runs import load_model, save_model

from .conftest import write_idx_data


@pytest.fixture(autouse=True)
def no_warnings():
    """A RuntimeWarning (overflow, invalid cast) is a failure here, not noise on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- pickles whose objects share references (#1) -----------------------------------------------
def shared_list(levels: int):
    """A list that refers to one list twice at every level: 2**levels leaves, ~7 bytes a level."""
    a = [0]
    for _ in range(levels):
        a = [a, a]
    return a


def batch_pickle(**extra) -> bytes:
    return pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], **extra}, protocol=2)


def test_a_shared_reference_bomb_is_refused_by_its_node_budget(tmp_path):
    # 2**20 leaves in about 3 KB: far past the budget, which is linear in the file size (the
    # same file with 40 levels, 2**40 leaves, hung the loader before the budget existed)
    data = batch_pickle(x=shared_list(20))
    assert node_budget(len(data)) < 2**20
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b in ("data_batch_1", "data_batch_2", "test_batch"):
        (folder / b).write_bytes(batch_pickle())
    (folder / "data_batch_2").write_bytes(data)
    with pytest.raises(DataError, match=r"data_batch_2: refused to unpickle: its objects expand to more than"):
        load_cifar10(tmp_path, batches=("data_batch_1", "data_batch_2", "test_batch"))


def test_the_node_budget_admits_ordinary_batches_and_small_shared_values():
    d = safe_loads(batch_pickle(x=shared_list(3), names=[b"img.png"] * 1000), "b")
    assert d["x"] == shared_list(3) and len(d["names"]) == 1000
    labels = list(np.random.default_rng(0).integers(0, 10, 10000).tolist())
    big = pickle.dumps({b"data": np.zeros((10000, 3072), np.uint8), b"labels": labels}, protocol=2)
    assert safe_loads(big, "b")[b"labels"] == labels


def test_a_shared_tuple_as_a_dict_key_is_refused_before_it_is_hashed():
    # hashing walks a tuple; a tuple that refers to one tuple twice at every level of 20 takes
    # 2**20 steps to hash (2**40 with 40 levels: a hang inside the unpickler itself)
    ops = b"\x80\x02K\x00\x85q\x00" + b"h\x00h\x00\x86q\x00" * 20 + b"}h\x00K\x01s."
    with pytest.raises(DataError, match="dict key or set item of type tuple"):
        safe_loads(ops, "keys.pkl")


# -- .npy headers claiming more than the file holds (#5) ---------------------------------------
def huge_header_npy(path):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**11, 5)})
        f.write(b"\0" * 64)
    return path


@pytest.fixture
def model(tmp_path):
    net = Network.init(NetworkConfig(5, (4,), 3, dtype="float32"), np.random.default_rng(0))
    return save_model(tmp_path / "m.safetensors", net, np.zeros(5), np.ones(5))


def test_a_npy_header_claiming_a_huge_shape_is_one_line_before_any_allocation(tmp_path):
    p = huge_header_npy(tmp_path / "huge.npy")
    with pytest.raises(DataError, match=r"huge.npy: header claims shape \(100000000000, 5\) of float64"):
        load_npy(p)


def test_predict_reports_the_huge_header_and_still_predicts_the_others(tmp_path, model, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 5)))
    bad = huge_header_npy(tmp_path / "huge.npy")
    assert main(["predict", str(model), str(good), str(bad), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert "huge.npy: header claims shape" in one_error_line(err)
    assert [r["input"] for r in json.loads(out)] == [f"{good}[0]", f"{good}[1]"]
    assert main(["evaluate", str(model), "--rows", str(good), "--labels", str(bad)]) == 1
    assert "huge.npy: header claims shape" in one_error_line(capsys.readouterr().err)


# -- IDX files without images or with empty images (#12, #26) ----------------------------------
def idx_bytes(a: np.ndarray, code=0x08) -> bytes:
    dt = {0x08: ">u1", 0x0D: ">f4"}[code]
    return struct.pack(f">BBBB{a.ndim}I", 0, 0, code, a.ndim, *a.shape) + a.astype(dt).tobytes()


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("t10k-images-idx3-ubyte", np.zeros((0, 8, 8)), r"t10k-images-idx3-ubyte: holds no images"),
        ("train-images-idx3-ubyte", np.zeros((0, 8, 8)), r"train-images-idx3-ubyte: holds no images"),
        ("train-images-idx3-ubyte", np.zeros((700, 0, 8)), r"train-images-idx3-ubyte: images of zero size"),
        ("train-labels-idx1-ubyte", np.zeros(0), r"train-labels-idx1-ubyte: \(0,\) labels for 700 images"),
    ],
)
def test_idx_files_without_images_or_labels_are_one_line_naming_the_file(tmp_path, name, array, message):
    folder = write_idx_data(tmp_path, np.random.default_rng(0))
    (folder / name).write_bytes(idx_bytes(array))
    with pytest.raises(DataError, match=message):
        load_idx_folder(folder)


def test_idx_float_labels_with_nan_are_named_without_warnings(tmp_path):
    folder = write_idx_data(tmp_path, np.random.default_rng(0))
    y = np.zeros(700)
    y[3] = np.nan
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y, 0x0D))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: row 3: label nan is not an integer"):
        load_idx_folder(folder)


# -- labels named as given (#20) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "y, shown",
    [
        (np.array([1, 2**64 - 1], np.uint64), "label 18446744073709551615 is outside"),
        (np.array([1.0, 1e300]), "label 1e+300 is outside"),
        (np.array([1.0, -1e300]), "label -1e+300 is outside"),
        (np.array([1, 255], np.uint8), "label 255 is outside"),
    ],
)
def test_out_of_range_labels_are_reported_as_given(y, shown):
    with pytest.raises(DataError, match=re.escape(f"y.npy: row 1: {shown}")):
        check_labels(y, "y.npy", 10)


# -- damaged archives (#22) --------------------------------------------------------------------
def cifar_tar(compress: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for b in ("data_batch_1", "data_batch_2", "test_batch"):
            data = batch_pickle()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{b}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


@pytest.mark.parametrize("compress", [False, True])
def test_an_archive_with_a_damaged_header_is_called_damaged_not_incomplete(tmp_path, compress):
    batches = ("data_batch_1", "data_batch_2", "test_batch")
    good = tmp_path / "good" / "cifar-10-python.tar.gz"
    good.parent.mkdir()
    good.write_bytes(cifar_tar(compress))
    assert sorted(load_cifar10(good, batches=batches).batches) == sorted(batches)
    tar = bytearray(cifar_tar(False))
    second = tar.index(b"cifar-10-batches-py/data_batch_2")
    tar[second + 100] ^= 0x01  # one bit of the second member's header: its checksum fails
    bad = tmp_path / "bad" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(bytes(tar), mtime=0) if compress else bytes(tar))
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: damaged archive: unreadable tar header at byte"):
        load_cifar10(bad, batches=batches)


# -- predict with nothing to predict (#18) -----------------------------------------------------
@pytest.mark.parametrize("hidden", [False, True])
def test_predict_on_an_empty_folder_fails_in_one_line_and_writes_nothing(tmp_path, model, capsys, hidden):
    folder = tmp_path / "img" / "empty"
    folder.mkdir(parents=True)
    if hidden:
        (folder / ".DS_Store").write_bytes(b"x")
    out = tmp_path / "p.npy"
    assert main(["predict", str(model), str(folder), "--out", str(out)]) == 1
    assert "empty: folder holds no files" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


# -- finite rows too large for the network's arithmetic (#17) ----------------------------------
def strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_refuses_extreme_rows_naming_row_and_column_and_writes_nothing(tmp_path, model, capsys):
    X = np.ones((3, 5))
    X[1, 2] = 1e308
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    args = ["evaluate", str(model), "--rows", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]
    assert main([*args, "--format", "json", "--out", str(tmp_path / "ev")]) == 1
    out, err = capsys.readouterr()
    assert "X.npy: row 1, column 2 is 1e+308, too large for the model's float32" in one_error_line(err)
    assert out == "" and not (tmp_path / "ev" / "metrics.json").exists()


def test_predict_refuses_extreme_rows_and_keeps_the_other_inputs_as_strict_json(tmp_path, model, capsys):
    np.save(tmp_path / "huge.npy", np.full((2, 5), -1e300))
    np.save(tmp_path / "good.npy", np.ones((1, 5)))
    assert (
        main(["predict", str(model), str(tmp_path / "huge.npy"), str(tmp_path / "good.npy"), "--format", "json"]) == 1
    )
    out, err = capsys.readouterr()
    assert "huge.npy: row 0, column 0 is -1e+300, too large" in one_error_line(err)
    assert [r["input"] for r in strict_json(out)] == [f"{tmp_path / 'good.npy'}[0]"]


def test_rows_that_overflow_inside_the_network_are_refused_by_the_output_check(tmp_path):
    # each feature is fine (1e5, standardized 1e5) but W1 = 1e35 overflows float32 in the first
    # layer: the probabilities would be NaN; the check after the forward pass names the row
    net = Network.init(NetworkConfig(5, (4,), 3, dtype="float32"), np.random.default_rng(0))
    net.params["W1"][...] = np.float32(1e35)
    m = load_model(save_model(tmp_path / "big.safetensors", net, np.zeros(5), np.ones(5)))
    X = np.ones((3, 5))
    X[2] = 1e5
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "ok.npy", np.ones((1, 5)))
    with pytest.raises(DataError, match=r"X.npy: the model's output for row 2 is not finite"):
        evaluate_models([m], X, np.zeros(3, int), source=tmp_path / "X.npy")
    lines = []
    names, P, failed = predict_inputs(m, [tmp_path / "X.npy", tmp_path / "ok.npy"], log=lines.append)
    assert failed == 1 and len(lines) == 1 and "X.npy: the model's output for row 2 is not finite" in lines[0]
    assert names == [f"{tmp_path / 'ok.npy'}[0]"] and np.isfinite(P).all()


# -- ZCA whitening of constant images (#19) ----------------------------------------------------
def test_zca_of_constant_training_images_names_the_data_set_not_a_nan(tmp_path):
    X = np.full((40, 64), 7, np.uint8)
    y = np.arange(40) % 10
    raw = RawData({"train": (X, y), "test": (X[:10], y[:10])}, "const-src", "idx", 10, tuple("0123456789"))
    with pytest.raises(
        DataError, match=r"const-src \(train split\): ZCA whitening cannot be computed: .*zero variance"
    ):
        prepare(raw, n_val=10, whiten="zca")


def _strict(text):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict_json_when_a_history_diverged(tmp_path):
    """write_json wrote NaN and Infinity (allow_nan=True), which no strict JSON parser reads: a
    diverged loss in a history (sanity.json's curves, lr_range.json) made the file invalid. They
    are written as null, the readers take null back, and nonfinite='refuse' writes nothing."""
    from klayer.io import write_json
    from klayer.suite.parts import read_sanity

    rows = [
        {"epoch": 0.0, "train_loss": 2.3, "train_accuracy": 0.1},
        {"epoch": 1.0, "train_loss": float("inf"), "train_accuracy": np.float32(0.1)},
        {"epoch": 2.0, "train_loss": np.float64("nan"), "train_accuracy": float("nan")},
    ]
    doc = {"settings": {"n": 100}, "curves": {"without batch norm": rows}, "losses": np.array([1.0, -np.inf])}
    write_json(tmp_path / "sanity.json", doc)
    back = _strict((tmp_path / "sanity.json").read_text())
    assert [r["train_loss"] for r in back["curves"]["without batch norm"]] == [2.3, None, None]
    assert back["losses"] == [1.0, None] and back["curves"]["without batch norm"][1]["train_accuracy"] == pytest.approx(
        0.1
    )
    s, problem = read_sanity(tmp_path)
    assert problem is None, problem
    loss = [r["train_loss"] for r in s["curves"]["without batch norm"]]
    assert loss[0] == 2.3 and np.isnan(loss[1]) and np.isnan(loss[2])
    with pytest.raises(ValueError):
        write_json(tmp_path / "strict.json", doc, nonfinite="refuse")
    assert not list(tmp_path.glob("*strict*"))


def test_zca_from_fewer_training_rows_than_features_warns_in_one_line(capsys):
    """ZCA whitening from no more training rows than features trained on a singular covariance with
    no word (60 IDX rows of 64 features: test accuracy 0.374 against 0.976 unwhitened); one line
    now says so."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (80, 64)).astype(np.uint8)
    y = np.arange(80) % 10
    raw = RawData({"train": (X, y), "test": (X[:10], y[:10])}, "small-src", "idx", 10, tuple("0123456789"))
    lines = []
    prepare(raw, n_val=30, whiten="zca", log=lines.append)  # 50 training rows <= 64 features
    assert lines == [
        "small-src: ZCA whitening from 50 training rows of 64 features: their covariance has rank at most 49 < 64, "
        "so the whitening is poorly estimated and accuracy usually suffers; use more training rows (a smaller "
        "data.n_val, data.split = 'all') or data.whiten = 'none'"
    ]
    prepare(raw, n_val=30, whiten="zca")  # the default: one line on stderr
    err = capsys.readouterr().err
    assert err.startswith("klayer: warning: small-src: ZCA whitening from 50") and err.count("\n") == 1
    prepare(raw, n_val=10, whiten="zca", log=pytest.fail)  # 70 rows > 64 features: nothing to say
    prepare(raw, n_val=30, log=pytest.fail)  # no whitening
