"""Learning-rate schedules: pure functions of the global update step ``t`` (0-based).

Cyclical learning rate, triangular policy (Smith, "Cyclical Learning Rates for Training Neural
Networks", WACV 2017), as in the assignments::

    eta_t = eta_min + (eta_max - eta_min) * (1 - |t / n_s  mod 2  - 1|)

so ``eta`` rises linearly from ``eta_min`` at ``t = 2 l n_s`` to ``eta_max`` at
``t = (2 l + 1) n_s`` and falls back to ``eta_min`` at ``t = 2 (l + 1) n_s``. One cycle is
``2 n_s`` updates; ``n_cycles`` cycles are ``2 n_s n_cycles`` updates.

Units: ``t`` and ``n_s`` count parameter updates (mini-batches), not epochs; ``eta_*`` are step
sizes of plain gradient descent. ``eta_min`` and ``eta_max`` may be ``(K,)`` arrays, one per
network of a lockstep stack.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cyclic_eta", "constant_eta", "decay_eta"]


def cyclic_eta(t: int, eta_min, eta_max, n_s: int):
    """Triangular cyclical learning rate at update step ``t`` (exact at the corners)."""
    pos = t % (2 * n_s)
    frac = (n_s - abs(pos - n_s)) / n_s
    return eta_min + (np.asarray(eta_max) - eta_min) * frac


def constant_eta(t: int, eta):
    """The same ``eta`` at every step."""
    return eta


def decay_eta(t: int, eta, decay: float, steps_per_epoch: int):
    """``eta * decay ** epoch``: multiplied by ``decay`` after every epoch."""
    return eta * decay ** (t // steps_per_epoch)
