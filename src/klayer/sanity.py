"""The assignments' sanity check: overfit a handful of training images.

If the gradients are right, gradient descent on 100 images with no regularization drives the
training loss towards zero (a reference report reached about 0.009 after 200 epochs).
"""

from __future__ import annotations

from dataclasses import replace

from .config import ExperimentConfig, ModelConfig, TrainConfig
from .data.prepare import Dataset
from .errors import ConfigError
from .training import Trainer

__all__ = ["overfit"]


def overfit(
    data: Dataset,
    n: int = 100,
    hidden=(50,),
    batch_norm: bool = False,
    eta: float = 0.01,
    n_epochs: int = 200,
    batch_size: int = 10,
    lam: float = 0.0,
    seed: int = 0,
    dtype: str = "float64",
) -> list[dict]:
    """Train on the first ``n`` training images (validated on the next ``n``).

    Returns
    -------
    The history rows (one per epoch); ``rows[-1]["train_loss"]`` is the final training loss.
    """
    N = len(data.y_train)
    if not 2 <= n <= N // 2:
        raise ConfigError(
            f"sanity check: n={n} must be between 2 and {N // 2} (n images to train on, the next n to "
            f"validate on; {data.source or 'the data'} has {N} training images)"
        )
    if batch_size > n:
        raise ConfigError(f"sanity check: batch_size={batch_size} exceeds n={n}")
    small = replace(
        data,
        X_train=data.X_train[:n],
        y_train=data.y_train[:n],
        X_val=data.X_train[n : 2 * n],
        y_val=data.y_train[n : 2 * n],
    )
    cfg = ExperimentConfig(
        name="sanity",
        model=ModelConfig(hidden=tuple(hidden), batch_norm=batch_norm),
        train=TrainConfig(
            lam=lam,
            batch_size=batch_size,
            schedule="constant",
            eta=eta,
            n_epochs=n_epochs,
            evals_per_cycle=1,
            seed=seed,
            dtype=dtype,
        ),
    )
    trainer = Trainer([cfg], small)
    trainer.run(progress=False)
    return trainer.history[0]
