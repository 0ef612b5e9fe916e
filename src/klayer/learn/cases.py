"""The learner's kit's fixed cases: small, seeded networks whose every quantity is written out.

Each case is a k-layer network (``k = len(hidden) + 1``) with its inputs fully determined by the
case: data ``X: (n, d)``, labels ``y`` (0-based) and one-hot ``Y: (n, C)``, parameters, the
batch-norm running averages the step starts from, and the scalars ``lam, eta, eps, bn_alpha``.

The parameters are not the ones a network starts training with. They are chosen so that every
formula leaves a trace, which is what lets the checker tell the mistakes apart:

- weights are He-initialized (``N(0, 2 / m_in)``), and in hidden layers row ``j`` is then scaled
  by ``0.1 ** (j / (m - 1))`` (1 down to 0.1), so that the units' batch variances span a factor of
  100 and ``eps`` matters for the small ones; biases, ``beta`` (``N(0, 0.1^2)``) and
  ``gamma`` (``1 + N(0, 0.25^2)``) are perturbed from their initial 0, 0 and 1, so that
  regularizing them, or swapping them, shows;
- unit 1 of layer 1 is switched off so that its ReLU input is exactly 0 for every sample (with
  batch norm ``gamma = beta = 0``; without, a zero row of ``W1`` and a zero bias): only then does the
  derivative of ReLU at 0 matter;
- ``eps = 1e-3``, larger than one trains with, so that where ``eps`` goes shows;
- ``lam = 0.1`` and ``eta = 0.1``, so that the penalty and the step are far above round-off;
- the running averages start at ``mu_av`` from 0.2 to -0.2 across the units (-0.2 to 0.2 in layer 2,
  and so on: never 0, and different in every layer) and ``var_av`` from 1 down to 0.3 (0.3 up to 1
  in layer 2, ...) (``mu_av{l}_init``, ``var_av{l}_init``), not at the batch's statistics, so that
  their update shows, the old average's term included (``(1 - alpha) mu`` alone, or another layer's
  average, is wrong), and so that leaving ``eps`` out in evaluation mode changes ``P_eval`` by more
  than 4 times the default tolerance (smaller ones would saturate the softmax of ``P_eval`` after the step).

The CIFAR-10 case uses the first ``n`` images of ``data_batch_1``, every one of the 3072 features,
standardized with the mean and standard deviation (1/N) of all 10000 images of ``data_batch_1``
(assignment 2's preprocessing); it loads CIFAR-10 only when asked for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, KlayerError

__all__ = ["Case", "CASES", "get_case", "case_inputs"]

NO_CIFAR = (
    "no CIFAR-10 here (the python, binary or matlab version, as a folder or .tar.gz); the CIFAR case "
    "reads it and never downloads it: give --data DIR or set KLAYER_DATA to the folder that holds it"
)


@dataclass(frozen=True)
class Case:
    """A fixed case: architecture, scalars, and where its data come from.

    Attributes
    ----------
    name : str, the ``--case`` name.
    description : str, one line.
    hidden : tuple of int, hidden widths; the network has ``len(hidden) + 1`` layers.
    batch_norm : bool, batch normalization on every hidden layer.
    d, n, C : int, features, samples, classes.
    lam, eta, eps, bn_alpha : float, the case's scalars.
    seed : int, seeds the ``numpy.random.Generator`` that draws data and parameters.
    source : ``"random"`` (Gaussian ``X`` and uniform labels) or ``"cifar"``.
    """

    name: str
    description: str
    hidden: tuple[int, ...]
    batch_norm: bool
    d: int = 10
    n: int = 5
    C: int = 10
    lam: float = 0.1
    eta: float = 0.1
    eps: float = 1e-3
    bn_alpha: float = 0.9
    seed: int = 0
    source: str = "random"

    @property
    def n_layers(self) -> int:
        """``k``, the number of linear layers."""
        return len(self.hidden) + 1

    @property
    def sizes(self) -> list[int]:
        """``[d, m_1, ..., m_{k-1}, C]``."""
        return [self.d, *self.hidden, self.C]

    def param_names(self) -> list[str]:
        """``W1, b1, gamma1, beta1, ..., Wk, bk`` (no batch norm on the last layer)."""
        names = []
        for l in range(1, self.n_layers + 1):
            names += [f"W{l}", f"b{l}"]
            if self.batch_norm and l < self.n_layers:
                names += [f"gamma{l}", f"beta{l}"]
        return names


CASES = {
    c.name: c
    for c in (
        Case("2layer", "2 layers [10 -> 8 -> 10], no batch norm, d=10, n=5", (8,), False, seed=11),
        Case("2layer_bn", "2 layers [10 -> 8 -> 10], batch norm, d=10, n=5", (8,), True, seed=12),
        Case("3layer", "3 layers [10 -> 8 -> 8 -> 10], no batch norm, d=10, n=5", (8, 8), False, seed=13),
        Case("3layer_bn", "3 layers [10 -> 8 -> 8 -> 10], batch norm, d=10, n=5", (8, 8), True, seed=14),
        Case(
            "cifar_3layer_bn",
            "3 layers [3072 -> 50 -> 50 -> 10], batch norm, the first 5 CIFAR-10 images of data_batch_1",
            (50, 50),
            True,
            d=3072,
            lam=0.01,
            seed=15,
            source="cifar",
        ),
    )
}


def get_case(name) -> Case:
    """The case called ``name`` (a :class:`Case` passes through)."""
    if isinstance(name, Case):
        return name
    if name not in CASES:
        raise KlayerError(f"unknown case {name!r}; the cases are {', '.join(CASES)} (klayer vectors --list)")
    return CASES[name]


def _cifar_batch(data_root: str | None):
    """data_batch_1 as ``(X uint8 (10000, 3072), y)``."""
    from ..data.cifar10 import default_data_dir, find_cifar10, load_cifar10

    root = data_root or default_data_dir()
    if find_cifar10(root) is None:
        raise DataError(root, NO_CIFAR)
    return load_cifar10(root, download_missing=False, batches=("data_batch_1",)).batches["data_batch_1"]


@functools.lru_cache(maxsize=2)
def _cifar_rows(n: int, data_root: str | None):
    """The first ``n`` images of data_batch_1, standardized with the whole batch's statistics
    (read once per process; callers copy)."""
    from ..data.prepare import feature_stats, standardize

    X, y = _cifar_batch(data_root)
    mean, std = feature_stats(X)
    return standardize(X[:n], mean, std, "float64"), y[:n].copy()


@functools.lru_cache(maxsize=1)
def _cifar_variants(n: int, data_root: str | None) -> dict:
    X, _ = _cifar_batch(data_root)
    N = len(X)
    total, squares = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for start in range(0, N, 1000):  # float64 sums without a 250 MB copy of the batch
        chunk = X[start : start + 1000].astype(np.float64)
        total += chunk.sum(axis=0)
        squares += (chunk**2).sum(axis=0)
    mean = total / N
    std = np.sqrt(np.maximum(squares / N - mean**2, 0))
    gmean = mean.mean()
    gstd = np.sqrt(squares.sum() / (N * X.shape[1]) - gmean**2)
    first = X[:n].astype(np.float64)
    return {
        "prep_std_unbiased": [(first - mean) / (std * np.sqrt(N / (N - 1)))],
        "prep_global_stats": [(first - gmean) / gstd],
        "prep_stats_of_the_batch": [
            (first - first.mean(axis=0)) / np.where(first.std(axis=0) > 0, first.std(axis=0), 1)
        ],
        "prep_not_standardized": [first, first / 255, first - mean, (first - mean) / 255],
    }


def cifar_preprocessing_variants(case, data_root=None) -> dict:
    """The CIFAR case's ``X`` as common preprocessing mistakes make it: mistake id -> list of
    ``(n, d)`` arrays (one per way of making it), klayer's layout."""
    case = get_case(case)
    variants = _cifar_variants(case.n, None if data_root is None else str(data_root))
    return {m: [a.copy() for a in arrays] for m, arrays in variants.items()}


def case_inputs(case, data_root=None) -> dict[str, np.ndarray]:
    """Every input of a case, in klayer's layout (samples are rows), float64.

    Parameters
    ----------
    case : Case or its name.
    data_root : where CIFAR-10 is (the CIFAR case only; default ``$KLAYER_DATA`` or the cache).

    Returns
    -------
    dict: ``X (n, d)``, ``Y (n, C)``, ``y (n,)`` int64 in ``[0, C)``; ``W{l} (m_l, m_{l-1})``,
    ``b{l}, gamma{l}, beta{l} (m_l,)``; ``mu_av{l}_init`` (+-0.2 across the units) and ``var_av{l}_init``
    (between 1 and 0.3) for batch-norm layers; 0-d arrays ``lam, eta, eps, bn_alpha``.
    """
    case = get_case(case)
    rng = np.random.default_rng(case.seed)
    if case.source == "cifar":
        X, y = (a.copy() for a in _cifar_rows(case.n, None if data_root is None else str(data_root)))
    else:
        X = rng.standard_normal((case.n, case.d))
        y = rng.integers(0, case.C, case.n)
    v = {"X": X, "Y": np.eye(case.C)[y], "y": y.astype(np.int64)}
    sizes = case.sizes
    for l in range(1, case.n_layers + 1):
        m_in, m_out = sizes[l - 1], sizes[l]
        v[f"W{l}"] = np.sqrt(2.0 / m_in) * rng.standard_normal((m_out, m_in))
        if l < case.n_layers:
            v[f"W{l}"] *= np.geomspace(1.0, 0.1, m_out)[:, None]
        v[f"b{l}"] = 0.1 * rng.standard_normal(m_out)
        if case.batch_norm and l < case.n_layers:
            v[f"gamma{l}"] = 1 + 0.25 * rng.standard_normal(m_out)
            v[f"beta{l}"] = 0.1 * rng.standard_normal(m_out)
    if case.batch_norm:  # unit 1 of layer 1 off: its ReLU input gamma * S_hat + beta is exactly 0
        v["gamma1"][0] = v["beta1"][0] = 0.0
    else:  # ... here S = 0 @ X.T + 0 = 0
        v["W1"][0] = v["b1"][0] = 0.0
    if case.batch_norm:
        for l, m in enumerate(case.hidden, start=1):
            v[f"mu_av{l}_init"] = 0.2 * (-1) ** l * np.linspace(-1.0, 1.0, m)
            v[f"var_av{l}_init"] = np.geomspace(1.0, 0.3, m)[:: (-1) ** (l + 1)]
    for key in ("lam", "eta", "eps", "bn_alpha"):
        v[key] = np.array(float(getattr(case, key)))
    return v
