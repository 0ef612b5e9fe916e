"""Data sets the project had not seen: unusual but valid files in every format klayer reads."""

import io
import pickle
import struct

import numpy as np
import pytest

from klayer.cli import main
from klayer.data.cifar10 import parse_matlab_batch, parse_python_batch
from klayer.data.idx import load_idx_folder
from klayer.data.images import read_image
from klayer.errors import DataError
from klayer.metrics import classification_report

Image = pytest.importorskip("PIL.Image")


def test_16bit_grey_images_are_scaled_not_clipped(tmp_path):
    # a 16-bit PNG opens as mode "I;16"; Pillow's convert("L") clips it at 255, so every value
    # above 255 became white and the image's content was lost
    a = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(read_image(path, (1, 1, 4)), [0, 1, 128, 255])
    np.testing.assert_array_equal(read_image(path, (3, 1, 4)), [0, 1, 128, 255] * 3)


def cifar_python_folder(root, rng, n=60):
    """A CIFAR-10 python-layout folder with ``n`` images per batch (the official has 10000)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        X, y = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)
        (folder / name).write_bytes(pickle.dumps({b"data": X, b"labels": [int(v) for v in y]}, protocol=2))
    return root


def test_sanity_runs_on_a_small_cifar_copy(tmp_path, rng, capsys):
    # 300 training images: sanity needs 2 x 20 of them, but it asked for 5000 validation images
    # (n_val, which sanity does not let one set) and refused the data
    data = cifar_python_folder(tmp_path, rng)
    args = ["sanity", "--data", str(data), "--no-download", "--n", "20", "--epochs", "2", "--target", "100"]
    assert main(args) == 0, capsys.readouterr().err
    assert "PASS" in capsys.readouterr().out


def test_macro_means_leave_out_classes_absent_from_the_split():
    # a 2-class IDX set trains the 10-class network: the 8 classes with no images and no
    # predictions counted as scores of 0, so a perfect classifier showed a mean accuracy of 0.2
    metrics = pytest.importorskip("sklearn.metrics")
    y = np.array([0, 1, 1, 0, 2])
    P = np.full((5, 10), 0.01)
    P[np.arange(5), [0, 1, 1, 0, 3]] = 0.91  # the class-2 image predicted as 3: 3 is seen, 4..9 are not
    rep = classification_report(y, P, [str(c) for c in range(10)])
    pred = P.argmax(axis=1)
    p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert rep["macro"]["precision"] == pytest.approx(p) and rep["macro"]["f1"] == pytest.approx(f)
    assert rep["macro"]["recall"] == pytest.approx(r) == rep["macro"]["accuracy"] == pytest.approx(0.5)
    assert len(rep["per_class"]) == 10


def write_idx(path, a):
    a = np.asarray(a, np.uint8)
    path.write_bytes(bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def idx_folder(root, X, y):
    for part, sl in (("train", slice(0, -2)), ("t10k", slice(-2, None))):
        write_idx(root / f"{part}-images-idx3-ubyte", X[sl])
        write_idx(root / f"{part}-labels-idx1-ubyte", y[sl])
    return root


@pytest.mark.parametrize("channels_last", [True, False])
def test_colour_idx_rows_are_laid_out_as_images_are_read(tmp_path, rng, channels_last):
    # (N, H, W, 3) IDX images were flattened channel-last with no image shape, while predict
    # read image files channel-major (inferring 3 x 32 x 32 from the width): every prediction
    # of an image file was made on scrambled pixels
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    X = images if channels_last else images.transpose(0, 3, 1, 2)
    raw = load_idx_folder(idx_folder(tmp_path, X, np.arange(6) % 2))
    assert raw.image_shape == (3, 32, 32)
    Image.fromarray(images[0]).save(tmp_path / "0.png")
    np.testing.assert_array_equal(raw.batches["train"][0][0], read_image(tmp_path / "0.png", raw.image_shape))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("labels", ["list", "numpy list", "array"])
def test_python_batches_pickled_the_usual_ways_load(rng, protocol, labels):
    # pickle.HIGHEST_PROTOCOL (5) stores arrays as numpy._core.numeric._frombuffer, and
    # list(y) of a NumPy array holds numpy._core.multiarray.scalar: both were refused as
    # globals that "could run code", so such a CIFAR-layout batch could not be read
    X, y = rng.integers(0, 256, (5, 3072), dtype=np.uint8), np.arange(5) % 10
    given = {"list": [int(v) for v in y], "numpy list": list(y), "array": y}[labels]
    Xb, yb = parse_python_batch(pickle.dumps({b"data": X, b"labels": given}, protocol=protocol), "batch")
    np.testing.assert_array_equal(Xb, X)
    assert yb.dtype == np.int64 and yb.tolist() == y.tolist()


def test_a_run_trained_with_data_is_evaluated_on_that_data(tmp_path, rng, monkeypatch, capsys):
    # config.toml did not record --data: evaluate without --data read $KLAYER_DATA (or the
    # cache, downloading CIFAR-10 there), i.e. another data set than the model was trained on
    data = cifar_python_folder(tmp_path / "mine", rng)
    exp = tmp_path / "tiny.toml"
    exp.write_text("[model]\nhidden = [8]\n[data]\nn_val = 30\n[train]\nbatch_size = 30\nn_s = 5\n")
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(exp), "--data", "mine", "--no-download", "--out", str(run), "--quiet"]) == 0
    monkeypatch.setenv("KLAYER_DATA", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a relative --data would not be found from here
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "val", "--format", "json"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert str(data.resolve()) in out and '"n": 30' in out


def test_matlab_batches_with_double_labels_load(rng):
    # MATLAB stores labels = [0; 3; ...] as double unless told otherwise: such a batch was
    # refused ("'labels' is not an integer vector"); whole numbers in range now load
    scipy_io = pytest.importorskip("scipy.io")
    X = rng.integers(0, 256, (4, 3072), dtype=np.uint8)

    def batch(labels):
        buf = io.BytesIO()
        scipy_io.savemat(buf, {"data": X, "labels": np.asarray(labels, np.float64)[:, None]})
        return buf.getvalue()

    Xb, yb = parse_matlab_batch(batch([0, 3, 9, 3]), "b.mat")
    np.testing.assert_array_equal(Xb, X)
    assert yb.dtype == np.int64 and yb.tolist() == [0, 3, 9, 3]
    with pytest.raises(DataError, match=r"b.mat: 'labels': row 1: label 2.5 is not an integer"):
        parse_matlab_batch(batch([0, 2.5, 1, 1]), "b.mat")
    with pytest.raises(DataError, match=r"row 2: label 10.0 is outside the classes 0..9"):
        parse_matlab_batch(batch([0, 1, 10, 1]), "b.mat")


def test_matlab_batches_with_double_data_load(rng):
    # a student's own batches saved by MATLAB hold data = double(images) unless told otherwise: such
    # a batch was refused ("'data' is not a uint8 matrix"); whole numbers in 0..255 now load, bitwise
    scipy_io = pytest.importorskip("scipy.io")
    X = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    X[0, 0], X[1, 1] = 0, 255

    def batch(data):
        buf = io.BytesIO()
        scipy_io.savemat(buf, {"data": data, "labels": np.array([[0], [3], [9], [3]], np.uint8)})
        return buf.getvalue()

    for dtype in (np.float64, np.float32, np.int32, np.uint16):
        Xb, yb = parse_matlab_batch(batch(X.astype(dtype)), "b.mat")
        assert Xb.dtype == np.uint8 and yb.tolist() == [0, 3, 9, 3]
        np.testing.assert_array_equal(Xb, X)
    for value, shown in ((127.5, "127.5"), (256.0, "256.0"), (-1.0, "-1.0"), (np.nan, "nan"), (np.inf, "inf")):
        bad = X.astype(np.float64)
        bad[2, 17] = value
        with pytest.raises(
            DataError, match=rf"^b.mat: 'data': row 2, column 17: value {shown} is not a whole number in 0..255$"
        ):
            parse_matlab_batch(batch(bad), "b.mat")
    with pytest.raises(DataError, match=r"^b.mat: 'data' is not a uint8 matrix$"):
        parse_matlab_batch(batch(X.astype(bool)), "b.mat")


def test_16bit_pgm_images_are_scaled_not_clipped(tmp_path):
    # Pillow opens a PGM whose maxval is above 255 as 32-bit mode "I" (rescaled to 0..65535), not
    # "I;16": convert("L") clipped it at 255 and every such image was read as a white square
    a = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5\n4 1\n65535\n" + a.astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_image(path, (1, 1, 4)), [0, 1, 128, 255])
    np.testing.assert_array_equal(read_image(path, (3, 1, 4)), [0, 1, 128, 255] * 3)
    # a 12-bit PGM (maxval 4095) is rescaled by Pillow to the same range
    path.write_bytes(b"P5\n4 1\n4095\n" + np.array([[0, 16, 2048, 4095]], ">u2").tobytes())
    np.testing.assert_array_equal(read_image(path, (1, 1, 4)), [0, 1, 128, 255])


@pytest.mark.parametrize("values,found", [([0, 70000], "0 to 70000"), ([-5, 1000], "-5 to 1000")])
def test_32bit_integer_images_outside_16_bits_are_refused_not_clipped(tmp_path, values, found):
    """A 32-bit integer TIFF (Pillow's mode "I") with values outside 0..65535 was clipped to that
    range without a word; it is refused in one line naming the file and the range, and one within
    16 bits is scaled as a 16-bit image is."""
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([values * 2], np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(DataError) as e:
        read_image(path, (1, 1, 4))
    assert str(e.value) == (
        f"{path}: integer image with values from {found}; integer images are read as 16-bit (0..65535)"
    )
    Image.fromarray(np.array([[0, 257, 32896, 65535]], np.int32)).save(path)
    np.testing.assert_array_equal(read_image(path, (1, 1, 4)), [0, 1, 128, 255])
