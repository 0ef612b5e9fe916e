"""The compiled kernels (klayer.kernels, numba) against the numpy reference.

The forward/backward step equals klayer.network.data_loss_and_grads up to float rounding (its
batch sums are float64, the reference's pairwise), at tolerances tight enough that a wrong sign,
a missing factor or the wrong statistics fail: float64 agrees to 1e-12. The mini-batch gather and
the SGD updates give the reference's bits. The trainer uses them by default when numba imports,
the reference with KLAYER_KERNELS=numpy or with dropout, and says so in its checkpoints.
"""

import sys

import numpy as np
import pytest

from klayer import kernels
from klayer.config import ExperimentConfig, ModelConfig, TrainConfig
from klayer.errors import ConfigError
from klayer.network import Network, NetworkConfig, data_loss_and_grads, stack_networks
from klayer.runs.folder import run_results
from klayer.training import Trainer
from klayer.training.optim import sgd_update
from tests.conftest import tiny_dataset

numba = pytest.importorskip("numba")
from klayer.kernels import step  # noqa: E402


def same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def stack(rng, config, K):
    """K networks with gamma, beta and biases away from their initial values."""
    nets = [Network.init(config, np.random.default_rng(s)) for s in range(K)]
    st = stack_networks(nets)
    for n, p in st.params.items():
        if n.startswith("gamma"):
            p[...] = rng.uniform(0.5, 1.5, p.shape)
        elif n.startswith(("beta", "b")):
            p[...] = rng.normal(0, 0.3, p.shape)
    return st


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_compiled_step_equals_the_reference(rng, dtype, batch_norm, K, smoothing):
    config = NetworkConfig(24, (16, 12), 7, batch_norm, dtype=dtype)
    st = stack(rng, config, K)
    X = rng.standard_normal((30, 24)).astype(dtype)
    y = rng.integers(0, 7, 30)
    scale = rng.uniform(0.5, 2.0, K).astype(dtype)  # per-network learning rates
    before = {n: p.copy() for n, p in st.params.items()}
    ref_loss, ref_grads, ref_stats = data_loss_and_grads(st.params, X, y, config, scale, None, smoothing)
    loss, grads, stats = step.data_loss_and_grads(st.params, X, y, config, scale, None, smoothing)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    assert loss.dtype == ref_loss.dtype and loss.shape == (K,)
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    assert list(grads) == list(ref_grads)  # the same names in the same order
    for n, g in ref_grads.items():
        assert grads[n].shape == g.shape and grads[n].dtype == g.dtype, n
        if batch_norm and n[0] == "b" and n[1:].isdigit() and n != "b3":
            # the bias in front of batch norm: zero up to rounding on both sides, where rounding
            # is relative to the layer's other gradients
            bound = 10 * rtol * np.abs(ref_grads[f"beta{n[-1]}"]).max()
            assert np.abs(grads[n]).max() <= bound and np.abs(g).max() <= bound, n
            continue
        np.testing.assert_allclose(grads[n], g, rtol=rtol, atol=rtol * np.abs(g).max(), err_msg=n)
    assert stats.keys() == ref_stats.keys()
    for n in stats:
        np.testing.assert_allclose(stats[n], ref_stats[n], rtol=rtol, atol=rtol)
    assert all(same_bits(st.params[n], before[n]) for n in before)


def test_compiled_step_is_a_gradient(rng):
    """Independently of the reference: the compiled gradient of the loss matches central
    differences (float64, a random direction per parameter)."""
    config = NetworkConfig(10, (8, 6), 4, True, dtype="float64")
    st = stack(rng, config, 2)
    X, y = rng.standard_normal((12, 10)), rng.integers(0, 4, 12)
    scale = np.array([1.0, 0.5])
    _, grads, _ = step.data_loss_and_grads(st.params, X, y, config, scale, None, 0.05)
    for n, p in st.params.items():
        d = rng.standard_normal(p.shape)
        h = 1e-6
        p += h * d
        up = step.data_loss_and_grads(st.params, X, y, config, None, None, 0.05)[0]
        p -= 2 * h * d
        down = step.data_loss_and_grads(st.params, X, y, config, None, None, 0.05)[0]
        p += h * d
        numeric = (up - down) / (2 * h)
        analytic = (grads[n] * d).reshape(2, -1).sum(axis=1) / scale
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=n)


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("where", ["W1", "W2", "X"])
def test_non_finite_values_reach_the_loss_as_in_the_reference(rng, batch_norm, where):
    """A NaN weight or input makes the loss NaN (so that the trainer stops or drops that
    network), in the network it belongs to only; an overflow to inf does the same."""
    config = NetworkConfig(12, (8, 6), 4, batch_norm, dtype="float32")
    st = stack(rng, config, 2)
    X, y = rng.standard_normal((10, 12)).astype("float32"), rng.integers(0, 4, 10)
    for bad in (np.nan, np.inf):
        if where == "X":
            X2 = X.copy()
            X2[3, 5] = bad
            params = st.params
        else:
            X2, params = X, {n: p.copy() for n, p in st.params.items()}
            params[where][1, 2, 3] = bad
        with np.errstate(all="ignore"):
            ref = data_loss_and_grads(params, X2, y, config)[0]
            got = step.data_loss_and_grads(params, X2, y, config)[0]
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
        assert not np.isfinite(got[1]) and (where == "X" or np.isfinite(got[0]))


def test_compiled_step_refuses_dropout_masks(rng):
    config = NetworkConfig(6, (4,), 3, False, dropout=0.5)
    st = stack(rng, config, 1)
    with pytest.raises(ValueError, match="dropout"):
        step.data_loss_and_grads(st.params, np.ones((4, 6)), np.zeros(4, int), config, None, {"H1": np.ones((1, 4, 4))})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gather_features_gives_the_bits_of_gather_then_standardize(rng, dtype):
    X = rng.integers(0, 256, (50, 33)).astype(np.uint8)
    mean, std = X.mean(axis=0), X.std(axis=0) + 0.5
    idx = rng.permutation(50)[:17]
    m, inv = mean.astype(dtype), (1.0 / std).astype(dtype)
    ref = (X[idx].astype(dtype) - m) * inv
    out = np.full((17, 33), np.nan, dtype)
    assert step.gather_features(X, idx, m, inv, out) is out
    assert same_bits(out, ref)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_sgd_update_gives_the_references_bits(rng, momentum, nesterov, dtype):
    config = NetworkConfig(20, (9,), 5, True, dtype=dtype)
    st = stack(rng, config, 3)
    grads = {n: rng.standard_normal(p.shape).astype(dtype) * 1e-2 for n, p in st.params.items()}
    state = {f"v.{n}": rng.standard_normal(p.shape).astype(dtype) * 1e-2 for n, p in st.params.items()}
    eta, lam = np.array([0.1, 0.01, 0.05], dtype), np.array([1e-3, 0.0, 5e-2], dtype)
    p_ref, s_ref = {n: p.copy() for n, p in st.params.items()}, {n: v.copy() for n, v in state.items()}
    for _ in range(3):
        g = {n: v.copy() for n, v in grads.items()}
        sgd_update(p_ref, {n: v.copy() for n, v in g.items()}, s_ref, eta, lam, momentum, nesterov)
        step.sgd_update(st.params, g, state, eta, lam, momentum, nesterov)
    for n in p_ref:
        assert same_bits(st.params[n], p_ref[n]), n
        if momentum:
            assert same_bits(state[f"v.{n}"], s_ref[f"v.{n}"]), n


def test_a_workspace_is_reused_and_follows_a_change_of_shape(rng):
    """With a workspace the step's arrays are allocated once; a new batch size or stack gets
    new ones, and the numbers are always those of a fresh call."""
    config = NetworkConfig(24, (16, 12), 7, True, dtype="float64")
    st = stack(rng, config, 2)
    work = step.Workspace()
    X, y = rng.standard_normal((30, 24)), rng.integers(0, 7, 30)
    first = step.data_loss_and_grads(st.params, X, y, config, work=work)[1]
    kept = {n: g.copy() for n, g in first.items()}
    previous, last_rows = first, 30
    for n_rows in (30, 11, 11, 30):
        Xb, yb = rng.standard_normal((n_rows, 24)), rng.integers(0, 7, n_rows)
        loss, grads, _ = step.data_loss_and_grads(st.params, Xb, yb, config, work=work)
        fresh_loss, fresh, _ = step.data_loss_and_grads(st.params, Xb, yb, config)
        assert same_bits(loss, fresh_loss)
        assert all(same_bits(grads[n], fresh[n]) for n in fresh)
        assert (grads["W2"] is previous["W2"]) == (n_rows == last_rows)
        previous, last_rows = grads, n_rows
    assert not all(same_bits(first[n], kept[n]) for n in kept)  # overwritten by the next call


def test_the_compiled_update_follows_new_parameter_arrays(rng):
    """The update keeps views of the last parameters it saw: new arrays must be updated, and
    the old ones left alone."""
    config = NetworkConfig(10, (6,), 3, True, dtype="float64")
    st = stack(rng, config, 1)
    eta, lam = np.array([0.1]), np.array([0.01])
    grads = {n: np.full(p.shape, 0.5) for n, p in st.params.items()}
    old = st.params
    step.sgd_update(old, grads, {}, eta, lam)
    new = {n: p.copy() for n, p in old.items()}
    old_after = {n: p.copy() for n, p in old.items()}
    ref = {n: p.copy() for n, p in new.items()}
    sgd_update(ref, {n: g.copy() for n, g in grads.items()}, {}, eta, lam)
    step.sgd_update(new, grads, {}, eta, lam)
    assert all(same_bits(new[n], ref[n]) for n in ref)
    assert all(same_bits(old[n], old_after[n]) for n in old)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("K", [1, 3])
def test_compiled_evaluation_equals_the_reference(rng, dtype, batch_norm, K):
    """Network.evaluate with the compiled chunk: the same accuracy (the same scores and the
    first largest one, as argmax), the same loss up to rounding, chunks of any length."""
    config = NetworkConfig(20, (16, 8), 5, batch_norm, dtype=dtype)
    st = stack(rng, config, K)
    for p in st.bn_state.values():
        p[...] = rng.uniform(0.2, 1.0, p.shape)
    X, y = rng.integers(0, 256, (257, 20)).astype(np.uint8), rng.integers(0, 5, 257)
    std = (X.mean(axis=0), 1 / (X.std(axis=0) + 1))
    ref = st.evaluate(X, y, 0.01, 100, standardize=std)
    got = st.evaluate(X, y, 0.01, 100, standardize=std, chunk_fn=step.eval_chunk)
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_array_equal(got["accuracy"], ref["accuracy"])
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=rtol)
    np.testing.assert_allclose(got["cost"], ref["cost"], rtol=rtol)
    # ties (all scores equal: the first class) and NaN scores (argmax points at the first NaN)
    for n, p in st.params.items():
        if n.startswith(("W", "b", "beta")):
            p[...] = 0
    st.params["W1"][-1, 0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        ref = st.evaluate(X, y, 0.0, 100, standardize=std)
        got = st.evaluate(X, y, 0.0, 100, standardize=std, chunk_fn=step.eval_chunk)
    np.testing.assert_array_equal(got["accuracy"], ref["accuracy"])
    np.testing.assert_array_equal(np.isnan(got["loss"]), np.isnan(ref["loss"]))
    assert np.isnan(got["loss"][-1]) and ref["accuracy"][0] == pytest.approx(np.mean(y == 0))


def test_compiled_evaluation_needs_folded_batch_norm(rng):
    config = NetworkConfig(6, (4,), 3, True)
    with pytest.raises(ValueError, match="folded"):
        step.eval_chunk(stack(rng, config, 1).params, np.ones((4, 6)), np.zeros(4, int), config)


def _configs(K=1, **train):
    return [
        ExperimentConfig(
            name=f"k{i}",
            model=ModelConfig(hidden=[10, 8], batch_norm=True),
            train=TrainConfig(
                batch_size=20, n_s=15, n_cycles=1, lam=1e-3 * (i + 1), seed=i, shuffle_seed=0,
                dtype="float64", checkpoint_every=0, **train,
            ),
        )
        for i in range(K)
    ]  # fmt: skip


def _train(monkeypatch, which, K=2, **train):
    monkeypatch.setenv(kernels.ENV, which)
    data = tiny_dataset(np.random.default_rng(0), n_train=300, d=12, C=4)
    data.X_train = np.clip(np.round(data.X_train * 40 + 128), 0, 255).astype(np.uint8)  # raw bytes
    data.mean, data.std = data.X_train.mean(axis=0), data.X_train.std(axis=0) + 1.0
    tr = Trainer(_configs(K, **train), data)
    tr.run(progress=False)
    return tr


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_training_with_the_kernels_follows_the_reference(monkeypatch, momentum):
    a = _train(monkeypatch, "numba", momentum=momentum, nesterov=bool(momentum))
    b = _train(monkeypatch, "numpy", momentum=momentum, nesterov=bool(momentum))
    assert (a.kernels, b.kernels) == ("numba", "numpy")
    assert run_results(a, 0, 1.0)["kernels"] == "numba"  # results.json says which
    assert a.history[0][-1]["step"] == 30 and len(a.history) == 2
    for ha, hb in zip(a.history, b.history, strict=True):
        for ra, rb in zip(ha, hb, strict=True):
            for key in ("train_loss", "val_loss", "train_cost"):
                assert ra[key] == pytest.approx(rb[key], rel=1e-9), key
            assert (ra["train_accuracy"], ra["val_accuracy"]) == (rb["train_accuracy"], rb["val_accuracy"])
    for n, p in a.stack.params.items():
        np.testing.assert_allclose(p, b.stack.params[n], rtol=1e-8, atol=1e-10)


def test_dropout_runs_use_the_reference(monkeypatch):
    assert _train(monkeypatch, "auto", K=1).kernels == "numba"
    monkeypatch.setenv(kernels.ENV, "auto")
    data = tiny_dataset(np.random.default_rng(0))
    cfg = _configs(1)[0]
    cfg = cfg.replace(model={"dropout": 0.2})
    assert Trainer([cfg], data).kernels == "numpy"


def test_the_environment_variable_chooses_and_is_checked(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "numpy")
    assert kernels.name() == "numpy" and kernels.load() is None
    monkeypatch.setenv(kernels.ENV, "NUMBA")
    assert kernels.name() == "numba"
    monkeypatch.setenv(kernels.ENV, "cuda")
    with pytest.raises(ConfigError, match="KLAYER_KERNELS='cuda'"):
        kernels.load()


def test_without_numba_auto_falls_back_and_numba_is_an_error(monkeypatch):
    for mod in [m for m in sys.modules if m == "klayer.kernels.step" or m == "klayer.kernels.compiled"]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delattr(kernels, "step", raising=False)
    monkeypatch.delattr(kernels, "compiled", raising=False)
    monkeypatch.setenv(kernels.ENV, "auto")
    assert kernels.load() is None and kernels.name() == "numpy"
    monkeypatch.setenv(kernels.ENV, "numba")
    with pytest.raises(ConfigError, match="numba does not import"):
        kernels.load()


def test_a_checkpoint_says_which_kernels_and_resuming_with_others_warns(monkeypatch):
    a = _train(monkeypatch, "numba", K=1)
    tensors, meta = a.state()
    monkeypatch.setenv(kernels.ENV, "numpy")
    data = tiny_dataset(np.random.default_rng(0), n_train=300, d=12, C=4)
    data.X_train = np.clip(np.round(data.X_train * 40 + 128), 0, 255).astype(np.uint8)
    data.mean, data.std = data.X_train.mean(axis=0), data.X_train.std(axis=0) + 1.0
    b = Trainer(_configs(1), data)
    with pytest.warns(UserWarning, match="numba kernels, this run uses numpy"):
        b.load_state(tensors, meta)
    monkeypatch.setenv(kernels.ENV, "numba")
    c = Trainer(_configs(1), data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.load_state(tensors, meta)


@pytest.mark.parametrize("which", ["numba", "numpy"])
def test_a_resumed_trainer_continues_bitwise_with_either_kernels(monkeypatch, which):
    """Stopped after 17 of 30 updates, saved with Trainer.state and restored into a new trainer,
    the run ends with the same bits as one trained without stopping (momentum, a stack of 2)."""
    monkeypatch.setenv(kernels.ENV, which)

    def data():
        d = tiny_dataset(np.random.default_rng(0), n_train=300, d=12, C=4)
        d.X_train = np.clip(np.round(d.X_train * 40 + 128), 0, 255).astype(np.uint8)
        d.mean, d.std = d.X_train.mean(axis=0), d.X_train.std(axis=0) + 1.0
        return d

    cfgs = _configs(2, momentum=0.9, nesterov=True)
    whole = Trainer(cfgs, data())
    whole.run(progress=False)
    first = Trainer(cfgs, data())
    first.init_bn_state()
    first.evaluate()
    for _ in range(17):
        first.step()
    tensors, meta = first.state()
    tensors = {k: v.copy() for k, v in tensors.items()}
    second = Trainer(cfgs, data())
    second.load_state(tensors, meta)
    assert second.kernels == which and second.t == 17
    second.run(progress=False)
    for n, p in whole.stack.params.items():
        assert same_bits(second.stack.params[n], p), n
    assert second.history[0][-1] == whole.history[0][-1]


@pytest.mark.parametrize("which", ["numba", "numpy"])
@pytest.mark.parametrize("raw", [True, False], ids=["standardized", "whitened"])
def test_evaluating_on_two_threads_changes_no_bit_of_a_run(monkeypatch, which, raw):
    """A trainer with ``train.blas_threads = 2`` evaluates on 2 threads (each its own arrays)
    and records the history of one evaluating on 1, bit for bit: raw rows (standardization
    folded) and whitened rows (features per chunk), a stack of 2, compiled or reference."""
    monkeypatch.setenv(kernels.ENV, which)
    seen = []
    evaluate = Network.evaluate

    def spy(self, *args, **kw):
        seen.append(kw.get("threads", 1))
        return evaluate(self, *args, **kw)

    monkeypatch.setattr(Network, "evaluate", spy)

    def data():
        d = tiny_dataset(np.random.default_rng(0), n_train=2500, d=12, C=4)  # 3 chunks of rows
        if raw:
            d.X_train = np.clip(np.round(d.X_train * 40 + 128), 0, 255).astype(np.uint8)
            d.mean, d.std = d.X_train.mean(axis=0), d.X_train.std(axis=0) + 1.0
        return d

    history = {}
    for threads in (1, 2):
        tr = Trainer(_configs(2, blas_threads=threads), data())
        assert tr.eval_threads == threads and (tr.standardization is None) == (not raw)
        tr.run(progress=False)
        history[threads] = tr.history
    assert history[1] == history[2] and len(history[2][0]) > 2
    assert set(seen) == {1, 2}


def test_lockstep_training_evaluates_on_its_blas_threads(monkeypatch):
    from klayer.runs import train_lockstep

    seen = []
    evaluate = Network.evaluate
    monkeypatch.setattr(
        Network, "evaluate", lambda self, *a, **kw: seen.append(kw.get("threads")) or evaluate(self, *a, **kw)
    )
    data = tiny_dataset(np.random.default_rng(0), n_train=300, d=12, C=4)
    train_lockstep(_configs(2), data, progress=False, blas_threads=2)
    assert seen and set(seen) == {2}
