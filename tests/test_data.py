"""CIFAR-10 layouts, IDX, safe loading, verified download, standardization and splits."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klayer.data import (
    DataConfig,
    download,
    feature_stats,
    load_cifar10,
    load_dataset,
    load_idx_folder,
    prepare,
    read_idx,
    read_members,
    safe_extract,
    safe_loads,
    standardize,
)
from klayer.data.cifar10 import parse_binary_batch, parse_matlab_batch, parse_python_batch
from klayer.errors import ChecksumError, DataError

BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


# -- writers of small synthetic files ------------------------------------------------------------
def fake_batches(rng, n=40):
    return {b: (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)) for b in BATCHES}


def python_bytes(X, y, protocol=2):
    d = {b"batch_label": b"x", b"labels": [int(v) for v in y], b"data": X, b"filenames": [b"f"] * len(y)}
    return pickle.dumps(d, protocol=protocol)


def binary_bytes(X, y):
    return np.concatenate([np.asarray(y, np.uint8)[:, None], X], axis=1).tobytes()


def matlab_bytes(X, y):
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"data": X, "labels": np.asarray(y, np.uint8)[:, None], "batch_label": "x"})
    return buf.getvalue()


LAYOUT_FILES = {
    "python": ("cifar-10-batches-py", "cifar-10-python.tar.gz", "", python_bytes),
    "binary": ("cifar-10-batches-bin", "cifar-10-binary.tar.gz", ".bin", binary_bytes),
    "matlab": ("cifar-10-batches-mat", "cifar-10-matlab.tar.gz", ".mat", matlab_bytes),
}


def write_layout(root: Path, layout: str, batches, archive=False, skip=()):
    folder, arch, suffix, enc = LAYOUT_FILES[layout]
    files = {f"{folder}/{b}{suffix}": enc(*xy) for b, xy in batches.items() if b not in skip}
    if not archive:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root / folder
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / arch, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root / arch


# -- every layout, archive and folder ------------------------------------------------------------
@pytest.mark.parametrize("layout", ["python", "binary", "matlab"])
@pytest.mark.parametrize("archive", [False, True])
def test_layouts_round_trip(tmp_path, rng, layout, archive):
    batches = fake_batches(rng)
    write_layout(tmp_path, layout, batches, archive)
    raw = load_cifar10(tmp_path, download_missing=False)
    assert raw.layout == layout
    for b, (X, y) in batches.items():
        np.testing.assert_array_equal(raw.batches[b][0], X)
        np.testing.assert_array_equal(raw.batches[b][1], y)
        assert raw.batches[b][0].dtype == np.uint8 and raw.batches[b][1].dtype == np.int64


def test_missing_batch_is_named(tmp_path, rng):
    write_layout(tmp_path, "binary", fake_batches(rng), skip={"data_batch_3"})
    with pytest.raises(DataError, match="data_batch_3.bin.*missing batch file"):
        load_cifar10(tmp_path, download_missing=False)
    write_layout(tmp_path / "a", "python", fake_batches(rng), archive=True, skip={"test_batch"})
    with pytest.raises(DataError, match="missing batch 'test_batch'"):
        load_cifar10(tmp_path / "a", download_missing=False)


def test_nothing_found_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 here"):
        load_cifar10(tmp_path, download_missing=False)


# -- corrupt content -------------------------------------------------------------------------
def test_truncated_batches(rng):
    X, y = rng.integers(0, 256, (20, 3072), dtype=np.uint8), rng.integers(0, 10, 20)
    with pytest.raises(DataError, match="f.bin.*not a positive multiple of 3073"):
        parse_binary_batch(binary_bytes(X, y)[:-100], "f.bin")
    with pytest.raises(DataError, match="not a valid CIFAR pickle"):
        parse_python_batch(python_bytes(X, y)[:30000], "f")
    with pytest.raises(DataError, match="not a valid MATLAB file"):
        parse_matlab_batch(matlab_bytes(X, y)[:5000], "f.mat")


def test_truncated_archive(tmp_path, rng):
    path = write_layout(tmp_path, "python", fake_batches(rng, 200), archive=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*(corrupt|truncated)"):
        load_cifar10(tmp_path, download_missing=False)


def test_wrong_key_shape_and_label(rng):
    X, y = rng.integers(0, 256, (5, 3072), dtype=np.uint8), [1, 2, 3, 4, 5]
    with pytest.raises(DataError, match="missing key 'labels'"):
        parse_python_batch(pickle.dumps({b"data": X, b"lbls": y}, protocol=2), "f")
    with pytest.raises(DataError, match=r"shape \(5, 3000\)"):
        parse_python_batch(python_bytes(X[:, :3000], y), "f")
    with pytest.raises(DataError, match="label 10 out of range"):
        parse_python_batch(python_bytes(X, [1, 2, 10, 4, 5]), "f")
    with pytest.raises(DataError, match="label 12 out of range"):
        parse_binary_batch(binary_bytes(X, [1, 2, 12, 4, 5]), "f.bin")
    with pytest.raises(DataError, match="5 labels for 4 images"):
        parse_python_batch(python_bytes(X[:4], y), "f")


# -- pickles that try to run code ------------------------------------------------------------
class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _EvilOpen:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("evil", [_Evil, _EvilOpen])
def test_pickle_that_calls_a_function_is_refused(tmp_path, protocol, evil):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": evil(str(marker)), b"labels": [0]}, protocol=protocol)
    with pytest.raises(DataError, match="refused to unpickle"):
        safe_loads(payload, "evil")
    assert not marker.exists()  # the side effect never happened
    # and through the batch reader, from a folder
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b in BATCHES:
        (folder / b).write_bytes(payload)
    with pytest.raises(DataError, match="data_batch_1: refused"):
        load_cifar10(tmp_path, download_missing=False)
    assert not marker.exists()


# -- archives that try to escape ---------------------------------------------------------------
def _tar_with(tmp_path, member: tarfile.TarInfo, data=b"x"):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name, type=tarfile.REGTYPE, linkname=""):
    m = tarfile.TarInfo(name)
    m.type = type
    m.linkname = linkname
    return m


@pytest.mark.parametrize(
    "member,problem",
    [
        (_member("../evil"), "'..'"),
        (_member("cifar-10-batches-py/../../evil"), "'..'"),
        (_member("/tmp/evil"), "absolute path"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), "link to '/etc/passwd'"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "../../x"), "outside"),
        (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "../x"), "outside"),
        (_member("cifar-10-batches-py/dev", tarfile.CHRTYPE), "device"),
    ],
)
def test_unsafe_archive_members(tmp_path, member, problem):
    path = _tar_with(tmp_path, member)
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=f"cifar-10-python.tar.gz: unsafe member .*{problem}"):
        safe_extract(path, dest)
    assert not dest.exists() or not any(dest.rglob("*"))
    assert not (tmp_path.parent / "evil").exists()
    with pytest.raises(DataError, match="unsafe member"):
        read_members(path, {"data_batch_1": "data_batch_1"})


def test_safe_extract_then_load_folder(tmp_path, rng):
    batches = fake_batches(rng)
    path = write_layout(tmp_path / "a", "binary", batches, archive=True)
    safe_extract(path, tmp_path / "b")
    raw = load_cifar10(tmp_path / "b", download_missing=False)
    np.testing.assert_array_equal(raw.batches["test_batch"][0], batches["test_batch"][0])


# -- verified download from a local server -------------------------------------------------------
class _Server:
    """An HTTP server on 127.0.0.1 serving given bytes at /<name>; 'truncate' cuts the body."""

    def __init__(self, files: dict, truncate: int | None = None):
        files = dict(files)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if truncate is None else body[:truncate])

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served_archive(tmp_path, rng):
    batches = fake_batches(rng, 30)
    path = write_layout(tmp_path / "src", "python", batches, archive=True)
    data = path.read_bytes()
    return batches, data, hashlib.md5(data).hexdigest()


def test_download_when_absent(tmp_path, served_archive, monkeypatch):
    batches, data, md5 = served_archive
    with _Server({"cifar-10-python.tar.gz": data}) as srv:
        monkeypatch.setenv("KLAYER_CIFAR10_URL", srv.url + "cifar-10-python.tar.gz")
        monkeypatch.setenv("KLAYER_CIFAR10_MD5", md5)
        raw = load_cifar10(tmp_path / "cache", download_missing=True, progress=False)
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").read_bytes() == data
    np.testing.assert_array_equal(raw.batches["data_batch_4"][0], batches["data_batch_4"][0])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar-10-python.tar.gz"]


def test_download_with_wrong_md5_leaves_nothing(tmp_path, served_archive):
    _, data, _ = served_archive
    with _Server({"a.tar.gz": data}) as srv:
        with pytest.raises(ChecksumError, match="md5 mismatch"):
            download(srv.url + "a.tar.gz", tmp_path / "d" / "a.tar.gz", {"0" * 32}, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_known_checksums_reject_an_unknown_archive(tmp_path, served_archive, monkeypatch):
    _, data, _ = served_archive
    with _Server({"cifar-10-python.tar.gz": data}) as srv:
        monkeypatch.setenv("KLAYER_CIFAR10_URL", srv.url + "cifar-10-python.tar.gz")
        monkeypatch.delenv("KLAYER_CIFAR10_MD5", raising=False)
        with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
            load_cifar10(tmp_path / "c", download_missing=True, progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_interrupted_download_leaves_nothing(tmp_path, served_archive):
    _, data, md5 = served_archive
    with _Server({"a.tar.gz": data}, truncate=1000) as srv:
        with pytest.raises(DataError, match="(incomplete|interrupted)"):
            download(srv.url + "a.tar.gz", tmp_path / "dl" / "a.tar.gz", {md5}, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_404_and_file_url(tmp_path, served_archive):
    _, data, md5 = served_archive
    with _Server({}) as srv:
        with pytest.raises(DataError, match="download failed"):
            download(srv.url + "nope", tmp_path / "x", None, progress=False)
    src = tmp_path / "src.tar.gz"
    src.write_bytes(data)
    out = download(src.as_uri(), tmp_path / "dl" / "cifar.tar.gz", {md5}, progress=False)
    assert out.read_bytes() == data


# -- IDX --------------------------------------------------------------------------------------
def idx_bytes(a: np.ndarray, code=0x08):
    return (
        struct.pack(">BBBB", 0, 0, code, a.ndim)
        + struct.pack(f">{a.ndim}I", *a.shape)
        + a.astype(a.dtype.newbyteorder(">")).tobytes()
    )


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, rng, gz):
    parts = {}
    for part, n in (("train", 50), ("t10k", 20)):
        X = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        parts[part] = (X, y)
        for kind, arr, dim in (("images", X, 3), ("labels", y, 1)):
            name = f"{part}-{kind}-idx{dim}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (tmp_path / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (tmp_path / name).write_bytes(data)
    raw = load_idx_folder(tmp_path)
    np.testing.assert_array_equal(raw.batches["train"][0], parts["train"][0].reshape(50, 784))
    np.testing.assert_array_equal(raw.batches["test"][1], parts["t10k"][1])
    ds = load_dataset(DataConfig(dataset="idx", path=str(tmp_path), n_val=10), dtype="float64")
    assert ds.sizes() == {"train": 40, "val": 10, "test": 20} and ds.input_size == 784


def test_idx_other_dtypes(tmp_path, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    (tmp_path / "f").write_bytes(idx_bytes(a, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), a)


def test_idx_bad_header(tmp_path, rng):
    a = rng.integers(0, 256, (4, 5, 5), dtype=np.uint8)
    good = idx_bytes(a)
    cases = {
        "magic": (b"\x01\x00" + good[2:], "bad IDX magic"),
        "type": (good[:2] + b"\x07" + good[3:], "bad IDX magic"),
        "size": (good[:-3], "IDX header says 100 data bytes"),
        "huge": (good[:4] + struct.pack(">I", 2**31) + good[8:], "IDX header says"),
        "short": (b"\x00\x00", "too short"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"{name}: {msg}"):
            read_idx(tmp_path / name)
    (tmp_path / "g.gz").write_bytes(gzip.compress(good[:4] + struct.pack(">I", 2**31) + good[8:]))
    with pytest.raises(DataError, match="disagrees with the gzip size"):
        read_idx(tmp_path / "g.gz")


# -- random bytes: only klayer's errors may escape ------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4000))
def test_fuzz_readers(tmp_path, data):
    for parse in (parse_python_batch, parse_binary_batch, parse_matlab_batch):
        try:
            parse(data, "fuzz")
        except DataError:
            pass
    p = tmp_path / "fuzz-idx"
    p.write_bytes(data)
    try:
        read_idx(p)
    except DataError:
        pass
    p.write_bytes(gzip.compress(data))
    try:
        read_idx(p)
    except DataError:
        pass
    t = tmp_path / "fuzz.tar.gz"
    t.write_bytes(data)
    try:
        read_members(t, {"data_batch_1": "x"})
    except DataError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10**6))
def test_fuzz_pickle_mutations(noise, pos):
    """Valid batches with random bytes spliced in: a DataError or a valid result, nothing else."""
    rng = np.random.default_rng(0)
    good = python_bytes(rng.integers(0, 256, (3, 3072), dtype=np.uint8), [1, 2, 3])
    pos %= len(good)
    data = good[:pos] + noise + good[pos + len(noise) :]
    try:
        X, y = parse_python_batch(data, "m")
        assert X.shape[1] == 3072 and ((0 <= y) & (y < 10)).all()
    except DataError:
        pass


# -- standardization and splits ----------------------------------------------------------------
def test_standardize_uses_training_statistics(rng):
    X = rng.integers(0, 256, (100, 7), dtype=np.uint8)
    mean, std = feature_stats(X, chunk=13)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    np.testing.assert_allclose(std, X.std(axis=0))
    Z = standardize(X, mean, std, "float32", chunk=9)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, (X - X.mean(0)) / X.std(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "split,n_val,sizes",
    [
        ("all", 5000, (45000, 5000)),
        ("all", 1000, (49000, 1000)),
        ("all", 123, (49877, 123)),
        ("batch1", 5000, (10000, 10000)),
    ],
)
def test_split_protocols(rng, split, n_val, sizes):
    batches = {b: (np.full((10000, 3), i, np.uint8), np.full(10000, i)) for i, b in enumerate(BATCHES)}
    from klayer.data import RawData

    ds = prepare(RawData(batches, "mem", "python"), split, n_val, "float64")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (*sizes, 10000)
    if split == "batch1":
        assert set(ds.y_train) == {0} and set(ds.y_val) == {1}
    else:  # validation is the end of data_batch_5
        assert set(ds.y_val) == {4}
    assert set(ds.y_test) == {5}
    # statistics from training data only: validation/test are standardized with them
    np.testing.assert_allclose(ds.mean, np.full(3, np.mean(ds.y_train)))
    np.testing.assert_allclose(ds.std, np.full(3, np.std(ds.y_train) or 1.0))
    val = 1 if split == "batch1" else 4
    np.testing.assert_allclose(ds.features(ds.X_val), np.full((sizes[1], 3), (val - ds.mean[0]) / ds.std[0]))
    np.testing.assert_allclose(ds.features(ds.X_test), np.full((10000, 3), (5 - ds.mean[0]) / ds.std[0]))


# -- the real data set ------------------------------------------------------------------------
def test_real_cifar10(cifar_raw, cifar_f32):
    for b in BATCHES:
        X, y = cifar_raw.batches[b]
        assert X.shape == (10000, 3072) and X.dtype == np.uint8 and y.shape == (10000,)
    assert np.bincount(cifar_raw.batches["test_batch"][1]).tolist() == [1000] * 10
    ds = cifar_f32
    assert ds.sizes() == {"train": 45000, "val": 5000, "test": 10000}
    assert ds.X_train.dtype == np.uint8  # kept raw: one byte per pixel
    Xs = ds.features(ds.X_train)
    assert Xs.dtype == np.float32
    m = Xs.mean(axis=0, dtype=np.float64)
    s = Xs.std(axis=0, dtype=np.float64)
    assert np.abs(m).max() < 1e-4 and np.abs(s - 1).max() < 1e-4
    Xv, Xt = ds.features(ds.X_val), ds.features(ds.X_test)
    assert abs(Xv.mean()) < 0.05 and abs(Xt.mean()) < 0.05
    assert np.abs(Xv.mean(axis=0)).max() > 1e-3  # with the training statistics, not re-centred
    # a mini-batch standardized on the fly equals the whole split standardized at once, bitwise
    idx = np.array([7, 44999, 3, 12345])
    np.testing.assert_array_equal(ds.features(ds.X_train[idx]), Xs[idx])
    np.testing.assert_array_equal(
        ds.features(ds.X_train[idx], "float64"), standardize(ds.X_train, ds.mean, ds.std, "float64")[idx]
    )


def test_real_batches_as_binary_layout(tmp_path, cifar_raw):
    """The real python batches written as .bin files read back identically."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for b, (X, y) in cifar_raw.batches.items():
        (folder / f"{b}.bin").write_bytes(binary_bytes(X, y))
    raw = load_cifar10(tmp_path, layout="binary", download_missing=False)
    for b, (X, y) in cifar_raw.batches.items():
        np.testing.assert_array_equal(raw.batches[b][0], X)
        np.testing.assert_array_equal(raw.batches[b][1], y)
