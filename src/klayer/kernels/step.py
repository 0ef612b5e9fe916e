"""One training step's forward and backward with the compiled loops of
:mod:`klayer.kernels.compiled` between the matrix products, which stay numpy's
(:func:`klayer.layers.linear_forward`, :func:`klayer.layers.linear_backward`).

The contract is :func:`klayer.network.data_loss_and_grads`'s, for stacks ``(K, ...)`` without
dropout; the numbers equal it up to float rounding (batch sums in float64 here, numpy's
pairwise sums there; tests/test_kernels.py).
"""

from __future__ import annotations

import numpy as np

from .. import layers
from . import compiled

__all__ = ["data_loss_and_grads", "gather_features", "sgd_update"]


def gather_features(X, idx, mean, inv_std, out):
    """``out = (X[idx] - mean) * inv_std`` in ``out``'s dtype: the bits of a gather followed by
    :meth:`klayer.data.Dataset.features`, in one pass. ``X: (N, d)``, ``idx: (n,)`` valid rows."""
    compiled.gather_standardize(X, idx, mean, inv_std, out)
    return out


def data_loss_and_grads(params, X, y, config, scale=None, masks=None, smoothing: float = 0.0):
    """:func:`klayer.network.data_loss_and_grads` for a stack (``W1: (K, m, d)``) with no
    dropout masks: ``(loss (K,), grads, batch_stats)``."""
    if masks:
        raise ValueError("the compiled step has no dropout: use klayer.network.data_loss_and_grads")
    k = config.n_layers
    K = params["W1"].shape[0]
    dtype = params["W1"].dtype
    H = X
    caches = []
    stats = {}
    for l in range(1, k):
        S, lin = layers.linear_forward(H, params[f"W{l}"], params[f"b{l}"])
        S = np.ascontiguousarray(S)
        if config.batch_norm:
            m = S.shape[-1]
            S_hat, H = np.empty_like(S), np.empty_like(S)
            mu, var, inv = (np.empty((K, m), dtype) for _ in range(3))
            g = params[f"gamma{l}"]
            compiled.bn_relu_forward(S, g, params[f"beta{l}"], float(config.eps), S_hat, H, mu, var, inv)
            stats[f"mu{l}"], stats[f"var{l}"] = mu, var
            caches.append((lin, H, (S_hat, inv, g)))
        else:
            H = np.maximum(S, 0, out=S)
            caches.append((lin, H, None))
    scores, lin = layers.linear_forward(H, params[f"W{k}"], params[f"b{k}"])
    scores = np.ascontiguousarray(scores)
    scale = np.ones(K) if scale is None else np.asarray(scale, np.float64).reshape(K)
    dscores = np.empty_like(scores)
    loss = np.empty(K)
    db = np.empty((K, scores.shape[-1]), dtype)
    compiled.softmax_ce(scores, np.ascontiguousarray(y, np.int64), scale, float(smoothing), dscores, loss, db)
    grads = {}
    dH, grads[f"W{k}"], _ = layers.linear_backward(dscores, lin, need_db=False)
    grads[f"b{k}"] = db
    for l in range(k - 1, 0, -1):
        lin, Hl, bn = caches[l - 1]
        dS = np.empty_like(Hl)
        db = np.empty((K, Hl.shape[-1]), dtype)
        dH = np.ascontiguousarray(dH)
        if bn is None:
            compiled.relu_bias_backward(dH, Hl, dS, db)
        else:
            S_hat, inv, g = bn
            dgamma, dbeta = np.empty_like(db), np.empty_like(db)
            compiled.bn_relu_backward(dH, Hl, S_hat, inv, g, dS, dgamma, dbeta, db)
            grads[f"gamma{l}"], grads[f"beta{l}"] = dgamma, dbeta
        dH, grads[f"W{l}"], _ = layers.linear_backward(dS, lin, need_dX=l > 1, need_db=False)
        grads[f"b{l}"] = db
    # the reference's key order (W, b per layer from the top), so that dict iteration matches
    return loss.astype(dtype), grads, stats


def _rows(a: np.ndarray) -> np.ndarray:
    """``a: (K, ...)`` as a ``(K, n)`` view (never a copy: the kernels write through it)."""
    if not a.flags.c_contiguous:
        raise ValueError("the compiled update needs C-contiguous arrays")
    return a.reshape(a.shape[0], -1)


def sgd_update(params, scaled_grads, state, eta, lam, momentum: float = 0.0, nesterov=False):
    """:func:`klayer.training.optim.sgd_update` with one compiled pass per weight matrix (all
    of it, velocity included, for momentum), the same bits."""
    dtype = params["W1"].dtype
    two_eta_lam = 2 * np.asarray(eta, dtype) * np.asarray(lam, dtype)
    K = two_eta_lam.shape[0]
    decay = None
    if momentum:
        mom, zero = dtype.type(momentum), np.zeros(K, dtype)
    else:
        decay = (1 - two_eta_lam).astype(dtype)
    for name, g in scaled_grads.items():
        p = params[name]
        is_W = name[0] == "W"
        if momentum:
            c = two_eta_lam if is_W else zero
            compiled.sgd_momentum(_rows(p), _rows(g), _rows(state[f"v.{name}"]), c, mom, nesterov)
        elif is_W:
            compiled.sgd_plain(_rows(p), _rows(g), decay)
        else:
            p -= g
