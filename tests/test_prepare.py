"""Splits, training statistics and standardization (klayer.data.prepare), and the ``[data]`` table's
path from files to a Dataset. Expectations are worked out by hand in the comments, or computed
directly with NumPy in one pass over the whole array (the code under test works in chunks)."""

import hashlib

import numpy as np
import pytest

from klayer.data import DataConfig, Dataset, RawData, feature_stats, load_dataset, prepare, split_raw, standardize
from klayer.data.prepare import load_raw
from klayer.errors import ConfigError, DataError

from .conftest import write_idx_data
from .test_data import BATCHES, write_layout

F32, F64 = np.dtype("float32"), np.dtype("float64")


def formula(X, mean, std, dtype):
    """The documented standardization: ``dtype(X) - dtype(mean)``, then times ``dtype(1 / std)``,
    every operation rounded to ``dtype``."""
    dtype = np.dtype(dtype)
    diff = np.asarray(X).astype(dtype) - np.asarray(mean).astype(dtype)
    return diff * (1.0 / np.asarray(std)).astype(dtype)


def cifar_like(n=2000):
    """Five training batches and a test batch, every row of batch ``i`` filled with ``i``."""
    return RawData({b: (np.full((n, 3), i, np.uint8), np.full(n, i)) for i, b in enumerate(BATCHES)}, "mem", "python")


def small_dataset(source="synthetic", **kw):
    X = np.arange(15, dtype=np.uint8).reshape(5, 3)
    y = np.array([0, 1, 2, 3, 0])
    parts = dict(X_train=X, y_train=y, X_val=X.copy(), y_val=y.copy(), X_test=X.copy(), y_test=y.copy())
    parts.update(kw)
    args = dict(mean=np.zeros(3), std=np.ones(3), n_classes=4, source=source)
    args.update({k: parts.pop(k) for k in ("mean", "std", "n_classes") if k in parts})
    return Dataset(**parts, **args)


# -- feature_stats -------------------------------------------------------------------------------
def test_pixel_statistics_over_several_256_row_chunks(rng):
    # 700 uint8 rows: chunks of 256, 256 and 188. Column 0 alternates 0, 1: mean 1/2, variance
    # 1/4 (std 1/2, below 1); column 1 is constant 7: std 1 (centred, not scaled); column 2 is 255
    # in the first 350 rows and 0 after: mean 127.5, std 127.5.
    X = np.zeros((700, 3), np.uint8)
    X[1::2, 0] = 1
    X[:, 1] = 7
    X[:350, 2] = 255
    mean, std = feature_stats(X)
    assert mean.dtype == std.dtype == F64
    np.testing.assert_allclose(mean, [0.5, 7.0, 127.5], rtol=1e-15)
    np.testing.assert_allclose(std, [0.5, 1.0, 127.5], rtol=1e-15)
    R = rng.integers(0, 256, (1000, 5), dtype=np.uint8)
    mean, std = feature_stats(R)
    np.testing.assert_allclose(mean, R.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(std, R.std(axis=0), rtol=1e-13)


def test_float_feature_statistics_in_float64_over_chunks(rng):
    # 10 rows in chunks of 4, 4, 2. Column 0: 1 and 1 + 2e-9 alternating, mean 1 + 1e-9 and std
    # 1e-9 (float32 would see ten 1.0s); column 1: 3 t - 7 for t = 0..9, mean 3 * 4.5 - 7 = 6.5,
    # variance 9 * (10**2 - 1) / 12 = 74.25; column 2 constant: std 1.
    t = np.arange(10.0)
    X = np.stack([1 + 2e-9 * (t % 2), 3 * t - 7, np.full(10, -2.5)], axis=1)
    mean, std = feature_stats(X, chunk=4)
    np.testing.assert_allclose(mean, [1 + 1e-9, 6.5, -2.5], rtol=1e-15)
    np.testing.assert_allclose(std, [1e-9, np.sqrt(74.25), 1.0], rtol=1e-6)
    assert std[1] == pytest.approx(np.sqrt(74.25), rel=1e-14)
    for X in (rng.normal(3, 2, (1000, 4)), rng.integers(-50, 50, (1000, 4)), rng.normal(0, 1, (7, 4)).astype(F32)):
        mean, std = feature_stats(X, chunk=64)
        np.testing.assert_allclose(mean, X.astype(F64).mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(std, X.astype(F64).std(axis=0), rtol=1e-12)


# -- standardize and Dataset.features ------------------------------------------------------------
def test_standardize_rounds_as_documented_for_every_dtype_and_chunk(rng):
    mean, std = rng.normal(100, 30, 6), rng.uniform(0.5, 80, 6)
    for X in (rng.integers(0, 256, (50, 6), dtype=np.uint8), rng.normal(100, 50, (50, 6))):
        for dtype in ("float32", "float64"):
            for chunk in (7, 1024):
                Z = standardize(X, mean, std, dtype, chunk=chunk)
                assert Z.dtype == dtype and Z.shape == X.shape
                np.testing.assert_array_equal(Z, formula(X, mean, std, dtype))
    assert standardize(X, mean, std).dtype == F32  # the default


def test_features_standardize_with_the_training_statistics_bitwise(rng):
    mean, std = rng.normal(100, 30, 6), rng.uniform(0.5, 80, 6)
    X8 = rng.integers(0, 256, (40, 6), dtype=np.uint8)
    ds = small_dataset(X_train=X8, X_val=X8, X_test=X8, mean=mean, std=std)
    assert ds.dtype == "float32"
    # the dataset's dtype by default; an explicit dtype; back again (the coefficients are cached
    # per dtype and must follow it); float rows (raw features that are not pixels)
    for X, dtype in [(X8, None), (X8, "float64"), (X8, "float32"), (X8, F64), (rng.normal(100, 50, (9, 6)), "float32")]:
        Z = ds.features(X, dtype)
        assert Z.dtype == (dtype or "float32")
        np.testing.assert_array_equal(Z, formula(X, mean, std, dtype or "float32"))
        np.testing.assert_array_equal(Z, standardize(X, mean, std, dtype or "float32"))  # the whole split at once
    ds64 = small_dataset(X_train=X8, X_val=X8, X_test=X8, mean=mean, std=std, dtype="float64")
    np.testing.assert_array_equal(ds64.features(X8), formula(X8, mean, std, F64))


@pytest.mark.parametrize("out_dtype", ["float32", "float64"])
def test_features_write_into_out_in_its_dtype(rng, out_dtype):
    mean, std = rng.normal(100, 30, 6), rng.uniform(0.5, 80, 6)
    X = rng.integers(0, 256, (12, 6), dtype=np.uint8)
    ds = small_dataset(X_train=X, X_val=X, X_test=X, mean=mean, std=std)  # dtype float32
    out = np.full((12, 6), np.nan, out_dtype)
    Z = ds.features(X, out=out)
    assert Z is out
    np.testing.assert_array_equal(out, formula(X, mean, std, out_dtype))


def test_classes_default_to_the_label_numbers():
    assert small_dataset().classes == ("0", "1", "2", "3")
    assert small_dataset(classes=("a", "b", "c", "d")).classes == ("a", "b", "c", "d")


# -- Dataset.validate ----------------------------------------------------------------------------
def raises(ds) -> str:
    with pytest.raises(DataError) as e:
        ds.validate()
    return str(e.value)


def test_validate_names_the_split_row_and_column():
    ds = small_dataset()
    assert ds.validate() is ds
    X = np.arange(15.0).reshape(5, 3)
    X[1, 2] = np.nan
    assert raises(small_dataset(X_val=X)) == (
        "synthetic (val split): row 1, column 2 is nan; every feature must be finite"
    )
    assert raises(small_dataset(source="", X_test=np.zeros((5, 4)))) == (
        "data set (test split): rows have 4 features, the model expects 3"
    )
    assert raises(small_dataset(y_train=np.array([0, 1, 4, 3, 0]))) == (
        "synthetic (train split): row 2: label 4 is outside the classes 0..3"
    )
    assert raises(small_dataset(y_val=np.array([0, 1, 2, 3]))) == "synthetic (val split): 4 labels for 5 rows"
    assert raises(small_dataset(X_test=np.zeros((0, 3)), y_test=np.zeros(0, int))) == (
        "synthetic (test split): holds no rows"
    )


def test_validate_checks_the_training_statistics():
    assert raises(small_dataset(mean=np.zeros(2))) == "synthetic: mean must be 3 finite numbers"
    assert raises(small_dataset(std=np.array([1.0, np.inf, 1.0]))) == "synthetic: std must be 3 finite numbers"
    assert raises(small_dataset(std=np.array([1.0, 0.0, 1.0]))) == "synthetic: std must be positive"
    assert raises(small_dataset(source="", std=np.array([1.0, -1.0, 1.0]))) == "data set: std must be positive"
    assert raises(small_dataset(source="", mean=np.full(3, np.nan))) == "data set: mean must be 3 finite numbers"


# -- splits --------------------------------------------------------------------------------------
def test_default_split_keeps_the_last_5000_training_images_for_validation():
    # 5 x 2000 training rows, batch i filled with i: the last 5000 are batch 5, batch 4 and the
    # second half of batch 3 (labels 2, 3, 4); training keeps batches 1, 2 and half of 3.
    ds = prepare(cifar_like())
    assert ds.sizes() == {"train": 5000, "val": 5000, "test": 2000}
    assert np.bincount(ds.y_train).tolist() == [2000, 2000, 1000]
    assert np.bincount(ds.y_val).tolist() == [0, 0, 1000, 2000, 2000]
    np.testing.assert_array_equal(ds.X_val[:, 0], ds.y_val)  # rows travel with their labels
    assert set(ds.y_test) == {5}
    # statistics of the training rows only: mean (0 * 2000 + 1 * 2000 + 2 * 1000) / 5000 = 0.8,
    # mean square (0 + 2000 + 4 * 1000) / 5000 = 1.2, variance 1.2 - 0.8**2 = 0.56
    np.testing.assert_allclose(ds.mean, [0.8] * 3, rtol=1e-15)
    np.testing.assert_allclose(ds.std, [np.sqrt(0.56)] * 3, rtol=1e-14)
    assert ds.dtype == "float32" and ds.features(ds.X_test).dtype == F32
    assert (ds.source, ds.n_classes, ds.image_shape) == ("mem", 10, (3, 32, 32))
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10


def test_prepare_carries_the_source_classes_shape_and_dtype():
    raw = RawData(
        {"train": (np.arange(40, dtype=np.uint8).reshape(10, 4), np.arange(10) % 3),
         "test": (np.zeros((2, 4), np.uint8), np.array([0, 2]))},
        "folder/x", "idx", 3, ("a", "b", "c"), (1, 2, 2),
    )  # fmt: skip
    ds = prepare(raw, n_val=4, dtype="float64")
    assert (ds.source, ds.n_classes, ds.classes, ds.image_shape) == ("folder/x", 3, ("a", "b", "c"), (1, 2, 2))
    assert ds.dtype == "float64"
    assert ds.sizes() == {"train": 6, "val": 4, "test": 2}
    assert ds.features(ds.X_val).dtype == F64
    # the default split is "all", which idx data takes; with 10 images the default n_val is too many
    with pytest.raises(DataError, match="n_val=5000 must be between 1 and 9"):
        prepare(raw)
    (Xtr, _), (Xva, yva), (Xte, _) = split_raw(raw, n_val=9)
    assert len(Xtr) == 1 and len(Xva) == 9 and len(Xte) == 2


def test_n_val_is_between_one_and_all_but_one_image():
    raw = cifar_like(n=10)  # 50 training images
    (Xtr, ytr), (Xva, yva), _ = split_raw(raw, "all", 1)
    assert len(ytr) == 49 and yva.tolist() == [4]  # the very last image
    (Xtr, ytr), (Xva, yva), _ = split_raw(raw, "all", 49)
    assert ytr.tolist() == [0] and len(yva) == 49
    for n_val in (0, 50, -1):
        with pytest.raises(DataError) as e:
            split_raw(raw, "all", n_val)
        assert str(e.value) == f"mem: n_val={n_val} must be between 1 and 49"
    assert len(split_raw(cifar_like(n=5001))[1][1]) == 5000  # the default n_val


def test_batch1_split_is_cifar_only():
    part = (np.zeros((9, 4), np.uint8), np.zeros(9, int))
    idx = RawData({"train": part, "test": part}, "f", "idx")
    with pytest.raises(ConfigError) as e:
        split_raw(idx, "batch1")
    assert str(e.value) == "split 'batch1' is CIFAR-10 only; use split='all' for idx data"
    (Xtr, ytr), (Xva, yva), (Xte, yte) = split_raw(cifar_like(n=10), "batch1")
    assert set(ytr) == {0} and set(yva) == {1} and set(yte) == {5} and len(ytr) == len(yva) == 10


# -- from files: load_raw and load_dataset -------------------------------------------------------
def test_data_flag_overrides_the_configured_path(tmp_path, rng):
    folder = write_idx_data(tmp_path / "mnist", rng, n_train=50, n_test=20)
    cfg = DataConfig(dataset="idx", path=str(tmp_path / "nowhere"), n_val=10)
    ds = load_dataset(cfg, root=folder)
    assert ds.sizes() == {"train": 40, "val": 10, "test": 20} and ds.source == str(folder)
    assert ds.dtype == "float32"
    assert load_dataset(cfg, folder, "float64").dtype == "float64"
    assert load_raw(DataConfig(dataset="idx", path=str(folder))).source == str(folder)


def test_idx_and_image_data_need_a_path():
    with pytest.raises(ConfigError) as e:
        load_raw(DataConfig(dataset="idx"))
    assert str(e.value) == "data.path (or --data) must name the folder of IDX files"
    with pytest.raises(ConfigError) as e:
        load_dataset(DataConfig(dataset="images"))
    assert str(e.value) == "data.path (or --data) must name the image folder (one sub-folder per class)"


def test_images_are_resized_to_3x32x32_by_default(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    for name in ("cat", "dog"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (20, 12, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / name / f"{i}.png")
    raw = load_raw(DataConfig(dataset="images", path=str(tmp_path / "img")))
    assert raw.image_shape == (3, 32, 32) and raw.batches["train"][0].shape[1] == 3072


def test_cifar_from_a_folder_with_its_layout_split_and_n_val(tmp_path, rng):
    batches = {b: (rng.integers(0, 256, (20, 3072), dtype=np.uint8), np.full(20, i)) for i, b in enumerate(BATCHES)}
    write_layout(tmp_path / "all", "python", batches)
    ds = load_dataset(DataConfig(path=str(tmp_path / "nowhere"), n_val=30, download=False), root=tmp_path / "all")
    assert ds.sizes() == {"train": 70, "val": 30, "test": 20}
    np.testing.assert_array_equal(ds.X_val[-20:], batches["data_batch_5"][0])
    # split = "batch1" reads only the two batches it needs: the others may be absent
    write_layout(tmp_path / "two", "python", batches, skip=("data_batch_3", "data_batch_4", "data_batch_5"))
    ds = load_dataset(DataConfig(path=str(tmp_path / "two"), split="batch1", download=False))
    assert ds.sizes() == {"train": 20, "val": 20, "test": 20}
    np.testing.assert_array_equal(ds.X_val, batches["data_batch_2"][0])
    with pytest.raises(DataError, match="missing batch file"):
        load_dataset(DataConfig(path=str(tmp_path / "two"), split="all", n_val=10, download=False))
    # the configured layout is the one looked for
    with pytest.raises(DataError, match="no CIFAR-10 here"):
        load_raw(DataConfig(path=str(tmp_path / "all"), layout="binary", download=False))
    assert load_raw(DataConfig(path=str(tmp_path / "all"), layout="python", download=False)).layout == "python"


@pytest.mark.parametrize("progress", [True, False])
def test_missing_cifar_is_downloaded_only_when_allowed(tmp_path, rng, monkeypatch, capsys, progress):
    batches = {b: (rng.integers(0, 256, (10, 3072), dtype=np.uint8), np.full(10, i)) for i, b in enumerate(BATCHES)}
    archive = write_layout(tmp_path / "served", "python", batches, archive=True)
    monkeypatch.setenv("KLAYER_CIFAR10_URL", archive.as_uri())
    monkeypatch.setenv("KLAYER_CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="no CIFAR-10 here"):
        load_dataset(DataConfig(path=str(tmp_path / "cache"), n_val=10, download=False))
    assert not (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()
    capsys.readouterr()
    ds = load_dataset(DataConfig(path=str(tmp_path / "cache"), n_val=10), progress=progress)
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").is_file() and ds.sizes()["train"] == 40
    np.testing.assert_array_equal(ds.X_test, batches["test_batch"][0])
    # the progress bar of the download (stderr is not a terminal here, so None would hide it)
    assert ("cifar-10-python.tar.gz" in capsys.readouterr().err) is progress


def test_data_config_as_a_dict():
    cfg = DataConfig(dataset="idx", path="/d", n_val=10)
    assert cfg.to_dict() == {
        "dataset": "idx", "path": "/d", "layout": "auto", "split": "all", "n_val": 10, "download": True,
        "image_shape": None, "whiten": "none", "zca_eps": 0.1,
    }  # fmt: skip
    assert DataConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"dataset": "idx", "split": "batch1"}, "data.split 'batch1' is CIFAR-10 only; idx data takes split = 'all'"),
        (
            {"dataset": "images", "split": "batch1"},
            "data.split 'batch1' is CIFAR-10 only; images data takes split = 'all'",
        ),
        (
            {"image_shape": (3, 8, 8)},
            "data.image_shape must be left out unless data.dataset is 'images', got data.dataset = 'cifar10'",
        ),
        (
            {"dataset": "idx", "image_shape": (1, 8, 8)},
            "data.image_shape must be left out unless data.dataset is 'images', got data.dataset = 'idx'",
        ),
        *(
            (
                {"dataset": "images", "image_shape": shape},
                f"data.image_shape must be [channels (1 or 3), height, width], got {list(shape)}",
            )
            for shape in [(3, 8), (3, 8, 8, 1), (2, 8, 8), (4, 8, 8), (8, 3, 8), (8, 8, 1)]
        ),
    ],
)
def test_data_config_cross_rules(kw, message):
    with pytest.raises(ConfigError) as e:
        DataConfig(**kw)
    assert str(e.value) == message


def test_data_config_cross_rules_accept():
    assert DataConfig(split="batch1").split == "batch1"  # CIFAR-10
    for shape in [(1, 8, 9), (3, 32, 32), (3, 1, 1)]:
        assert DataConfig(dataset="images", image_shape=shape).image_shape == shape
    assert DataConfig(dataset="images").image_shape is None


def test_input_size_is_the_feature_count():
    assert small_dataset().input_size == 3
    ds = small_dataset(X_train=np.zeros((7, 5), np.uint8), y_train=np.zeros(7, int))
    assert ds.input_size == 5 and ds.sizes() == {"train": 7, "val": 5, "test": 5}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_features_fast_path_equals_the_subtract_with_casting_bitwise(rng, dtype):
    """Dataset.features casts, then subtracts and scales in place: bit for bit the reference
    ``np.subtract(X, mean, dtype=dtype) * (1 / std)``, for pixels and for float rows."""
    mean, std = rng.normal(100, 30, 3072), rng.uniform(0.5, 80, 3072)
    ds = small_dataset(X_train=np.zeros((2, 3072), np.uint8), mean=mean, std=std, dtype=dtype)
    m, inv = mean.astype(dtype), (1.0 / std).astype(dtype)
    for X in (rng.integers(0, 256, (100, 3072), dtype=np.uint8), rng.normal(100, 50, (7, 3072))):
        ref = np.subtract(X, m, dtype=dtype, casting="unsafe")
        ref *= inv
        np.testing.assert_array_equal(ds.features(X), ref)
        out = np.empty(X.shape, dtype)
        assert ds.features(X, out=out) is out
        np.testing.assert_array_equal(out, ref)


def test_features_of_whitened_rows_are_a_bitwise_copy(rng):
    """Mean 0 and std 1 (ZCA-whitened rows): the subtraction and scaling are skipped, which
    changes no bit (x - 0 = x, x * 1 = x), signed zeros, infinities and NaN included."""
    X = rng.standard_normal((20, 8)).astype(np.float32)
    X[0, :4] = [-0.0, np.inf, -np.inf, np.nan]
    ds = small_dataset(X_train=X, X_val=X, X_test=X, mean=np.zeros(8), std=np.ones(8))
    for dtype in ("float32", "float64"):
        ref = np.subtract(X, np.zeros(8, dtype), dtype=dtype) * np.ones(8, dtype)
        got = ds.features(X, dtype)
        assert got.tobytes() == ref.tobytes() and got is not X
