"""A seed fully determines a run, down to the bytes of the files it writes."""

import numpy as np
from safetensors.numpy import load_file

from klayer.runs import train
from klayer.runs.tensorfile import encode_tensors, read_tensors

from .conftest import tiny_dataset
from .test_train import small_config


def test_the_same_tensors_and_metadata_give_the_same_bytes(tmp_path):
    """safetensors orders the metadata by a Rust hash map, differently at every call: 20 encodings
    of one model gave 20 different files before the header was sorted."""
    tensors = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "b1": np.zeros(2, np.float32)}
    meta = {k: f"value {i} é" for i, k in enumerate("hgfedcba")}
    encoded = {encode_tensors(tensors, meta) for _ in range(20)}
    assert len(encoded) == 1
    (tmp_path / "m.safetensors").write_bytes(encoded.pop())
    back, back_meta = read_tensors(tmp_path / "m.safetensors")  # digests verified
    assert back_meta == meta and all(np.array_equal(back[k], v) for k, v in tensors.items())
    assert all(np.array_equal(load_file(tmp_path / "m.safetensors")[k], v) for k, v in tensors.items())


def test_a_seed_gives_the_same_model_file_and_history_bytes(tmp_path, rng):
    data = tiny_dataset(rng)
    cfg = small_config(seed=int(rng.integers(2**63)), checkpoint_every=50)
    train(cfg, data, out=tmp_path / "a")
    train(cfg, data, out=tmp_path / "b")
    for name in ("model.safetensors", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
