"""Shared fixtures. Real CIFAR-10 comes from $KLAYER_DATA or ../shared/datasets (skipped if absent)."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"

# The file-reader fuzzers' profile: at least 2000 examples per loader, every run (CI included).
# Tests opt in with @settings(settings.get_profile("ci")); KLAYER_FUZZ_EXAMPLES raises the count.
settings.register_profile(
    "ci",
    max_examples=max(2000, int(os.environ.get("KLAYER_FUZZ_EXAMPLES", "2000"))),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cifar_root():
    for cand in (os.environ.get("KLAYER_DATA"), SHARED):
        if cand and (Path(cand) / "cifar-10-python.tar.gz").is_file():
            return Path(cand)
        if cand and (Path(cand) / "cifar-10-batches-py").is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def cifar_dir():
    root = cifar_root()
    if root is None:
        pytest.skip("real CIFAR-10 not found (set KLAYER_DATA or put ../shared/datasets beside the repo)")
    return root


@pytest.fixture(scope="session")
def cifar_raw(cifar_dir):
    from klayer.data import load_cifar10

    return load_cifar10(cifar_dir, download_missing=False)


@pytest.fixture(scope="session")
def cifar_f32(cifar_raw):
    from klayer.data import prepare

    return prepare(cifar_raw, "all", 5000, "float32")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_dataset(rng, n_train=300, n_val=100, n_test=100, d=12, C=4, dtype="float64"):
    """A small learnable synthetic Dataset: Gaussian clusters, one per class."""
    from klayer.data import Dataset

    centers = rng.standard_normal((C, d)) * 2

    def make(n):
        y = rng.integers(0, C, n)
        return (centers[y] + rng.standard_normal((n, d))).astype(dtype), y

    Xtr, ytr = make(n_train)
    Xva, yva = make(n_val)
    Xte, yte = make(n_test)
    return Dataset(Xtr, ytr, Xva, yva, Xte, yte, np.zeros(d), np.ones(d), C, "synthetic")


def write_idx_data(folder: Path, rng, n_train=700, n_test=200, C=10):
    """A learnable MNIST-style data set (8x8 images) as IDX files."""
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    centers = rng.integers(40, 216, (C, 64))
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, C, n)
        X = np.clip(centers[y] + rng.normal(0, 40, (n, 64)), 0, 255).astype(np.uint8).reshape(n, 8, 8)
        (folder / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, n, 8, 8) + X.tobytes())
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, n) + y.astype(np.uint8).tobytes()
        )
    return folder
