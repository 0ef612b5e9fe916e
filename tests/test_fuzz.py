"""Fuzzing every loader: arbitrary and mutated bytes in, only klayer's own one-line errors out.

Each loader gets ``KLAYER_FUZZ_EXAMPLES`` examples (default 2000, what CI runs) of arbitrary bytes
and as many of a valid file with bytes replaced, inserted or cut. A loader may accept a mutated
file only if what it returns is valid; anything else must be a ``DataError`` (model files and
checkpoints: ``ModelFileError``) with a one-line message naming the file.
"""

import gzip
import io
import os
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klayer.data import read_idx, read_members
from klayer.data.cifar10 import parse_binary_batch, parse_matlab_batch, parse_python_batch
from klayer.errors import DataError, ModelFileError
from klayer.network import Network, NetworkConfig
from klayer.runs import load_model, save_model
from klayer.runs.tensorfile import read_tensors

from .test_data import binary_bytes, idx_bytes, matlab_bytes, python_bytes

N = int(os.environ.get("KLAYER_FUZZ_EXAMPLES", "2000"))
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), database=None)

RNG = np.random.default_rng(0)
X3, Y3 = RNG.integers(0, 256, (3, 3072), dtype=np.uint8), [1, 2, 9]
VALID = {
    "python": python_bytes(X3, Y3),
    "binary": binary_bytes(X3, Y3),
    "matlab": matlab_bytes(X3, Y3),
    "idx": idx_bytes(RNG.integers(0, 256, (4, 5, 6), dtype=np.uint8)),
}


def _tar_gz(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID["tar"] = _tar_gz({"cifar-10-batches-py/data_batch_1": VALID["python"], "cifar-10-batches-py/x": b"abc"})


def _model_bytes(tmp) -> bytes:
    net = Network.init(NetworkConfig(6, (5,), 3, batch_norm=True), np.random.default_rng(0))
    return save_model(tmp / "m.safetensors", net, np.zeros(6), np.ones(6)).read_bytes()


@st.composite
def mutated(draw, valid: bytes):
    """``valid`` with a few bytes replaced, inserted or deleted, or cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "flip"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "replace":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(chunk)] = chunk
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[pos:]
        elif data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def _arbitrary_or_mutated(valid: bytes):
    return st.one_of(st.binary(max_size=2000), mutated(valid))


def _check_batch(result):
    X, y = result
    assert X.dtype == np.uint8 and X.ndim == 2 and X.shape[1] == 3072
    assert y.shape == (len(X),) and ((0 <= y) & (y < 10)).all()


def _one_line(e: Exception):
    assert "\n" not in str(e) and str(e)


@pytest.mark.parametrize(
    "layout,parse",
    [("python", parse_python_batch), ("binary", parse_binary_batch), ("matlab", parse_matlab_batch)],
)
def test_cifar_batch_parsers(layout, parse):
    @FUZZ
    @given(_arbitrary_or_mutated(VALID[layout]))
    def run(data):
        try:
            _check_batch(parse(data, "fuzz"))
        except DataError as e:
            _one_line(e)
            assert str(e).startswith("fuzz: ")

    run()


def test_idx_reader(tmp_path):
    path = tmp_path / "fuzz-idx"
    gz = tmp_path / "fuzz-idx.gz"

    @FUZZ
    @given(_arbitrary_or_mutated(VALID["idx"]), st.booleans())
    def run(data, compressed):
        p = gz if compressed else path
        p.write_bytes(gzip.compress(data) if compressed else data)
        try:
            a = read_idx(p)
            assert a.size * a.itemsize <= len(data)
        except DataError as e:
            _one_line(e)
            assert str(e).startswith(str(p))

    run()


def test_tar_archive_reader(tmp_path):
    path = tmp_path / "fuzz.tar.gz"

    @FUZZ
    @given(_arbitrary_or_mutated(VALID["tar"]))
    def run(data):
        path.write_bytes(data)
        try:
            found = read_members(path, {"data_batch_1": "b1"})
            if "b1" in found:
                try:
                    _check_batch(parse_python_batch(found["b1"], "b1"))
                except DataError:
                    pass
        except DataError as e:
            _one_line(e)
            assert str(e).startswith(str(path))

    run()


def test_model_file_loader(tmp_path):
    valid = _model_bytes(tmp_path)
    path = tmp_path / "fuzz.safetensors"

    @FUZZ
    @given(_arbitrary_or_mutated(valid))
    def run(data):
        path.write_bytes(data)
        try:
            m = load_model(path)
        except ModelFileError as e:
            _one_line(e)
            assert str(e).startswith(str(path))
        else:  # only an unchanged file may load
            assert data == valid, "a changed model file loaded"
            assert m.network.config.hidden == (5,)

    run()


def test_checkpoint_container_reader(tmp_path):
    from klayer.runs.tensorfile import encode_tensors

    valid = encode_tensors({"param.W1": np.arange(12.0).reshape(3, 4), "perm": np.arange(5)}, {"state": "{}"})
    path = tmp_path / "fuzz.ckpt"

    @FUZZ
    @given(_arbitrary_or_mutated(valid))
    def run(data):
        path.write_bytes(data)
        try:
            tensors, _ = read_tensors(path, "checkpoint")
        except ModelFileError as e:
            _one_line(e)
        else:
            assert data == valid, "a changed checkpoint was accepted"

    run()


# -- forged sizes: a header that claims terabytes must be refused before anything is allocated --


def test_idx_gzip_with_a_forged_size_is_refused_without_allocating_it(tmp_path):
    body = bytes(range(256)) * 4
    # dims (1024, 1023 * 2**22 + 1): the claimed size, 1023 * 2**32 + 1024 bytes (4 TB), agrees
    # with gzip's trailer (the true size mod 2**32), so only the claim's absurdity gives it away
    header = b"\x00\x00\x08\x02" + np.array([1024, 1023 * 2**22 + 1], ">u4").tobytes()
    p = tmp_path / "forged-idx.gz"
    p.write_bytes(gzip.compress(header + body))
    with pytest.raises(DataError, match="forged|more than|disagrees") as e:
        read_idx(p)
    _one_line(e.value)
    assert str(e.value).startswith(str(p))


def _forge_tar_size(tar: bytes, size: int) -> bytes:
    h = bytearray(tar[:512])
    h[124:136] = b"\x80" + size.to_bytes(11, "big")  # base-256 size field
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h) + tar[512:]


@pytest.mark.parametrize("compress", [False, True])
def test_tar_member_with_a_forged_size_is_refused_without_allocating_it(tmp_path, compress):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(VALID["python"])
        tar.addfile(info, io.BytesIO(VALID["python"]))
    data = _forge_tar_size(buf.getvalue(), 2**40)
    p = tmp_path / ("forged.tar.gz" if compress else "forged.tar")
    p.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError) as e:
        read_members(p, {"data_batch_1": "b1"})
    _one_line(e.value)
    assert str(e.value).startswith(str(p))
