"""Parameter updates: functions of ``(params, grads, state)`` with no hidden state.

An optimizer is a small frozen object with two methods: ``init(params)`` returns its state (a
dict of arrays, saved in checkpoints so that a resumed run continues bitwise), and
``update(params, grads, state, eta, lam, t)`` updates ``params`` and ``state`` in place (for
speed; nothing else is touched). Every array may carry a leading model axis ``K``; ``eta`` and
``lam`` are then ``(K,)`` arrays.

Optimizers: :class:`SGD` (plain, heavy-ball or Nesterov momentum) and :class:`Adam` (AdamW with
decoupled ``weight_decay``).

SGD consumes gradients already multiplied by each network's learning rate (``prescaled``; see
:func:`klayer.network.data_loss_and_grads`), which saves a pass over the weights. The penalty
``lam * ||W||^2`` of the cost is applied here, to weight matrices only, without materializing its
gradient ``2 lam W``::

    W <- W - eta * (dL/dW + 2 lam W) = (1 - 2 eta lam) W - eta dL/dW

Biases, ``gamma`` and ``beta`` are not penalized.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["SGD", "Adam", "sgd_update", "adam_update", "make_optimizer"]


def _per_model(v, like: np.ndarray) -> np.ndarray:
    """A scalar or (K,) vector shaped to broadcast against a stacked array ``like: (K, ...)``."""
    v = np.asarray(v, like.dtype)
    return v if v.ndim == 0 else v.reshape((-1,) + (1,) * (like.ndim - 1))


_local = threading.local()


def _scratch(like: np.ndarray) -> np.ndarray:
    """A scratch array of ``like``'s shape and dtype, reused between calls (one per thread)."""
    cache = _local.__dict__.setdefault("scratch", {})
    key = (like.shape, like.dtype.str)
    buf = cache.get(key)
    if buf is None:
        if len(cache) > 64:
            cache.clear()
        buf = cache[key] = np.empty_like(like)
    return buf


_BLOCK_BYTES = 1 << 17  # per array: p, g, v and the scratch together stay in a 1 MB cache


def _blocks(p: np.ndarray) -> list[tuple]:
    """Indices cutting a large stack of matrices ``p: (K, m, d)`` into blocks of rows (over all
    models at once) of about ``_BLOCK_BYTES`` each; one index for anything else."""
    if p.ndim != 3 or p.nbytes <= 2 * _BLOCK_BYTES:
        return [(Ellipsis,)]
    rows = p.shape[1]
    step = max(1, rows * _BLOCK_BYTES // p.nbytes)
    return [(slice(None), slice(i, i + step)) for i in range(0, rows, step)]


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
            c = _per_model(two_eta_lam, p) if decay else None
            # products go through a reused scratch array: the same numbers as ``g += c * p`` and
            # ``p += momentum * v``, without allocating (and page-faulting) a temporary per step;
            # large matrices go in blocks of rows, so that the seven passes run in cache
            tmp = _scratch(p)
            for idx in _blocks(p):
                pb, gb, vb, tb = p[idx], g[idx], v[idx], tmp[idx]
                if c is not None:
                    gb += np.multiply(pb, c, out=tb)
                vb *= momentum
                vb -= gb
                if nesterov:
                    pb += np.multiply(vb, momentum, out=tb)
                    pb -= gb
                else:
                    pb += vb
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


def adam_update(params, grads, state, eta, lam, t: int, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba, 2015), or AdamW with ``weight_decay > 0`` (Loshchilov & Hutter, 2019).

    Parameters
    ----------
    grads : dict of ``dL/dparam`` (NOT multiplied by ``eta``; overwritten).
    state : ``{"m.<name>", "v.<name>"}`` first and second moment estimates, updated in place.
    eta, lam : (K,) learning rates and penalties; ``t`` : updates done before this one.

    Notes
    -----
    ``lam`` keeps its meaning: the gradient of the cost's ``lam * ||W||^2`` is added to ``g``
    before the moments (coupled L2, scaled by Adam's per-entry step like any gradient).
    ``weight_decay`` is decoupled: ``p <- p - eta * weight_decay * p`` apart from the adaptive step
    (PyTorch's AdamW), on weight matrices only::

        g = dL/dp + 2 lam p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        p <- p (1 - eta wd) - eta * (m / (1 - b1^(t+1))) / (sqrt(v / (1 - b2^(t+1))) + eps)
    """
    c1, c2 = 1 - beta1 ** (t + 1), 1 - beta2 ** (t + 1)
    eta = np.asarray(eta)
    for name, g in grads.items():
        p = params[name]
        is_W = name.startswith("W")
        if is_W and np.any(lam):
            g += _per_model(2 * np.asarray(lam), p) * p
        m, v = state[f"m.{name}"], state[f"v.{name}"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        g *= g
        g *= 1 - beta2
        v += g
        denom = np.sqrt(v / c2)
        denom += eps
        if is_W and weight_decay:
            p *= _per_model(1 - eta * weight_decay, p)
        step = m / denom
        step *= _per_model(eta / c1, p)
        p -= step


@dataclass(frozen=True)
class Adam:
    """Adam with the cost's L2 penalty; AdamW when ``weight_decay > 0``."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    prescaled = False

    def init(self, params: dict) -> dict:
        state = {f"m.{k}": np.zeros_like(p) for k, p in params.items()}
        state.update({f"v.{k}": np.zeros_like(p) for k, p in params.items()})
        return state

    def update(self, params, grads, state, eta, lam, t: int) -> None:
        adam_update(params, grads, state, eta, lam, t, self.beta1, self.beta2, self.eps, self.weight_decay)


def make_optimizer(train_config):
    """The optimizer a :class:`~klayer.config.TrainConfig` asks for."""
    tc = train_config
    if tc.optimizer == "sgd":
        return SGD(tc.momentum, tc.nesterov)
    return Adam(tc.beta1, tc.beta2, tc.adam_eps, tc.weight_decay if tc.optimizer == "adamw" else 0.0)
