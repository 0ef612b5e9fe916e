"""Numerical gradient checks: centred differences against the analytic gradients.

The relative error of an entry is ``|ga - gn| / max(eps, |ga| + |gn|)``. A parameter's error is
the largest over the entries checked (all of them for small arrays, a seeded random subset for
large ones), for each step size ``h``.

A bias in front of batch normalization has a true gradient of exactly zero: batch normalization
subtracts the batch mean, so adding a constant to ``S`` changes nothing downstream. The analytic
gradient is then round-off (about 1e-17) and the numerical one is round-off divided by ``h``
(about 1e-12), so their *relative* error is meaningless (close to 1 whatever the code does; one
reference report was misled by it). klayer keeps these biases, as the assignments do, and reports
their *absolute* error instead, marked ``abs`` in the table. The same holds, for the same
reason, for every parameter in front of the last batch-norm layer when the batch has two samples:
batch norm then maps each feature to about +-1 whatever its input, so those gradients are of
order ``eps / var`` and vanish as ``eps -> 0`` (and the function is sharply curved where a
feature's two values nearly coincide). Their relative errors would compare two vanishing numbers.

Kinks: a ReLU input that is exactly 0 is a point where the cost has no gradient (the analytic
code uses the subgradient 0, centred differences give 1/2). This happens at initialization when
every unit of a narrow layer is dead for some sample: the next layer's input is then
``0 @ W.T + b = 0`` with ``b = 0``. The check detects exact zeros and, if there are any, moves the
biases by a tiny seeded jitter (``kink_jitter``) to a differentiable point, and says so.

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
from .network import Network, NetworkConfig, forward, hidden_activations, loss_and_grads, weight_penalty

__all__ = [
    "DEFAULT_HS",
    "relative_error",
    "numerical_gradient",
    "GradcheckRow",
    "GradcheckReport",
    "check_gradients",
    "check_data",
]

DEFAULT_HS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def relative_error(ga, gn, eps: float = 1e-8) -> np.ndarray:
    """Entry-wise ``|ga - gn| / max(eps, |ga| + |gn|)``.

    The floor ``eps`` keeps round-off residues of exactly-zero entries (about 1e-16) from
    counting as relative errors near 1.
    """
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
        head = f"{'param':<8} {'err':<4} {'checked':>11} " + " ".join(f"{'h=' + format(h, '.0e'):>9}" for h in self.hs)
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
            "rel = |ga-gn|/max(eps,|ga|+|gn|); abs = |ga-gn| where the true gradient is 0: a bias "
            "in front of batch norm, or anything in front of the last batch norm for a batch of 2"
        )
        return "\n".join(lines)


def _cost_function(params, X, y, config: NetworkConfig, lam):
    """``J(params)`` as a closure over arrays that the caller perturbs in place."""

    def f():
        scores, _, _ = forward(params, X, config, train=True)
        loss, _ = softmax_cross_entropy(scores, y)
        return loss + lam * weight_penalty(params, config)

    return f


def exact_kinks(params, X, config: NetworkConfig) -> int:
    """Number of hidden pre-activations (ReLU inputs) that are exactly 0, in training mode."""
    return sum(int(np.count_nonzero(Z == 0)) for _, _, Z, _ in hidden_activations(params, X, config))


def zero_true_gradient(name: str, config: NetworkConfig, batch_size: int) -> bool:
    """True where the exact gradient is zero (or vanishes with ``eps``): ``b{l}`` in front of
    batch norm, and with a batch of two everything in front of the last batch-norm layer."""
    if not config.batch_norm or config.n_layers < 2:
        return False
    kind, layer = re.fullmatch(r"([A-Za-z]+)(\d+)", name).groups()
    layer, last_bn = int(layer), config.n_layers - 1
    if kind == "b" and layer <= last_bn:
        return True
    if batch_size == 2:
        return layer < last_bn or (layer == last_bn and kind in ("W", "b"))
    return False


def check_data(root, n: int, d: int | None, rng: np.random.Generator, source: str = "auto"):
    """Rows for a gradient check: the first ``n`` CIFAR-10 training images found under ``root``
    (no download), else (``source="auto"``) Gaussian data; the first ``d`` features of either.

    Returns
    -------
    X : (n, d) float64; y : (n,) labels; description : str, where the rows came from.
    """
    from .data.cifar10 import find_cifar10
    from .data.prepare import DataConfig, load_dataset
    from .errors import KlayerError

    if source in ("auto", "cifar") and find_cifar10(root) is not None:
        ds = load_dataset(DataConfig(download=False), root, dtype="float64")
        X, y, description = ds.features(ds.X_train[:n], "float64"), ds.y_train[:n], f"CIFAR-10 ({ds.source})"
    elif source == "cifar":
        raise KlayerError(f"{root}: no CIFAR-10 found for --source cifar")
    else:
        X, y, description = rng.standard_normal((n, 3072)), rng.integers(0, 10, n), "random Gaussian data"
    return np.ascontiguousarray(X[:, :d] if d else X), y, description


def check_gradients(
    network: Network,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    rng: np.random.Generator,
    hs=DEFAULT_HS,
    max_entries: int = 500,
    tol: float = 1e-7,
    eps: float = 1e-8,
    kink_jitter: float = 1e-3,
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
    eps : floor of the relative error's denominator (see :func:`relative_error`).
    kink_jitter : standard deviation of the bias jitter applied when a ReLU input is exactly 0.
    numeric_dtype : dtype in which the numerical side evaluates the cost.
    """
    config = network.config
    params = network.params
    kinks = exact_kinks(params, X, config)
    if kinks and kink_jitter:
        params = dict(params)
        for l in range(1, config.n_layers + 1):
            b = params[f"b{l}"]
            params[f"b{l}"] = b + (kink_jitter * rng.standard_normal(b.shape)).astype(b.dtype)
    _, _, grads, _ = loss_and_grads(params, X, y, config, lam)
    params = {n: p.astype(numeric_dtype) for n, p in params.items()}
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
        absolute = zero_true_gradient(name, config, len(y))
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
    if kinks:
        settings["note"] = (
            f"{kinks} ReLU inputs were exactly 0 (no gradient there); biases jittered by "
            f"{kink_jitter:g} to check at a differentiable point"
        )
    return GradcheckReport(tuple(hs), rows, tol, settings)
