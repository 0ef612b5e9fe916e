"""Parameter updates: functions of ``(params, grads, state)`` with no hidden state.

An optimizer is a small frozen object with two methods: ``init(params)`` returns its state (a
dict of arrays, saved in checkpoints so that a resumed run continues bitwise), and
``update(params, grads, state, eta, lam, t)`` updates ``params`` and ``state`` in place (for
speed; nothing else is touched). Every array may carry a leading model axis ``K``; ``eta`` and
``lam`` are then ``(K,)`` arrays.

SGD consumes gradients already multiplied by each network's learning rate (``prescaled``; see
:func:`klayer.network.data_loss_and_grads`), which saves a pass over the weights. The penalty
``lam * ||W||^2`` of the cost is applied here, to weight matrices only, without materializing its
gradient ``2 lam W``::

    W <- W - eta * (dL/dW + 2 lam W) = (1 - 2 eta lam) W - eta dL/dW

Biases, ``gamma`` and ``beta`` are not penalized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SGD", "sgd_update", "make_optimizer"]


def _per_model(v, like: np.ndarray) -> np.ndarray:
    """A scalar or (K,) vector shaped to broadcast against a stacked array ``like: (K, ...)``."""
    v = np.asarray(v, like.dtype)
    return v if v.ndim == 0 else v.reshape((-1,) + (1,) * (like.ndim - 1))


def sgd_update(params: dict, scaled_grads: dict, state: dict, eta, lam, momentum: float = 0.0, nesterov=False):
    """Gradient descent, plain or with (Nesterov) momentum, from gradients already times ``eta``.

    Parameters
    ----------
    params : dict of (K, ...) arrays, updated in place.
    scaled_grads : dict of ``eta * dL/dparam`` (the data term; overwritten).
    state : ``{"v.<name>": velocity}`` when ``momentum > 0``, updated in place.
    eta, lam : (K,) learning rates and penalties.

    Notes
    -----
    With momentum ``mu``, for ``g = dL/dp + 2 lam p`` (the penalty only for weight matrices)::

        v <- mu v - eta g;   p <- p + v                      (heavy ball)
        v <- mu v - eta g;   p <- p + mu v - eta g           (Nesterov, as PyTorch's nesterov=True)
    """
    two_eta_lam = 2 * np.asarray(eta) * np.asarray(lam)
    for name, g in scaled_grads.items():
        p = params[name]
        decay = name.startswith("W")
        if momentum:
            v = state[f"v.{name}"]
            if decay:
                g += _per_model(two_eta_lam, p) * p
            v *= momentum
            v -= g
            if nesterov:
                p += momentum * v
                p -= g
            else:
                p += v
        else:
            if decay:
                p *= _per_model(1 - two_eta_lam, p)
            p -= g


@dataclass(frozen=True)
class SGD:
    """Mini-batch gradient descent, optionally with heavy-ball or Nesterov momentum."""

    momentum: float = 0.0
    nesterov: bool = False
    prescaled = True

    def init(self, params: dict) -> dict:
        return {f"v.{k}": np.zeros_like(p) for k, p in params.items()} if self.momentum else {}

    def update(self, params, grads, state, eta, lam, t: int) -> None:
        sgd_update(params, grads, state, eta, lam, self.momentum, self.nesterov)


def make_optimizer(train_config):
    """The optimizer a :class:`~klayer.config.TrainConfig` asks for."""
    return SGD(train_config.momentum, getattr(train_config, "nesterov", False))
