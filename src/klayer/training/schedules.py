"""Learning-rate schedules: pure functions of the global update step ``t`` (0-based).

Units: ``t``, ``n_s`` and ``total`` count parameter updates (mini-batches), not epochs; ``eta_*``
are step sizes. ``eta_min`` and ``eta_max`` may be ``(K,)`` arrays, one per network of a lockstep
stack; the result then has shape ``(K,)``.

Cyclical learning rates (Smith, "Cyclical Learning Rates for Training Neural Networks", WACV
2017). One cycle is ``2 n_s`` updates: ``eta`` rises linearly from ``eta_min`` at ``t = 2 l n_s``
to the cycle's peak at ``t = (2 l + 1) n_s`` and falls back to ``eta_min`` at
``t = 2 (l + 1) n_s``. The policies differ in the peak:

- ``triangular`` (:func:`cyclic_eta`, the assignments'): always ``eta_max``;
  ``eta_t = eta_min + (eta_max - eta_min) * (1 - |t / n_s mod 2 - 1|)``.
- ``triangular2`` (:func:`triangular2_eta`): the amplitude halves every cycle.
- ``exp_range`` (:func:`exp_range_eta`): the amplitude is multiplied by ``gamma ** t``.

One-cycle (Smith & Topin, "Super-Convergence", 2019) and cosine annealing with warm-up
(Loshchilov & Hutter, "SGDR", ICLR 2017; Goyal et al. 2017 for the warm-up) run once over
``total`` updates:

- ``one_cycle`` (:func:`one_cycle_eta`): cosine rise from ``eta_min`` to ``eta_max`` over the
  first ``warmup * total`` updates, then cosine fall to ``eta_min / 1e4``; PyTorch's
  ``OneCycleLR(anneal_strategy="cos")`` with ``initial_lr = eta_min``, ``pct_start = warmup``.
- ``cosine`` (:func:`cosine_eta`): linear warm-up from 0 to ``eta_max`` over the first
  ``warmup * total`` updates, then ``eta_min + (eta_max - eta_min) (1 + cos(pi s)) / 2`` where
  ``s`` goes from 0 to 1 over the remaining updates.

``constant`` and ``decay`` (multiplied by ``decay`` after every epoch) complete the set.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "cyclic_eta",
    "triangular2_eta",
    "exp_range_eta",
    "one_cycle_eta",
    "cosine_eta",
    "constant_eta",
    "decay_eta",
    "CYCLIC_SCHEDULES",
]

CYCLIC_SCHEDULES = ("cyclic", "triangular2", "exp_range")  # run 2 * n_s * n_cycles updates


def _triangle(t: int, n_s: int) -> float:
    """``1 - |t / n_s mod 2 - 1|``: 0 at the start of a cycle, 1 at its middle (exact)."""
    pos = t % (2 * n_s)
    return (n_s - abs(pos - n_s)) / n_s


def cyclic_eta(t: int, eta_min, eta_max, n_s: int):
    """Triangular cyclical learning rate at update step ``t`` (exact at the corners)."""
    return eta_min + (np.asarray(eta_max) - eta_min) * _triangle(t, n_s)


def triangular2_eta(t: int, eta_min, eta_max, n_s: int):
    """Triangular, with the amplitude ``eta_max - eta_min`` halved after every cycle."""
    return eta_min + (np.asarray(eta_max) - eta_min) * _triangle(t, n_s) / 2.0 ** (t // (2 * n_s))


def exp_range_eta(t: int, eta_min, eta_max, n_s: int, gamma: float):
    """Triangular, with the amplitude multiplied by ``gamma ** t``."""
    return eta_min + (np.asarray(eta_max) - eta_min) * _triangle(t, n_s) * gamma**t


def one_cycle_eta(t: int, eta_min, eta_max, total: int, warmup: float):
    """One cycle over ``total`` updates: up to ``eta_max`` in ``warmup * total``, then down to
    ``eta_min / 1e4``, both halves cosine-shaped. Past ``total`` it stays at ``eta_min / 1e4``."""
    up = warmup * total
    eta_max = np.asarray(eta_max)
    if t < up:
        return eta_min + (eta_max - eta_min) * (1 - math.cos(math.pi * t / up)) / 2
    end = np.asarray(eta_min) / 1e4
    s = (t - up) / max(total - up, 1)
    return end + (eta_max - end) * (1 + math.cos(math.pi * min(s, 1.0))) / 2


def cosine_eta(t: int, eta_min, eta_max, total: int, warmup: float = 0.0):
    """Cosine annealing from ``eta_max`` to ``eta_min`` over ``total`` updates, after a linear
    warm-up from 0 over the first ``up = warmup * total`` updates: ``eta_max * min(t + 1, up) / up``,
    never above ``eta_max``, also when ``up`` is fractional. Past ``total`` it stays at ``eta_min``."""
    up = warmup * total
    eta_max = np.asarray(eta_max)
    if t < up:
        return eta_max * min(t + 1, up) / up
    s = (t - up) / max(total - up, 1)
    return eta_min + (eta_max - eta_min) * (1 + math.cos(math.pi * min(s, 1.0))) / 2


def constant_eta(t: int, eta):
    """The same ``eta`` at every step."""
    return eta


def decay_eta(t: int, eta, decay: float, steps_per_epoch: int):
    """``eta * decay ** epoch``: multiplied by ``decay`` after every epoch."""
    return eta * decay ** (t // steps_per_epoch)
