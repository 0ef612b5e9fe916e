"""Whole-network gradients, the model axis, and the reports' properties."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klayer import layers
from klayer.errors import ConfigError
from klayer.gradcheck import expected_zero
from klayer.network import (
    Network,
    NetworkConfig,
    backward,
    data_loss_and_grads,
    dropout_masks,
    forward,
    hidden_activations,
    init_bn_state,
    init_params,
    loss_and_grads,
    stack_networks,
    unstack_network,
)


def data(rng, N, d=10, C=10):
    return rng.standard_normal((N, d)), rng.integers(0, C, N)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_backward_with_random_upstream_gradient(rng, batch_norm, monkeypatch):
    """backward(G) is d sum(G * scores) / d params for a random G (not the softmax's gradient).

    A bias in front of batch norm has a true gradient of exactly 0. Its computed one is the sum over
    the N samples of the batch-norm backward's ``dS_n = inv_std * gamma * (dout_n - dbeta / N -
    S_hat_n dgamma / N)``, each rounded relative to ``M = inv_std |gamma| max_n (|dout_n| + |dbeta| / N
    + |S_hat_n| |dgamma| / N)``: its round-off is at most about ``N (N + 4) u M`` (u = eps / 2, a few
    roundings per term and N - 1 in the sum), and the test allows ``2 N^2 eps M`` (observed: below
    ``N eps M``; a fixed 1e-15 failed for half of all seeds)."""
    config = NetworkConfig(8, (12, 9), 5, batch_norm)
    params = init_params(config, rng)
    X, _ = data(rng, 7, d=8)
    G = rng.standard_normal((7, 5))
    _, caches, _ = forward(params, X, config, train=True)
    seen = []  # the batch-norm backward's inputs, from the last hidden layer to the first
    real = layers.batchnorm_backward

    def recording(dout, cache):
        seen.append((dout.copy(), cache))
        return real(dout, cache)

    monkeypatch.setattr(layers, "batchnorm_backward", recording)
    grads = backward(G, caches, config)
    monkeypatch.undo()
    round_off = {}
    for l, (dout, (S_hat, inv_std, gamma)) in zip(range(len(seen), 0, -1), seen, strict=True):
        dbeta, dgamma = dout.sum(axis=0), (dout * S_hat).sum(axis=0)
        terms = np.abs(dout) + np.abs(dbeta) / 7 + np.abs(S_hat) * np.abs(dgamma) / 7
        round_off[f"b{l}"] = 2 * 7 * 7 * np.finfo(np.float64).eps * inv_std * np.abs(gamma) * terms.max(axis=0)
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
                assert abs(ga) <= round_off[name][i] and abs(gn) < 1e-10, (name, i, ga, round_off[name][i])
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
    """Scores near 0 give loss ln(10). He initialization keeps the scores' variance at 2 for
    standard-normal inputs (each ReLU halves a second moment that the He weights double), and at 1
    with batch norm (unit-variance ReLU inputs); scores of variance v add E[logsumexp(sqrt(v) z)]
    - ln(10) to the loss, for z standard normal over the 10 classes: 0.81 nats for v = 2, 0.43 for
    v = 1. One network's excess is random (50 hidden units give the scores a random scale: 0.3 to
    1.8 nats over 600 networks without batch norm), so the mean over 40 networks is compared: its
    standard deviation is 0.036 (0.012 with batch norm), the tolerances 5.5 (6.5) times that."""
    X, y = data(rng, 500, d=3072)
    z = rng.standard_normal((100_000, 10))
    for bn, var, tol in ((False, 2.0, 0.2), (True, 1.0, 0.08)):
        s = np.sqrt(var) * z
        expected = np.mean(np.log(np.exp(s).sum(axis=1)) - s[:, 0]) - np.log(10)
        excess = []
        for _ in range(40):
            he = Network.init(NetworkConfig(3072, (50, 50), 10, bn), rng)
            excess.append(float(layers.softmax_cross_entropy(forward(he.params, X, he.config)[0], y)[0]) - np.log(10))
        assert np.mean(excess) == pytest.approx(expected, abs=tol), (bn, np.mean(excess), expected)
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


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 0}, "input_size=0, hidden=[4], n_classes=3 (need positive widths and at least 2 classes)"),
        ({"n_classes": 1}, "input_size=5, hidden=[4], n_classes=1 (need"),
        ({"hidden": (4, 0)}, "input_size=5, hidden=[4, 0], n_classes=3 (need"),
        ({"init": "glorot"}, "model.init must be one of he, xavier, normal, got 'glorot'"),
        ({"dtype": "float16"}, "dtype must be one of float32, float64, got 'float16'"),
        ({"sigma": 0.0}, "sigma and eps must be positive, got 0.0, 1e-10"),
        ({"eps": 0.0}, "sigma and eps must be positive, got 0.1, 0.0"),
        ({"eps": float("nan")}, "sigma and eps must be positive"),
        ({"dropout": 1.0}, "dropout rates must be in [0, 1), got 1.0, 0.0"),
        ({"input_dropout": 1.0}, "dropout rates must be in [0, 1), got 0.0, 1.0"),
        ({"dropout": -0.1}, "dropout rates must be in"),
    ],
)
def test_invalid_network_configs_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        NetworkConfig(**{"input_size": 5, "hidden": (4,), "n_classes": 3, **kwargs})


def test_the_smallest_valid_network_config_is_accepted():
    """Every bound is inclusive where the docs say so: width 1, 2 classes, rates just below 1."""
    c = NetworkConfig(1, (1,), 2, sigma=1e-300, eps=1e-300, dropout=0.999, input_dropout=0.999)
    assert c.sizes == [1, 1, 2] and c.n_layers == 2


def test_hidden_widths_become_a_tuple_of_ints():
    c = NetworkConfig(5, [np.int64(4), 3.0], 3)
    assert c.hidden == (4, 3) and all(type(m) is int for m in c.hidden)
    hash(c)  # frozen and hashable: a list would not be


@pytest.mark.parametrize("batch_norm", [False, True])
def test_param_names_are_in_layer_order(batch_norm):
    c = NetworkConfig(5, (4, 3), 2, batch_norm)
    if batch_norm:
        expected = ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    else:
        expected = ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert c.param_names() == expected
    assert NetworkConfig(5, (), 2, batch_norm).param_names() == ["W1", "b1"]
    assert sorted(init_params(c, np.random.default_rng(0))) == sorted(expected)


# -- initialization -------------------------------------------------------------------------------
def test_xavier_initialization_has_variance_one_over_fan_in(rng):
    p = init_params(NetworkConfig(3072, (50,), 10, init="xavier"), rng)
    assert abs(p["W1"].std() / np.sqrt(1 / 3072) - 1) < 0.05
    assert abs(p["W2"].std() / np.sqrt(1 / 50) - 1) < 0.15


def test_float32_networks_have_float32_everything(rng):
    c = NetworkConfig(6, (5, 4), 3, True, dtype="float32", dropout=0.2, input_dropout=0.1)
    p = init_params(c, rng)
    assert {k: v.dtype for k, v in p.items()} == {k: np.dtype(np.float32) for k in c.param_names()}
    assert all(v.dtype == np.float32 for v in init_bn_state(c).values())
    masks = dropout_masks(c, 7, rng)
    assert set(masks) == {"H0", "H1", "H2"} and all(m.dtype == np.float32 for m in masks.values())
    _, _, grads, _ = loss_and_grads(p, rng.standard_normal((7, 6)).astype(np.float32), np.arange(7) % 3, c, 0.1, masks)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_running_statistics_start_at_zero_mean_unit_variance():
    c = NetworkConfig(6, (5, 4), 3, True)
    one, stack = init_bn_state(c), init_bn_state(c, K=3)
    assert sorted(one) == sorted(stack) == ["mu1", "mu2", "var1", "var2"]
    for l, m in ((1, 5), (2, 4)):
        np.testing.assert_array_equal(one[f"mu{l}"], np.zeros(m))
        np.testing.assert_array_equal(one[f"var{l}"], np.ones(m))
        np.testing.assert_array_equal(stack[f"mu{l}"], np.zeros((3, m)))
        np.testing.assert_array_equal(stack[f"var{l}"], np.ones((3, m)))
    assert init_bn_state(NetworkConfig(6, (5,), 3, False), K=2) == {}


# -- the L2 penalty, smoothing and the trainer's scale ------------------------------------------
def test_float32_penalty_gradient_is_float32_arithmetic(rng):
    """A float32 network's gradient is dL/dW + 2 lam W rounded in float32 (lam too), bitwise."""
    c = NetworkConfig(6, (5,), 3, dtype="float32")
    p = init_params(c, rng)
    X, y = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    lam = 0.1  # not a float32 number
    _, _, g0, _ = loss_and_grads(p, X, y, c, 0.0)
    _, _, g, _ = loss_and_grads(p, X, y, c, lam)
    for l in (1, 2):
        W = p[f"W{l}"]
        np.testing.assert_array_equal(g[f"W{l}"], g0[f"W{l}"] + np.float32(2) * np.float32(lam) * W)


def test_data_loss_and_grads_has_no_smoothing_and_no_penalty_by_default(rng):
    c = NetworkConfig(6, (5,), 3)
    p = init_params(c, rng)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    loss, grads, _ = data_loss_and_grads(p, X, y, c)
    scores = np.maximum(X @ p["W1"].T + p["b1"], 0) @ p["W2"].T + p["b2"]
    logP = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    assert float(loss) == pytest.approx(-logP[np.arange(8), y].mean(), rel=1e-12)
    _, l2, g2, _ = loss_and_grads(p, X, y, c, 0.0)
    assert float(loss) == float(l2)
    for k in grads:
        np.testing.assert_array_equal(grads[k], g2[k])


def test_loss_and_grads_with_label_smoothing_agrees_with_pytorch(rng):
    torch = pytest.importorskip("torch")
    c = NetworkConfig(6, (5,), 3)
    p = init_params(c, rng)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    lam, s = 0.02, 0.2
    cost, loss, grads, _ = loss_and_grads(p, X, y, c, lam, smoothing=s)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    scores = torch.relu(torch.tensor(X) @ tp["W1"].T + tp["b1"]) @ tp["W2"].T + tp["b2"]
    tloss = torch.nn.functional.cross_entropy(scores, torch.tensor(y), label_smoothing=s)
    tcost = tloss + lam * ((tp["W1"] ** 2).sum() + (tp["W2"] ** 2).sum())
    tcost.backward()
    assert float(loss) == pytest.approx(float(tloss.detach()), rel=1e-12)
    assert float(cost) == pytest.approx(float(tcost.detach()), rel=1e-12)
    for k in p:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scale_multiplies_each_networks_gradients(rng, dtype):
    """scale = (K,) learning rates: network k's gradients come out times scale[k]; in float32 the
    scale is rounded to float32 before it multiplies the upstream gradient (float32 arithmetic)."""
    c = NetworkConfig(6, (5,), 3, True, dtype=dtype)
    stack = stack_networks([Network.init(c, np.random.default_rng(s)) for s in range(3)])
    X, y = rng.standard_normal((8, 6)).astype(dtype), rng.integers(0, 3, 8)
    eta = np.array([0.1, 0.3, 0.7])
    loss, grads, _ = data_loss_and_grads(stack.params, X, y, c, scale=eta)
    loss0, grads0, _ = data_loss_and_grads(stack.params, X, y, c)
    np.testing.assert_array_equal(loss, loss0)
    tol = {"float32": (1e-5, 1e-7), "float64": (1e-12, 1e-15)}[dtype]  # b1 in front of BN: 0 + round-off
    for k in range(3):
        for name in grads:
            np.testing.assert_allclose(grads[name][k], eta[k] * grads0[name][k], rtol=tol[0], atol=tol[1])
    if dtype == "float32":  # the same upstream gradient, times float32(eta), through backward
        scores, caches, _ = forward(stack.params, X, c, train=True)
        dscores = layers.softmax_cross_entropy(scores, y)[1]
        ref = backward(dscores * eta.astype(np.float32)[:, None, None], caches, c)
        for name in grads:
            np.testing.assert_array_equal(grads[name], ref[name])


# -- hidden activations ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch_norm", [False, True])
def test_hidden_activations_are_each_layers_S_Z_and_H(rng, batch_norm):
    c = NetworkConfig(6, (5, 4), 3, batch_norm)
    p = init_params(c, rng)
    if batch_norm:
        p["gamma1"], p["beta1"] = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    X = rng.standard_normal((9, 6))
    out = list(hidden_activations(p, X, c))
    assert [o[0] for o in out] == [1, 2]
    H = X
    for l, S, Z, Hl in out:
        S_ref = H @ p[f"W{l}"].T + p[f"b{l}"]
        Z_ref = S_ref
        if batch_norm:
            Z_ref = p[f"gamma{l}"] * (S_ref - S_ref.mean(0)) / np.sqrt(S_ref.var(0) + c.eps) + p[f"beta{l}"]
        np.testing.assert_allclose(S, S_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(Z, Z_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(Hl, np.where(Z > 0, Z, 0))
        assert (Z < 0).any() and (Z > 0).any()
        H = Hl
    scores = forward(p, X, c, train=True)[0]
    np.testing.assert_allclose(scores, H @ p["W3"].T + p["b3"], rtol=1e-12)


# -- stacks ----------------------------------------------------------------------------------------
def test_stacking_refuses_a_different_architecture():
    a = Network.init(NetworkConfig(5, (4,), 3), np.random.default_rng(0))
    wider = Network.init(NetworkConfig(5, (6,), 3), np.random.default_rng(1))
    bn = Network.init(NetworkConfig(5, (4,), 3, True), np.random.default_rng(2))
    for odd in (wider, bn):
        for nets in ([a, odd], [a, a, odd]):
            with pytest.raises(ConfigError, match="^networks in one stack must share their architecture$"):
                stack_networks(nets)
    # a config differing in anything else (dropout, init) stacks
    other = Network.init(NetworkConfig(5, (4,), 3, dropout=0.5, init="xavier"), np.random.default_rng(3))
    assert stack_networks([a, other]).n_models == 2


def test_unstack_takes_the_given_config(rng):
    c = NetworkConfig(5, (4,), 3, True)
    nets = [Network.init(c, np.random.default_rng(s)) for s in range(2)]
    stack = stack_networks(nets)
    own = NetworkConfig(5, (4,), 3, True, dropout=0.3)
    one = unstack_network(stack, 1, own)
    assert one.config is own and one.n_models is None
    assert unstack_network(stack, 1).config is c
    for k in nets[1].params:
        np.testing.assert_array_equal(one.params[k], nets[1].params[k])
        assert not np.shares_memory(one.params[k], stack.params[k])


# -- Network methods ---------------------------------------------------------------------------------
def test_network_forward_in_training_mode_uses_batch_statistics(rng):
    c = NetworkConfig(6, (5,), 3, True)
    net = Network.init(c, rng)  # running statistics: zero mean, unit variance
    X = rng.standard_normal((9, 6)) * 3 + 2
    np.testing.assert_array_equal(net.forward(X, train=True), forward(net.params, X, c, train=True)[0])
    assert not np.allclose(net.forward(X), net.forward(X, train=True))


def _reference_eval(scores, y, lam, penalty):
    """Mean cross-entropy, cost and accuracy of one network's float64 scores, written out."""
    lse = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
    loss = np.mean(lse - scores[np.arange(len(y)), y])
    return {"cost": loss + lam * penalty, "loss": loss, "accuracy": np.mean(scores.argmax(1) == y)}


@pytest.mark.parametrize("chunk", [4, 7, 2500])
def test_evaluate_is_cost_loss_and_accuracy_chunk_by_chunk(rng, chunk):
    c = NetworkConfig(6, (5,), 4, True)
    nets = [Network.init(c, np.random.default_rng(s)) for s in range(2)]
    for net in nets:
        net.bn_state = {"mu1": rng.standard_normal(5), "var1": rng.uniform(0.5, 2, 5)}
    stack = stack_networks(nets)
    X, y = rng.standard_normal((23, 6)), rng.integers(0, 4, 23)
    lam = 0.05
    res = stack.evaluate(X, y, lam, chunk=chunk)
    for k, net in enumerate(nets):
        penalty = sum((net.params[f"W{l}"] ** 2).sum() for l in (1, 2))
        ref = _reference_eval(net.forward(X), y, lam, penalty)
        one = net.evaluate(X, y, lam, chunk=chunk)
        for key in ("cost", "loss", "accuracy"):
            assert type(one[key]) is float and one[key] == pytest.approx(ref[key], rel=1e-12)
            assert res[key].shape == (2,) and res[key][k] == pytest.approx(ref[key], rel=1e-12)
        assert 0 < ref["accuracy"] < 1 and ref["cost"] > ref["loss"]
        assert net.evaluate(X, y, chunk=chunk)["cost"] == pytest.approx(ref["loss"], rel=1e-12)  # lam = 0
        # raw rows through prep: the same as the features
        prepped = net.evaluate(X / 2, y, lam, chunk=chunk, prep=lambda a: a * 2)
        assert prepped == pytest.approx(one, rel=1e-12)


def test_evaluate_sums_float32_losses_in_float64():
    """Rows whose float32 losses are exact integers: 2**24 + 1001 is not a float32 number, so the
    mean loss (2**24 + 1001) / 2 comes out only if the sum is taken in float64."""
    c = NetworkConfig(1, (), 2, dtype="float32")
    net = Network(c, {"W1": np.array([[0.0], [1.0]], np.float32), "b1": np.zeros(2, np.float32)})
    X = np.array([[2.0**24], [1001.0]], np.float32)  # scores [0, x]: label 0 costs exactly x
    res = net.evaluate(X, np.array([0, 0]))
    assert res["loss"] == (2**24 + 1001) / 2 and res["accuracy"] == 0.0


@pytest.mark.parametrize("chunk", [3, 2500])
def test_predict_proba_is_the_softmax_of_eval_scores(rng, chunk):
    c = NetworkConfig(6, (5,), 4, True)
    nets = [Network.init(c, np.random.default_rng(s)) for s in range(2)]
    stack = stack_networks(nets)
    X = rng.standard_normal((8, 6))
    P = stack.predict_proba(X, chunk=chunk)
    assert P.shape == (2, 8, 4)
    for k, net in enumerate(nets):
        S = net.forward(X)
        E = np.exp(S - S.max(1, keepdims=True))
        np.testing.assert_allclose(P[k], E / E.sum(1, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(net.predict_proba(X / 2, chunk=chunk, prep=lambda a: a * 2), P[k], rtol=1e-12)


def test_network_config_defaults_are_the_model_tables_on_cifar10():
    """The Python defaults agree with the config file's [model] table, CIFAR-10's sizes
    (32 x 32 x 3 inputs, 10 classes) and the scikit-learn estimator's float64."""
    import inspect

    from klayer.config import ModelConfig
    from klayer.sklearn import KLayerClassifier

    c, m = NetworkConfig(), ModelConfig()
    for key in ("hidden", "batch_norm", "init", "sigma", "eps", "dropout", "input_dropout"):
        assert getattr(c, key) == getattr(m, key), key
    assert (c.input_size, c.n_classes) == (32 * 32 * 3, 10)
    assert c.dtype == inspect.signature(KLayerClassifier).parameters["dtype"].default
