"""Ensembles: average the class probabilities of several models.

Snapshot ensembles (Huang et al., "Snapshot Ensembles: Train 1, get M for free", ICLR 2017) take
the models saved at the end of each cycle of a cyclical learning rate, where the rate reaches its
minimum; ensembles over seeds take independently trained runs. Each member standardizes the raw
rows with its own saved statistics, so members need only agree on the input size and classes.
"""

from __future__ import annotations

import numpy as np

from .errors import KlayerError

__all__ = ["check_members", "ensemble_proba", "evaluate_ensemble"]


def check_members(models, names=None) -> None:
    """Members must take the same input and predict the same classes (in the same order)."""
    names = names or [f"model {i}" for i in range(len(models))]
    first = models[0]
    for m, name in zip(models[1:], names[1:], strict=True):
        if m.network.config.input_size != first.network.config.input_size:
            raise KlayerError(f"{name} takes {m.network.config.input_size} features, {names[0]} takes "
                              f"{first.network.config.input_size}: they cannot form an ensemble")  # fmt: skip
        if m.classes != first.classes:
            raise KlayerError(f"{name} predicts other classes than {names[0]}: they cannot form an ensemble")


def ensemble_proba(models, X: np.ndarray, chunk: int = 2500) -> tuple[np.ndarray, np.ndarray]:
    """Every member's and the ensemble's class probabilities for raw rows ``X: (n, d)``.

    Returns
    -------
    members : (M, n, C) float64; ensemble : (n, C), their mean.
    """
    members = np.stack([np.asarray(m.predict_proba(X, chunk), np.float64) for m in models])
    return members, members.mean(axis=0)


def _scores(P: np.ndarray, y: np.ndarray) -> dict:
    n = len(y)
    p_true = np.clip(P[np.arange(n), y], 1e-300, None)
    return {"accuracy": float((P.argmax(axis=1) == y).mean()), "loss": float(-np.log(p_true).mean())}


def evaluate_ensemble(models, X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and cross-entropy of each member and of the probability-averaged ensemble.

    Returns
    -------
    dict ``members``: list of ``{"accuracy", "loss"}``; ``ensemble``: ``{"accuracy", "loss"}``;
    ``probabilities``: the ensemble's (n, C) probabilities.
    """
    members, P = ensemble_proba(models, X)
    return {
        "members": [_scores(Pm, y) for Pm in members],
        "ensemble": _scores(P, y),
        "probabilities": P,
    }
