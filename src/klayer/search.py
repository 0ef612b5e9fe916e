"""Coarse-to-fine searches over one hyperparameter (``lam`` or ``eta``), as the reports do.

The coarse stage covers ``[low, high]`` with ``n`` values, evenly spaced in ``log10`` (``grid``)
or drawn log-uniformly (``random``, seeded). The fine stage covers ``best * 10**[-decades,
+decades]`` around the coarse stage's best value by validation accuracy. Values are rounded to
four significant digits so that run names, and so resumption, are stable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coarse_values", "fine_values", "best", "top", "val_accuracy"]


def _round(v: np.ndarray) -> list[float]:
    return [float(f"{x:.4g}") for x in v]


def coarse_values(low: float, high: float, n: int, sampling: str = "grid", rng=None) -> list[float]:
    """``n`` values in ``[low, high]``, log10-evenly (grid) or log-uniformly at random (sorted)."""
    a, b = np.log10(low), np.log10(high)
    if sampling == "grid":
        e = np.linspace(a, b, n)
    elif sampling == "random":
        e = np.sort((rng or np.random.default_rng(0)).uniform(a, b, n))
    else:
        raise ValueError(f"sampling must be grid or random, got {sampling!r}")
    return _round(10**e)


def fine_values(center: float, n: int, decades: float, sampling: str = "grid", rng=None) -> list[float]:
    """``n`` values in ``center * 10**[-decades, decades]``."""
    return coarse_values(center * 10**-decades, center * 10**decades, n, sampling, rng)


def val_accuracy(results: dict) -> float:
    """The search criterion: validation accuracy at the end of training."""
    return results["final"]["val_accuracy"]


def top(points: list[tuple[float, dict]], k: int = 3, metric=val_accuracy) -> list[tuple[float, dict]]:
    """The ``k`` (value, results) pairs with the highest ``metric``; diverged runs are left out."""
    ok = [p for p in points if p[1].get("status") == "complete"]
    return sorted(ok, key=lambda p: -metric(p[1]))[:k]


def best(points: list[tuple[float, dict]], metric=val_accuracy) -> float:
    """The value whose run reached the highest ``metric``."""
    return top(points, 1, metric)[0][0]
