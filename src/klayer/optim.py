"""In-place parameter updates of plain or heavy-ball gradient descent with the L2 penalty.

The gradients passed in are the data term only, already multiplied by each network's learning
rate (see :func:`klayer.network.data_loss_and_grads`); the penalty ``lam * ||W||^2`` is applied
here as weight decay, so no gradient of it is ever materialized:

    W <- W - eta * (dL/dW + 2 lam W) = (1 - 2 eta lam) W - eta dL/dW

Biases, ``gamma`` and ``beta`` are not penalized.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sgd_update"]


def _per_model(v, like: np.ndarray) -> np.ndarray:
    """A (K,) vector shaped to broadcast against a stacked array ``like: (K, ...)``."""
    return np.asarray(v, like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))


def sgd_update(params: dict, scaled_grads: dict, eta, lam, velocity: dict | None = None, momentum: float = 0.0) -> None:
    """Update ``params`` in place from gradients already multiplied by ``eta``.

    Parameters
    ----------
    params : dict of (K, ...) arrays.
    scaled_grads : dict of ``eta * dL/dparam`` (overwritten).
    eta, lam : (K,) learning rates and penalties.
    velocity : dict of (K, ...) arrays for momentum ``v <- momentum v - eta g; p <- p + v``.
    """
    for name, g in scaled_grads.items():
        p = params[name]
        decay = name.startswith("W")
        if momentum:
            v = velocity[name]
            v *= momentum
            v -= g
            if decay:
                v -= _per_model(2 * np.asarray(eta) * lam, p) * p
            p += v
        else:
            if decay:
                p *= _per_model(1 - 2 * np.asarray(eta) * lam, p)
            p -= g
