"""Training: the loop (knowing nothing of files), optimizers, learning-rate schedules, events."""

from .callbacks import Callback
from .loop import LOCKSTEP_KEYS, Trainer, lockstep_signature, rng_for
from .optim import SGD, make_optimizer, sgd_update
from .schedules import constant_eta, cyclic_eta, decay_eta

__all__ = [
    "Callback",
    "Trainer",
    "LOCKSTEP_KEYS",
    "lockstep_signature",
    "rng_for",
    "SGD",
    "make_optimizer",
    "sgd_update",
    "cyclic_eta",
    "constant_eta",
    "decay_eta",
]
