"""The fast paths of the hot loop equal the reference: the layers' pure functions.

network.forward/backward run ReLU in place (:func:`klayer.layers.relu_forward_inplace`,
:func:`klayer.layers.relu_backward_inplace`); here a reference built from the pure functions
alone, as the network computed it before, must give the same bits (float64 and float32, with
and without batch norm and dropout, one network and a stack).
"""

import numpy as np
import pytest

from klayer import layers
from klayer.network import Network, NetworkConfig, backward, dropout_masks, forward, init_params, stack_networks


def same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def reference_forward_backward(params, X, y, config, masks):
    """The network's forward and backward from the pure layer functions only."""
    k = config.n_layers
    H = layers.dropout_forward(X, masks["H0"]) if "H0" in masks else X
    caches = []
    for l in range(1, k):
        S, lin = layers.linear_forward(H, params[f"W{l}"], params[f"b{l}"])
        bn = None
        if config.batch_norm:
            S, bn, _ = layers.batchnorm_train_forward(S, params[f"gamma{l}"], params[f"beta{l}"], config.eps)
        H, relu = layers.relu_forward(S)
        mask = masks.get(f"H{l}")
        if mask is not None:
            H = layers.dropout_forward(H, mask)
        caches.append((lin, bn, relu, mask))
    scores, lin = layers.linear_forward(H, params[f"W{k}"], params[f"b{k}"])
    loss, dscores = layers.softmax_cross_entropy(scores, y)
    grads = {}
    dH, grads[f"W{k}"], grads[f"b{k}"] = layers.linear_backward(dscores, lin)
    for l in range(k - 1, 0, -1):
        lin, bn, Hl, mask = caches[l - 1]
        if mask is not None:
            dH = layers.dropout_backward(dH, mask)
        dS = layers.relu_backward(dH, Hl)
        if config.batch_norm:
            dS, grads[f"gamma{l}"], grads[f"beta{l}"] = layers.batchnorm_backward(dS, bn)
        dH, grads[f"W{l}"], grads[f"b{l}"] = layers.linear_backward(dS, lin, need_dX=l > 1)
    return scores, [c[2] for c in caches], loss, grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("K", [None, 3])
def test_network_forward_backward_is_bitwise_the_pure_layers(rng, dtype, batch_norm, dropout, K):
    config = NetworkConfig(20, (16, 12), 7, batch_norm, dtype=dtype, dropout=dropout)
    if K is None:
        params = init_params(config, rng)
    else:
        params = stack_networks([Network.init(config, np.random.default_rng(s)) for s in range(K)]).params
    X = rng.standard_normal((30, 20)).astype(dtype)
    y = rng.integers(0, 7, 30)
    masks = dropout_masks(config, 30, np.random.default_rng(1), K) if dropout else {}
    before = {n: p.copy() for n, p in params.items()}
    scores, caches, _ = forward(params, X, config, train=True, masks=masks)
    loss, dscores = layers.softmax_cross_entropy(scores, y)
    relu_H = [c[2] for c in caches[:-1]]
    grads = backward(dscores, caches, config)
    ref_scores, ref_H, ref_loss, ref_grads = reference_forward_backward(params, X, y, config, masks)
    assert same_bits(scores, ref_scores) and same_bits(loss, ref_loss)
    assert all(same_bits(a, b) for a, b in zip(relu_H, ref_H, strict=True))  # cache[2], as gradcheck reads it
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        assert same_bits(grads[n], ref_grads[n]), n
    assert all(same_bits(params[n], before[n]) for n in params)  # nothing of the caller's is overwritten


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_backward_inplace_gives_positive_zeros(rng, dtype):
    dout = rng.standard_normal((50, 40)).astype(dtype)
    H = np.maximum(rng.standard_normal((50, 40)).astype(dtype), 0)
    ref = layers.relu_backward(dout, H)
    got = layers.relu_backward_inplace(dout.copy(), H)
    assert same_bits(got, ref) and not np.signbit(got[H == 0]).any()
    S = rng.standard_normal((5, 4)).astype(dtype)
    assert same_bits(layers.relu_forward_inplace(S.copy())[0], layers.relu_forward(S)[0])
