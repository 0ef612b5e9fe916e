"""Classification metrics a user can read: confusion matrix, per-class scores, worst mistakes.

Pure NumPy; no plotting, no files. Everything takes true labels ``y: (n,)`` (class indices) and
either predicted labels ``pred: (n,)`` or class probabilities ``P: (n, C)``.

Conventions (the same as scikit-learn's ``confusion_matrix`` and ``classification_report``):

- the confusion matrix ``cm[i, j]`` counts images of true class ``i`` predicted as class ``j``
  (rows: true class, columns: predicted class), so ``cm.sum(axis=1)`` is each class's support;
- a class's **accuracy** is the fraction of its images that are classified correctly,
  ``cm[i, i] / cm[i].sum()`` (the per-class accuracy of the CIFAR-10 literature; it equals the
  class's **recall**);
- **precision** is ``cm[i, i] / cm[:, i].sum()``, the fraction of the images predicted as class
  ``i`` that are of class ``i``; 0 when nothing was predicted as ``i`` (scikit-learn's
  ``zero_division=0``); **F1** is their harmonic mean (0 when both are 0).
"""

from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "per_class_scores", "classification_report", "confident_mistakes"]


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: ``cm[i, j]`` = images of true class ``i`` predicted as ``j``."""
    y = np.asarray(y, np.int64)
    pred = np.asarray(pred, np.int64)
    if y.shape != pred.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and predictions {pred.shape} must be two (n,) arrays")
    for name, a in (("label", y), ("prediction", pred)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"a {name} lies outside the classes 0..{n_classes - 1}")
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(len(num))
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``support``, ``accuracy`` (= ``recall``), ``precision`` and ``f1``, each ``(C,)``."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = _ratio(tp, support)
    precision = _ratio(tp, predicted)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"support": support, "accuracy": recall, "recall": recall, "precision": precision, "f1": f1}


def classification_report(y: np.ndarray, P: np.ndarray, classes) -> dict:
    """Everything ``klayer evaluate`` shows, as JSON-ready data.

    Parameters
    ----------
    y : (n,) true class indices.
    P : (n, C) class probabilities.
    classes : C class names.

    Returns
    -------
    dict with ``n``, ``accuracy``, ``loss`` (mean cross-entropy), ``classes``, ``confusion``
    (C lists of C counts, rows true, columns predicted), ``per_class`` (one dict per class:
    ``class, support, accuracy, precision, recall, f1``) and ``macro`` (unweighted means of the
    per-class accuracy, precision, recall and F1 over the classes that occur in ``y`` or in the
    predictions, as scikit-learn's default labels: a class absent from both has no scores).
    """
    y = np.asarray(y, np.int64)
    P = np.asarray(P, np.float64)
    classes = [str(c) for c in classes]
    n, C = P.shape
    if len(classes) != C:
        raise ValueError(f"{len(classes)} class names for {C} columns of probabilities")
    pred = P.argmax(axis=1)
    cm = confusion_matrix(y, pred, C)
    s = per_class_scores(cm)
    p_true = np.clip(P[np.arange(n), y], 1e-300, None)
    seen = (s["support"] > 0) | (cm.sum(axis=0) > 0)
    seen = seen if seen.any() else slice(None)
    return {
        "n": int(n),
        "accuracy": float((pred == y).mean()) if n else float("nan"),
        "loss": float(-np.log(p_true).mean()) if n else float("nan"),
        "classes": classes,
        "confusion": cm.tolist(),
        "per_class": [
            {
                "class": classes[i],
                "support": int(s["support"][i]),
                **{k: float(s[k][i]) for k in ("accuracy", "precision", "recall", "f1")},
            }
            for i in range(C)
        ],
        "macro": {k: float(s[k][seen].mean()) for k in ("accuracy", "precision", "recall", "f1")},
    }


def confident_mistakes(y: np.ndarray, P: np.ndarray, k: int = 12) -> list[dict]:
    """The ``k`` misclassified rows whose wrong prediction had the highest probability.

    Returns
    -------
    list of dicts ``index`` (row of ``P``), ``true``, ``predicted`` (class indices),
    ``probability`` (of the predicted class) and ``p_true`` (of the true class), most confident
    first; ties keep row order.
    """
    y = np.asarray(y, np.int64)
    P = np.asarray(P)
    pred = P.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    conf = P[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:k]
    return [
        {
            "index": int(i),
            "true": int(y[i]),
            "predicted": int(pred[i]),
            "probability": float(P[i, pred[i]]),
            "p_true": float(P[i, y[i]]),
        }
        for i in order
    ]
