"""Confusion matrix, per-class scores and the most confident mistakes, against hand counts and
scikit-learn."""

import numpy as np
import pytest

from klayer.metrics import classification_report, confident_mistakes, confusion_matrix, per_class_scores


def test_confusion_matrix_by_hand():
    # true:  0 0 0 1 1 2      predicted: 0 1 0 1 2 2
    # class 0: two right, one as 1; class 1: one right, one as 2; class 2: one right
    cm = confusion_matrix(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2, 2]), 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows: true class, columns: predicted


def test_confusion_matrix_is_not_transposed():
    cm = confusion_matrix(np.array([0, 0, 0]), np.array([1, 1, 1]), 2)
    assert cm[0, 1] == 3 and cm[1, 0] == 0


def test_confusion_matrix_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 1]), np.array([0, -1]), 3)


def test_per_class_scores_by_hand():
    s = per_class_scores(np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]]))
    assert s["support"].tolist() == [3, 2, 1]
    np.testing.assert_allclose(s["accuracy"], [2 / 3, 1 / 2, 1])  # right / images of the class
    np.testing.assert_allclose(s["recall"], s["accuracy"])
    np.testing.assert_allclose(s["precision"], [1, 1 / 2, 1 / 2])  # right / predicted as the class
    np.testing.assert_allclose(s["f1"], [0.8, 0.5, 2 / 3])


def test_precision_of_a_never_predicted_class_is_zero():
    s = per_class_scores(confusion_matrix(np.array([0, 1, 2]), np.array([0, 0, 0]), 3))
    assert s["precision"].tolist() == [1 / 3, 0, 0] and s["f1"][1] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    C = 5
    y = rng.integers(0, C, 400)
    P = rng.dirichlet(np.ones(C), 400)
    P[np.arange(400), y] += rng.uniform(0, 0.5, 400) * (rng.random(400) < 0.6)  # better than chance
    P /= P.sum(axis=1, keepdims=True)
    rep = classification_report(y, P, "abcde")
    pred = P.argmax(axis=1)
    assert rep["confusion"] == metrics.confusion_matrix(y, pred, labels=range(C)).tolist()
    p, r, f, support = metrics.precision_recall_fscore_support(y, pred, labels=range(C), zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in rep["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in rep["per_class"]], r)
    np.testing.assert_allclose([c["f1"] for c in rep["per_class"]], f)
    assert [c["support"] for c in rep["per_class"]] == support.tolist()
    assert rep["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert rep["loss"] == pytest.approx(metrics.log_loss(y, P, labels=range(C)))
    assert rep["macro"]["precision"] == pytest.approx(p.mean())
    assert [c["class"] for c in rep["per_class"]] == list("abcde") and rep["n"] == 400


def test_report_refuses_a_wrong_number_of_class_names():
    with pytest.raises(ValueError, match="2 class names for 3"):
        classification_report(np.array([0]), np.array([[0.2, 0.3, 0.5]]), ["a", "b"])


def test_confident_mistakes_by_hand():
    y = np.array([0, 1, 2, 0, 1])
    P = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.7, 0.2, 0.1],  # wrong, 0.7
            [0.1, 0.85, 0.05],  # wrong, 0.85
            [0.3, 0.6, 0.1],  # wrong, 0.6
            [0.1, 0.8, 0.1],  # right
        ]
    )
    m = confident_mistakes(y, P, k=2)
    assert [d["index"] for d in m] == [2, 1]
    assert m[0] == {"index": 2, "true": 2, "predicted": 1, "probability": 0.85, "p_true": 0.05}
    assert [d["index"] for d in confident_mistakes(y, P, k=10)] == [2, 1, 3]
    assert confident_mistakes(np.array([0]), np.array([[1.0, 0.0]])) == []


# -- mutation round 3: what the tests above left open ---------------------------------------------
def test_confusion_matrix_of_uint8_labels_does_not_overflow():
    # CIFAR's binary batches store labels as uint8: with 20 classes y * C + pred reaches 399, past
    # uint8's 255, so the counts must be formed in a wide integer type
    rng = np.random.default_rng(3)
    y, pred = rng.integers(0, 20, 500), rng.integers(0, 20, 500)
    cm = confusion_matrix(y.astype(np.uint8), pred.astype(np.uint8), 20)
    expected = np.zeros((20, 20), np.int64)
    np.add.at(expected, (y, pred), 1)
    np.testing.assert_array_equal(cm, expected)


def test_labels_stored_as_whole_floats_are_counted():
    # MATLAB's default class is double: whole-number float labels are labels
    rng = np.random.default_rng(4)
    y, P = rng.integers(0, 4, 60), rng.dirichlet(np.ones(4), 60)
    pred = P.argmax(axis=1)
    np.testing.assert_array_equal(
        confusion_matrix(y.astype(np.float64), pred.astype(np.float64), 4), confusion_matrix(y, pred, 4)
    )
    assert classification_report(y.astype(np.float64), P, "abcd") == classification_report(y, P, "abcd")
    assert confident_mistakes(y.astype(np.float64), P) == confident_mistakes(y, P)


def test_confusion_matrix_refusals_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"labels \(3,\) and predictions \(2,\) must be two \(n,\) arrays"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"labels \(2, 2\) and predictions \(2, 2\) must be two \(n,\) arrays"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 3)
    with pytest.raises(ValueError, match=r"^a label lies outside the classes 0\.\.2$"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"^a prediction lies outside the classes 0\.\.3$"):
        confusion_matrix(np.array([0, 1]), np.array([0, 4]), 4)


def test_macro_scores_cover_the_classes_in_the_labels_or_the_predictions():
    """scikit-learn's default labels: a class that is only true (never predicted) or only predicted
    (never true) counts in the macro means, once or more; a class absent from both does not."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    C, n = 7, 120
    y = rng.integers(0, 3, n)  # classes 0, 1, 2 are true many times
    y[0] = 3  # class 3: true once, never predicted
    P = rng.dirichlet(np.ones(C), n)
    P[:, 3:] = 0  # no prediction of 3, 4, 5, 6 ...
    P[1, 4] = 2.0  # ... but one of class 4, never true; 5 and 6 occur nowhere
    P /= P.sum(axis=1, keepdims=True)
    pred = P.argmax(axis=1)
    assert pred[0] != 3 and sorted(set(y) | set(pred)) == [0, 1, 2, 3, 4]
    rep = classification_report(y, P, "abcdefg")
    p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert rep["macro"]["precision"] == pytest.approx(p, rel=1e-12)
    assert rep["macro"]["recall"] == pytest.approx(r, rel=1e-12)
    assert rep["macro"]["accuracy"] == pytest.approx(r, rel=1e-12)
    assert rep["macro"]["f1"] == pytest.approx(f, rel=1e-12)


def test_an_empty_evaluation_reports_nan_without_numpy_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        rep = classification_report(np.zeros(0, int), np.zeros((0, 3)), "abc")
    assert rep["n"] == 0 and np.isnan(rep["accuracy"]) and np.isnan(rep["loss"])
    assert rep["confusion"] == [[0] * 3] * 3
    assert rep["macro"] == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}  # every class unseen


def test_loss_is_computed_in_float64_and_stays_finite():
    rng = np.random.default_rng(6)
    y, P = rng.integers(0, 5, 200), rng.dirichlet(np.ones(5), 200).astype(np.float32)
    P64 = P.astype(np.float64)
    expected = float(np.mean(-np.log(P64[np.arange(200), y])))
    assert classification_report(y, P, "abcde")["loss"] == expected  # float32 probabilities, float64 sums
    P[7, y[7]] = 0.0  # a true class given probability 0: a huge loss, but a number (JSON has no inf)
    loss = classification_report(y, P, "abcde")["loss"]
    assert np.isfinite(loss) and loss > 600 / 200


def test_confident_mistakes_default_to_a_dozen_and_ties_keep_row_order():
    rng = np.random.default_rng(7)
    n = 300
    y = np.zeros(n, int)
    P = np.zeros((n, 3))
    conf = rng.choice([0.6, 0.7, 0.8], n)  # many ties, beyond the sizes insertion sort handles
    P[:, 1], P[:, 0] = conf, 1 - conf  # every row wrong: predicted 1 with probability conf
    assert len(confident_mistakes(y, P)) == 12
    got = [m["index"] for m in confident_mistakes(y, P, k=n)]
    assert got == sorted(range(n), key=lambda i: (-conf[i], i))
