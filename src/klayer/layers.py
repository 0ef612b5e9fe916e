"""Pure forward/backward pairs with explicit caches.

Conventions
-----------
Samples are rows: a batch is ``X: (..., N, D)`` and a weight matrix ``W: (..., m_out, m_in)``, so
a linear layer computes ``S = X @ W.T + b``. The assignments write the same thing in columns,
``s = W x + b`` with ``X: (d, n)``; transpose every data matrix to go from one to the other.

Every function works over the trailing axes only: the batch is ``axis=-2`` and features are
``axis=-1``. Anything in front (``...``) is a stack of independent networks trained in lockstep
(the *model axis* ``K``), so ``W: (K, m, d)``, ``b: (K, m)`` and ``S: (K, N, m)`` go through the
same code as a single network. The first layer may take one input batch ``X: (N, D)`` shared by
all ``K`` models; it is then computed as a single matrix product of ``X`` with the ``K * m`` rows
of all weight matrices.

Nothing here keeps state between calls: each forward returns the cache its backward needs.
"""

from __future__ import annotations

import numpy as np

from .errors import KlayerError

__all__ = [
    "linear_forward",
    "linear_backward",
    "batchnorm_train_forward",
    "batchnorm_eval_forward",
    "batchnorm_backward",
    "relu_forward",
    "relu_backward",
    "relu_forward_inplace",
    "relu_backward_inplace",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "dropout_mask",
    "dropout_forward",
    "dropout_backward",
]


def _shared_input(X: np.ndarray, W: np.ndarray) -> bool:
    """True when one batch ``X: (N, D)`` feeds a stack of weight matrices ``W: (K, m, D)``."""
    return X.ndim == 2 and W.ndim == 3


def linear_forward(X: np.ndarray, W: np.ndarray, b: np.ndarray):
    """Affine layer ``S = X @ W.T + b``.

    Parameters
    ----------
    X : (..., N, d) array, or (N, d) shared by all models when ``W`` has a model axis.
    W : (..., m, d) array.
    b : (..., m) array.

    Returns
    -------
    S : (..., N, m) array.
    cache : tuple ``(X, W)`` for :func:`linear_backward`.
    """
    if _shared_input(X, W):
        K, m, d = W.shape
        # One product for all K models: (N, d) @ (d, K*m), then view as (K, N, m).
        S = X @ W.reshape(K * m, d).T
        S += b.reshape(K * m)
        S = S.reshape(X.shape[0], K, m).transpose(1, 0, 2)
    else:
        S = X @ np.swapaxes(W, -1, -2)
        S += b[..., None, :]
    return S, (X, W)


def linear_backward(dout: np.ndarray, cache, need_dX: bool = True, need_db: bool = True):
    """Backward pass of :func:`linear_forward`.

    Parameters
    ----------
    dout : (..., N, m) array, the gradient of the cost with respect to ``S``.
    cache : tuple from :func:`linear_forward`.
    need_dX : bool
        Skip the input gradient (the first layer never needs it).
    need_db : bool
        Skip the bias gradient (for a caller that summed ``dout`` already).

    Returns
    -------
    dX : (..., N, d) array or None.
    dW : (..., m, d) array.
    db : (..., m) array or None.
    """
    X, W = cache
    db = dout.sum(axis=-2) if need_db else None
    if _shared_input(X, W):
        K, m, d = W.shape
        # One product for all K models: (K*m, N) @ (N, d).
        G = np.ascontiguousarray(dout.transpose(1, 0, 2)).reshape(X.shape[0], K * m)
        dW = (G.T @ X).reshape(K, m, d)
        dX = np.einsum("knm,kmd->knd", dout, W) if need_dX else None
    else:
        dW = np.swapaxes(dout, -1, -2) @ X
        dX = dout @ W if need_dX else None
    return dX, dW, db


def batchnorm_train_forward(S: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    """Batch normalization with the statistics of this batch, then scale and shift.

    Parameters
    ----------
    S : (..., N, m) array, N >= 2.
    gamma, beta : (..., m) arrays.
    eps : float added to the variance.

    Returns
    -------
    out : (..., N, m) array, ``gamma * S_hat + beta``.
    cache : tuple ``(S_hat, inv_std, gamma)`` for :func:`batchnorm_backward`.
    stats : tuple ``(mu, var)`` of (..., m) arrays, for the caller's running averages.

    Notes
    -----
    ``mu = mean(S)``, ``var = mean((S - mu)**2)`` (biased, 1/N), ``S_hat = (S - mu) / sqrt(var + eps)``.
    """
    N = S.shape[-2]
    if N < 2:
        raise KlayerError(
            f"batch normalization in training mode needs at least 2 samples per batch, got {N} "
            "(the variance of one sample is zero)"
        )
    mu = S.mean(axis=-2)
    centred = S - mu[..., None, :]
    var = np.einsum("...nm,...nm->...m", centred, centred) / N
    inv_std = 1.0 / np.sqrt(var + eps)
    S_hat = centred
    S_hat *= inv_std[..., None, :]
    out = S_hat * gamma[..., None, :]
    out += beta[..., None, :]
    return out, (S_hat, inv_std, gamma), (mu, var)


def batchnorm_eval_forward(S, gamma, beta, mu, var, eps: float):
    """Batch normalization with given (running) statistics ``mu, var: (..., m)``; no cache."""
    scale = gamma / np.sqrt(var + eps)
    out = S * scale[..., None, :]
    out += (beta - mu * scale)[..., None, :]
    return out


def batchnorm_backward(dout: np.ndarray, cache):
    """Backward pass of :func:`batchnorm_train_forward`.

    Returns
    -------
    dS : (..., N, m) array.
    dgamma, dbeta : (..., m) arrays.

    Notes
    -----
    With ``G = dout * gamma`` and means over the batch,
    ``dS = inv_std * (G - mean(G) - S_hat * mean(G * S_hat))``: the assignments' expression
    (their eqs. for ``G_batch``) simplified. Its batch sum is zero, which is why a bias in front
    of batch normalization has a gradient of exactly zero.
    """
    S_hat, inv_std, gamma = cache
    N = dout.shape[-2]
    dbeta = dout.sum(axis=-2)
    dgamma = np.einsum("...nm,...nm->...m", dout, S_hat)
    G = dout * gamma[..., None, :]
    # mean(G * S_hat) = gamma * dgamma / N, mean(G) = gamma * dbeta / N
    dS = G
    dS -= (gamma * dbeta / N)[..., None, :]
    dS -= S_hat * (gamma * dgamma / N)[..., None, :]
    dS *= inv_std[..., None, :]
    return dS, dgamma, dbeta


def relu_forward(S: np.ndarray):
    """``H = max(S, 0)``; the cache is ``H`` itself (its sign pattern is all backward needs)."""
    H = np.maximum(S, 0)
    return H, H


def relu_backward(dout: np.ndarray, H: np.ndarray):
    """Gradient through ReLU: ``dout`` where ``H > 0``, else 0."""
    return np.where(H > 0, dout, 0).astype(dout.dtype, copy=False)


def relu_forward_inplace(S: np.ndarray):
    """:func:`relu_forward` overwriting ``S`` (the network's fast path: ``S`` is a fresh array
    nobody else holds). Returns ``(H, H)`` with ``H`` being ``S``; the same numbers."""
    H = np.maximum(S, 0, out=S)
    return H, H


def relu_backward_inplace(dout: np.ndarray, H: np.ndarray) -> np.ndarray:
    """:func:`relu_backward` overwriting ``dout``: a multiplication by the 0/1 pattern ``H > 0``
    instead of a data-dependent select (which mispredicts a branch per entry and is up to 20
    times slower), then ``+ 0`` to turn the ``-0.0`` of a negative entry times 0 into the
    reference's ``+0.0``. The same bits as :func:`relu_backward` for finite ``dout``."""
    np.multiply(dout, H > 0, out=dout)
    dout += 0
    return dout


def log_softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax ``S - logsumexp(S)`` of ``S: (..., N, C)``, stable for any scale."""
    Z = S - S.max(axis=-1, keepdims=True)
    Z -= np.log(np.exp(Z).sum(axis=-1, keepdims=True))
    return Z


def softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise class probabilities of scores ``S: (..., N, C)``."""
    P = np.exp(S - S.max(axis=-1, keepdims=True))
    P /= P.sum(axis=-1, keepdims=True)
    return P


def softmax_cross_entropy(S: np.ndarray, y: np.ndarray, smoothing: float = 0.0):
    """Mean cross-entropy of softmax scores and its gradient, optionally with label smoothing.

    Parameters
    ----------
    S : (..., N, C) array of scores.
    y : (N,) integer labels in ``[0, C)``.
    smoothing : label smoothing ``s``: the target is ``(1 - s) * Y + s / C`` instead of the
        one-hot ``Y`` (Szegedy et al., 2016).

    Returns
    -------
    loss : (...) array (a 0-d array for one network), ``mean_i -sum_c T_ic log p_ic``.
    dS : (..., N, C) array, ``(P - T) / N``.
    """
    N, C = S.shape[-2:]
    logP = log_softmax(S)
    rows = np.arange(N)
    loss = -logP[..., rows, y].mean(axis=-1)
    dS = np.exp(logP)
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing / C * logP.sum(axis=-1).mean(axis=-1)
        dS -= smoothing / C
        dS[..., rows, y] -= 1 - smoothing
    else:
        dS[..., rows, y] -= 1
    dS /= N
    return loss, dS


def dropout_mask(shape, p: float, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """An inverted-dropout mask: each entry ``1 / (1 - p)`` with probability ``1 - p``, else 0."""
    keep = rng.random(shape, dtype=np.float32 if np.dtype(dtype) == np.float32 else np.float64) >= p
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype)


def dropout_forward(H: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inverted dropout with a given mask (from :func:`dropout_mask`): ``H * mask``. Training
    only; the expected output equals ``H``, so evaluation uses ``H`` unchanged."""
    return H * mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient through :func:`dropout_forward`: ``dout * mask``."""
    return dout * mask
