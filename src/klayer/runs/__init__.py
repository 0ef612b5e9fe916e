"""Run folders, model files and checkpoints: persistence that hangs on the training loop."""

from .checkpoint import read_checkpoint, write_checkpoint
from .folder import Checkpointer, RunFolder, run_results
from .history import HISTORY_FIELDS, read_history, write_history
from .model import SavedModel, load_model, save_model
from .run import TrainResult, run_status, tidy_finished, train, train_lockstep

__all__ = [
    "TrainResult",
    "train",
    "train_lockstep",
    "run_status",
    "tidy_finished",
    "SavedModel",
    "save_model",
    "load_model",
    "Checkpointer",
    "RunFolder",
    "run_results",
    "read_checkpoint",
    "write_checkpoint",
    "HISTORY_FIELDS",
    "read_history",
    "write_history",
]
