"""The gradient check: its criterion piece by piece, correct networks, and injected bugs that must fail.

Injected bugs, into each parameter in turn: a sign flip, a factor of 2, a transposition, and
missing terms (the data term of one sample; the penalty ``2 lam W``; either term of the batch-norm
backward for parameters in front of a batch-norm layer). A bias in front of batch norm has a true
gradient of exactly 0, so a multiplicative bug changes nothing there: only the bugs that change it
(the batch-norm mean term) are injected into it. Every injected gradient is checked to differ from
the true one before it is judged.
"""

import ast
import inspect
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import klayer.gradcheck as gc
from klayer import layers
from klayer.cli import main
from klayer.data import sample_rows
from klayer.errors import ConfigError, DataError
from klayer.gradcheck import (
    GradcheckRefused,
    Numerical,
    centred_differences,
    check_gradients,
    cost_and_pattern,
    differentiable_point,
    exact_kinks,
    expected_zero,
    judge,
    numerical_gradients,
    refusal,
)
from klayer.network import Network, NetworkConfig, backward, forward, hidden_activations, loss_and_grads

HS = (1e-6, 1e-5, 1e-4)


def data(rng, N, d=8, C=10, dtype="float64"):
    return rng.standard_normal((N, d)).astype(dtype), rng.integers(0, C, N)


def network(rng, d, hidden, batch_norm, dtype="float64"):
    return Network.init(NetworkConfig(d, hidden, 10, batch_norm, dtype=dtype), rng)


# -- pieces of the criterion -----------------------------------------------------------------------
def test_centred_differences_are_exact_for_a_quadratic_and_restore_the_array():
    p = np.array([0.3, -1.2, 2.0])
    before = p.copy()
    values, kinked = centred_differences(lambda: (float(p @ p + 3 * p[1]), ()), p, [0, 1, 2], 0.1)
    np.testing.assert_allclose(values, 2 * before + [0, 3, 0], rtol=1e-13)
    assert not kinked.any() and np.array_equal(p, before)


def test_centred_differences_divide_by_the_step_actually_taken():
    p = np.array([1.0, 1.0], np.float32)
    values, _ = centred_differences(lambda: (5.0 * float(p.astype(np.float64).sum()), ()), p, [0], 1e-7)
    assert values[0] == pytest.approx(5.0, rel=1e-12)  # 1 +- 1e-7 rounds to a float32 step of 2.38e-7, not 2e-7
    values, _ = centred_differences(lambda: (float(p.sum()), ()), p, [1], 1e-9)
    assert np.isnan(values[0])  # 1 +- 1e-9 is 1 in float32: no step at all


def test_centred_differences_flag_a_crossed_kink():
    p = np.array([0.5, -2e-6, 1.0])

    def f():  # relu(p) summed; the pattern is the sign of every entry
        return float(np.maximum(p, 0).sum()), (p > 0,)

    values, kinked = centred_differences(f, p, [0, 1, 2], 1e-5)
    assert kinked.tolist() == [False, True, False]
    values, kinked = centred_differences(f, p, [0, 1, 2], 1e-6)
    assert not kinked.any() and values.tolist() == pytest.approx([1, 0, 1])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_cost_and_pattern_match_the_network(rng, batch_norm):
    net = network(rng, 8, (7, 6), batch_norm)
    X, y = data(rng, 9)
    J, pattern = cost_and_pattern(net.params, X, y, net.config, 0.3)
    assert J == pytest.approx(float(loss_and_grads(net.params, X, y, net.config, 0.3)[0]), rel=1e-14)
    Z = [Z for _, _, Z, _ in hidden_activations(net.params, X, net.config)]
    assert len(pattern) == 2 and all(
        np.array_equal(p, z > 0) and p.dtype == bool for p, z in zip(pattern, Z, strict=True)
    )
    linear = network(rng, 8, (), False)
    assert cost_and_pattern(linear.params, X, y, linear.config, 0.0)[1] == ()


def test_cost_is_summed_in_float64():
    """A float32 network's cost is its float32 forward pass summed exactly, penalty included."""
    config = NetworkConfig(3, (), 2, False, dtype="float32")
    W = np.full((2, 3), 1 + 2**-12, np.float32)
    params = {"W1": W, "b1": np.zeros(2, np.float32)}
    X, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    J, _ = cost_and_pattern(params, X, y, config, 1.0)
    # (1 + 2**-12)**2 needs 25 bits: exact in float64, rounded in float32; the loss is float32's log 2
    assert J == 6 * (1 + 2**-12) ** 2 + float(np.log(np.float32(2)))
    assert isinstance(J, float)


def test_numerical_gradients_are_centred_differences_at_h_and_half_h(rng):
    net = network(rng, 5, (4,), True)
    X, y = data(rng, 6, d=5)
    idx = {n: np.arange(min(p.size, 7)) for n, p in net.params.items()}
    before = {n: p.copy() for n, p in net.params.items()}
    num = numerical_gradients(net.params, X, y, net.config, 0.1, idx, (1e-4, 0.5, 1e-6))
    assert num.hs == (1e-6, 1e-4, 0.5) and num.eps == np.finfo(np.float64).eps and num.indices == idx
    assert num.J == cost_and_pattern(net.params, X, y, net.config, 0.1)[0]
    assert all(np.array_equal(before[n], p) for n, p in net.params.items())  # copied, never modified
    work = {n: p.copy() for n, p in net.params.items()}

    def f():
        return cost_and_pattern(work, X, y, net.config, 0.1)

    kinks = 0
    for name in ("W1", "gamma1"):
        for k, h in enumerate(num.hs):
            full, kinked = centred_differences(f, work[name], idx[name], h)
            half, kinked_half = centred_differences(f, work[name], idx[name], h / 2)
            np.testing.assert_array_equal(num.values[name][k], full)
            np.testing.assert_array_equal(num.halves[name][k], half)
            np.testing.assert_array_equal(num.usable[name][k], ~kinked & ~kinked_half)
            kinks += kinked.sum() + kinked_half.sum()
    assert kinks > 0 and num.usable["W1"][0].all()  # steps of 0.5 cross kinks; 1e-6 does not
    # in float32, every forward pass is float32: round-off is far larger than in float64
    num32 = numerical_gradients(net.params, X, y, net.config, 0.1, idx, (1e-4, 1e-6), numeric_dtype="float32")
    assert num32.eps == np.finfo(np.float32).eps
    assert np.abs(num32.values["W1"][0] - num.values["W1"][0]).max() > 1e-5
    tiny = numerical_gradients(net.params, X, y, net.config, 0.1, idx, (1e-12,), numeric_dtype="float32")
    assert not tiny.usable["W1"].any() and np.isnan(tiny.values["W1"]).all()  # no float32 step that small


def numerical(values, halves=None, usable=None, hs=(1e-6, 1e-5, 1e-4), J=1.0, eps=1e-16, name="W1"):
    """A hand-made Numerical for one parameter: values and halves are (len(hs), n) arrays."""
    values = np.asarray(values, float)
    halves = values if halves is None else np.asarray(halves, float)
    usable = np.ones(values.shape, bool) if usable is None else np.asarray(usable)
    idx = np.arange(values.shape[1])
    return Numerical(hs, J, eps, {name: idx}, {name: values}, {name: halves}, {name: usable})


LINEAR = NetworkConfig(2, (), 2, False)  # parameters W1 (2, 2) and b1 (2,)


def judge_one(ga, num, tol=1e-7, config=LINEAR):
    """Judge ``ga`` for W1 of LINEAR (4 entries), with a b1 whose check is trivially exact."""
    n = num.values["W1"].shape[0]
    num.indices["b1"] = np.arange(2)
    num.values["b1"] = num.halves["b1"] = np.full((n, 2), 4.0)  # its layer's scale G_l is 4
    num.usable["b1"] = np.ones((n, 2), bool)
    rows = judge({"W1": np.reshape(ga, (2, 2)), "b1": np.full(2, 4.0)}, num, config, tol)
    return rows[0]


def test_h_star_is_chosen_without_looking_at_the_analytic_gradient():
    """At h=1e-6 the numerical values happen to equal a wrong gradient, but they move when the step
    is halved; at 1e-5 they are stable and right. The check judges at 1e-5 and fails."""
    true, wrong = np.array([1.0, 2.0, 3.0, 4.0]), -np.array([1.0, 2.0, 3.0, 4.0])
    num = numerical([wrong, true, true + 1e-3], halves=[wrong + 0.1, true, true])
    row = judge_one(wrong, num)
    assert row.best == 1 and row.status == "fail"
    assert judge_one(true, num).status == "ok"


def test_h_star_has_the_smallest_noise_among_well_covered_steps():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    noise = np.array([[1e-9], [1e-12], [1e-11]])
    num = numerical([true] * 3, halves=true + noise)
    assert judge_one(true, num).best == 1
    # a step where fewer than 90% as many entries are usable as at the best-covered one is not considered
    ga = np.arange(1.0, 21.0) / 100
    usable = np.ones((3, 20), bool)
    usable[1, :3] = usable[2, :2] = False  # 17 (85%) and 18 (90%) of 20 entries usable
    num = numerical([ga] * 3, halves=ga + noise, usable=usable)
    config = NetworkConfig(10, (), 2, False)  # W1 (2, 10): 20 entries
    num.indices["b1"], num.values["b1"] = np.arange(2), np.ones((3, 2))
    num.halves["b1"], num.usable["b1"] = np.ones((3, 2)), np.ones((3, 2), bool)
    row = judge({"W1": ga.reshape(2, 10) / 10, "b1": np.ones(2)}, num, config, 1e-7)[0]
    assert row.best == 2 and row.n_checked == 18 and row.n_total == 20
    assert row.scale == 0.2  # from the usable numerical entries (the analytic ones are 10 times smaller)


def test_round_off_bounds_the_noise_from_below():
    """Two columns that agree exactly (no change when halving) still carry round-off eps |J| / h."""
    true = np.array([1.0, 2.0, 3.0, 4.0])
    num = numerical([true, true], hs=(1e-6, 1e-4), J=2.0, eps=1e-10)
    row = judge_one(true, num, tol=1e-3)
    assert row.best == 1 and row.resolution == pytest.approx(2 * 1e-10 * 2.0 / 1e-4 / 4.0)


@pytest.mark.parametrize("offset, status", [(2.0**-19, "ok"), (2.0**-19 + 2.0**-40, "fail"), (0.0, "ok")])
def test_bound_is_tol_times_the_parameters_scale(offset, status):
    """Powers of two, so that err = tol * s_p holds exactly at the boundary."""
    true = np.array([1.0, 1.0, 1.0, 2.0])
    ga = true + [offset, 0, 0, 0]
    row = judge_one(ga, numerical([true, true], hs=(1e-5, 1e-4)), tol=2.0**-20)
    assert row.status == status and row.kind == "rel" and row.bound == 2.0**-20 and row.scale == 2.0
    assert row.errors[row.best] == offset / 2


@pytest.mark.parametrize("change, status", [(2.0**-19, "ok"), (2.0**-19 + 2.0**-40, "noisy")])
def test_noise_above_tol_is_not_a_pass(change, status):
    """2 nu <= tol * s_p passes; above it the check cannot resolve tol (status noisy, a failure)."""
    true = np.array([1.0, 2.0, 3.0, 4.0])
    num = numerical([true, true], halves=[true + 1, true + change], hs=(1e-5, 1e-4))
    row = judge_one(true, num, tol=2.0**-20)
    assert row.status == status and row.resolution == 2 * change / 4 and row.passed is (status == "ok")


def test_analytic_round_off_bounds_the_resolution():
    """100 eps_a G_l: in float32 a correct gradient 1e-5 of its layer's largest cannot be resolved."""
    config = NetworkConfig(2, (), 2, False, dtype="float32")
    true = np.array([1.0, 1.0, 1.0, 4.0])
    row = judge_one(true, numerical([true, true], hs=(1e-5, 1e-4)), tol=1e-3, config=config)
    assert row.resolution == pytest.approx(100 * np.finfo(np.float32).eps, rel=1e-6)
    row = judge_one(true, numerical([true, true], hs=(1e-5, 1e-4)), tol=1e-5, config=config)
    assert row.status == "noisy"


@pytest.mark.parametrize("change, status", [(2.0**-4, "ok"), (2.0**-3, "refused"), (0.75 * 2.0**-2, "refused")])
def test_resolution_of_one_means_nothing_is_tested(change, status):
    """r_p = 2 nu / s_p: at 1 a wrong gradient could hide in the noise, so the check refuses."""
    true = np.array([0.25, 0.25, 0.25, 0.25])
    num = numerical([true, true], halves=[true + 1, true + change], hs=(1e-5, 1e-4))
    row = judge_one(true, num, tol=1.0)
    assert row.status == status and row.kind == ("rel" if status == "ok" else "abs")
    assert row.resolution == 2 * change / 0.25


def test_a_gradient_that_is_zero_everywhere_is_refused():
    zero = np.zeros(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero on the way
        row = judge_one(zero, numerical([zero, zero], hs=(1e-5, 1e-4), J=1.0, eps=2.0**-40))
    assert row.status == "refused" and row.resolution == np.inf and row.scale == 0
    b_zero = NetworkConfig(2, (), 2, False)
    num = numerical([zero, zero], hs=(1e-5, 1e-4), J=1.0, eps=2.0**-40)
    num.indices["b1"], num.values["b1"], num.halves["b1"] = np.arange(2), np.zeros((2, 2)), np.zeros((2, 2))
    num.usable["b1"] = np.ones((2, 2), bool)
    rows = judge({"W1": np.zeros((2, 2)), "b1": np.zeros(2)}, num, b_zero, 1e-7)
    assert rows[0].unit == 1.0 and rows[0].bound == 2 * 2.0**-40 / 1e-4  # the noise, in absolute terms


def test_a_missing_gradient_fails_rather_than_refuses():
    """An analytic gradient of 0 where the numerical one is not: the scale comes from gn too."""
    true = np.array([0.1, 0.2, 0.3, 0.4])
    row = judge_one(np.zeros(4), numerical([true, true], hs=(1e-5, 1e-4)))
    assert row.status == "fail" and row.scale == 0.4 and row.errors[row.best] == 1.0


def test_gradient_at_the_noise_level_is_refused():
    """A weight matrix whose true gradient is below what the check resolves tests nothing."""
    tiny = np.array([1e-12, -1e-12, 0.0, 1e-12])
    row = judge_one(tiny, numerical([tiny, tiny], halves=[tiny + 1e-11, tiny + 1e-11], hs=(1e-5, 1e-4)))
    assert row.status == "refused" and row.kind == "abs" and row.resolution >= 1


def test_every_step_crossing_a_kink_is_not_a_pass():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    row = judge_one(true, numerical([true, true], usable=np.zeros((2, 4), bool), hs=(1e-5, 1e-4)))
    assert row.status == "kinks" and row.n_checked == 0 and np.isnan(row.errors).all()


def test_expected_zero_names():
    bn = NetworkConfig(4, (3, 3), 2, True)
    assert [n for n in bn.param_names() if expected_zero(n, bn)] == ["b1", "b2"]
    assert not any(expected_zero(n, NetworkConfig(4, (3, 3), 2, False)) for n in bn.param_names())


def test_bias_in_front_of_batch_norm_is_judged_in_absolute_terms(rng):
    net = network(rng, 8, (7, 6), True)
    X, y = data(rng, 10)
    _, _, grads, _ = loss_and_grads(net.params, X, y, net.config, 0.0)
    assert np.abs(grads["b1"]).max() < 1e-15  # exactly zero up to round-off
    report = check_gradients(net, X, y, 0.0, rng, hs=HS, max_entries=10)
    rows = {r.name: r for r in report.rows}
    assert rows["b1"].kind == rows["b2"].kind == "abs" and rows["b1"].passed
    assert rows["b1"].bound >= 100 * np.finfo(np.float64).eps  # the noise, not tol times a round-off
    assert rows["b1"].expected_zero is True and rows["W1"].expected_zero is rows["b3"].expected_zero is False
    assert rows["b3"].kind == rows["W1"].kind == rows["gamma1"].kind == "rel"
    # abs rows are divided by the largest gradient of their layer
    assert rows["b1"].unit == max(rows[n].scale for n in ("W1", "b1", "gamma1", "beta1"))
    # a missing mean term of the batch-norm backward makes the bias gradient nonzero: caught
    grads["b1"] = grads["b1"] + 1e-6 * rows["b1"].unit
    assert not check_gradients(net, X, y, 0.0, np.random.default_rng(0), hs=HS, max_entries=10, grads=grads).passed


def test_entries_hold_the_largest_gradient_and_a_seeded_rest():
    g = np.zeros((30, 20))
    g[17, 3] = -5.0
    idx = gc._entries(g, 12, np.random.default_rng(0))
    assert len(idx) == 12 and 17 * 20 + 3 in idx and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, gc._entries(g, 12, np.random.default_rng(0)))
    for seed in range(40):  # small arrays: every draw stays in range, unique, with the largest entry
        small = np.random.default_rng(seed).standard_normal(6)
        idx = gc._entries(small, 5, np.random.default_rng(seed))
        assert len(set(idx)) == 5 and idx.min() >= 0 and idx.max() < 6 and np.argmax(np.abs(small)) in idx
    drawn = {int(i) for seed in range(40) for i in gc._entries(np.arange(6.0), 2, np.random.default_rng(seed))}
    assert drawn == set(range(6))  # every entry can be drawn


def test_entries_of_a_small_array_are_all_of_them_and_draw_nothing():
    rng = np.random.default_rng(0)
    assert np.array_equal(gc._entries(np.ones((2, 3)), 6, rng), np.arange(6))
    assert np.array_equal(gc._entries(np.ones((2, 3)), 7, rng), np.arange(6))
    assert rng.random() == np.random.default_rng(0).random()


GOLDEN = """\
hidden=[3], note=biases jittered
param    err      checked    h=1e-06    h=1e-02    bound
--------------------------------------------------------
W1       rel      4/6      2.00e-08   1.00e-09*  1.0e-07
b1       abs      3/3      1.50e-12*      kink   2.0e-11
gamma1   rel      2/3      3.00e-03*  5.00e-01   1.0e-07  FAIL
beta1    rel      3/3      1.00e-06   2.00e-07*  1.0e-07  NOISY
W2       rel      0/6          kink*      kink   1.0e-07  KINKS
* = the step each parameter is judged at (most accurate numerically): FAIL (gamma1; beta1: the check resolves \
4.0e-07 > tol; add smaller --h or raise --tol; W2: every step crossed a ReLU kink, use smaller --h)
rel = max|ga-gn| / the parameter's largest gradient entry; abs = max|ga-gn| / its layer's largest, where the true \
gradient is 0; bound = tol=1e-07 (rel) or the check's noise (abs)"""


def golden_report(extra=()):
    nan = float("nan")
    rows = [
        gc.GradcheckRow("W1", "rel", [2e-8, 1e-9], 1, 1e-7, 1e-9, "ok", False, 4, 6, 0.5, 0.5),
        gc.GradcheckRow("b1", "abs", [1.5e-12, nan], 0, 2e-11, 50.0, "ok", True, 3, 3, 1e-15, 0.5),
        gc.GradcheckRow("gamma1", "rel", [3e-3, 0.5], 0, 1e-7, 1e-9, "fail", False, 2, 3, 0.2, 0.2),
        gc.GradcheckRow("beta1", "rel", [1e-6, 2e-7], 1, 1e-7, 4e-7, "noisy", False, 3, 3, 0.1, 0.1),
        gc.GradcheckRow("W2", "rel", [nan, nan], 0, 1e-7, np.inf, "kinks", False, 0, 6, 0.3, 0.3),
        *extra,
    ]
    return gc.GradcheckReport((1e-6, 1e-2), rows, 1e-7, {"hidden": [3], "note": "biases jittered"})


def test_the_table_reads_as_documented():
    report = golden_report()
    assert report.format_table() == GOLDEN.replace("\\\n", "")
    assert report.failures()[0] == "gamma1" and report.refused is None and not report.passed
    ok = gc.GradcheckReport((1e-6,), golden_report().rows[:2], 1e-7, {})
    assert ok.passed and ok.verdict() == "PASS" and ok.failures() == []


def test_a_refused_parameter_names_itself_and_the_fix():
    # floor 1e-12 = bound 2e-12 in units of G_l = 0.5; resolution = floor / scale = 1e-12 / 4e-13
    dead = gc.GradcheckRow("W3", "abs", [1e-13, 1e-13], 0, 2e-12, 2.5, "refused", False, 5, 5, 4e-13, 0.5)
    report = golden_report([dead])
    assert report.refused == (
        "W3's gradient (largest entry 4.0e-13) is at the check's noise level (1.0e-12), so nothing is tested: "
        "its true gradient is (almost) 0 at this point; try another --seed"
    )
    assert report.verdict() == f"REFUSED: {report.refused}" and not report.passed
    assert report.format_table().splitlines()[8].endswith("  REFUSED")


# -- degenerate configurations ---------------------------------------------------------------------
def test_refusal_reasons(rng):
    bn = NetworkConfig(4, (3, 3), 2, True)
    params = network(rng, 4, (3, 3), True).params
    X = rng.standard_normal((5, 4))
    assert refusal(params, X, bn) is None
    two = (
        "batch norm over 2 distinct sample(s) maps every feature to fixed values (+-1 for 2) whatever its input, "
        "so the gradients in front of it vanish; use --batch-size 3 or more"
    )
    assert refusal(params, X[:2], bn) == two and refusal(params, X[[0, 1, 0, 1, 1]], bn) == two
    assert refusal(params, X[:2], NetworkConfig(4, (3, 3), 2, False)) is None  # no batch norm: fine
    assert refusal({"W1": np.ones((2, 4)), "b1": np.zeros(2)}, X[:1], NetworkConfig(4, (), 2, True)) is None
    one = NetworkConfig(1, (3,), 2, True)
    assert refusal(network(rng, 1, (3,), True).params, X[:, :1], one) == (
        "W1 has a single input column, so it only sets a scale that batch norm removes and its gradient is 0; "
        "use --features 2 or more"
    )
    narrow = NetworkConfig(4, (1, 3), 2, True)
    assert refusal(network(rng, 4, (1, 3), True).params, X, narrow) == (
        "W2 has a single input column, so it only sets a scale that batch norm removes and its gradient is 0; "
        "use hidden widths of 2 or more"
    )
    last = NetworkConfig(4, (3, 1), 2, True)  # the output layer's single input is not in front of batch norm
    assert refusal(network(rng, 4, (3, 1), True).params, X, last) is None
    merged = {"W1": np.eye(2), "b1": np.zeros(2), "gamma1": np.ones(2), "beta1": np.zeros(2)}
    merged |= {"W2": np.ones((3, 2)), "b2": np.zeros(3), "gamma2": np.ones(3), "beta2": np.zeros(3)}
    merged |= {"W3": np.ones((2, 3)), "b3": np.zeros(2)}
    X3 = np.array([[-1.0, -2.0], [-2.0, -1.0], [5.0, 5.0]])  # distinct, but both dead after layer 1
    reason = refusal(merged, X3, NetworkConfig(2, (2, 3), 2, True))
    assert reason == (
        "the ReLUs of layer 1 leave 2 distinct rows for the batch norm of layer 2, so the gradients in front of "
        "it vanish; try another --seed or a larger --batch-size"
    )
    assert refusal(merged, X3, NetworkConfig(2, (2, 3), 2, False)) is None
    dead = {"W1": -np.ones((3, 4)), "b1": np.zeros(3), "W2": np.ones((2, 3)), "b2": np.zeros(2)}
    reason = refusal(dead, np.abs(X) + 0.1, NetworkConfig(4, (3,), 2, False))
    assert (
        reason
        == "every ReLU of layer 1 is 0 for every sample, so the gradients in front of it are 0; try another --seed"
    )


def test_batch_norm_with_two_samples_is_refused(rng, capsys):
    net = network(rng, 8, (6,), True)
    X, y = data(rng, 2)
    with pytest.raises(GradcheckRefused, match="--batch-size 3 or more"):
        check_gradients(net, X, y, 0.0, rng)
    with pytest.raises(SystemExit) as e:
        main(["gradcheck", "--batch-norm", "--batch-size", "2", "--source", "random"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--batch-size 3 or more" in err.splitlines()[-1]
    # no hidden layer: nothing is normalized, batch 2 is fine
    assert main(["gradcheck", "--hidden", "none", "--batch-norm", "--batch-size", "2", "--source", "random"]) == 0


def test_exact_relu_kinks_are_detected_and_avoided():
    """Layer 1 is dead for the first three samples, so layer 2's inputs are exactly 0 there (b = 0)."""
    config = NetworkConfig(4, (3, 3), 3, False)
    r = np.random.default_rng(0)
    params = {"W1": -np.ones((3, 4)), "b1": np.zeros(3), "W2": r.standard_normal((3, 3)), "b2": np.zeros(3)}
    params |= {"W3": r.standard_normal((3, 3)), "b3": np.zeros(3)}
    X = np.abs(r.standard_normal((5, 4))) + 0.1
    X[3:] *= -1
    assert exact_kinks(params, X, config) == 9
    moved, kinks = differentiable_point(params, X, config, np.random.default_rng(0), 1e-3)
    assert kinks == 9 and exact_kinks(moved, X, config) == 0 and moved["W1"] is params["W1"]
    jitter = 1e-3 * np.random.default_rng(0).standard_normal(9)  # b1, b2, b3 in turn, 1e-3 by default
    np.testing.assert_array_equal(np.concatenate([moved[f"b{l}"] for l in (1, 2, 3)]), jitter)
    assert not np.array_equal(moved["b2"], params["b2"]) and not params["b2"].any()  # not modified
    report = check_gradients(Network(config, params), X, np.array([0, 1, 2, 0, 1]), 0.0, r, hs=HS)
    assert report.passed, report.format_table()
    assert report.settings["note"] == (
        "9 ReLU inputs were exactly 0 (no gradient there); biases jittered by 0.001 to check at a differentiable point"
    )
    assert differentiable_point(params, X, config, r, kink_jitter=0)[0] is params
    single = {n: p.astype(np.float32) for n, p in params.items()}
    moved, _ = differentiable_point(single, X.astype(np.float32), config, np.random.default_rng(0), 1e-3)
    assert all(p.dtype == np.float32 for p in moved.values())


def test_check_gradients_rejects_bad_arguments(rng):
    net = network(rng, 8, (6,), False)
    X, y = data(rng, 5)
    for kwargs in ({"hs": ()}, {"hs": (1e-5, 0.0)}, {"hs": (np.inf,)}):
        with pytest.raises(ValueError, match="steps h must be positive and finite"):
            check_gradients(net, X, y, 0.0, rng, **kwargs)
    for lam, kwargs in (
        (0.0, {"tol": 0.0}),
        (0.0, {"tol": np.nan}),
        (0.0, {"max_entries": 0}),
        (-0.1, {}),
        (np.inf, {}),
    ):
        with pytest.raises(ValueError, match="need tol > 0, max_entries >= 1 and lam >= 0"):
            check_gradients(net, X, y, lam, rng, **kwargs)
    one = check_gradients(net, X, y, 0.0, rng, hs=(1e-5,), max_entries=1)  # one entry and one step are enough
    assert one.passed and {r.n_total for r in one.rows} == {48, 6, 60, 10} and {r.n_checked for r in one.rows} == {1}


def test_at_most_500_entries_are_checked_by_default(rng):
    net = network(rng, 60, (9,), False)
    X, y = data(rng, 4, d=60)
    report = check_gradients(net, X, y, 0.0, rng, hs=(1e-5,))
    assert [(r.n_checked, r.n_total) for r in report.rows] == [(500, 540), (9, 9), (90, 90), (10, 10)]


def test_defaults_depend_on_the_dtype(rng):
    X, y = data(rng, 5, d=4)
    r64 = check_gradients(network(rng, 4, (3,), False), X, y, 0.0, rng, max_entries=3)
    r32 = check_gradients(network(rng, 4, (3,), False, "float32"), X.astype(np.float32), y, 0.0, rng, max_entries=3)
    # the documented defaults (docs/gradcheck.md): h from 1e-7 to 1e-2, by decades
    assert r64.tol == 1e-7 and r32.tol == 1e-3 and r64.hs == r32.hs == (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    assert r32.settings["dtype"] == "float32 (differences in float64)" and r64.settings["dtype"] == "float64"
    r = check_gradients(network(rng, 4, (3,), False), X, y, 0.0, rng, max_entries=3, numeric_dtype="float32")
    assert r.hs == (1e-4, 1e-3, 1e-2, 1e-1)  # float32 differences: 1e-4 to 1e-1


def test_gradcheck_imports_no_data_module():
    tree = ast.parse(inspect.getsource(gc))
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "network" in modules and not any("data" in m.split(".") for m in modules)


# -- correct networks pass -------------------------------------------------------------------------
SHAPES = {2: (8,), 3: (8, 6), 4: (8, 7, 6), 9: (10, 9, 8, 8, 7, 7, 6, 6)}


CORRECT = [(d, bn, N, "float64") for d in (2, 3, 4) for bn in (False, True) for N in (3, 10, 20, 100)]
CORRECT += [(d, bn, N, "float32") for d in (2, 3, 4) for bn in (False, True) for N in (3, 20)]


@pytest.mark.parametrize("depth, batch_norm, N, dtype", CORRECT)
def test_a_correct_network_passes(depth, batch_norm, N, dtype):
    rng = np.random.default_rng(depth * 1000 + N * 10 + batch_norm)
    lam = 0.1 * ((depth + N) % 2)
    net = network(rng, 8, SHAPES[depth], batch_norm, dtype)
    X, y = data(rng, N, dtype=dtype)
    report = check_gradients(net, X, y, lam, rng, hs=HS, max_entries=8)
    assert report.passed, report.format_table()
    assert [r.name for r in report.rows] == net.config.param_names()


@pytest.mark.parametrize("batch_norm, N, lam", [(False, 3, 0.1), (True, 3, 0.0), (True, 20, 0.1)])
def test_a_correct_deep_network_passes(batch_norm, N, lam):
    rng = np.random.default_rng(N + batch_norm)
    net = network(rng, 8, SHAPES[9], batch_norm)
    X, y = data(rng, N)
    report = check_gradients(net, X, y, lam, rng, hs=HS, max_entries=5)
    assert report.passed, report.format_table()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hidden=st.lists(st.integers(2, 8), min_size=0, max_size=3),
    batch_norm=st.booleans(),
    N=st.integers(3, 12),
    lam=st.sampled_from([0.0, 0.05]),
    seed=st.integers(0, 2**31),
)
# With only h = 1e-5 and 1e-4 this one is (rightly) noisy: W1's truncation error is 3e-7 of its scale.
@example(hidden=[2, 4], batch_norm=True, N=3, lam=0.0, seed=1)
# Layer 2's ReLUs are 0 for every sample where layer 1's are not: W1's gradient is exactly 0.
@example(hidden=[2, 2], batch_norm=False, N=3, lam=0.0, seed=561750488)
# gamma2's gradient is 1e-4 of the cost: float64 centred differences resolve 4.7e-7 of it, no better
# at any step (round-off below 1e-5, truncation above), so it is honestly noisy, not passed.
@example(hidden=[4, 2, 6], batch_norm=True, N=12, lam=0.0, seed=8670)
def test_random_correct_networks_pass(hidden, batch_norm, N, lam, seed):
    rng = np.random.default_rng(seed)
    net = network(rng, 5, tuple(hidden), batch_norm)
    X, y = data(rng, N, d=5)
    try:  # the default steps, 1e-7 to 1e-2, as the command line uses them
        report = check_gradients(net, X, y, lam, rng, max_entries=8)
    except GradcheckRefused as e:  # a dead layer, which narrow random layers can have
        assert "every ReLU of layer" in str(e)
        return
    # every parameter passes, except one whose gradient is exactly 0 (its ReLU paths all blocked):
    # that one is refused, with a number for the noise level; and, rarely, one whose gradient is
    # so small against the cost that float64 cannot resolve tol of it: "noisy", never "fail",
    # and still resolved to within 1e-5 (a check that overstated its noise would show many)
    noisy = [r for r in report.rows if r.status == "noisy"]
    assert len(noisy) <= 1 and all(r.resolution < 1e-5 for r in noisy), report.format_table()
    for r in report.rows:
        assert r.passed or r in noisy or (r.status == "refused" and r.scale == 0), report.format_table()
    assert "nan" not in (report.refused or ""), report.refused


# -- injected bugs fail ----------------------------------------------------------------------------
def batchnorm_backward_without(term):
    """The batch-norm backward of klayer.layers with its ``mean`` or its ``proj`` term left out."""

    def backward_(dout, cache):
        S_hat, inv_std, gamma = cache
        N = dout.shape[-2]
        dbeta, dgamma = dout.sum(axis=-2), np.einsum("...nm,...nm->...m", dout, S_hat)
        dS = dout * gamma[..., None, :]
        if term != "mean":
            dS = dS - (gamma * dbeta / N)[..., None, :]
        if term != "proj":
            dS = dS - S_hat * (gamma * dgamma / N)[..., None, :]
        return dS * inv_std[..., None, :], dgamma, dbeta

    return backward_


def split_name(name):
    """``"gamma12"`` -> ``("gamma", 12)``."""
    kind, layer = re.fullmatch(r"([a-zA-Z]+)(\d+)", name).groups()
    return kind, int(layer)


def in_front_of_batch_norm(name, config):
    """Parameters whose gradient flows through a batch-norm backward."""
    kind, layer = split_name(name)
    last = config.n_layers - 1
    return config.batch_norm and (layer < last or (layer == last and kind in ("W", "b")))


def injected_bugs(params, X, y, config, lam):
    """``(name, bug) -> wrong gradient dict`` for every bug that changes a parameter's gradient."""
    _, _, true, _ = loss_and_grads(params, X, y, config, lam)
    scores, caches, _ = forward(params, X, config)
    dscores = layers.softmax_cross_entropy(scores, y)[1]
    terms = []  # the data term of each sample (backward is linear in the upstream gradient)
    for n in range(len(y)):
        one = np.zeros_like(dscores)
        one[n] = dscores[n]
        terms.append(backward(one, caches, config))
    bn = {}
    for term in ("mean", "proj") if config.batch_norm else ():
        with pytest.MonkeyPatch.context() as m:
            m.setattr(layers, "batchnorm_backward", batchnorm_backward_without(term))
            bn[term] = loss_and_grads(params, X, y, config, lam)[2]
    bugs = {}
    for name, g in true.items():
        wrong = {}
        if not expected_zero(name, config):  # a true gradient of exactly 0: scaling changes nothing
            largest = max(terms, key=lambda t: np.abs(t[name]).max())[name]
            wrong |= {"sign": -g, "factor 2": 2 * g, "missing a sample's term": g - largest}
            wrong["transposed"] = g.T.reshape(g.shape) if g.ndim == 2 else g[::-1]
            if name.startswith("W") and lam > 0:
                wrong["missing penalty"] = g - 2 * lam * params[name]
        if in_front_of_batch_norm(name, config):
            wrong["missing bn mean term"] = bn["mean"][name]
            if not expected_zero(name, config):  # the projection term sums to 0 over the batch
                wrong["missing bn projection term"] = bn["proj"][name]
        layer_scale = max(np.abs(v).max() for k, v in true.items() if split_name(k)[1] == split_name(name)[1])
        for bug, v in wrong.items():
            change = np.abs(v - g).max()
            assert change > 1e-3 * max(np.abs(g).max(), 1e-6 * layer_scale), (name, bug, change)
            bugs[name, bug] = {**true, name: v.astype(g.dtype)}
    return true, bugs


MATRIX = [
    (dtype, depth, bn, N) for dtype in ("float64", "float32") for depth in (2, 3) for bn in (0, 1) for N in (2, 3, 20)
]
MATRIX += [("float64", 4, 1, 3), ("float64", 4, 0, 20), ("float32", 4, 1, 20)]


@pytest.mark.parametrize("dtype, depth, batch_norm, N", MATRIX)
def test_every_injected_bug_fails(dtype, depth, batch_norm, N):
    """Through the API: the numerical side once per configuration, then every bug judged against it."""
    rng = np.random.default_rng(depth * 100 + N + batch_norm)
    lam = 0.1 if (depth + N) % 2 else 0.0
    net = network(rng, 8, SHAPES[depth], bool(batch_norm), dtype)
    X, y = data(rng, N, dtype=dtype)
    if batch_norm and N == 2:
        with pytest.raises(GradcheckRefused, match="--batch-size 3"):
            differentiable_point(net.params, X, net.config, rng, 1e-3)
        return
    params, _ = differentiable_point(net.params, X, net.config, rng, 1e-3)
    true, bugs = injected_bugs(params, X, y, net.config, lam)
    config, tol = net.config, gc.DEFAULT_TOL[dtype]
    num = numerical_gradients(params, X, y, config, lam, {n: np.arange(p.size) for n, p in params.items()}, HS)
    roundoff = gc.bias_roundoff(params, X, y, config)  # what check_gradients allows a zero bias gradient
    assert all(r.passed for r in judge(true, num, config, tol, roundoff))
    kinds = {bug for _, bug in bugs}
    assert {"sign", "factor 2", "transposed", "missing a sample's term"} <= kinds
    assert ("missing penalty" in kinds) == (lam > 0) and ("missing bn mean term" in kinds) == bool(batch_norm)
    for (name, bug), grads in bugs.items():
        for r in (None, roundoff):
            rows = {r.name: r for r in judge(grads, num, config, tol, r)}
            assert not rows[name].passed, (name, bug, rows[name])


@pytest.mark.parametrize("seed", [[4, 4, 3], [4031, 6]])
def test_a_zero_bias_gradient_is_allowed_the_round_off_of_its_terms(seed):
    """float32, batch norm over 3 rows: the gradient of b2 (exactly 0) is the round-off of a sum
    whose terms are 10-100 times the layer's gradients (inv_std is large for 3 rows); 100 eps of the
    layer's scale failed these correct networks (649 and 104 eps of it), 100 eps of the terms passes."""
    rng = np.random.default_rng(seed)
    net = network(rng, 8, SHAPES[4], True, "float32")
    X, y = data(rng, 3, dtype="float32")
    report = check_gradients(net, X, y, 0.1, rng, hs=HS, max_entries=8)
    assert report.passed, report.format_table()
    roundoff = gc.bias_roundoff(net.params, X, y, net.config)
    assert set(roundoff) == {"b1", "b2", "b3"} and all(v > 0 for v in roundoff.values())


@pytest.mark.parametrize(
    "flags, name, bug",
    [
        (["--hidden", "6,5", "--batch-size", "3", "--batch-norm"], "W1", "sign"),
        (["--hidden", "6,5", "--batch-size", "3", "--batch-norm"], "gamma2", "factor 2"),
        (["--hidden", "6,5", "--batch-size", "3", "--batch-norm"], "b1", "missing bn mean term"),
        (["--hidden", "6,5", "--batch-size", "20", "--batch-norm"], "beta1", "transposed"),
        (["--hidden", "6,5", "--batch-size", "20", "--batch-norm"], "W2", "missing bn projection term"),
        (["--hidden", "6,5", "--batch-size", "20", "--batch-norm", "--lam", "0.1"], "W1", "missing penalty"),
        (["--hidden", "6", "--batch-size", "2"], "W1", "transposed"),
        (["--hidden", "6", "--batch-size", "2"], "b2", "missing a sample's term"),
        (["--hidden", "6", "--batch-size", "20", "--lam", "0.1", "--dtype", "float32"], "W2", "missing penalty"),
        (["--hidden", "6,5", "--batch-size", "3", "--batch-norm", "--dtype", "float32"], "beta2", "sign"),
    ],
)
def test_every_injected_bug_makes_the_cli_fail(monkeypatch, capsys, flags, name, bug):
    """Through ``klayer gradcheck``: the analytic gradients it checks come with one bug."""
    real = gc.loss_and_grads

    def with_bug(params, X, y, config, lam):
        cost, loss, _, stats = real(params, X, y, config, lam)
        return cost, loss, injected_bugs(params, X, y, config, lam)[1][name, bug], stats

    args = ["gradcheck", "--source", "random", "--features", "6", "--h", "1e-6,1e-5", "--max-entries", "20", *flags]
    assert main(args) == 0
    monkeypatch.setattr(gc, "loss_and_grads", with_bug)
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{name} " in out and "FAIL" in out.splitlines()[-2]


def test_a_small_error_fails_in_float64(rng):
    """Not only gross bugs: one parameter off by 1e-5 of itself fails at the default tol."""
    net = network(rng, 8, (7, 6), True)
    X, y = data(rng, 10)
    _, _, grads, _ = loss_and_grads(net.params, X, y, net.config, 0.0)
    grads["gamma1"] = grads["gamma1"] * (1 + 1e-5)
    report = check_gradients(net, X, y, 0.0, rng, hs=HS, max_entries=8, grads=grads)
    assert report.failures() == ["gamma1"] and report.verdict() == "FAIL (gamma1)"


def test_float32_differences_are_judged_by_the_same_rule(rng):
    """Centred differences in float32 resolve far less; the check says so instead of passing."""
    net = network(rng, 8, (6,), True, "float32")
    X, y = data(rng, 10, dtype="float32")
    kwargs = {"numeric_dtype": "float32", "max_entries": 10}
    report = check_gradients(net, X, y, 0.0, rng, tol=0.05, **kwargs)
    assert report.passed, report.format_table()
    assert report.hs == gc.DEFAULT_HS["float32"] and report.settings["dtype"] == "float32"
    wide = network(rng, 8, (6,), True)  # float64, so that only the differences carry float32 round-off
    coarse = check_gradients(wide, X.astype(np.float64), y, 0.0, rng, tol=0.05, **kwargs)
    assert coarse.settings["dtype"] == "float64 (differences in float32)"
    assert min(r.resolution for r in coarse.rows if r.kind == "rel") > 1e-6  # float64 differences resolve ~1e-9
    strict = check_gradients(net, X, y, 0.0, rng, tol=1e-6, **kwargs)
    assert not strict.passed and any(r.status == "noisy" for r in strict.rows)
    _, _, grads, _ = loss_and_grads(net.params, X, y, net.config, 0.0)
    grads["W2"] = -grads["W2"]
    assert not check_gradients(net, X, y, 0.0, rng, tol=0.05, grads=grads, **kwargs).passed


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_prints_the_table_and_passes(capsys):
    args = ["gradcheck", "--hidden", "8,6", "--batch-norm", "--lam", "0.1", "--source", "random"]
    assert main([*args, "--features", "6", "--max-entries", "10", "--h", "1e-6,1e-5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "data: random Gaussian data"
    assert out[1] == "hidden=[8, 6], batch_norm=True, d=6, batch=10, lam=0.1, dtype=float64"
    assert out[2].split()[:5] == ["param", "err", "checked", "h=1e-06", "h=1e-05"] and out[2].split()[-1] == "bound"
    rows = {line.split()[0]: line.split() for line in out[4:14]}
    assert rows["b1"][1] == "abs" and rows["gamma1"][1] == "rel" and rows["W1"][2] == "10/48"
    assert out[-2].endswith(": PASS") and sum("*" in c for c in rows["W3"]) == 1


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--seed", "-1"),
        ("--max-entries", "0"),
        ("--features", "-3"),
        ("--batch-size", "0"),
        ("--batch-size", "2.5"),
        ("--tol", "0"),
        ("--tol", "nan"),
        ("--h", "1e-5,-1e-4"),
        ("--h", "inf"),
        ("--h", "1e-5,x"),
        ("--lam", "-0.1"),
        ("--lam", "inf"),
    ],
)
def test_cli_rejects_numbers_out_of_range(capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["gradcheck", "--source", "random", flag, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"klayer gradcheck: error: argument {flag}")


def test_cli_errors_are_one_line_and_name_existing_flags(capsys):
    import klayer.cli as cli

    assert main(["gradcheck", "--source", "random", "--features", "5000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klayer: error:") and err.count("\n") == 1 and "3072" in err
    gradcheck_parser = cli.build_parser()._subparsers._group_actions[0].choices["gradcheck"]
    options = {o for a in gradcheck_parser._actions for o in a.option_strings}
    suggested = set(re.findall(r"--[a-z][a-z-]*", inspect.getsource(gc) + inspect.getsource(cli.cmd_gradcheck)))
    assert {"--batch-size", "--features", "--seed", "--tol", "--h"} <= suggested <= options


# -- rows for a check ------------------------------------------------------------------------------
def test_sample_rows_fall_back_to_gaussian_data(tmp_path):
    X, y, src = sample_rows(tmp_path, 7, 5, np.random.default_rng(3))
    assert X.shape == (7, 5) and X.flags.c_contiguous and y.shape == (7,) and src == "random Gaussian data"
    X2, y2, _ = sample_rows(tmp_path, 7, 5, np.random.default_rng(3), source="random")
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and 0 <= y.min() and y.max() < 10
    assert sample_rows(tmp_path, 2, None, np.random.default_rng(0))[0].shape == (2, 3072)
    with pytest.raises(DataError):
        sample_rows(tmp_path, 7, 5, np.random.default_rng(3), source="cifar")
    for n, d in ((0, 5), (3, 0), (3, 3073)):
        with pytest.raises(ConfigError):
            sample_rows(tmp_path, n, d, np.random.default_rng(3))


def test_sample_rows_are_the_first_standardized_cifar_training_rows(tmp_path):
    """The first training rows of split "all", standardized with that split's mean and std."""
    from .test_data import fake_batches, write_layout

    batches = fake_batches(np.random.default_rng(0), n=1010)  # 5050 training images, 5000 of them validation
    write_layout(tmp_path, "python", batches)
    X, y, src = sample_rows(tmp_path, 4, 10, np.random.default_rng(0))
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])[:50].astype(np.float64)
    expected = (train[:4, :10] - train[:, :10].mean(axis=0)) / train[:, :10].std(axis=0)
    assert src.startswith("CIFAR-10") and X.shape == (4, 10) and X.dtype == np.float64
    np.testing.assert_allclose(X, expected, rtol=1e-12)
    assert y.tolist() == batches["data_batch_1"][1][:4].tolist()
    with pytest.raises(ConfigError, match="50 of 3072"):
        sample_rows(tmp_path, 51, None, np.random.default_rng(0))


# -- the suite's study -----------------------------------------------------------------------------
def test_suite_study_records_a_refused_table(tmp_path):
    import json

    from klayer.suite.report import _Doc, _gradcheck
    from klayer.suite.studies import _Context, _study_gradcheck

    study = {"depths": [2], "batch_sizes": [2, 3], "lams": [0.0], "hs": [1e-6, 1e-5], "features": 5, "max_entries": 4}
    _study_gradcheck(study, _Context(1, tmp_path, 1, None, tmp_path), tmp_path)
    tables = json.loads((tmp_path / "gradcheck.json").read_text())["tables"]
    refused = [t for t in tables if t["refused"]]
    assert len(tables) == 4 and [(t["batch_norm"], t["batch"]) for t in refused] == [(True, 2)]
    assert "--batch-size 3" in refused[0]["refused"] and refused[0]["rows"] == [] and not refused[0]["passed"]
    assert all(t["passed"] for t in tables if not t["refused"])
    row = tables[-1]["rows"][0]
    assert set(row) >= {"errors", "best", "bound", "status", "kind"}
    doc = _Doc(tmp_path)
    _gradcheck(doc, tmp_path, study, {})
    text = doc.markdown()
    assert "| 2 | yes | 2 | 0.0 |  |  | refused |" in text and "| 2 | yes | 3 | 0.0 | " in text
    assert "Batch norm over 2 samples is refused" in text
