"""The compiled loops (numba, optional): each fuses the elementwise passes numpy makes one call
at a time. Arrays are stacks ``(K, N, m)`` as in :mod:`klayer.layers`; batch sums are taken in
float64. Importing this module needs numba; :mod:`klayer.kernels` decides whether to.

Compiled code is cached beside this file (``cache=True``), so only the first use compiles.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "gather_standardize",
    "bn_relu_forward",
    "relu_forward",
    "relu_bias_backward",
    "bn_relu_backward",
    "softmax_ce",
    "softmax_loss_correct",
    "sgd_plain",
    "sgd_momentum",
]

_jit = njit(cache=True, nogil=True, fastmath=False, error_model="numpy")


@_jit
def gather_standardize(X, idx, m, inv, out):
    """``out[i] = (float(X[idx[i]]) - m) * inv``: the same operations, in ``out``'s precision, as
    a gather, a cast, a subtraction and a multiplication, hence the same bits (a raw value is
    exact in float32, and float32 - float64 is float64), in one pass."""
    n, d = out.shape
    for i in range(n):
        row = X[idx[i]]
        o = out[i]
        for j in range(d):
            o[j] = (np.float32(row[j]) - m[j]) * inv[j]


@_jit
def bn_relu_forward(S, b, gamma, beta, eps, S_hat, H, mu, var, inv_std):
    """Bias, batch normalization with batch statistics, then ReLU, for products ``S: (K, N, m)``
    (any layout) and ``b, gamma, beta: (K, m)``.

    Writes ``S_hat`` (normalized ``S + b``), ``H = max(gamma * S_hat + beta, 0)``, and the
    ``(K, m)`` statistics ``mu``, ``var`` (biased) and ``inv_std = 1 / sqrt(var + eps)``."""
    K, N, m = S.shape
    acc = np.empty(m, np.float64)
    for k in range(K):
        acc[:] = 0.0
        for i in range(N):
            for j in range(m):
                s = S[k, i, j] + b[k, j]  # the bits of the reference's S += b
                S_hat[k, i, j] = s
                acc[j] += s
        for j in range(m):
            mu[k, j] = acc[j] / N
        acc[:] = 0.0
        for i in range(N):
            for j in range(m):
                c = S_hat[k, i, j] - mu[k, j]
                S_hat[k, i, j] = c
                acc[j] += np.float64(c) * c
        for j in range(m):
            v = acc[j] / N
            var[k, j] = v
            inv_std[k, j] = 1.0 / np.sqrt(v + eps)
        for i in range(N):
            for j in range(m):
                s = S_hat[k, i, j] * inv_std[k, j]
                S_hat[k, i, j] = s
                h = gamma[k, j] * s + beta[k, j]
                H[k, i, j] = 0 if h <= 0 else h  # NaN stays NaN, as np.maximum keeps it


@_jit
def relu_forward(S, b, H):
    """``H = max(S + b, 0)`` for products ``S: (K, N, m)`` (any layout), ``b: (K, m)``."""
    K, N, m = S.shape
    for k in range(K):
        for i in range(N):
            for j in range(m):
                h = S[k, i, j] + b[k, j]
                H[k, i, j] = 0 if h <= 0 else h


@_jit
def relu_bias_backward(dH, H, dS, db):
    """``dS = dH * (H > 0)`` and the bias gradient ``db = sum_i dS`` (``(K, m)``)."""
    K, N, m = dH.shape
    acc = np.empty(m, np.float64)
    for k in range(K):
        acc[:] = 0.0
        for i in range(N):
            for j in range(m):
                # times the 0/1 pattern, as the reference: a NaN or inf gradient is not dropped
                g = dH[k, i, j] * (1 if H[k, i, j] > 0 else 0)
                dS[k, i, j] = g
                acc[j] += g
        for j in range(m):
            db[k, j] = acc[j]


@_jit
def bn_relu_backward(dH, H, S_hat, inv_std, gamma, dS, dgamma, dbeta, db):
    """Backward through ReLU and batch normalization (:func:`klayer.layers.batchnorm_backward`):
    with ``G = dH * (H > 0)``, ``dbeta = sum G``, ``dgamma = sum G * S_hat`` and
    ``dS = inv_std * (gamma G - gamma dbeta / N - S_hat gamma dgamma / N)``; also the
    gradient ``db = sum_i dS`` of the bias in front (zero up to rounding)."""
    K, N, m = dH.shape
    a_b = np.empty(m, np.float64)
    a_g = np.empty(m, np.float64)
    c1 = np.empty(m, np.float64)
    c2 = np.empty(m, np.float64)
    for k in range(K):
        a_b[:] = 0.0
        a_g[:] = 0.0
        for i in range(N):
            for j in range(m):
                g = dH[k, i, j] * (1 if H[k, i, j] > 0 else 0)
                dS[k, i, j] = g
                a_b[j] += g
                a_g[j] += np.float64(g) * S_hat[k, i, j]
        for j in range(m):
            dbeta[k, j] = a_b[j]
            dgamma[k, j] = a_g[j]
            c1[j] = gamma[k, j] * a_b[j] / N
            c2[j] = gamma[k, j] * a_g[j] / N
        a_b[:] = 0.0
        for i in range(N):
            for j in range(m):
                v = inv_std[k, j] * (gamma[k, j] * dS[k, i, j] - c1[j] - S_hat[k, i, j] * c2[j])
                dS[k, i, j] = v
                a_b[j] += v
        for j in range(m):
            db[k, j] = a_b[j]


@_jit
def softmax_ce(S, b, y, scale, smoothing, dS, loss, db):
    """Mean cross-entropy of scores ``S + b`` (products ``S: (K, N, C)``, any layout, ``b:
    (K, C)``) against labels ``y`` (targets smoothed by ``smoothing``), its gradient
    ``dS = scale[k] * (P - T) / N`` and that gradient's batch sum ``db: (K, C)``; ``loss: (K,)``
    float64. Row by row in float64."""
    K, N, C = S.shape
    row = np.empty(C, np.float64)
    p = np.empty(C, np.float64)
    acc = np.empty(C, np.float64)
    off = smoothing / C
    on = 1.0 - smoothing
    for k in range(K):
        total = 0.0
        acc[:] = 0.0
        f = scale[k] / N
        for i in range(N):
            mx = -np.inf
            for c in range(C):
                row[c] = S[k, i, c] + b[k, c]  # the scores' bits, held exactly in float64
                if row[c] > mx:
                    mx = row[c]
            z = 0.0
            for c in range(C):
                p[c] = np.exp(row[c] - mx)
                z += p[c]
            logz = np.log(z)
            yi = y[i]
            # -sum_c T_c log p_c with T = on * onehot + off
            ce = on * (logz - (row[yi] - mx))
            if smoothing:
                s = 0.0
                for c in range(C):
                    s += logz - (row[c] - mx)
                ce += off * s
            total += ce
            for c in range(C):
                g = p[c] / z - off
                if c == yi:
                    g -= on
                g *= f
                dS[k, i, c] = g
                acc[c] += dS[k, i, c]
        loss[k] = total / N
        for c in range(C):
            db[k, c] = acc[c]


@_jit
def softmax_loss_correct(S, b, y, loss_sum, correct):
    """For scores ``S + b`` (products ``S: (K, n, C)``, any layout, ``b: (K, C)``) and labels
    ``y``: add each network's summed cross-entropy (float64) to ``loss_sum: (K,)`` and its
    number of rows whose first largest score (a NaN counts as largest, as ``argmax``) is the
    label to ``correct: (K,)``."""
    K, n, C = S.shape
    row = np.empty(C, np.float64)
    for k in range(K):
        total = 0.0
        hits = 0
        for i in range(n):
            mx = -np.inf
            top = 0
            nan = False
            for c in range(C):
                v = S[k, i, c] + b[k, c]  # the scores' bits
                row[c] = v
                if not nan:
                    if np.isnan(v):
                        nan = True
                        top = c
                    elif v > mx:
                        mx = v
                        top = c
            z = 0.0
            for c in range(C):
                z += np.exp(row[c] - mx)
            total += np.log(z) - (row[y[i]] - mx)
            hits += top == y[i]
        loss_sum[k] += total
        correct[k] += hits


@_jit
def sgd_plain(ps, gs, decays):
    """For each stack ``p, g: (K, n)`` of the tuples ``ps, gs``: ``p <- p * decay[k] - g``, with
    ``decay = decays[i]`` (``(K,)``; all ones for the vectors): the numbers of ``p *= decay``
    then ``p -= g`` (of ``p -= g`` alone for the vectors), in one pass and one call."""
    for t in range(len(ps)):
        p, g, c = ps[t], gs[t], decays[t]
        K, n = p.shape
        for k in range(K):
            ck = c[k]
            if ck == 1:
                for j in range(n):
                    p[k, j] = p[k, j] - g[k, j]
            else:
                for j in range(n):
                    p[k, j] = p[k, j] * ck - g[k, j]


@_jit
def sgd_momentum(ps, gs, vs, cs, momentum, nesterov):
    """Momentum SGD from gradients already times ``eta`` (``g``), for each stack ``p, g, v:
    (K, n)`` of the tuples, the penalty ``cs[t][k] p`` (``c = 2 eta lam``; 0 for vectors) added
    first: the same operations, in the same order, as :func:`klayer.training.optim.sgd_update`,
    in one pass and one call."""
    for t in range(len(ps)):
        p, g, v, c = ps[t], gs[t], vs[t], cs[t]
        K, n = p.shape
        for k in range(K):
            ck = c[k]
            for j in range(n):
                gj = g[k, j] + p[k, j] * ck if ck != 0 else g[k, j]
                vj = v[k, j] * momentum - gj
                v[k, j] = vj
                if nesterov:
                    p[k, j] = (p[k, j] + vj * momentum) - gj
                else:
                    p[k, j] = p[k, j] + vj
