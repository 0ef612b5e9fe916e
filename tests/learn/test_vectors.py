"""Reference vectors: the right numbers, every fixed name, both layouts, three formats, the cases."""

import json

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klayer.errors import DataError, KlayerError
from klayer.learn import CASES, case_inputs, compute, quantity_names, read_values, reference_vectors, write_vectors
from klayer.learn.check import DEFAULT_TOL
from klayer.learn.vectors import describe_name, split_name, to_layout
from klayer.network import Network, NetworkConfig, loss_and_grads

SMALL = [name for name, c in CASES.items() if c.source == "random"]


def fixed_names(case):
    """The names the issue fixes, for a case (the interface students' scripts rely on)."""
    c = CASES[case]
    k = c.n_layers
    names = {"X", "Y", "y", "P", "loss", "cost", "lam", "eta", "eps", "bn_alpha"}
    for l in range(1, k + 1):
        names |= {f"W{l}", f"b{l}", f"S{l}", f"G{l}", f"grad_W{l}", f"grad_b{l}", f"W{l}_next", f"b{l}_next"}
    for l in range(1, k):
        names.add(f"H{l}")
        if c.batch_norm:
            names |= {f"gamma{l}", f"beta{l}", f"mu{l}", f"var{l}", f"S_hat{l}", f"S_tilde{l}"}
            names |= {f"grad_gamma{l}", f"grad_beta{l}", f"mu_av{l}", f"var_av{l}", f"gamma{l}_next", f"beta{l}_next"}
    return names


@pytest.mark.parametrize("case", SMALL)
def test_every_fixed_name_is_written_in_the_order_of_computation(case):
    v = compute(case)
    assert fixed_names(case) <= set(v)
    assert list(v) == quantity_names(case)
    order = list(v)
    k = CASES[case].n_layers
    assert order.index("S1") < order.index(f"S{k}") < order.index("P") < order.index("loss") < order.index("cost")
    assert (
        order.index("cost") < order.index(f"G{k}") < order.index("G1") < order.index("W1_next") < order.index("P_eval")
    )


@pytest.mark.parametrize("case", SMALL)
def test_cost_and_gradients_are_klayers_network(case):
    c = CASES[case]
    v = compute(case)
    config = NetworkConfig(c.d, c.hidden, c.C, c.batch_norm, eps=c.eps)
    params = {p: v[p] for p in config.param_names()}
    cost, loss, grads, stats = loss_and_grads(params, v["X"], v["y"], config, c.lam)
    assert float(v["cost"]) == pytest.approx(float(cost), rel=1e-13)
    assert float(v["loss"]) == pytest.approx(float(loss), rel=1e-13)
    for p, g in grads.items():
        np.testing.assert_allclose(v[f"grad_{p}"], g, rtol=1e-12, atol=1e-15)
    for p, s in stats.items():  # mu1, var1, ...
        np.testing.assert_allclose(v[p], s, rtol=1e-13)


@pytest.mark.parametrize("case", SMALL)
def test_gradients_and_G_against_torch_autograd(case):
    torch = pytest.importorskip("torch")
    c = CASES[case]
    v = compute(case)
    t = {p: torch.tensor(v[p], requires_grad=True) for p in c.param_names()}
    H = torch.tensor(v["X"])
    S_all = {}
    for l in range(1, c.n_layers + 1):
        S = H @ t[f"W{l}"].T + t[f"b{l}"]
        S.retain_grad()
        S_all[l] = S
        if l == c.n_layers:
            break
        Z = S
        if c.batch_norm:
            mu, var = S.mean(0), S.var(0, unbiased=False)
            Z = t[f"gamma{l}"] * (S - mu) / torch.sqrt(var + c.eps) + t[f"beta{l}"]
        H = torch.relu(Z)
    loss = torch.nn.functional.cross_entropy(S, torch.tensor(v["y"]))
    cost = loss + c.lam * sum((t[f"W{l}"] ** 2).sum() for l in range(1, c.n_layers + 1))
    cost.backward()
    assert float(v["cost"]) == pytest.approx(cost.item(), rel=1e-12)
    for p in c.param_names():
        np.testing.assert_allclose(v[f"grad_{p}"], t[p].grad.numpy(), rtol=1e-10, atol=1e-14)
    for l, S in S_all.items():
        np.testing.assert_allclose(v[f"G{l}"], S.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("case", ["3layer_bn", "2layer_bn"])
def test_forward_quantities_follow_their_definitions(case):
    c = CASES[case]
    v = compute(case)
    for l in range(1, c.n_layers):
        S = v[f"S{l}"]
        np.testing.assert_allclose(v[f"mu{l}"], S.mean(axis=0))
        np.testing.assert_allclose(v[f"var{l}"], S.var(axis=0))  # biased, 1/n
        np.testing.assert_allclose(v[f"S_hat{l}"], (S - S.mean(0)) / np.sqrt(S.var(0) + c.eps))
        np.testing.assert_allclose(v[f"S_tilde{l}"], v[f"gamma{l}"] * v[f"S_hat{l}"] + v[f"beta{l}"], atol=1e-15)
        np.testing.assert_array_equal(v[f"H{l}"], np.maximum(v[f"S_tilde{l}"], 0))
    np.testing.assert_allclose(v["P"].sum(axis=1), 1)
    np.testing.assert_allclose(v[f"G{c.n_layers}"], (v["P"] - v["Y"]) / c.n)


@pytest.mark.parametrize("case", SMALL)
def test_the_step_the_running_averages_and_evaluation_mode(case):
    c = CASES[case]
    v = compute(case)
    for p in c.param_names():
        np.testing.assert_allclose(v[f"{p}_next"], v[p] - c.eta * v[f"grad_{p}"])
    state = {}
    for l in range(1, c.n_layers if c.batch_norm else 1):
        # from mu_av = +-0.2 ... -+0.2 and var_av = 1 ... 0.3 (reversed in even layers): 0.9 * init + 0.1 * batch
        m = c.hidden[l - 1]
        np.testing.assert_allclose(v[f"mu_av{l}_init"], 0.2 * (-1) ** l * np.linspace(-1, 1, m), rtol=1e-12)
        assert np.all(v[f"mu_av{l}_init"] != 0)
        var_init = 0.3 ** (np.arange(m) / (m - 1))
        np.testing.assert_allclose(v[f"var_av{l}_init"], var_init if l % 2 else var_init[::-1], rtol=1e-12)
        np.testing.assert_allclose(v[f"mu_av{l}"], 0.9 * v[f"mu_av{l}_init"] + 0.1 * v[f"mu{l}"])
        np.testing.assert_allclose(v[f"var_av{l}"], 0.9 * v[f"var_av{l}_init"] + 0.1 * v[f"var{l}"])
        state[f"mu{l}"], state[f"var{l}"] = v[f"mu_av{l}"], v[f"var_av{l}"]
    after = Network(
        NetworkConfig(c.d, c.hidden, c.C, c.batch_norm, eps=c.eps), {p: v[f"{p}_next"] for p in c.param_names()}, state
    )
    np.testing.assert_allclose(v["P_eval"], after.predict_proba(v["X"]), rtol=1e-12)


@pytest.mark.parametrize("case", SMALL)
def test_evaluation_mode_layer_by_layer(case):
    """S_eval{l} and S_hat_eval{l}: the network after the step, normalized with the updated running averages."""
    c, v = CASES[case], compute(case)
    names = [q for q in v if "_eval" in q and q != "P_eval"]
    if not c.batch_norm:
        assert names == []
        return
    assert names == [f"{s}{l}" for l in range(1, c.n_layers) for s in ("S_eval", "S_hat_eval")]
    assert list(v)[-len(names) - 1 :] == [*names, "P_eval"]
    H = v["X"]
    for l in range(1, c.n_layers):
        np.testing.assert_allclose(v[f"S_eval{l}"], H @ v[f"W{l}_next"].T + v[f"b{l}_next"], rtol=1e-12, atol=1e-14)
        S_hat = (v[f"S_eval{l}"] - v[f"mu_av{l}"]) / np.sqrt(v[f"var_av{l}"] + c.eps)
        np.testing.assert_allclose(v[f"S_hat_eval{l}"], S_hat, rtol=1e-12, atol=1e-14)
        H = np.maximum(v[f"gamma{l}_next"] * S_hat + v[f"beta{l}_next"], 0)
    s = H @ v[f"W{c.n_layers}_next"].T + v[f"b{c.n_layers}_next"]
    np.testing.assert_allclose(v["P_eval"], np.exp(s) / np.exp(s).sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("case", ["2layer_bn", "3layer_bn"])
def test_eps_matters_in_evaluation_mode(case):
    """The running variances start below 1, so that eps left out shows in P_eval too."""
    c = CASES[case]
    v = compute(case)
    state = {f"{s}{l}": v[f"{s}_av{l}"] for l in range(1, c.n_layers) for s in ("mu", "var")}
    params = {p: v[f"{p}_next"] for p in c.param_names()}
    no_eps = Network(NetworkConfig(c.d, c.hidden, c.C, True, eps=1e-300), params, state).predict_proba(v["X"])
    assert np.abs(no_eps - v["P_eval"]).max() / np.abs(v["P_eval"]).max() > 4 * DEFAULT_TOL


@pytest.mark.parametrize("case", SMALL)
def test_cases_are_deterministic_and_every_formula_leaves_a_trace(case):
    c = CASES[case]
    a, b = compute(case), compute(case)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert {c.n} & {c.d, c.C, *c.hidden} == set()  # n differs from every width: the layout shows in the shapes
    assert c.eps >= 1e-3 and c.lam > 0 and c.eta > 0
    for p in c.param_names():  # biases, gamma and beta are not at their initial 0, 1, 0
        if p.startswith(("b", "beta")):
            assert np.count_nonzero(a[p]) >= len(a[p]) - 1
        if p.startswith("gamma"):
            assert np.count_nonzero(a[p] - 1) == len(a[p])


@pytest.mark.parametrize("case", SMALL)
def test_relu_inputs_are_exactly_zero_for_the_dead_unit_and_far_from_zero_elsewhere(case):
    c = CASES[case]
    v = compute(case)
    for l in range(1, c.n_layers):
        Z = v[f"S_tilde{l}"] if c.batch_norm else v[f"S{l}"]
        if l == 1:
            np.testing.assert_array_equal(Z[:, 0], 0)  # the derivative of ReLU at 0 matters here
            Z = Z[:, 1:]
        assert np.abs(Z).min() > 1e-3  # float32 round-off cannot flip a ReLU


def test_distinct_cases_have_distinct_data():
    xs = [case_inputs(name)["X"] for name in SMALL]
    assert all(not np.array_equal(xs[0], x) for x in xs[1:])


def test_assignment_layout_has_samples_in_columns():
    v = reference_vectors("3layer_bn", layout="assignment")
    k = reference_vectors("3layer_bn")
    assert v["X"].shape == (10, 5) and v["Y"].shape == (10, 5) and v["S1"].shape == (8, 5) and v["P"].shape == (10, 5)
    assert v["b1"].shape == (8, 1) and v["mu1"].shape == (8, 1) and v["grad_gamma2"].shape == (8, 1)
    assert v["W1"].shape == (8, 10) and v["grad_W3"].shape == (10, 8) and v["y"].shape == (5,)
    np.testing.assert_array_equal(v["S_hat2"], k["S_hat2"].T)
    np.testing.assert_array_equal(v["W2"], k["W2"])
    # S = W X + b in columns
    np.testing.assert_allclose(v["S1"], v["W1"] @ v["X"] + v["b1"])
    with pytest.raises(KlayerError, match="layout"):
        to_layout(k, "matlab")


@pytest.mark.parametrize("layout", ["klayer", "assignment"])
@pytest.mark.parametrize("ext", [".npz", ".mat", ".json"])
def test_files_round_trip(tmp_path, ext, layout):
    path = tmp_path / f"ref{ext}"
    written = write_vectors("2layer_bn", path, layout)
    back = read_values(path)
    assert back["case_name"] == "2layer_bn" and back["layout"] == layout
    for name, a in written.items():
        b = np.asarray(back[name])
        if ext == ".mat" and a.ndim < 2:  # MATLAB has no 1-D or 0-D arrays: rows and 1 x 1
            b = b.reshape(a.shape)
        assert b.shape == a.shape, name
        np.testing.assert_array_equal(b, a)


def test_mat_in_assignment_layout_reads_in_scipy_as_matlab_sees_it(tmp_path):
    write_vectors("3layer_bn", tmp_path / "ref.mat", "assignment")
    m = scipy.io.loadmat(tmp_path / "ref.mat")
    assert m["X"].shape == (10, 5) and m["b1"].shape == (8, 1) and m["lam"].shape == (1, 1)
    assert m["y"].dtype == np.float64 and m["y"].shape == (1, 5)
    np.testing.assert_allclose(m["S1"], m["W1"] @ m["X"] + m["b1"])


def test_json_is_plain_numbers_and_lists(tmp_path):
    write_vectors("2layer", tmp_path / "ref.json", "assignment")
    doc = json.loads((tmp_path / "ref.json").read_text())
    assert isinstance(doc["loss"], float) and isinstance(doc["X"], list) and len(doc["X"]) == 10
    assert doc["y"] == [int(i) for i in compute("2layer")["y"]]


def test_unknown_format_and_case(tmp_path):
    with pytest.raises(KlayerError, match="unknown format"):
        write_vectors("2layer", tmp_path / "ref.csv")
    with pytest.raises(KlayerError, match="unknown case 'nope'"):
        compute("nope")


def test_names_are_described_by_base_and_layer():
    assert split_name("grad_W2") == ("grad_W", 2, "")
    assert split_name("W1_next") == ("W", 1, "_next")
    assert split_name("mu_av2_init") == ("mu_av", 2, "_init")
    assert split_name("P_eval") == ("P_eval", None, "")
    assert describe_name("S_hat2") == "S_hat in layer 2"
    assert describe_name("cost") == "cost"


def test_small_cases_never_load_cifar(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("CIFAR-10 was loaded")

    monkeypatch.setattr("klayer.data.cifar10.load_cifar10", refuse)
    from klayer.cli import main
    from klayer.learn import check

    assert main(["vectors", "--list"]) == 0
    for name in SMALL:
        write_vectors(name, tmp_path / f"{name}.npz")
        values = dict(np.load(tmp_path / f"{name}.npz"))
        values.pop("case_name")
        assert check(values).case == name  # inferred from the shapes, without loading CIFAR-10


def test_cifar_case_is_the_first_five_standardized_images(cifar_raw):
    X, y = cifar_raw.batches["data_batch_1"]
    v = case_inputs("cifar_3layer_bn")
    Xf = X.astype(np.float64)
    expected = (Xf[:5] - Xf.mean(axis=0)) / Xf.std(axis=0)
    np.testing.assert_allclose(v["X"], expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(v["y"], y[:5])
    assert v["X"].shape == (5, 3072) and v["W1"].shape == (50, 3072)


def test_unreadable_files_are_one_data_error(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        read_values(tmp_path / "bad.json")
    with pytest.raises(DataError, match="no such file"):
        read_values(tmp_path / "none.npz")
    with pytest.raises(DataError, match="unknown format"):
        read_values(tmp_path / "x.txt")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), ext=st.sampled_from([".npz", ".mat", ".json"]))
def test_fuzz_readers_raise_only_data_errors(tmp_path, data, ext):
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(data)
    try:
        read_values(path)
    except DataError:
        pass
