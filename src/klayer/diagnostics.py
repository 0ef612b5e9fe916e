"""Per-layer statistics of activations and gradients, to see why a network trains or does not.

For each hidden layer ``l`` on a fixed batch, in training mode:

- ``s{l}_std``: standard deviation of the linear output ``S_l = H_{l-1} W_l^T + b_l`` (before
  batch norm). Without batch norm and with ``W ~ N(0, sigma^2)``, it shrinks by about
  ``sigma * sqrt(m_{l-1} / 2)`` per layer: with ``sigma = 1e-4`` and widths of 10..50 that is a
  factor 1e-3 per layer, so a 9-layer network's scores are ~1e-25: constant.
- ``h{l}_std``: standard deviation of the ReLU output ``H_l``.
- ``dead{l}``: fraction of units that are zero for every sample of the batch (dead ReLUs).
- ``grad{l}``: ``||dJ/dW_l|| / ||W_l||``, the relative size of an update. When the scores are
  constant, every gradient but the last layer's bias is ~0 and the network predicts one class:
  10% accuracy. Batch norm rescales every ``S_l`` to unit variance, so neither effect happens.

Works on stacks: every statistic is computed per network of the leading model axis.
"""

from __future__ import annotations

import numpy as np

from .network import NetworkConfig, hidden_activations, loss_and_grads
from .training.callbacks import Callback

__all__ = ["layer_diagnostics", "DiagnosticsRecorder", "DIAGNOSTIC_KEYS"]

DIAGNOSTIC_KEYS = ("s_std", "h_std", "dead", "grad")


def _per_model_std(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[:-2] + (-1,)).std(axis=-1, dtype=np.float64)


def layer_diagnostics(params, X, y, config: NetworkConfig, lam) -> list[dict]:
    """Statistics of every hidden layer on the batch ``X, y``.

    Returns
    -------
    list with one dict per network (one entry for a single network): keys ``s{l}_std``,
    ``h{l}_std``, ``dead{l}``, ``grad{l}`` for ``l = 1..k-1`` and ``grad{k}``.
    """
    stats: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for l, S, _, H in hidden_activations(params, X, config):
            stats[f"s{l}_std"] = _per_model_std(S)
            stats[f"h{l}_std"] = _per_model_std(H)
            stats[f"dead{l}"] = 1.0 - (H > 0).any(axis=-2).mean(axis=-1, dtype=np.float64)
        if len(X) >= 2 or not config.batch_norm:
            _, _, grads, _ = loss_and_grads(params, X, y, config, lam)
            for l in range(1, config.n_layers + 1):
                W = params[f"W{l}"]
                g = np.sqrt(np.einsum("...ij,...ij->...", grads[f"W{l}"], grads[f"W{l}"], dtype=np.float64))
                w = np.sqrt(np.einsum("...ij,...ij->...", W, W, dtype=np.float64))
                stats[f"grad{l}"] = g / np.maximum(w, 1e-300)
    K = params["W1"].shape[0] if params["W1"].ndim == 3 else None
    if K is None:
        return [{k: float(v) for k, v in stats.items()}]
    return [{k: float(v[i]) for k, v in stats.items()} for i in range(K)]


class DiagnosticsRecorder(Callback):
    """Record :func:`layer_diagnostics` at every evaluation, on a fixed batch of ``n`` rows of
    the trainer's training-evaluation set; ``rows[i]`` is network ``i``'s list of dicts."""

    key = "diagnostics"

    def __init__(self, n: int = 500):
        self.n = n
        self.rows: list[list[dict]] = []

    def on_evaluate(self, trainer) -> None:
        if not self.rows:
            self.rows = [[] for _ in range(trainer.K)]
        X = trainer.data.features(trainer.X_eval[: self.n], trainer.tc.dtype)
        stats = layer_diagnostics(trainer.stack.params, X, trainer.y_eval[: self.n], trainer.config, trainer.lam)
        for i in range(trainer.K):
            self.rows[i].append({"step": trainer.t, **stats[i]})

    def state(self) -> dict:
        return {"rows": self.rows}

    def load_state(self, state: dict, tensors: dict) -> None:
        self.rows = state.get("rows", [])
