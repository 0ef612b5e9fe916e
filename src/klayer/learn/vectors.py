"""Reference vectors: every quantity of one forward pass, backward pass and SGD step of a case.

The computation is :class:`Computation`, written step by step on :mod:`klayer.layers`; each
catalogued mistake (:mod:`klayer.learn.mistakes`) is a subclass that overrides one step.

Names (``l`` is the layer, from 1; ``k`` layers; batch-norm quantities for hidden layers only):

=========== ================================================================================
inputs      ``X, Y, y, W{l}, b{l}, gamma{l}, beta{l}, mu_av{l}_init, var_av{l}_init,
            lam, eta, eps, bn_alpha``
forward     ``S{l}, mu{l}, var{l}, S_hat{l}, S_tilde{l}, H{l}`` for ``l < k``, then ``S{k}, P,
            loss, cost``
backward    from ``l = k`` down to 1: ``grad_gamma{l}, grad_beta{l}, G{l}, grad_W{l}, grad_b{l}``
step        ``mu_av{l}, var_av{l}``, then ``W{l}_next, b{l}_next, gamma{l}_next, beta{l}_next``
evaluation  with batch norm ``S_eval{l}, S_hat_eval{l}`` for ``l < k``; then ``P_eval``
=========== ================================================================================

``G{l}`` is the gradient of the cost with respect to ``S{l}``, the layer's scores before batch
norm (for the last layer, before the softmax): ``G{k} = (P - Y) / n``. ``P_eval`` holds the class
probabilities of ``X`` for the network after the step, in evaluation mode (batch norm with the
running averages ``mu_av{l}, var_av{l}``); in the cases with batch norm, ``S_eval{l}`` and
``S_hat_eval{l}`` are that pass's scores and normalized scores, layer by layer, so that a wrong
evaluation path is located at its first layer.

Layouts: ``"klayer"`` has samples in rows (``X: (n, d)``, ``S = X @ W.T + b``, vectors ``(m,)``);
``"assignment"`` has samples in columns (``X: (d, n)``, ``S = W X + b``, vectors ``(m, 1)``).
Weight matrices ``W: (m, d)`` and scalars are the same in both; ``y`` is ``(n,)``, 0-based.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import layers
from ..data.matfile import read_mat
from ..errors import DataError, KlayerError
from ..io import atomic_write
from .cases import Case, case_inputs, get_case

__all__ = [
    "LAYOUTS",
    "FORMATS",
    "Computation",
    "BatchNormOut",
    "compute",
    "quantity_names",
    "split_name",
    "describe_name",
    "kind_of",
    "to_layout",
    "reference_vectors",
    "write_vectors",
    "read_values",
]

LAYOUTS = ("klayer", "assignment")
FORMATS = (".npz", ".mat", ".json")
SCALARS = ("lam", "eta", "eps", "bn_alpha")
META = ("case_name", "layout")
# Quantities with one row per sample in klayer's layout (one column per sample in the assignments').
ROW_BASES = {"X", "Y", "S", "S_hat", "S_tilde", "H", "P", "G", "S_eval", "S_hat_eval", "P_eval"}
_NAME = re.compile(r"^(?P<base>.*?)(?P<layer>\d+)(?P<suffix>_next|_init)?$")


@dataclass
class BatchNormOut:
    """What one batch-norm forward gives: its statistics, ``S_hat``, ``S_tilde``, the layer's
    output (the ReLU input, normally ``S_tilde``) and the cache for the backward pass."""

    mu: np.ndarray
    var: np.ndarray
    S_hat: np.ndarray
    S_tilde: np.ndarray
    out: np.ndarray
    cache: tuple


class Computation:
    """The reference computation of one case, one overridable step per method (klayer layout).

    Arrays are float64, samples in rows: ``H: (n, m_in)``, ``W: (m_out, m_in)``, vectors ``(m,)``.
    ``inputs`` are the case's inputs and ``layer`` the layer being computed (set by :func:`compute`),
    for the mistakes that depend on them.
    """

    def __init__(self, case: Case, inputs: dict | None = None):
        self.case = case
        self.eps = case.eps
        self.inputs = {} if inputs is None else inputs
        self.layer = None

    def linear(self, H, W, b):
        """``S = H @ W.T + b`` and the cache of :func:`klayer.layers.linear_backward`."""
        return layers.linear_forward(H, W, b)

    def batchnorm(self, S, gamma, beta, eps) -> BatchNormOut:
        """Batch statistics (1/n variance), ``S_hat = (S - mu) / sqrt(var + eps)``, ``gamma * S_hat + beta``."""
        out, cache, (mu, var) = layers.batchnorm_train_forward(S, gamma, beta, eps)
        return BatchNormOut(mu, var, cache[0], out, out, cache)

    def relu(self, Z):
        """``max(Z, 0)``."""
        return layers.relu_forward(Z)[0]

    def head(self, S, y, Y):
        """``P = softmax(S)`` row-wise, the mean cross-entropy, and ``dJ/dS = (P - Y) / n``."""
        loss, dS = layers.softmax_cross_entropy(S, y)
        return layers.softmax(S), float(loss), dS

    def cost(self, loss, params, lam):
        """``loss + lam * sum_l ||W_l||^2``."""
        return loss + lam * sum(np.sum(p**2) for name, p in params.items() if name.startswith("W"))

    def shown_G(self, dH, dZ, dS):
        """What ``G{l}`` holds of a hidden layer's gradients with respect to its output ``H``, the
        ReLU's input ``Z`` and its scores ``S``: ``dS``."""
        return dS

    def relu_back(self, dH, layer):
        """Gradient through ReLU, zero where the output ``layer["H"]`` is not positive."""
        return layers.relu_backward(dH, layer["H"])

    def bn_back(self, dZ, cache):
        """``(dS, dgamma, dbeta)``: :func:`klayer.layers.batchnorm_backward`."""
        return layers.batchnorm_backward(dZ, cache)

    def linear_back(self, G, cache, need_dX):
        """``(dH, dW, db)``: ``G @ W``, ``G.T @ H``, ``G.sum(0)``."""
        return layers.linear_backward(G, cache, need_dX)

    def penalize(self, grads, params, lam):
        """Add the penalty's gradient ``2 * lam * W`` to every ``grad_W``, in place."""
        for name, p in params.items():
            if name.startswith("W"):
                grads[name] = grads[name] + 2 * lam * p

    def running(self, avg, stat, alpha, n, is_var):
        """``alpha * avg + (1 - alpha) * stat``."""
        return alpha * avg + (1 - alpha) * stat

    def step(self, p, grad, eta):
        """``p - eta * grad``."""
        return p - eta * grad

    def eval_params(self, before, after):
        """The parameters ``P_eval`` is computed with: those after the step."""
        return after

    def eval_probs(self, params, running, X, eps=None):
        """``X`` through the network in evaluation mode, layer by layer: batch norm with the running
        averages ``running`` (``mu{l}, var{l}``), or with the batch's statistics when ``running`` is
        None, and ``eps`` (default the case's).

        Returns
        -------
        dict: ``S_eval{l}, S_hat_eval{l}`` ``(n, m_l)`` for the hidden layers (with batch norm),
        and ``P_eval`` ``(n, C)``.
        """
        c, out, H = self.case, {}, X
        eps = c.eps if eps is None else eps
        for l in range(1, c.n_layers):
            S = layers.linear_forward(H, params[f"W{l}"], params[f"b{l}"])[0]
            Z = S
            if c.batch_norm:
                if running is None:
                    mu, var = S.mean(axis=-2), S.var(axis=-2)
                else:
                    mu, var = running[f"mu{l}"], running[f"var{l}"]
                S_hat = layers.batchnorm_eval_forward(S, np.ones_like(mu), np.zeros_like(mu), mu, var, eps)
                out[f"S_eval{l}"], out[f"S_hat_eval{l}"] = S, S_hat
                Z = params[f"gamma{l}"] * S_hat + params[f"beta{l}"]
            H = layers.relu_forward(Z)[0]
        out["P_eval"] = layers.softmax(layers.linear_forward(H, params[f"W{c.n_layers}"], params[f"b{c.n_layers}"])[0])
        return out


def compute(case, inputs=None, computation: type[Computation] = Computation, data_root=None) -> dict:
    """Every quantity of one forward pass, backward pass and update, in klayer's layout.

    Parameters
    ----------
    case : Case or its name.
    inputs : dict from :func:`klayer.learn.cases.case_inputs` (computed when None).
    computation : the class of the steps to use (default: the reference, :class:`Computation`).
    data_root : where CIFAR-10 is, for the CIFAR case.

    Returns
    -------
    dict name -> float64 array (``y`` int64), in the order of :func:`quantity_names`.
    """
    case = get_case(case)
    v = dict(case_inputs(case, data_root) if inputs is None else inputs)
    comp = computation(case, dict(v))
    k, bn = case.n_layers, case.batch_norm
    eps, lam, eta, alpha = (float(v[s]) for s in ("eps", "lam", "eta", "bn_alpha"))
    params = {name: v[name] for name in case.param_names()}
    record = {}  # per layer: the forward values the backward pass needs
    H = v["X"]
    for l in range(1, k + 1):
        comp.layer = l
        S, lin_cache = comp.linear(H, v[f"W{l}"], v[f"b{l}"])
        v[f"S{l}"] = S
        record[l] = {"S": S, "lin": lin_cache}
        if l == k:
            break
        Z = S
        if bn:
            r = comp.batchnorm(S, v[f"gamma{l}"], v[f"beta{l}"], eps)
            v[f"mu{l}"], v[f"var{l}"], v[f"S_hat{l}"], v[f"S_tilde{l}"] = r.mu, r.var, r.S_hat, r.S_tilde
            Z = r.out
            record[l]["bn"] = r.cache
        H = comp.relu(Z)
        v[f"H{l}"] = H
        record[l].update(Z=Z, H=H)
    v["P"], loss, G = comp.head(S, v["y"], v["Y"])
    v["loss"] = np.array(loss)
    v["cost"] = np.array(comp.cost(loss, params, lam))

    grads, dH = {}, None  # dH: the gradient with respect to the layer's output, from the layer above
    for l in range(k, 0, -1):
        comp.layer = l
        if l < k:
            dZ = comp.relu_back(dH, record[l])
            if bn:
                G, grads[f"gamma{l}"], grads[f"beta{l}"] = comp.bn_back(dZ, record[l]["bn"])
            else:
                G = dZ
            v[f"G{l}"] = comp.shown_G(dH, dZ, G)
        else:
            v[f"G{l}"] = G
        dH, grads[f"W{l}"], grads[f"b{l}"] = comp.linear_back(G, record[l]["lin"], l > 1)
    comp.penalize(grads, params, lam)
    v.update({f"grad_{name}": g for name, g in grads.items()})

    running = {}
    if bn:
        for l in range(1, k):
            for stat in ("mu", "var"):
                avg = comp.running(v[f"{stat}_av{l}_init"], v[f"{stat}{l}"], alpha, case.n, stat == "var")
                v[f"{stat}_av{l}"] = running[f"{stat}{l}"] = avg
    after = {}
    for name in params:
        v[f"{name}_next"] = after[name] = comp.step(params[name], grads[name], eta)
    v.update(comp.eval_probs(comp.eval_params(params, after), running, v["X"]))
    order = quantity_names(case)
    return {name: v[name] for name in order if name in v}


def quantity_names(case) -> list[str]:
    """Every name of a case, in the order of computation (see the module docstring)."""
    case = get_case(case)
    k, bn = case.n_layers, case.batch_norm
    names = ["X", "Y", "y", *SCALARS, *case.param_names()]
    if bn:
        names += [f"{s}_av{l}_init" for l in range(1, k) for s in ("mu", "var")]
    for l in range(1, k):
        names += [f"S{l}"] + ([f"mu{l}", f"var{l}", f"S_hat{l}", f"S_tilde{l}"] if bn else []) + [f"H{l}"]
    names += [f"S{k}", "P", "loss", "cost"]
    for l in range(k, 0, -1):
        names += ([f"grad_gamma{l}", f"grad_beta{l}"] if bn and l < k else []) + [f"G{l}", f"grad_W{l}", f"grad_b{l}"]
    if bn:
        names += [f"{s}_av{l}" for l in range(1, k) for s in ("mu", "var")]
    names += [f"{p}_next" for p in case.param_names()]
    if bn:
        names += [f"{s}{l}" for l in range(1, k) for s in ("S_eval", "S_hat_eval")]
    names += ["P_eval"]
    return names


def split_name(name: str):
    """Base, layer and suffix: ``"grad_W2"`` -> ``("grad_W", 2, "")``, ``"W1_next"`` -> ``("W", 1, "_next")``,
    ``"P"`` -> ``("P", None, "")``."""
    m = _NAME.match(name)
    if m is None:
        return name, None, ""
    return m["base"], int(m["layer"]), m["suffix"] or ""


def describe_name(name: str) -> str:
    """``"S_hat2"`` -> ``"S_hat in layer 2"``; names without a layer are returned as they are."""
    base, l, suffix = split_name(name)
    return name if l is None else f"{base}{suffix} in layer {l}"


def kind_of(name: str, ref: np.ndarray) -> str:
    """``"scalar"``, ``"labels"`` (y), ``"vector"`` (one entry per unit), ``"rows"`` (one row per
    sample in klayer's layout) or ``"matrix"`` (a weight matrix, the same in both layouts)."""
    if np.ndim(ref) == 0:
        return "scalar"
    if name == "y":
        return "labels"
    if np.ndim(ref) == 1:
        return "vector"
    return "rows" if split_name(name)[0] in ROW_BASES else "matrix"


def to_layout(values: dict, layout: str) -> dict:
    """Values in klayer's layout converted to ``layout`` (data matrices transposed, vectors as columns)."""
    if layout not in LAYOUTS:
        raise KlayerError(f"unknown layout {layout!r}; use {' or '.join(LAYOUTS)}")
    if layout == "klayer":
        return dict(values)
    out = {}
    for name, a in values.items():
        kind = kind_of(name, a)
        out[name] = a.T.copy() if kind == "rows" else a.reshape(-1, 1) if kind == "vector" else a
    return out


def reference_vectors(case, layout: str = "klayer", data_root=None) -> dict:
    """Every quantity of ``case`` (see the module docstring), in ``layout``.

    Examples
    --------
    >>> v = reference_vectors("3layer_bn", layout="assignment")
    >>> v["X"].shape, v["W1"].shape, v["b1"].shape, v["S_hat2"].shape
    ((10, 5), (8, 10), (8, 1), (8, 5))
    """
    return to_layout(compute(case, data_root=data_root), layout)


def write_vectors(case, path, layout: str = "klayer", data_root=None) -> dict:
    """Write the reference vectors of ``case`` to ``path``; the format follows its extension.

    ``.npz`` holds one array per name; ``.mat`` (MATLAB v5, :func:`scipy.io.savemat`) one variable
    per name (``y`` as doubles, 1-D arrays as rows); ``.json`` one member per name (numbers and
    nested lists, row by row; one name per line). Every format also holds ``case_name`` and ``layout`` (strings).

    Returns
    -------
    dict: the values written.
    """
    case = get_case(case)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise KlayerError(f"{path}: unknown format {suffix or '(no extension)'!r}; use {', '.join(FORMATS)}")
    values = reference_vectors(case, layout, data_root)
    meta = {"case_name": case.name, "layout": layout}
    buf = io.BytesIO()  # rendered in memory, then written atomically: never a half-written file
    if suffix == ".npz":
        np.savez(buf, **values, **meta)
    elif suffix == ".mat":
        import scipy.io

        mat = {name: a.astype(np.float64) if name == "y" else a for name, a in values.items()}
        scipy.io.savemat(buf, {**mat, **meta}, oned_as="row")
    else:
        doc = {**meta, **{name: a.tolist() for name, a in values.items()}}  # one name per line
        buf.write(("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(x)}" for k, x in doc.items()) + "\n}\n").encode())
    atomic_write(path, buf.getvalue())
    return values


def _flatten(d: dict, into: dict):
    """Members of ``d``, with one level of nested dicts (MATLAB structs, JSON objects) merged in."""
    for key, val in d.items():
        if isinstance(val, dict):
            into.update({k: x for k, x in val.items() if not isinstance(x, dict)})
        else:
            into[key] = val
    return into


def _from_mat(x):
    """A MATLAB variable as read by :func:`klayer.data.matfile.read_mat` (shapes kept): a string,
    an array, or a struct's fields."""
    if isinstance(x, dict):
        return {name: _from_mat(v) for name, v in x.items()}
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return "".join(x.ravel().tolist())
    return x


def _meta_str(x):
    """``case_name`` or ``layout`` as a str when it holds one string (a 0-d or 1-element text array)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "US" and x.size == 1:
        return str(x.ravel()[0])
    return x


def read_values(path) -> dict:
    """A student's (or klayer's) file as ``name -> value`` (arrays, numbers or strings).

    ``.npz``, ``.mat`` (v5; a struct's fields are read as names too) or ``.json`` (an object of
    names; a nested object is read as names too). Raises :class:`klayer.errors.DataError` for a
    file that cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(path, f"unknown format {suffix or '(no extension)'!r}; use {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        if suffix == ".npz":  # np.savez stores a string as a 0-d array: read case_name and layout as str
            with np.load(path, allow_pickle=False) as z:
                return {name: _meta_str(z[name]) if name in META else z[name] for name in z.files}
        if suffix == ".mat":  # klayer's strict reader: a corrupt file cannot crash the process
            d = read_mat(path.read_bytes(), path)
            return _flatten({k: _from_mat(x) for k, x in d.items()}, {})
        doc = json.loads(path.read_text())
    except DataError:
        raise
    except Exception as e:  # numpy, scipy and json raise many kinds of errors on bad files
        raise DataError(path, f"cannot read as {suffix} ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise DataError(path, f"expected a JSON object of names, found {type(doc).__name__}")
    return _flatten(doc, {})
