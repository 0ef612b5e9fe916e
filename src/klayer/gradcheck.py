"""Numerical gradient checks that cannot pass a wrong gradient.

For every parameter ``p`` the check compares the analytic gradient ``ga`` with centred
differences ``gn(h)`` at a set of entries (all of them for small arrays; for large ones a seeded
subset that always holds the entry with the largest ``|ga|``), one table column per step ``h``.
Each parameter is judged at one step ``h*``, chosen from the numerical side alone, against the
scale of its own gradient, the measured numerical error and the scale of its layer's gradients.

Criterion
---------
For one parameter; maxima over its entries ``i`` that are *usable* at ``h``:

``gn_i(h) = (J(p + h e_i) - J(p - h e_i)) / (p_i^+ - p_i^-)``
    with the steps actually taken (``p_i +- h`` rounded to the dtype). An entry is usable at ``h``
    when none of the four evaluations at ``+-h`` and ``+-h/2`` changed the sign of any ReLU input
    (no kink crossed, so ``gn`` is a derivative there) and both steps were representable.
``err(h) = max_i |ga_i - gn_i(h)|``
``nu(h) = max(eps_n |J| / h, max_i |gn_i(h) - gn_i(h/2)|)``
    the numerical error at ``h``: the round-off of a centred difference (``eps_n``: machine epsilon
    of the numerical side's dtype) or the change when the step is halved (truncation, about
    ``h**2 J''' / 6``, plus round-off), whichever is larger.
``h*``
    the step with the smallest ``nu`` among those where at least 90% as many entries are usable
    as at the step with the most (large steps cross kinks). It is chosen without looking at
    ``ga``, so no step can be picked because it happens to agree with a wrong gradient.
``s_p = max_i max(|ga_i|, |gn_i(h*)|)``; ``G_l = max s_q`` over the parameters ``q`` of ``p``'s layer
``floor_p = max(2 nu(h*), 100 eps_a G_l)``; ``r_p = floor_p / s_p``
    what the check can resolve in ``p``: twice the numerical error, or the analytic side's
    round-off (``eps_a``: machine epsilon of the network's dtype) at the layer's gradient scale.
    ``r_p`` is the smallest relative error the check can see in ``p``.

A parameter passes when ``err(h*) <= tol * s_p`` and ``r_p <= tol``: the error is within ``tol``
of the gradient's scale, and the check can resolve ``tol``. Otherwise it fails (``r_p > tol``
is reported as ``noisy``: raise ``tol``). The exception is a bias in front of batch
normalization: its true gradient is exactly zero (batch norm subtracts the batch mean, so a
constant added to ``S`` changes nothing), so a relative error means nothing there. It is judged
in absolute terms, ``err(h*) <= floor_p``, with the round-off term taken at ``max(G_l, T)``, ``T``
the size of the terms of the batch sum that cancels to 0 (:func:`bias_roundoff`), which still
catches a batch-norm backward that misses its mean term. Any other parameter with ``r_p >= 1``
has a gradient at the noise level: nothing is tested, and the check *refuses*
(``report.refused``) rather than pass.

Soundness: a wrong gradient ``ga = g + delta`` can pass only if ``|delta_i| <= tol s_p + nu(h*)
<= 1.5 tol s_p`` at every usable entry. A sign flip (``|delta| = 2|g|``), a factor of 2
(``|g|``), a transposition, or a missing term larger than ``1.5 tol`` of the gradient's scale
fails. The table shows ``err(h) / s_p`` (``rel`` rows) or ``err(h) / G_l`` (``abs`` rows).

Degenerate configurations are refused before any work (:class:`GradcheckRefused`, see
:func:`refusal`): batch normalization over fewer than 3 distinct rows (with 2, every
normalized feature is ``+-sqrt(var / (var + eps))``, about +-1 whatever its input, so every
gradient in front of it is of order ``eps / var`` and vanishes as ``eps -> 0``), of the data or
of a hidden layer whose ReLUs merge samples; a layer in front of batch norm with a single input
(its weight column only sets a scale, which batch norm removes); a hidden layer whose ReLUs are 0
for every sample (every gradient in front of it is 0).

Kinks: a ReLU input that is exactly 0 is a point where the cost has no gradient (the analytic
code uses the subgradient 0, centred differences give 1/2). It happens at initialization when
every unit of a narrow layer is dead for some sample: the next layer's input is then
``0 @ W.T + b = 0`` with ``b = 0``. The check detects exact zeros and, if there are any, moves the
biases by a tiny seeded jitter (``kink_jitter``) to a differentiable point, and says so.

Precision: the numerical side runs in float64, also for a float32 network (whose parameters are
exactly representable in float64), and the cost is summed in float64; nothing relies on
``numpy.longdouble``. ``nu(h*)`` is then about 1e-10 of the gradient scale. Centred differences
in float32 (``numeric_dtype="float32"``) resolve only 1e-4 to 1e-1 of it, so a small missing
term could hide below their noise; they are there to show it, and are judged by the same rule.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import KlayerError
from .layers import log_softmax, softmax_cross_entropy
from .network import Network, NetworkConfig, backward, forward, hidden_activations, loss_and_grads

__all__ = [
    "DEFAULT_HS",
    "DEFAULT_TOL",
    "GradcheckRefused",
    "Numerical",
    "GradcheckRow",
    "GradcheckReport",
    "cost_and_pattern",
    "centred_differences",
    "numerical_gradients",
    "judge",
    "expected_zero",
    "exact_kinks",
    "refusal",
    "differentiable_point",
    "check_gradients",
]

# Step sizes by the dtype of the numerical side; tolerances by the dtype of the network.
DEFAULT_HS = {"float64": (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2), "float32": (1e-4, 1e-3, 1e-2, 1e-1)}
DEFAULT_TOL = {"float64": 1e-7, "float32": 1e-3}
NOISE_FACTOR = 2.0
ROUNDOFF_UNITS = 100.0


class GradcheckRefused(KlayerError):
    """The configuration makes a gradient check uninformative; the message says why and what to do."""


def cost_and_pattern(params, X, y, config: NetworkConfig, lam: float):
    """The cost ``J`` as a float64 number, and the sign pattern of every ReLU input.

    Parameters
    ----------
    params : dict of arrays (one network), all of one dtype; X : (N, d) array of that dtype.
    y : (N,) labels; config : NetworkConfig; lam : float.

    Returns
    -------
    J : float, ``mean_i CE_i + lam * sum_l ||W_l||^2``, summed in float64 (the mean exactly).
    pattern : tuple of (N, m_l) bool arrays, ``Z > 0`` for every hidden layer ``l``.
    """
    scores, caches, _ = forward(params, X, config)
    logp = log_softmax(scores)[np.arange(len(y)), y]
    penalty = sum(np.square(params[f"W{l}"], dtype=np.float64).sum() for l in range(1, config.n_layers + 1))
    J = lam * penalty - math.fsum(logp) / len(y)
    return float(J), tuple(cache[2] > 0 for cache in caches[:-1])  # (linear, batch norm, relu, dropout)


def centred_differences(f, array: np.ndarray, flat_indices, h: float):
    """Centred differences ``(J(p + h e_i) - J(p - h e_i)) / (p_i^+ - p_i^-)`` at flat entries.

    Parameters
    ----------
    f : callable returning ``(J, pattern)`` as :func:`cost_and_pattern` does.
    array : the parameter, modified in place during the call and restored exactly afterwards.
    flat_indices : (n,) entries to differentiate.
    h : step size; the steps taken are ``p_i +- h`` rounded to ``array.dtype``.

    Returns
    -------
    values : (n,) float64, NaN where ``p_i + h`` and ``p_i - h`` round to the same number.
    kinked : (n,) bool, True where an evaluation changed the sign pattern of the ReLU inputs.
    """
    _, base = f()

    def moved(pattern):
        return not all(map(np.array_equal, pattern, base))

    flat = array.ravel()
    values, kinked = [], []
    for i in flat_indices:
        old = flat[i]
        flat[i] = old + h
        up = float(flat[i])
        J_up, pattern_up = f()
        flat[i] = old - h
        down = float(flat[i])
        J_down, pattern_down = f()
        flat[i] = old
        values.append((J_up - J_down) / (up - down) if up > down else np.nan)
        kinked.append(moved(pattern_up) or moved(pattern_down))
    return np.array(values), np.array(kinked)


@dataclass
class Numerical:
    """Centred differences at fixed entries, for every step ``h`` and for ``h / 2``.

    Attributes
    ----------
    hs : (m,) steps, ascending.
    J : float, the cost at the checked point.
    eps : machine epsilon of the dtype the cost was evaluated in.
    indices : name -> (n,) flat entries.
    values, halves : name -> (m, n) float64, ``gn(h)`` and ``gn(h / 2)``.
    usable : name -> (m, n) bool, no kink crossed and finite at both ``h`` and ``h / 2``.
    """

    hs: tuple[float, ...]
    J: float
    eps: float
    indices: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    halves: dict[str, np.ndarray]
    usable: dict[str, np.ndarray]


def numerical_gradients(params, X, y, config: NetworkConfig, lam: float, indices, hs, numeric_dtype="float64"):
    """Centred differences of the cost at ``indices``, for every ``h`` in ``hs`` and ``h / 2``.

    Parameters
    ----------
    params : dict of arrays (one network); copied, never modified.
    X : (N, d) array; y : (N,) labels; lam : float.
    indices : dict name -> (n,) flat entries.
    hs : positive steps.
    numeric_dtype : dtype of the forward passes.

    Returns
    -------
    Numerical
    """
    dtype = np.dtype(numeric_dtype)
    work = {n: np.array(p, dtype=dtype) for n, p in params.items()}
    Xn = np.asarray(X, dtype=dtype)

    def f():
        return cost_and_pattern(work, Xn, y, config, lam)

    hs = tuple(sorted(float(h) for h in hs))
    values, halves, usable = {}, {}, {}
    for name, idx in indices.items():
        full = [centred_differences(f, work[name], idx, h) for h in hs]
        half = [centred_differences(f, work[name], idx, h / 2) for h in hs]
        values[name] = np.array([v for v, _ in full]).reshape(len(hs), len(idx))
        halves[name] = np.array([v for v, _ in half]).reshape(len(hs), len(idx))
        kinked = np.array([k for _, k in full] + [k for _, k in half]).reshape(2, len(hs), len(idx)).any(axis=0)
        usable[name] = ~kinked & np.isfinite(values[name]) & np.isfinite(halves[name])
    return Numerical(hs, f()[0], float(np.finfo(dtype).eps), dict(indices), values, halves, usable)


@dataclass
class GradcheckRow:
    """One parameter of the table.

    Attributes
    ----------
    name : parameter name.
    kind : ``"rel"`` (errors divided by ``s_p``) or ``"abs"`` (divided by ``G_l``: judged in
        absolute terms, the true gradient being zero or at the noise level).
    errors : per ``h``, ``err(h)`` in the row's unit (NaN where no entry is usable).
    best : index of ``h*`` in ``errors``.
    bound : the largest error that passes, in the row's unit.
    resolution : ``r_p``, the smallest relative error the check can see in this parameter.
    status : ``"ok"``, ``"fail"`` (error above the bound and the noise), ``"noisy"`` (``tol < r_p``:
        the check cannot resolve ``tol``), ``"kinks"`` (every step crossed a kink at every entry) or
        ``"refused"`` (``r_p >= 1`` where a gradient is expected: nothing is tested).
    expected_zero : True for a bias in front of batch norm (true gradient exactly 0).
    n_checked : entries usable at ``h*``; n_total : entries of the parameter.
    scale : ``s_p``.
    unit : what ``errors`` and ``bound`` are divided by: ``s_p`` (rel) or ``G_l`` (abs).
    """

    name: str
    kind: str
    errors: list[float]
    best: int
    bound: float
    resolution: float
    status: str
    expected_zero: bool
    n_checked: int
    n_total: int
    scale: float
    unit: float

    @property
    def passed(self) -> bool:
        return self.status == "ok"


@dataclass
class GradcheckReport:
    """The reports' table: one row per parameter, one column per step size ``h``."""

    hs: tuple[float, ...]
    rows: list[GradcheckRow]
    tol: float
    settings: dict = field(default_factory=dict)

    @property
    def refused(self) -> str | None:
        """Why nothing is tested for some parameter (a one-line reason), or None. A refused row is
        judged in absolute terms, so ``bound * unit`` is its noise floor (also when its scale is 0)."""
        for r in self.rows:
            if r.status == "refused":
                return (
                    f"{r.name}'s gradient (largest entry {r.scale:.1e}) is at the check's noise level "
                    f"({r.bound * r.unit:.1e}), so nothing is tested: its true gradient is (almost) 0 "
                    "at this point; try another --seed"
                )
        return None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def failures(self) -> list[str]:
        """Names of the parameters that do not pass, with the reason unless the error is too large."""
        out = []
        for r in self.rows:
            if r.status == "fail":
                out.append(r.name)
            elif r.status == "noisy":
                out.append(f"{r.name}: the check resolves {r.resolution:.1e} > tol; add smaller --h or raise --tol")
            elif r.status == "kinks":
                out.append(f"{r.name}: every step crossed a ReLU kink, use smaller --h")
        return out

    def verdict(self) -> str:
        if self.refused:
            return f"REFUSED: {self.refused}"
        return "PASS" if self.passed else f"FAIL ({'; '.join(self.failures())})"

    def format_table(self) -> str:
        head = f"{'param':<8} {'err':<4} {'checked':>11} " + " ".join(f"{'h=' + format(h, '.0e'):>10}" for h in self.hs)
        head += f" {'bound':>8}"
        lines = [", ".join(f"{k}={v}" for k, v in self.settings.items()), head, "-" * len(head)]
        for r in self.rows:
            cells = " ".join(
                ("kink" if np.isnan(e) else f"{e:.2e}").rjust(9) + ("*" if k == r.best else " ")
                for k, e in enumerate(r.errors)
            )
            mark = "" if r.passed else f"  {r.status.upper()}"
            lines.append(f"{r.name:<8} {r.kind:<4} {r.n_checked:>5}/{r.n_total:<5} {cells} {r.bound:8.1e}{mark}")
        lines.append(f"* = the step each parameter is judged at (most accurate numerically): {self.verdict()}")
        lines.append(
            "rel = max|ga-gn| / the parameter's largest gradient entry; abs = max|ga-gn| / its layer's largest, "
            f"where the true gradient is 0; bound = tol={self.tol:g} (rel) or the check's noise (abs)"
        )
        return "\n".join(lines)


def _layer(name: str) -> int:
    return int(re.search(r"\d+$", name).group())


def expected_zero(name: str, config: NetworkConfig) -> bool:
    """True for a bias in front of batch normalization: its true gradient is exactly 0."""
    return config.batch_norm and re.fullmatch(r"b\d+", name) is not None and _layer(name) < config.n_layers


def bias_roundoff(params, X, y, config: NetworkConfig) -> dict[str, float]:
    """For each bias in front of batch normalization, the scale of the analytic side's round-off.

    Its gradient is ``sum_i dS_ij`` with ``dS_ij = inv_j (G_ij - mean_i G_ij - S_hat_ij mean_i(G S_hat)_j)``
    and ``G = dout * gamma``, a sum that cancels to exactly 0; computed in floating point it is
    round-off of its terms, whose sizes ``T_j = inv_j sum_i (|G_ij| + |mean G_j| + |S_hat_ij|
    |mean(G S_hat)_j|)`` say how large that can be. Returns ``max_j T_j`` per bias, from klayer's
    own forward and backward at the same point (in float64): with a small batch ``inv`` can be large
    and ``T`` far above the layer's gradients."""
    if not config.batch_norm:
        return {}
    cfg64 = dataclasses.replace(config, dtype="float64", dropout=0.0, input_dropout=0.0)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    scores, caches, _ = forward(p64, np.asarray(X, np.float64), cfg64, train=True)
    _, dscores = softmax_cross_entropy(scores, y)
    upstream = {}
    backward(dscores, caches, cfg64, bn_upstream=upstream)
    out = {}
    for l, dout in upstream.items():
        S_hat, inv_std, gamma = caches[l - 1][1]
        G = dout * gamma
        terms = np.abs(G) + np.abs(G.mean(axis=0)) + np.abs(S_hat) * np.abs((G * S_hat).mean(axis=0))
        T = inv_std * terms.sum(axis=0)
        out[f"b{l}"] = float(np.abs(T).max())
    return out


def judge(grads, numerical: Numerical, config: NetworkConfig, tol: float, roundoff=None) -> list[GradcheckRow]:
    """Judge analytic gradients against centred differences (the module docstring's criterion).

    Parameters
    ----------
    grads : dict name -> analytic gradient, shaped as the parameter; its dtype is ``config.dtype``.
    numerical : :class:`Numerical` at the same point.
    config : NetworkConfig.
    tol : relative accuracy asked of every parameter.
    roundoff : None, or :func:`bias_roundoff`: a bias in front of batch norm is then allowed
        ``100 eps_a max(G_l, T)`` of round-off, not ``100 eps_a G_l``.

    Returns
    -------
    list of :class:`GradcheckRow`, in ``config.param_names()`` order.
    """
    hs = np.asarray(numerical.hs)
    measured = {}
    for name in config.param_names():
        idx = numerical.indices[name]
        ga = np.ravel(grads[name])[idx]
        gn, half, usable = numerical.values[name], numerical.halves[name], numerical.usable[name]
        err = np.where(usable, np.abs(ga - gn), -np.inf).max(axis=1)
        change = np.where(usable, np.abs(gn - half), -np.inf).max(axis=1)
        nu = np.maximum(numerical.eps * abs(numerical.J) / hs, change)
        count = usable.sum(axis=1)
        best = int(np.argmin(np.where(10 * count >= 9 * count.max(), nu, np.inf)))
        scale = max(np.abs(ga).max(), np.where(usable[best], np.abs(gn[best]), 0.0).max())
        measured[name] = (err, best, nu[best], float(scale), int(count[best]), np.size(grads[name]))
    layer_scale = {}
    for name, m in measured.items():
        layer_scale[_layer(name)] = max(layer_scale.get(_layer(name), 0.0), m[3])
    eps_a = float(np.finfo(np.dtype(config.dtype)).eps)
    rows = []
    for name, (err, best, nu, scale, n_checked, n) in measured.items():
        G_l = layer_scale[_layer(name)]
        zero = expected_zero(name, config)
        terms = max(G_l, (roundoff or {}).get(name, 0.0)) if zero else G_l  # the sizes that round
        floor = max(NOISE_FACTOR * nu, ROUNDOFF_UNITS * eps_a * terms)
        resolution = floor / scale if scale > 0 else np.inf
        absolute = zero or resolution >= 1
        bound = floor if absolute else tol * scale
        if n_checked == 0:
            status = "kinks"
        elif not zero and resolution >= 1:
            status = "refused"
        elif err[best] > max(bound, floor):
            status = "fail"
        elif resolution > tol and not zero:
            status = "noisy"
        else:
            status = "ok"
        unit = (G_l if absolute else scale) or 1.0
        errors = [float(e) / unit if np.isfinite(e) else np.nan for e in err]
        rows.append(
            GradcheckRow(
                name, "abs" if absolute else "rel", errors, best, bound / unit, float(resolution), status, zero,
                n_checked, n, scale, unit,
            )
        )  # fmt: skip
    return rows


def exact_kinks(params, X, config: NetworkConfig) -> int:
    """Number of hidden pre-activations (ReLU inputs) that are exactly 0, in training mode."""
    return sum(int(np.count_nonzero(Z == 0)) for _, _, Z, _ in hidden_activations(params, X, config))


def refusal(params, X, config: NetworkConfig) -> str | None:
    """Why a gradient check at this point would test nothing (a one-line reason), or None.

    Refused: a layer in front of batch norm with a single input; batch norm over fewer than 3
    distinct rows (of the data, or of a hidden layer whose ReLUs merge samples); a hidden layer
    whose ReLUs are 0 for every sample.

    Parameters
    ----------
    params : dict of arrays (one network); X : (N, d) array; config : NetworkConfig.
    """
    if config.batch_norm:
        for l, m_in in enumerate(config.sizes[: config.n_layers - 1], start=1):
            if m_in == 1:
                what = "--features 2 or more" if l == 1 else "hidden widths of 2 or more"
                return (
                    f"W{l} has a single input column, so it only sets a scale that batch norm removes and its "
                    f"gradient is 0; use {what}"
                )
    H = np.asarray(X)
    for l, _, _, H_next in hidden_activations(params, X, config):
        n = len(np.unique(H, axis=0))
        if config.batch_norm and n < 3 and l == 1:
            return (
                f"batch norm over {n} distinct sample(s) maps every feature to fixed values (+-1 for 2) whatever "
                "its input, so the gradients in front of it vanish; use --batch-size 3 or more"
            )
        if config.batch_norm and n < 3:
            return (
                f"the ReLUs of layer {l - 1} leave {n} distinct rows for the batch norm of layer {l}, so the "
                "gradients in front of it vanish; try another --seed or a larger --batch-size"
            )
        if not H_next.any():
            return (
                f"every ReLU of layer {l} is 0 for every sample, so the gradients in front of it are 0; "
                "try another --seed"
            )
        H = H_next
    return None


def differentiable_point(params, X, config: NetworkConfig, rng: np.random.Generator, kink_jitter: float):
    """The point to check at: ``params``, with the biases jittered if a ReLU input is exactly 0.

    Parameters
    ----------
    params : dict of arrays (one network), not modified.
    X : (N, d) array; config : NetworkConfig.
    rng : Generator for the jitter; kink_jitter : its standard deviation (0: no jitter).

    Returns
    -------
    params : dict of arrays, jittered copies of the biases if needed.
    kinks : int, ReLU inputs that were exactly 0 (see :func:`exact_kinks`).

    Raises
    ------
    GradcheckRefused
        When a check at this point would test nothing (see :func:`refusal`).
    """
    kinks = exact_kinks(params, X, config)
    if kinks and kink_jitter:
        params = dict(params)
        for l in range(1, config.n_layers + 1):
            b = params[f"b{l}"]
            params[f"b{l}"] = b + (kink_jitter * rng.standard_normal(b.shape)).astype(b.dtype)
    reason = refusal(params, X, config)
    if reason:
        raise GradcheckRefused(f"gradient check refused: {reason}")
    return params, kinks


def _entries(g: np.ndarray, max_entries: int, rng: np.random.Generator) -> np.ndarray:
    """All flat entries of ``g``, or ``max_entries`` of them: the largest ``|g|`` and a seeded rest."""
    n = g.size
    if n <= max_entries:
        return np.arange(n)
    top = int(np.argmax(np.abs(g)))
    rest = rng.permutation(n - 1)[: max_entries - 1]
    return np.sort(np.append(rest + (rest >= top), top))


def check_gradients(
    network: Network,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    rng: np.random.Generator,
    hs=None,
    max_entries: int = 500,
    tol: float | None = None,
    kink_jitter: float = 1e-3,
    numeric_dtype="float64",
    grads=None,
) -> GradcheckReport:
    """Compare analytic and numerical gradients of the cost for every parameter.

    Parameters
    ----------
    network : Network (one model, no stack).
    X : (N, d) array; y : (N,) labels.
    lam : float >= 0, L2 penalty.
    rng : Generator for the kink jitter and the entries of arrays larger than ``max_entries``.
    hs : positive step sizes, one table column each (default ``DEFAULT_HS[numeric_dtype]``).
    max_entries : entries checked per parameter, at least 1.
    tol : relative accuracy asked of every parameter (default ``DEFAULT_TOL[network dtype]``).
    kink_jitter : standard deviation of the bias jitter applied when a ReLU input is exactly 0.
    numeric_dtype : ``"float64"`` or ``"float32"``, the dtype of the numerical side.
    grads : analytic gradients to check (default: :func:`klayer.network.loss_and_grads`).

    Returns
    -------
    GradcheckReport

    Raises
    ------
    GradcheckRefused
        When the configuration would make the check uninformative (see :func:`refusal`).
    """
    config = network.config
    numeric_dtype = np.dtype(numeric_dtype).name
    hs = tuple(DEFAULT_HS[numeric_dtype] if hs is None else hs)
    tol = DEFAULT_TOL[config.dtype] if tol is None else tol
    if not hs or not all(np.isfinite(h) and h > 0 for h in hs):
        raise ValueError(f"steps h must be positive and finite, got {hs}")
    if not (np.isfinite(tol) and tol > 0) or max_entries < 1 or not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"need tol > 0, max_entries >= 1 and lam >= 0, got {tol}, {max_entries}, {lam}")
    params, kinks = differentiable_point(network.params, X, config, rng, kink_jitter)
    if grads is None:
        _, _, grads, _ = loss_and_grads(params, X, y, config, lam)
    indices = {n: _entries(grads[n], max_entries, rng) for n in config.param_names()}
    numerical = numerical_gradients(params, X, y, config, lam, indices, hs, numeric_dtype)
    rows = judge(grads, numerical, config, tol, bias_roundoff(params, X, y, config))
    settings = {
        "hidden": list(config.hidden),
        "batch_norm": config.batch_norm,
        "d": X.shape[1],
        "batch": len(y),
        "lam": lam,
        "dtype": config.dtype if numeric_dtype == config.dtype else f"{config.dtype} (differences in {numeric_dtype})",
    }
    if kinks:
        settings["note"] = (
            f"{kinks} ReLU inputs were exactly 0 (no gradient there); biases jittered by "
            f"{kink_jitter:g} to check at a differentiable point"
        )
    return GradcheckReport(numerical.hs, rows, tol, settings)
