"""KLayerClassifier: scikit-learn's estimator checks, and the estimator in a Pipeline, in
GridSearchCV and in cross_val_score; labels of any type, eval-mode batch norm, determinism,
validation split, early stopping, warm start, model files."""

import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, make_blobs  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_dataframe_column_names_consistency,
    parametrize_with_checks,
)

from klayer.errors import KlayerError  # noqa: E402
from klayer.runs import load_model  # noqa: E402
from klayer.sklearn import KLayerClassifier  # noqa: E402

# Estimators put through every check; the third is float32, whose products round differently
# for different numbers of rows (relative differences of ~1e-7, the checks' tolerance).
ESTIMATORS = [
    KLayerClassifier(random_state=0),
    KLayerClassifier(
        hidden=(16, 8),
        batch_norm=False,
        schedule="constant",
        eta=0.05,
        n_epochs=20,
        batch_size=16,
        early_stopping=True,
        n_iter_no_change=20,
        random_state=0,
    ),  # fmt: skip
    KLayerClassifier(dtype="float32", random_state=0),
]

# Every check expected to fail, with the reason (listed in docs/sklearn.md).
EXPECTED_FAILED = {
    "float32": {
        "check_methods_sample_order_invariance": (
            "float32 matrix products of a reordered batch round differently (relative differences "
            "of about 1e-7, the check's rtol); the default dtype float64 passes"
        ),
    },
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILED.get(estimator.dtype, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_dataframe_column_names(pytestconfig):
    pytest.importorskip("pandas")
    check_dataframe_column_names_consistency("KLayerClassifier", KLayerClassifier(random_state=0))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # 1797 8x8 images, bundled with scikit-learn
    return X, y


def small(**kw):
    return KLayerClassifier(**{"hidden": (32,), "batch_size": 50, "n_cycles": 2, "random_state": 0, **kw})


# -- in scikit-learn's tools ---------------------------------------------------------------------
def test_in_a_pipeline(digits):
    X, y = digits
    pipe = Pipeline([("pca", PCA(30, random_state=0)), ("clf", small())]).fit(X[:1200], y[:1200])
    assert pipe.score(X[1200:], y[1200:]) > 0.8  # chance is 0.1
    assert pipe.named_steps["clf"].n_features_in_ == 30


def test_in_grid_search(digits):
    X, y = digits
    grid = GridSearchCV(small(), {"lam": [1e-4, 0.5], "hidden": [(16,), (32,)]}, cv=3).fit(X, y)
    assert grid.best_params_["lam"] == 1e-4  # a huge penalty is worse
    assert len(grid.cv_results_["mean_test_score"]) == 4 and grid.best_score_ > 0.8
    assert grid.best_estimator_.get_params()["hidden"] == grid.best_params_["hidden"]


def test_in_cross_val_score(digits):
    X, y = digits
    scores = cross_val_score(small(), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85


# -- labels, parameters, attributes ---------------------------------------------------------------
def test_string_labels_kept_in_classes(digits):
    X, y = digits
    names = np.array([f"digit {i}" for i in range(10)])  # sorted like the integers
    clf = small().fit(X, names[y])
    assert clf.classes_.tolist() == sorted(names.tolist())
    pred = clf.predict(X[:50])
    assert pred.dtype.kind == "U" and set(pred) <= set(names) and clf.classes_[3] == "digit 3"
    P = clf.predict_proba(X[:50])
    assert (clf.classes_[P.argmax(1)] == pred).all() and clf.score(X, names[y]) > 0.95
    assert (pred == names[small().fit(X, y).predict(X[:50])]).all()  # the same network as with integers


def test_get_and_set_params():
    clf = KLayerClassifier(lam=0.01, hidden=(8,))
    assert clf.get_params()["lam"] == 0.01 and clf.get_params()["hidden"] == (8,)
    assert clf.set_params(lam=0.5, random_state=3).get_params()["lam"] == 0.5
    assert "alpha" not in clf.get_params()  # scikit-learn's alpha is another penalty: 2 * lam * batch_size


def test_parameters_reach_the_network(digits):
    X, y = digits
    clf = KLayerClassifier(hidden=(20, 10), batch_norm=False, batch_size=40, n_s=30, n_cycles=3, random_state=0)
    clf.fit(X, y)
    cfg = clf.network_.config
    assert cfg.hidden == (20, 10) and not cfg.batch_norm and cfg.input_size == 64 and cfg.n_classes == 10
    assert clf.n_iter_ == 2 * 30 * 3 and clf.history_[-1]["step"] == 180
    assert clf.n_features_in_ == 64 and not hasattr(clf, "feature_names_in_")
    clf2 = KLayerClassifier(batch_size=4, n_cycles=1, random_state=0).fit(X[:500], y[:500])
    assert clf2.n_iter_ == 2 * (2 * (500 // 4))  # n_s defaults to two epochs (250 updates)
    clf3 = KLayerClassifier(batch_size=40, n_cycles=1, random_state=0).fit(X[:400], y[:400])
    assert clf3.n_iter_ == 2 * 200  # ... but at least 200 updates (two epochs would be 20)
    np.testing.assert_allclose(clf.mean_, X.mean(axis=0))


def test_feature_names_from_a_dataframe(digits):
    pd = pytest.importorskip("pandas")
    X, y = digits
    df = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    clf = small().fit(df, y)
    assert clf.feature_names_in_.tolist() == list(df.columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        plain = clf.predict(X)
    assert (clf.predict(df) == plain).all()


def test_batch_size_is_clipped_to_the_data():
    X, y = make_blobs(30, centers=3, random_state=0)
    clf = KLayerClassifier(batch_size=100, n_s=20, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="only one class"):
        KLayerClassifier().fit(np.zeros((5, 2)), np.ones(5))


# -- prediction in evaluation mode -----------------------------------------------------------------
def test_predictions_do_not_depend_on_the_other_rows(digits):
    X, y = digits
    clf = small(batch_norm=True).fit(X, y)
    P = clf.predict_proba(X[:40])
    alone = np.vstack([clf.predict_proba(X[i : i + 1]) for i in range(40)])
    np.testing.assert_allclose(alone, P, rtol=0, atol=1e-12)
    reordered = clf.predict_proba(X[:40][::-1])[::-1]
    np.testing.assert_allclose(reordered, P, rtol=0, atol=1e-12)
    # batch norm in training mode would depend on the batch: evaluation mode is what is used
    net = clf.network_
    from klayer.layers import softmax

    train_mode = softmax(net.forward((X[:40] - clf.mean_) / clf.std_, train=True))
    assert np.abs(train_mode - P).max() > 1e-3
    np.testing.assert_allclose(softmax(net.forward((X[:40] - clf.mean_) / clf.std_)), P, atol=1e-12)


def test_deterministic_with_random_state(digits):
    X, y = digits
    a, b = small().fit(X, y), small().fit(X, y)
    for k in a.network_.params:
        np.testing.assert_array_equal(a.network_.params[k], b.network_.params[k])
    c = small(random_state=1).fit(X, y)
    assert not np.array_equal(a.network_.params["W1"], c.network_.params["W1"])
    rs = np.random.RandomState(5)
    d = small(random_state=rs).fit(X, y)  # a RandomState instance works too
    assert d.score(X, y) > 0.9


# -- validation, early stopping, warm start ----------------------------------------------------
def test_validation_fraction_holds_rows_out(digits):
    X, y = digits
    clf = small(validation_fraction=0.25).fit(X, y)
    tr, va = clf._split(len(y), 0)
    assert len(va) == round(0.25 * len(y)) and not set(tr) & set(va) and len(tr) + len(va) == len(y)
    # the validation curve is measured on the held-out rows
    last = clf.history_[-1]
    assert last["val_accuracy"] == pytest.approx(clf.score(X[va], y[va]))
    assert last["train_accuracy"] == pytest.approx(clf.score(X[tr], y[tr]))
    assert clf.best_validation_score_ == max(r["val_accuracy"] for r in clf.history_)
    assert small().fit(X, y).best_validation_score_ is None


def test_early_stopping_stops_and_keeps_the_best_network(digits):
    X, y = digits
    kw = dict(schedule="constant", eta=0.3, n_epochs=40, batch_size=20, evals_per_cycle=2, validation_fraction=0.2)
    full = small(**kw).fit(X, y)
    clf = small(**kw, early_stopping=True, n_iter_no_change=3).fit(X, y)
    assert clf.stopped_early_ and clf.n_iter_ < full.n_iter_
    vals = [r["val_accuracy"] for r in clf.history_]
    best = max(vals)
    assert all(v <= best for v in vals[-3:]) and vals.index(best) == len(vals) - 4  # three evaluations without gain
    assert vals[-1] < best  # so keeping the last network would be visible
    _, va = clf._split(len(y), 0)
    assert clf.score(X[va], y[va]) == pytest.approx(best)  # the network of the best evaluation is kept
    assert clf.best_validation_score_ == best


def test_early_stopping_uses_a_tenth_for_validation_by_default(digits):
    X, y = digits
    clf = small(early_stopping=True, n_iter_no_change=100).fit(X, y)
    assert not clf.stopped_early_ and clf.best_validation_score_ is not None
    _, va = clf._split(len(y), 0)
    assert len(va) == round(0.1 * len(y))


def test_warm_start_continues_from_the_fitted_network(digits):
    X, y = digits
    kw = dict(batch_norm=False, n_cycles=1)
    first = small(**kw).fit(X, y)
    warm = small(**kw, warm_start=True).fit(X, y)  # fresh estimator: warm_start has nothing to continue
    assert warm.history_[0]["train_accuracy"] < 0.3
    warm.fit(X, y)
    assert warm.history_[0]["train_accuracy"] == first.history_[-1]["train_accuracy"]  # starts where it ended
    cold = small(**kw).fit(X, y).fit(X, y)
    assert cold.history_[0]["train_accuracy"] < 0.3
    with pytest.raises(ValueError, match=r"labels \[10\] are not among classes_"):
        warm.fit(X[:20], np.r_[y[:19], 10])
    with pytest.raises(ValueError, match="hidden sizes"):
        warm.set_params(hidden=(7,)).fit(X, y)


# -- klayer's own tools -------------------------------------------------------------------------
def test_save_model_for_the_command_line(digits, tmp_path):
    X, y = digits
    names = np.array(list("abcdefghij"))
    clf = small().fit(X, names[y])
    clf.save_model(tmp_path / "m.safetensors", note="digits")
    m = load_model(tmp_path / "m.safetensors")
    assert m.classes == tuple("abcdefghij") and m.meta["note"] == "digits"
    np.testing.assert_allclose(m.predict_proba(X[:100]), clf.predict_proba(X[:100]))


def test_on_cifar10_with_class_names(cifar_f32):
    from klayer.data.cifar10 import CLASSES

    names = np.array(CLASSES)
    X, y = cifar_f32.X_train[:5000], names[cifar_f32.y_train[:5000]]
    clf = KLayerClassifier(dtype="float32", n_cycles=1, lam=0.005, random_state=0).fit(X, y)
    assert clf.score(cifar_f32.X_test[:2000], names[cifar_f32.y_test[:2000]]) > 0.3
    assert set(clf.classes_) == set(CLASSES)


def test_missing_scikit_learn_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.base", None)
    monkeypatch.delitem(sys.modules, "klayer.sklearn")
    with pytest.raises(KlayerError, match=r"pip install 'klayer\[sklearn\]'"):
        importlib.import_module("klayer.sklearn")


@pytest.mark.parametrize("seed", [0, 1])
def test_the_defaults_learn_a_small_data_set(seed):
    """wine: 178 rows, 13 features, 3 classes. Two epochs of n_s are 2 updates here; the default
    n_s of at least 200 updates learns it (0.77 with two epochs, 0.98 with 200; chance 0.40)."""
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    assert cross_val_score(KLayerClassifier(random_state=seed), X, y, cv=3).mean() > 0.9
