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
