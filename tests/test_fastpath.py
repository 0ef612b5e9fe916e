"""The fast paths of the hot loop equal the reference: the layers' pure functions.

network.forward/backward run ReLU in place (:func:`klayer.layers.relu_forward_inplace`,
:func:`klayer.layers.relu_backward_inplace`); here a reference built from the pure functions
alone, as the network computed it before, must give the same bits (float64 and float32, with
and without batch norm and dropout, one network and a stack). Network.evaluate folds batch norm
into the weights (:func:`klayer.network.fold_batchnorm`): its scores and loss equal the
reference evaluation up to float rounding, its accuracy exactly.
"""

import functools

import numpy as np
import pytest

from klayer import layers
from klayer.network import (
    Network,
    NetworkConfig,
    backward,
    dropout_masks,
    fold_batchnorm,
    forward,
    init_params,
    stack_networks,
)


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


def _trained_like(rng, config, K=None):
    """A network (or stack) with non-trivial gamma, beta and running statistics."""
    nets = []
    for s in range(K or 1):
        net = Network.init(config, np.random.default_rng(s))
        for n, p in net.params.items():
            if n.startswith(("gamma", "beta", "b")):
                p[...] = rng.uniform(0.5, 1.5, p.shape) if n.startswith("gamma") else rng.normal(0, 0.3, p.shape)
        for n, v in net.bn_state.items():
            v[...] = rng.uniform(0.5, 3.0, v.shape) if n.startswith("var") else rng.normal(0, 1.0, v.shape)
        nets.append(net)
    return nets[0] if K is None else stack_networks(nets)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("K", [None, 3])
def test_evaluation_with_folded_batchnorm_equals_the_reference(rng, dtype, batch_norm, K):
    """Network.evaluate folds batch norm into the weights and works in chunks: its scores are
    forward(train=False)'s up to float rounding, its loss too, its accuracy the same."""
    config = NetworkConfig(30, (16, 12), 7, batch_norm, dtype=dtype)
    net = _trained_like(rng, config, K)
    X = rng.standard_normal((1234, 30)).astype(dtype)
    y = rng.integers(0, 7, 1234)
    ref_scores = forward(net.params, X, config, train=False, bn_state=net.bn_state)[0]
    params, cfg = fold_batchnorm(net.params, net.bn_state, config)
    assert not cfg.batch_norm and set(params) == {f"{p}{l}" for p in "Wb" for l in (1, 2, 3)}
    assert all(p.dtype == np.dtype(dtype) for p in params.values())
    scores = forward(params, X, cfg, train=False)[0]
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(scores, ref_scores, **tol)
    logP = layers.log_softmax(ref_scores.astype(np.float64))
    ref_loss = -logP[..., np.arange(len(y)), y].mean(axis=-1)
    ref_acc = (ref_scores.argmax(axis=-1) == y).mean(axis=-1)
    for chunk in (500, 100, 5000):
        got = net.evaluate(X, y, chunk=chunk)
        np.testing.assert_allclose(got["loss"], ref_loss, **tol)
        np.testing.assert_array_equal(got["accuracy"], ref_acc)


def test_folding_leaves_a_network_without_batchnorm_alone(rng):
    config = NetworkConfig(10, (8,), 3, False)
    params = init_params(config, rng)
    assert fold_batchnorm(params, {}, config) == (params, config)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("K", [None, 2])
def test_evaluation_with_folded_standardization_equals_standardizing_each_chunk(rng, dtype, K):
    """Network.evaluate(standardize=(mean, inv_std)) on raw rows folds the standardization into
    the first layer (fold_standardization): the loss of standardized features up to rounding,
    the same accuracy; the folded first layer maps raw rows to the same scores."""
    from klayer.network import fold_standardization

    config = NetworkConfig(30, (16, 12), 7, True, dtype=dtype)
    net = _trained_like(rng, config, K)
    raw = rng.integers(0, 256, (1500, 30)).astype(np.uint8)
    y = rng.integers(0, 7, 1500)
    mean, inv_std = raw.mean(axis=0), 1.0 / (raw.std(axis=0) + 3.0)
    feats = ((raw - mean) * inv_std).astype(dtype)
    ref = net.evaluate(feats, y, lam=0.01)
    got = net.evaluate(raw, y, lam=0.01, chunk=400, standardize=(mean, inv_std))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    for key in ("loss", "cost"):
        np.testing.assert_allclose(got[key], ref[key], rtol=rtol)
    np.testing.assert_array_equal(got["accuracy"], ref["accuracy"])
    folded = fold_standardization(net.params, mean, inv_std)
    assert folded["W1"].dtype == np.dtype(dtype) and folded["W2"] is net.params["W2"]
    s_raw = forward(folded, raw.astype(dtype), config, train=False, bn_state=net.bn_state)[0]
    s_ref = forward(net.params, feats, config, train=False, bn_state=net.bn_state)[0]
    np.testing.assert_allclose(s_raw, s_ref, rtol=10 * rtol, atol=10 * rtol)


# -- the evaluation pass on several threads ----------------------------------------------------


def _meeting(threads):
    """A per-thread wrapper factory whose functions wait at their first call until ``threads``
    threads have called one: an evaluation that does not use them all fails (barrier timeout)."""
    import threading

    barrier = threading.Barrier(threads, timeout=10)

    def wrap(fn):
        first = [True]

        def call(*args):
            if first[0]:
                first[0] = False
                barrier.wait()
            return fn(*args)

        return call

    return wrap


@pytest.mark.parametrize("path", ["features", "standardize", "prep", "compiled"])
@pytest.mark.parametrize("K", [None, 3])
def test_evaluation_on_threads_gives_the_same_bits(rng, path, K):
    """Network.evaluate(threads=T) shares the chunks out among T threads (each really computes:
    their functions meet at a barrier) and returns the bits of the one-thread pass."""
    config = NetworkConfig(30, (16, 12), 7, True, dtype="float32")
    net = _trained_like(rng, config, 1 if path == "compiled" and K is None else K)  # compiled: stacks
    raw = rng.integers(0, 256, (2345, 30)).astype(np.uint8)
    y = rng.integers(0, 7, 2345)
    mean, inv_std = raw.mean(axis=0), 1.0 / (raw.std(axis=0) + 3.0)
    feats = ((raw - mean) * inv_std).astype(np.float32)

    def args(threads):
        wrap = _meeting(threads) if threads > 1 else (lambda f: f)
        if path == "features":  # no per-thread function to meet at: the same bits suffice
            return feats, {}
        if path == "standardize":
            return raw, {"standardize": (mean, inv_std)}
        if path == "prep":
            bufs = [np.empty((100, 30), np.float32) for _ in range(threads)]

            def prep(buf):
                return lambda a: np.multiply(np.subtract(a, mean, dtype=np.float32), inv_std, out=buf[: len(a)])

            return raw, {"prep": [wrap(prep(b)) for b in bufs]}
        step = pytest.importorskip("klayer.kernels.step")
        fns = [wrap(functools.partial(step.eval_chunk, work=step.Workspace())) for _ in range(threads)]
        return feats, {"chunk_fn": fns}

    X1, kw1 = args(1)
    one = net.evaluate(X1, y, lam=0.01, chunk=100, **kw1)
    for threads in (2, 3):
        Xt, kwt = args(threads)
        many = net.evaluate(Xt, y, lam=0.01, chunk=100, threads=threads, **kwt)
        for key in ("cost", "loss", "accuracy"):
            assert same_bits(np.asarray(many[key]), np.asarray(one[key])), (threads, key)


def test_evaluation_threads_add_the_chunks_in_chunk_order(rng):
    """The chunks' sums are added in chunk order whatever order the threads finish them in (the
    first thread is slow here): float addition is not associative, and the stand-in sums
    1, 1e16, 1, -1e16 give 0 in that order and 2 in others."""
    import time

    config = NetworkConfig(4, (), 3, False)
    net = Network.init(config, rng)
    values = [1.0, 1e16, 1.0, -1e16]
    X = np.zeros((40, 4))
    y = np.repeat(np.arange(4), 10)  # chunk i holds label i

    def fn(slow):
        def chunk_fn(params, Xc, yc, cfg):
            if slow:
                time.sleep(0.2)
            return values[int(yc[0])], 0

        return chunk_fn

    got = net.evaluate(X, y, chunk=10, chunk_fn=[fn(True), fn(False)], threads=2)
    assert got["loss"] == 0.0 / 40
    assert net.evaluate(X, y, chunk=10, chunk_fn=fn(False))["loss"] == 0.0


def test_evaluation_threads_have_one_blas_thread_and_the_callers_error_settings(rng):
    from threadpoolctl import threadpool_info, threadpool_limits

    config = NetworkConfig(6, (5,), 3, False)
    net = Network.init(config, rng)
    seen = []

    def prep(a):
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        seen.append((max(blas), np.geterr()["over"]))
        return a

    X, y = rng.standard_normal((50, 6)), rng.integers(0, 3, 50)
    with threadpool_limits(2, user_api="blas"), np.errstate(over="ignore"):
        net.evaluate(X, y, chunk=10, prep=[prep, prep], threads=2)
        after = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    assert len(seen) == 5 and set(seen) == {(1, "ignore")}
    assert after == 2  # the caller's limit is back


def test_an_error_in_an_evaluation_thread_reaches_the_caller(rng):
    config = NetworkConfig(6, (5,), 3, False)
    net = Network.init(config, rng)
    calls = []

    def bad(params, X, y, cfg):
        calls.append(1)
        raise FloatingPointError("chunk went wrong")

    X, y = rng.standard_normal((500, 6)), rng.integers(0, 3, 500)
    with pytest.raises(FloatingPointError, match="chunk went wrong"):
        net.evaluate(X, y, chunk=10, chunk_fn=[bad, bad], threads=2)
    assert len(calls) <= 2  # the other thread stops at its next chunk
