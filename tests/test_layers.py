"""Every backward against centred differences in float64, with random upstream gradients."""

import numpy as np
import pytest

from klayer import layers
from klayer.errors import KlayerError


def numeric(fn, args, which, dout, h=1e-6):
    """d/d args[which] of sum(fn(*args) * dout) by centred differences over all entries,
    evaluated in extended precision (numpy.longdouble) so that round-off stays far below 1e-7."""
    args = [np.asarray(a).astype(np.longdouble) if isinstance(a, np.ndarray) else a for a in args]
    dout = np.asarray(dout, np.longdouble)
    x = args[which]
    g = np.zeros(x.shape)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = np.sum(fn(*args) * dout)
        flat[i] = old - h
        fm = np.sum(fn(*args) * dout)
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def assert_close(a, b, tol=1e-7):
    err = np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))
    assert err.max() < tol, err.max()


@pytest.mark.parametrize("lead", [(), (3,)])
def test_linear_backward(rng, lead):
    X = rng.standard_normal((*lead, 7, 5))
    W = rng.standard_normal((*lead, 4, 5))
    b = rng.standard_normal((*lead, 4))
    dout = rng.standard_normal((*lead, 7, 4))
    S, cache = layers.linear_forward(X, W, b)
    np.testing.assert_allclose(S, X @ np.swapaxes(W, -1, -2) + b[..., None, :])
    dX, dW, db = layers.linear_backward(dout, cache)
    f = lambda *a: layers.linear_forward(*a)[0]  # noqa: E731
    assert_close(dX, numeric(f, [X, W, b], 0, dout))
    assert_close(dW, numeric(f, [X, W, b], 1, dout))
    assert_close(db, numeric(f, [X, W, b], 2, dout))


def test_linear_shared_input_is_one_product_per_model(rng):
    """A shared batch X (N, d) with K weight matrices equals K separate products."""
    X = rng.standard_normal((6, 5))
    W = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 6, 4))
    S, cache = layers.linear_forward(X, W, b)
    dX, dW, db = layers.linear_backward(dout, cache)
    for k in range(3):
        Sk, ck = layers.linear_forward(X, W[k], b[k])
        np.testing.assert_allclose(S[k], Sk, rtol=1e-12)
        dXk, dWk, dbk = layers.linear_backward(dout[k], ck)
        np.testing.assert_allclose(dW[k], dWk, rtol=1e-12)
        np.testing.assert_allclose(db[k], dbk, rtol=1e-12)
        np.testing.assert_allclose(dX[k], dXk, rtol=1e-12)


@pytest.mark.parametrize("lead", [(), (2,)])
def test_batchnorm_backward(rng, lead):
    S = rng.standard_normal((*lead, 8, 5)) * 3 + 1
    gamma = rng.standard_normal((*lead, 5))
    beta = rng.standard_normal((*lead, 5))
    dout = rng.standard_normal((*lead, 8, 5))
    out, cache, _ = layers.batchnorm_train_forward(S, gamma, beta, 1e-10)
    dS, dgamma, dbeta = layers.batchnorm_backward(dout.copy(), cache)
    f = lambda *a: layers.batchnorm_train_forward(*a)[0]  # noqa: E731
    args = [S, gamma, beta, 1e-10]
    assert_close(dS, numeric(f, args, 0, dout))
    assert_close(dgamma, numeric(f, args, 1, dout))
    assert_close(dbeta, numeric(f, args, 2, dout))
    # the input gradient sums to zero over the batch: a bias in front of batch norm gets none
    np.testing.assert_allclose(dS.sum(axis=-2), 0, atol=1e-12)


def test_batchnorm_normalizes_per_feature(rng):
    S = rng.standard_normal((50, 6)) * rng.uniform(0.1, 10, 6) + rng.uniform(-5, 5, 6)
    out, _, (mu, var) = layers.batchnorm_train_forward(S, np.ones(6), np.zeros(6), 1e-12)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-9)
    np.testing.assert_allclose(mu, S.mean(axis=0))
    np.testing.assert_allclose(var, S.var(axis=0))  # biased (1/N) variance


def test_batchnorm_eval_uses_given_statistics(rng):
    S = rng.standard_normal((4, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mu, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    out = layers.batchnorm_eval_forward(S, gamma, beta, mu, var, 1e-10)
    np.testing.assert_allclose(out, gamma * (S - mu) / np.sqrt(var + 1e-10) + beta)
    # and not the batch's own statistics
    train_out = layers.batchnorm_train_forward(S, gamma, beta, 1e-10)[0]
    assert not np.allclose(out, train_out)


def test_batchnorm_batch_of_one_is_a_clear_error():
    with pytest.raises(KlayerError, match="at least 2 samples"):
        layers.batchnorm_train_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), 1e-10)


def test_relu_backward(rng):
    S = rng.standard_normal((6, 4))
    S[np.abs(S) < 1e-3] = 0.5  # keep away from the kink
    dout = rng.standard_normal((6, 4))
    H, cache = layers.relu_forward(S)
    f = lambda S: layers.relu_forward(S)[0]  # noqa: E731
    assert_close(layers.relu_backward(dout, cache), numeric(f, [S], 0, dout))


@pytest.mark.parametrize("lead", [(), (3,)])
def test_softmax_cross_entropy(rng, lead):
    S = rng.standard_normal((*lead, 6, 5))
    y = rng.integers(0, 5, 6)
    loss, dS = layers.softmax_cross_entropy(S, y)
    P = np.exp(S) / np.exp(S).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(loss, -np.log(P[..., np.arange(6), y]).mean(axis=-1))
    # loss is the terminal node: a random weighting of the K losses is the upstream gradient
    w = rng.standard_normal(lead) if lead else np.array(1.0)
    g = numeric(lambda S: layers.softmax_cross_entropy(S, y)[0], [S], 0, w)
    assert_close(dS * (w[..., None, None] if lead else 1), g)


def test_softmax_is_stable_for_huge_scores():
    S = np.array([[1000.0, 0.0, -1000.0], [-1e6, 1e6, 0.0]])
    loss, dS = layers.softmax_cross_entropy(S, np.array([0, 0]))
    assert np.isfinite(loss) and np.isfinite(dS).all()
    np.testing.assert_allclose(loss, (0 + 2e6) / 2)


def test_linear_shared_input_with_two_model_axes(rng):
    """A shared batch X (N, d) with weights (K1, K2, m, d): every network gets X @ W.T + b."""
    X = rng.standard_normal((6, 5))
    W = rng.standard_normal((2, 3, 4, 5))
    b = rng.standard_normal((2, 3, 4))
    dout = rng.standard_normal((2, 3, 6, 4))
    S, cache = layers.linear_forward(X, W, b)
    dX, dW, db = layers.linear_backward(dout, cache)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(S[i, j], X @ W[i, j].T + b[i, j], rtol=1e-12)
            np.testing.assert_allclose(dW[i, j], dout[i, j].T @ X, rtol=1e-12)
            np.testing.assert_allclose(db[i, j], dout[i, j].sum(axis=0), rtol=1e-12)
            np.testing.assert_allclose(dX[i, j], dout[i, j] @ W[i, j], rtol=1e-12)


@pytest.mark.parametrize("shared", [False, True])
def test_linear_backward_skips_the_input_gradient_on_request(rng, shared):
    X = rng.standard_normal((6, 5) if shared else (3, 6, 5))
    W = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 6, 4))
    _, cache = layers.linear_forward(X, W, b)
    dX, dW, db = layers.linear_backward(dout, cache, need_dX=False)
    assert dX is None
    full = layers.linear_backward(dout, cache)
    np.testing.assert_array_equal(dW, full[1])
    np.testing.assert_array_equal(db, full[2])


def test_batchnorm_batch_of_one_says_why():
    with pytest.raises(KlayerError, match=r"got 1 \(the variance of one sample is zero\)$"):
        layers.batchnorm_train_forward(np.ones((3, 1, 4)), np.ones(4), np.zeros(4), 1e-10)


@pytest.mark.parametrize("lead", [(), (3,)])
def test_softmax_is_the_normalized_exponential(rng, lead):
    S = rng.standard_normal((*lead, 4, 3)) * 3
    E = np.exp(S)
    np.testing.assert_allclose(layers.softmax(S), E / E.sum(axis=-1, keepdims=True), rtol=1e-12)


def test_softmax_is_stable_row_by_row():
    """Rows of very different scales: each row is shifted by its own maximum, so nothing underflows
    to 0/0 and nothing overflows (the exact probabilities are written out)."""
    S = np.array([[[1000.0, 1000.0 + np.log(3), -5000.0], [-2000.0, -2000.0, -2000.0 + np.log(2)]]])
    S = np.concatenate([S, S[:, ::-1]])  # a model axis, (2, 2, 3)
    P = layers.softmax(S)
    expected = np.array([[0.25, 0.75, 0.0], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(P[0], expected, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(P[1], expected[::-1], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("lead", [(), (3,)])
def test_label_smoothing_agrees_with_pytorch(rng, lead):
    """Loss and gradient against torch's cross_entropy(label_smoothing=s), per network of a stack."""
    torch = pytest.importorskip("torch")
    s, N, C = 0.15, 6, 4
    S = rng.standard_normal((*lead, N, C)) * 2
    y = rng.integers(0, C, N)
    loss, dS = layers.softmax_cross_entropy(S, y, s)
    assert np.shape(loss) == lead
    for k in np.ndindex(*lead):
        t = torch.tensor(S[k], requires_grad=True)
        tl = torch.nn.functional.cross_entropy(t, torch.tensor(y), label_smoothing=s)
        tl.backward()
        assert float(loss[k]) == pytest.approx(float(tl.detach()), rel=1e-12)
        np.testing.assert_allclose(dS[k], t.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_inverted_dropout_of_a_uniform_draw(dtype):
    """Keep where u >= p for u uniform on [0, 1) drawn in the mask's precision, scale 1 / (1 - p)."""
    p, shape = 0.3, (2, 50, 40)
    m = layers.dropout_mask(shape, p, np.random.default_rng(3), dtype)
    u = np.random.default_rng(3).random(shape, dtype=dtype)
    assert m.dtype == dtype and m.shape == shape
    np.testing.assert_array_equal(m, np.where(u >= p, dtype(1 / (1 - p)), dtype(0)))
    # the boundary u == p is kept: P(keep) = P(u >= p) = 1 - p exactly on the generator's grid
    p_hit = float(u[0, 0, 0])
    m = layers.dropout_mask(shape, p_hit, np.random.default_rng(3), dtype)
    assert m[0, 0, 0] == dtype(1 / (1 - p_hit))


def test_dropout_forward_and_backward_multiply_by_the_mask(rng):
    H = rng.standard_normal((4, 5))
    dout = rng.standard_normal((4, 5))
    mask = np.where(rng.random((4, 5)) < 0.5, 0.0, 2.0)
    np.testing.assert_array_equal(layers.dropout_forward(H, mask), H * mask)
    np.testing.assert_array_equal(layers.dropout_backward(dout, mask), dout * mask)
