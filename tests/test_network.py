"""Whole-network gradients, the model axis, and the reports' properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayer.gradcheck import expected_zero
from klayer.network import (
    Network,
    NetworkConfig,
    backward,
    forward,
    init_params,
    loss_and_grads,
    stack_networks,
)


def data(rng, N, d=10, C=10):
    return rng.standard_normal((N, d)), rng.integers(0, C, N)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_backward_with_random_upstream_gradient(rng, batch_norm):
    """backward(G) is d sum(G * scores) / d params for a random G (not the softmax's gradient)."""
    config = NetworkConfig(8, (12, 9), 5, batch_norm)
    params = init_params(config, rng)
    X, _ = data(rng, 7, d=8)
    G = rng.standard_normal((7, 5))
    _, caches, _ = forward(params, X, config, train=True)
    grads = backward(G, caches, config)
    ld = {k: v.astype(np.longdouble) for k, v in params.items()}
    Xl = X.astype(np.longdouble)
    h = 1e-6
    for name, p in ld.items():
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, min(flat.size, 15), replace=False):
            old = flat[i]
            flat[i] = old + h
            fp = np.sum(forward(ld, Xl, config)[0] * G)
            flat[i] = old - h
            fm = np.sum(forward(ld, Xl, config)[0] * G)
            flat[i] = old
            gn = float((fp - fm) / (2 * h))
            ga = grads[name].reshape(-1)[i]
            if expected_zero(name, config):  # bias in front of batch norm: exactly 0
                assert ga == pytest.approx(0, abs=1e-15) and abs(gn) < 1e-10
            else:
                assert abs(ga - gn) <= 1e-7 * max(abs(ga) + abs(gn), 1e-6), (name, i, ga, gn)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_stack_equals_separate_networks(rng, batch_norm):
    """K stacked networks: same scores, costs and gradients as K separate ones (shared batch)."""
    config = NetworkConfig(10, (16, 12), 10, batch_norm)
    nets = [Network.init(config, np.random.default_rng(s)) for s in range(4)]
    stack = stack_networks(nets)
    lam = np.array([0.0, 0.01, 0.1, 1.0])
    X, y = data(rng, 20)
    cost, loss, grads, stats = loss_and_grads(stack.params, X, y, config, lam)
    assert cost.shape == (4,)
    for k, net in enumerate(nets):
        c, l, g, s = loss_and_grads(net.params, X, y, config, lam[k])
        np.testing.assert_allclose(cost[k], c, rtol=1e-12)
        np.testing.assert_allclose(loss[k], l, rtol=1e-12)
        for name in g:
            np.testing.assert_allclose(grads[name][k], g[name], rtol=1e-10, atol=1e-14)
        for name in s:
            np.testing.assert_allclose(stats[name][k], s[name], rtol=1e-12)
    # evaluation mode too
    stack.bn_state = {k: v for k, v in stats.items()}
    for k, net in enumerate(nets):
        net.bn_state = {n: v[k] for n, v in stats.items()}
        np.testing.assert_allclose(stack.forward(X)[k], net.forward(X), rtol=1e-12)


def test_scaling_W_before_batchnorm_changes_nothing_in_training(rng):
    config = NetworkConfig(10, (16, 12), 10, True)
    params = init_params(config, rng)
    X, _ = data(rng, 30)
    s0 = forward(params, X, config, train=True)[0]
    params["W1"] = params["W1"] * 7.5
    params["W2"] = params["W2"] * 0.2
    s1 = forward(params, X, config, train=True)[0]
    np.testing.assert_allclose(s0, s1, rtol=1e-6, atol=1e-7)  # exact but for eps


def test_eval_mode_uses_running_statistics(rng):
    config = NetworkConfig(10, (16,), 10, True)
    net = Network.init(config, rng)
    X, _ = data(rng, 30)
    _, _, stats = forward(net.params, X, config, train=True)
    net.bn_state = {k: v.copy() for k, v in stats.items()}
    np.testing.assert_allclose(net.forward(X), forward(net.params, X, config, train=True)[0], rtol=1e-10)
    net.bn_state["mu1"] += 1.0
    assert not np.allclose(net.forward(X), forward(net.params, X, config, train=True)[0])


def test_initial_loss_near_ln10(rng):
    """Scores near 0 give loss ln(10); He keeps score variance near 1-2, adding about half a nat."""
    X, y = data(rng, 500, d=3072)
    for bn in (False, True):
        he = Network.init(NetworkConfig(3072, (50, 50), 10, bn), rng)
        _, loss, _, _ = loss_and_grads(he.params, X, y, he.config, 0.0)
        assert abs(loss - np.log(10)) < 0.6, loss
        small = Network.init(NetworkConfig(3072, (50, 50), 10, bn, init="normal", sigma=1e-3), rng)
        _, loss, _, _ = loss_and_grads(small.params, X, y, small.config, 0.0)
        assert abs(loss - np.log(10)) < 0.01, loss


def test_fixed_sigma_initialization(rng):
    config = NetworkConfig(3072, (50, 50), 10, False, init="normal", sigma=1e-3)
    p = init_params(config, rng)
    for l in (1, 2, 3):
        assert abs(p[f"W{l}"].std() / 1e-3 - 1) < 0.1
        assert not p[f"b{l}"].any()
    he = init_params(NetworkConfig(3072, (50,), 10), rng)
    assert abs(he["W1"].std() / np.sqrt(2 / 3072) - 1) < 0.05


def test_float32_network_stays_float32(rng):
    net = Network.init(NetworkConfig(10, (8,), 3, True, dtype="float32"), rng)
    X = rng.standard_normal((5, 10)).astype(np.float32)
    cost, loss, grads, stats = net.loss_and_grads(X, np.array([0, 1, 2, 0, 1]), 0.1)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert net.forward(X).dtype == np.float32


def test_worked_example_by_hand():
    """One layer, two inputs, two classes, hand-derived numbers (scikit-learn's test_fit style).

    W = [[1, 0], [0, 1]], b = [0, 0], x = [ln 3, 0], y = 0, lam = 0.5:
    scores s = W x = [ln 3, 0]; p = [3/4, 1/4]; loss = -ln(3/4) = 0.2876820724517809;
    ||W||^2 = 2 so cost = loss + 0.5 * 2 = 1.2876820724517809;
    dS = p - onehot(0) = [-1/4, 1/4]; dW = dS^T x + 2 lam W = [[-ln3/4 + 1, 0], [ln3/4, 1]];
    db = [-1/4, 1/4].
    """
    config = NetworkConfig(2, (), 2, False)
    params = {"W1": np.eye(2), "b1": np.zeros(2)}
    X, y = np.array([[np.log(3), 0.0]]), np.array([0])
    cost, loss, grads, _ = loss_and_grads(params, X, y, config, 0.5)
    assert loss == pytest.approx(0.2876820724517809, abs=1e-15)
    assert cost == pytest.approx(1.2876820724517809, abs=1e-15)
    l3 = np.log(3) / 4
    np.testing.assert_allclose(grads["W1"], [[1 - l3, 0], [l3, 1]], atol=1e-15)
    np.testing.assert_allclose(grads["b1"], [-0.25, 0.25], atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(2, 30), st.integers(0, 2**31))
def test_stack_property(K, N, seed):
    rng = np.random.default_rng(seed)
    config = NetworkConfig(5, (7, 6), 3, True)
    nets = [Network.init(config, rng) for _ in range(K)]
    stack = stack_networks(nets)
    X, y = data(rng, N, d=5, C=3)
    cost, _, grads, _ = loss_and_grads(stack.params, X, y, config, 0.01)
    for k, net in enumerate(nets):
        c, _, g, _ = loss_and_grads(net.params, X, y, config, 0.01)
        np.testing.assert_allclose(cost[k], c, rtol=1e-10)
        np.testing.assert_allclose(grads["W1"][k], g["W1"], rtol=1e-8, atol=1e-13)


def test_torch_autograd_agrees():
    """An independent second opinion (skipped when PyTorch is not installed)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    config = NetworkConfig(12, (10, 8), 5, True, eps=1e-10)
    params = init_params(config, rng)
    params["gamma1"] = rng.uniform(0.5, 1.5, 10)
    params["beta2"] = rng.standard_normal(8)
    X, y = data(rng, 9, d=12, C=5)
    lam = 0.03
    cost, loss, grads, _ = loss_and_grads(params, X, y, config, lam)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    H = torch.tensor(X)
    for l in (1, 2):
        S = H @ tp[f"W{l}"].T + tp[f"b{l}"]
        mu, var = S.mean(0), S.var(0, unbiased=False)
        S = tp[f"gamma{l}"] * (S - mu) / torch.sqrt(var + 1e-10) + tp[f"beta{l}"]
        H = torch.relu(S)
    scores = H @ tp["W3"].T + tp["b3"]
    tloss = torch.nn.functional.cross_entropy(scores, torch.tensor(y))
    tcost = tloss + lam * sum((tp[f"W{l}"] ** 2).sum() for l in (1, 2, 3))
    tcost.backward()
    assert float(tcost.detach()) == pytest.approx(float(cost), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-9, atol=1e-13)
