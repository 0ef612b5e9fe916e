"""Data: CIFAR-10 (python, binary, MATLAB layouts), MNIST-style IDX files, splits, standardization."""

from .archive import read_members, safe_extract
from .cifar10 import BATCHES, CLASSES, LAYOUTS, RawData, default_data_dir, find_cifar10, load_cifar10
from .download import download, md5sum
from .idx import load_idx_folder, read_idx
from .prepare import DataConfig, Dataset, feature_stats, load_dataset, prepare, split_raw, standardize
from .safe_pickle import safe_loads
from .samples import sample_rows

__all__ = [
    "BATCHES",
    "CLASSES",
    "LAYOUTS",
    "RawData",
    "DataConfig",
    "Dataset",
    "default_data_dir",
    "find_cifar10",
    "load_cifar10",
    "load_idx_folder",
    "read_idx",
    "read_members",
    "safe_extract",
    "download",
    "md5sum",
    "safe_loads",
    "feature_stats",
    "standardize",
    "split_raw",
    "prepare",
    "load_dataset",
    "sample_rows",
]
