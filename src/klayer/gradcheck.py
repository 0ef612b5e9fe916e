"""Numerical gradient checks: centred differences against the analytic gradients.

The relative error of an entry is ``|ga - gn| / max(eps, |ga| + |gn|)``. A parameter's error is
the largest over the entries checked (all of them for small arrays, a seeded random subset for
large ones), for each step size ``h``.

A bias in front of batch normalization has a true gradient of exactly zero: batch normalization
subtracts the batch mean, so adding a constant to ``S`` changes nothing downstream. The analytic
gradient is then round-off (about 1e-17) and the numerical one is round-off divided by ``h``
(about 1e-12), so their *relative* error is meaningless (close to 1 whatever the code does; one
reference report was misled by it). klayer keeps these biases, as the assignments do, and reports
their *absolute* error instead, marked ``abs`` in the table. The same holds for any parameter
whose analytic gradient is at round-off level everywhere (``max |ga| < abs_below``): batch norm
over a batch of two maps every feature to +-1, so everything in front of it has a gradient of
order ``eps``; such rows are marked ``abs`` too.

Precision: the numerical side evaluates the cost in ``numpy.longdouble`` (80-bit extended on
x86-64; equal to float64 on some platforms), a thousand times less round-off than float64. In
float64 the round-off of ``J`` divided by ``2h`` is about 1e-10, which alone makes relative
errors near 1e-7 for gradient entries of 1e-3. Each parameter is judged at its best ``h``: large
steps cross ReLU kinks, small steps amplify round-off, and a wrong gradient is wrong at every ``h``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .layers import softmax_cross_entropy
from .network import Network, NetworkConfig, forward, loss_and_grads, weight_penalty

__all__ = [
    "DEFAULT_HS",
    "relative_error",
    "numerical_gradient",
    "GradcheckRow",
    "GradcheckReport",
    "check_gradients",
]

DEFAULT_HS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def relative_error(ga, gn, eps: float = 1e-10) -> np.ndarray:
    """Entry-wise ``|ga - gn| / max(eps, |ga| + |gn|)``."""
    ga, gn = np.asarray(ga, np.float64), np.asarray(gn, np.float64)
    return np.abs(ga - gn) / np.maximum(eps, np.abs(ga) + np.abs(gn))


def numerical_gradient(f, array: np.ndarray, flat_indices, h: float) -> np.ndarray:
    """Centred differences ``(f(p + h e_i) - f(p - h e_i)) / 2h`` at the given flat entries.

    ``array`` is modified in place during the call and restored exactly afterwards.
    """
    flat = array.reshape(-1)
    out = np.empty(len(flat_indices), dtype=np.float64)
    for j, i in enumerate(flat_indices):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        out[j] = (f_plus - f_minus) / (2 * h)
    return out


@dataclass
class GradcheckRow:
    """One parameter: its error for each ``h``; ``kind`` is ``"rel"`` or ``"abs"``."""

    name: str
    kind: str
    errors: list[float]
    n_checked: int
    n_total: int
    max_abs_grad: float


@dataclass
class GradcheckReport:
    """The reports' table: one row per parameter, one column per step size ``h``."""

    hs: tuple[float, ...]
    rows: list[GradcheckRow]
    tol: float
    settings: dict = field(default_factory=dict)

    def best_error(self, row: GradcheckRow) -> float:
        """The smallest error over the step sizes: the judged value of a parameter."""
        return min(row.errors)

    @property
    def passed(self) -> bool:
        return all(self.best_error(r) <= self.tol for r in self.rows)

    def failures(self) -> list[str]:
        return [r.name for r in self.rows if self.best_error(r) > self.tol]

    def format_table(self) -> str:
        head = f"{'param':<8} {'err':<4} {'checked':>11} " + " ".join(
            f"{'h=' + format(h, '.0e'):>9}" for h in self.hs
        )
        lines = [
            ", ".join(f"{k}={v}" for k, v in self.settings.items()),
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            cells = " ".join(f"{e:9.2e}" for e in r.errors)
            mark = "" if self.best_error(r) <= self.tol else "  FAIL"
            lines.append(f"{r.name:<8} {r.kind:<4} {r.n_checked:>5}/{r.n_total:<5} {cells}{mark}")
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.failures())})"
        lines.append(f"max over h of the best error must be <= tol={self.tol:g}: {verdict}")
        lines.append(
            "rel = |ga-gn|/max(eps,|ga|+|gn|); abs = |ga-gn| for a bias in front of batch norm, "
            "whose true gradient is exactly 0"
        )
        return "\n".join(lines)


def _cost_function(params, X, y, config: NetworkConfig, lam):
    """``J(params)`` as a closure over arrays that the caller perturbs in place."""

    def f():
        scores, _, _ = forward(params, X, config, train=True)
        loss, _ = softmax_cross_entropy(scores, y)
        return loss + lam * weight_penalty(params, config)

    return f


def _before_batchnorm(name: str, config: NetworkConfig) -> bool:
    """True for ``b{l}`` of a hidden layer that batch normalization follows."""
    m = re.fullmatch(r"b(\d+)", name)
    return bool(m) and config.batch_norm and int(m.group(1)) < config.n_layers


def check_gradients(
    network: Network,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    rng: np.random.Generator,
    hs=DEFAULT_HS,
    max_entries: int = 500,
    tol: float = 1e-7,
    eps: float = 1e-10,
    abs_below: float = 1e-8,
    numeric_dtype=np.longdouble,
) -> GradcheckReport:
    """Compare analytic and numerical gradients of the cost for every parameter.

    Parameters
    ----------
    network : Network (one model, no stack).
    X : (N, d) array; y : (N,) labels.
    lam : float, L2 penalty.
    rng : Generator choosing the entries of arrays with more than ``max_entries`` entries.
    hs : step sizes, one table column each.
    tol : a parameter passes when its smallest error over ``hs`` is at most ``tol``.
    eps : floor of the relative error's denominator.
    abs_below : report the absolute error of a parameter whose analytic gradient is below this
        everywhere (its relative error would compare two round-off values).
    numeric_dtype : dtype in which the numerical side evaluates the cost.
    """
    config = network.config
    _, _, grads, _ = loss_and_grads(network.params, X, y, config, lam)
    params = {n: p.astype(numeric_dtype) for n, p in network.params.items()}
    f = _cost_function(params, np.asarray(X).astype(numeric_dtype), y, config, lam)
    rows = []
    for name in config.param_names():
        p = params[name]
        n_total = p.size
        if n_total <= max_entries:
            idx = np.arange(n_total)
        else:
            idx = np.sort(rng.choice(n_total, size=max_entries, replace=False))
        ga = grads[name].reshape(-1)[idx].astype(np.float64)
        absolute = _before_batchnorm(name, config) or float(np.max(np.abs(ga))) < abs_below
        errors = []
        for h in hs:
            gn = numerical_gradient(f, p, idx, h)
            if absolute:
                errors.append(float(np.max(np.abs(ga - gn))))
            else:
                errors.append(float(np.max(relative_error(ga, gn, eps))))
        kind = "abs" if absolute else "rel"
        rows.append(GradcheckRow(name, kind, errors, len(idx), n_total, float(np.max(np.abs(ga)))))
    settings = {
        "hidden": list(config.hidden),
        "batch_norm": config.batch_norm,
        "d": X.shape[1],
        "batch": len(y),
        "lam": lam,
        "dtype": config.dtype,
    }
    return GradcheckReport(tuple(hs), rows, tol, settings)
