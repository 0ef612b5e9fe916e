"""klayer: k-layer fully connected networks with batch normalization, trained by mini-batch
gradient descent with cyclical learning rates, on NumPy with analytic gradients."""

__version__ = "0.1.0"

from .config import AugmentConfig, ExperimentConfig, ModelConfig, TrainConfig, load_experiment  # noqa: E402
from .data import DataConfig, Dataset, load_cifar10, load_dataset, prepare  # noqa: E402
from .errors import ConfigError, DataError, DivergenceError, KlayerError  # noqa: E402
from .gradcheck import check_gradients  # noqa: E402
from .learn import check, reference_vectors, write_vectors  # noqa: E402
from .network import Network, NetworkConfig, forward, loss_and_grads  # noqa: E402
from .runs import SavedModel, TrainResult, load_model, save_model, train, train_lockstep  # noqa: E402
from .training import Callback, Trainer, constant_eta, cyclic_eta, decay_eta  # noqa: E402

__all__ = [
    "__version__",
    "Network",
    "NetworkConfig",
    "forward",
    "loss_and_grads",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "AugmentConfig",
    "load_experiment",
    "DataConfig",
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "prepare",
    "check_gradients",
    "check",
    "reference_vectors",
    "write_vectors",
    "cyclic_eta",
    "constant_eta",
    "decay_eta",
    "Trainer",
    "Callback",
    "TrainResult",
    "SavedModel",
    "train",
    "train_lockstep",
    "save_model",
    "load_model",
    "KlayerError",
    "DataError",
    "ConfigError",
    "DivergenceError",
]
