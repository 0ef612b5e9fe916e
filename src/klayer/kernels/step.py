"""One training step's forward and backward, and the evaluation of a chunk, with the compiled
loops of :mod:`klayer.kernels.compiled` between the matrix products, which stay numpy's (the
products of :func:`klayer.layers.linear_forward` and :func:`klayer.layers.linear_backward`,
written into a :class:`Workspace`); the mini-batch's gather and the SGD update in one compiled
call each.

The contracts are :func:`klayer.network.data_loss_and_grads`'s, for stacks ``(K, ...)`` without
dropout, and :func:`klayer.training.optim.sgd_update`'s; the numbers equal them up to float
rounding (batch sums in float64 here, numpy's pairwise sums there), the update's bit for bit
(tests/test_kernels.py).
"""

from __future__ import annotations

import numpy as np

from . import compiled

__all__ = ["Workspace", "data_loss_and_grads", "eval_chunk", "gather_features", "sgd_update"]


def gather_features(X, idx, mean, inv_std, out):
    """``out = (X[idx] - mean) * inv_std`` in ``out``'s dtype: the bits of a gather followed by
    :meth:`klayer.data.Dataset.features`, in one pass. ``X: (N, d)``, ``idx: (n,)`` valid rows."""
    compiled.gather_standardize(X, idx, mean, inv_std, out)
    return out


class Workspace:
    """The arrays of a step, allocated at its first call and reused by the next ones (again
    when the shapes change).

    :func:`data_loss_and_grads` given a workspace returns gradients and statistics that live in
    it: the next call overwrites them (the trainer uses them before that)."""

    def __init__(self):
        self._key = None
        self.layers: list[dict] = []

    def layers_for(self, params, X, config, train: bool = True) -> list[dict]:
        """Per layer ``l = 1..k`` (index ``l - 1``) its arrays: the product ``S``, the output
        ``H``, batch-norm ``S_hat, mu, var, inv``, the output gradient ``dS``, the input
        gradient ``dX`` and the parameters' gradients ``W, b, gamma, beta``. For a first layer
        fed one ``X: (N, d)`` for all K networks, ``S`` and ``dS`` are ``(N, K m)`` arrays
        (``S_flat``, ``dS_flat``: one product each) seen as ``(K, N, m)``; for ``K > 1`` that
        view is strided (slow in the compiled loops), so ``S`` and ``dS`` are arrays of their own
        and copied from / to the flat ones (``copy``). Without ``train`` only ``S`` and ``H``."""
        W1 = params["W1"]
        key = (X.shape, X.ndim, W1.shape, W1.dtype, config.sizes, config.batch_norm, train)
        if key == self._key:
            return self.layers
        K, dtype, N, shared = W1.shape[0], W1.dtype, X.shape[-2], X.ndim == 2
        self.layers = []
        for l in range(1, config.n_layers + 1):
            m, m_in = params[f"W{l}"].shape[1:]
            a = {n: np.empty((K, N, m), dtype) for n in ("H",) if l < config.n_layers}
            if not (l == 1 and shared):
                a["S"] = np.empty((K, N, m), dtype)
            if train:
                a.update({n: np.empty((K, m), dtype) for n in ("b", "gamma", "beta", "mu", "var", "inv")})
                a["W"] = np.empty((K, m, m_in), dtype)
                a.update({n: np.empty((K, N, m), dtype) for n in ("S_hat", "dS")})
                a["dX"] = np.empty((K, N, m_in), dtype) if l > 1 else None
            if l == 1 and shared:
                a["copy"] = K > 1
                for n in ("S", "dS") if train else ("S",):
                    a[n + "_flat"] = flat = np.empty((N, K * m), dtype)
                    view = flat.reshape(N, K, m).transpose(1, 0, 2)
                    if K > 1:
                        a[n + "_view"] = view
                        a[n] = np.empty((K, N, m), dtype)
                    else:
                        a[n] = view  # (1, N, m): C-contiguous
            self.layers.append(a)
        self._key = key
        return self.layers


def _product(a: dict, H, W):
    """A layer's product ``H @ W.T`` into its workspace arrays ``a`` (see
    :meth:`Workspace.layers_for`): ``a["S"]``, or for a first layer shared by the K networks of a
    stack one ``(N, d) @ (d, K m)`` product into ``a["S_flat"]``."""
    if "S_flat" in a:
        np.matmul(H, W.reshape(-1, W.shape[-1]).T, out=a["S_flat"])
        if a["copy"]:
            np.copyto(a["S"], a["S_view"])
    else:
        np.matmul(H, W.mT, out=a["S"])


def data_loss_and_grads(params, X, y, config, scale=None, masks=None, smoothing: float = 0.0, work=None):
    """:func:`klayer.network.data_loss_and_grads` for a stack (``W1: (K, m, d)``) with no
    dropout masks: ``(loss (K,), grads, batch_stats)``; ``work``: a :class:`Workspace` to reuse
    (default: a new one, so the results are fresh arrays).

    The products are numpy's (the first layer one ``(N, d) @ (d, K m)`` product for the K
    networks, as :func:`klayer.layers.linear_forward`), written into the workspace; each bias is
    added by the compiled loop that reads the product."""
    if masks:
        raise ValueError("the compiled step has no dropout: use klayer.network.data_loss_and_grads")
    work = Workspace() if work is None else work
    arrays = work.layers_for(params, X, config)
    k = config.n_layers
    W1 = params["W1"]
    K = W1.shape[0]
    flat1 = "S_flat" in arrays[0]  # one product for the K first layers
    bn = config.batch_norm
    # forward
    H = X
    for l, a in enumerate(arrays, start=1):
        W, b = params[f"W{l}"], params[f"b{l}"]
        _product(a, H, W)
        if l < k:
            if bn:
                compiled.bn_relu_forward(
                    a["S"], b, params[f"gamma{l}"], params[f"beta{l}"], float(config.eps),
                    a["S_hat"], a["H"], a["mu"], a["var"], a["inv"],
                )  # fmt: skip
            else:
                compiled.relu_forward(a["S"], b, a["H"])
            H = a["H"]
    # loss, then backward from the top
    a = arrays[-1]
    scale = np.ones(K) if scale is None else np.asarray(scale, np.float64).reshape(K)
    loss = np.empty(K)
    y = np.ascontiguousarray(y, np.int64)
    compiled.softmax_ce(a["S"], params[f"b{k}"], y, scale, float(smoothing), a["dS"], loss, a["b"])
    grads, stats = {}, {}
    for l in range(k, 0, -1):
        a = arrays[l - 1]
        if l < k:
            dH = arrays[l]["dX"]
            if bn:
                compiled.bn_relu_backward(
                    dH, a["H"], a["S_hat"], a["inv"], params[f"gamma{l}"], a["dS"], a["gamma"], a["beta"], a["b"]
                )
                grads[f"gamma{l}"], grads[f"beta{l}"] = a["gamma"], a["beta"]
            else:
                compiled.relu_bias_backward(dH, a["H"], a["dS"], a["b"])
        if l == 1 and flat1:
            if a["copy"]:
                np.copyto(a["dS_view"], a["dS"])
            np.matmul(a["dS_flat"].T, X, out=a["W"].reshape(-1, X.shape[-1]))
        else:
            H_in = X if l == 1 else arrays[l - 2]["H"]
            np.matmul(a["dS"].mT, H_in, out=a["W"])
            if l > 1:
                np.matmul(a["dS"], params[f"W{l}"], out=a["dX"])
        grads[f"W{l}"], grads[f"b{l}"] = a["W"], a["b"]
    if bn:
        for l, a in enumerate(arrays[:-1], start=1):
            stats[f"mu{l}"], stats[f"var{l}"] = a["mu"], a["var"]
    # the reference's key order (W, b per layer from the top), so that dict iteration matches
    return loss.astype(W1.dtype), grads, stats


def eval_chunk(params, X, y, config, work=None):
    """Evaluation of one chunk by a network without batch norm (folded, :func:`klayer.network.
    fold_batchnorm`): ``(loss_sum (K,) float64, correct (K,) int)``, the summed cross-entropy and
    the number of right predictions; the hook of :meth:`klayer.network.Network.evaluate`.
    ``work``: a :class:`Workspace` whose arrays are reused."""
    if config.batch_norm:
        raise ValueError("eval_chunk takes a network with its batch norm folded into the weights")
    work = Workspace() if work is None else work
    arrays = work.layers_for(params, X, config, train=False)
    k = config.n_layers
    K = params["W1"].shape[0]
    H = X
    for l, a in enumerate(arrays, start=1):
        _product(a, H, params[f"W{l}"])
        if l < k:
            compiled.relu_forward(a["S"], params[f"b{l}"], a["H"])
            H = a["H"]
    loss_sum, correct = np.zeros(K), np.zeros(K, np.int64)
    y = np.ascontiguousarray(y, np.int64)
    compiled.softmax_loss_correct(arrays[-1]["S"], params[f"b{k}"], y, loss_sum, correct)
    return loss_sum, correct


def _rows(a: np.ndarray) -> np.ndarray:
    """``a: (K, ...)`` as a ``(K, n)`` view (never a copy: the kernels write through it)."""
    if not a.flags.c_contiguous:
        raise ValueError("the compiled update needs C-contiguous arrays")
    return a.reshape(a.shape[0], -1)


_views: dict = {}  # the last update's (K, n) views, by the ids of their arrays (which they keep alive)


def _update_views(params, grads, state, momentum):
    key = (tuple(map(id, params.values())), tuple(map(id, grads.values())), momentum and tuple(map(id, state.values())))
    hit = _views.get("key") == key
    if not hit:
        names = tuple(grads)
        _views["key"] = key
        _views["rows"] = (
            names,
            tuple(_rows(params[n]) for n in names),
            tuple(_rows(grads[n]) for n in names),
            tuple(_rows(state[f"v.{n}"]) for n in names) if momentum else None,
        )
    return _views["rows"]


def sgd_update(params, scaled_grads, state, eta, lam, momentum: float = 0.0, nesterov=False):
    """:func:`klayer.training.optim.sgd_update` in one compiled call for all parameters (one
    pass over each, velocity included, for momentum), the same bits."""
    dtype = params["W1"].dtype
    two_eta_lam = 2 * np.asarray(eta, dtype) * np.asarray(lam, dtype)
    names, ps, gs, vs = _update_views(params, scaled_grads, state, bool(momentum))
    if momentum:
        zero = np.zeros_like(two_eta_lam)
        cs = tuple(two_eta_lam if n[0] == "W" else zero for n in names)
        compiled.sgd_momentum(ps, gs, vs, cs, dtype.type(momentum), nesterov)
    else:
        decay, one = (1 - two_eta_lam).astype(dtype), np.ones_like(two_eta_lam)
        compiled.sgd_plain(ps, gs, tuple(decay if n[0] == "W" else one for n in names))
