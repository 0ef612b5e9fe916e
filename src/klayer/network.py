"""k-layer fully connected network: configuration, parameters, pure forward and backward.

A network with hidden sizes ``[m_1, ..., m_{k-1}]`` has ``k`` linear layers. Hidden layer ``l``
computes ``S_l = H_{l-1} @ W_l.T + b_l``, optionally batch normalization
``gamma_l * S_hat_l + beta_l``, then ReLU; the last layer gives the class scores. Parameters live
in one dict named as in the assignments (``W1, b1, gamma1, beta1, ..., Wk, bk``); batch-norm
running averages (``mu1, var1, ...``) live apart in ``bn_state`` and are only read here: the
trainer updates them (``mu_av = bn_alpha * mu_av + (1 - bn_alpha) * mu``).

Every array may carry a leading model axis ``K``: ``W1: (K, m_1, d)``, and so on. Such a stack is
K independent networks computed together (see :mod:`klayer.layers`); ``lam`` may then be a
``(K,)`` array. Costs and losses then have shape ``(K,)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import layers
from .errors import ConfigError

__all__ = [
    "NetworkConfig",
    "Network",
    "init_params",
    "forward",
    "backward",
    "loss_and_grads",
    "data_loss_and_grads",
    "dropout_masks",
    "hidden_activations",
    "stack_networks",
    "unstack_network",
    "fold_batchnorm",
    "fold_standardization",
    "EVAL_CHUNK",
]

EVAL_CHUNK = 1000  # rows per evaluation chunk: its features stay in cache for the products (measured best)

INITS = ("he", "xavier", "normal")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and initialization of a k-layer network.

    Attributes
    ----------
    input_size : int, features per sample ``d`` (3072 for CIFAR-10).
    hidden : tuple of int, hidden layer widths; ``()`` is a linear softmax classifier.
    n_classes : int, ``C``.
    batch_norm : bool, batch normalization on every hidden layer (never on the output layer).
    init : ``"he"`` (``W ~ N(0, 2/m_in)``), ``"xavier"`` (``N(0, 1/m_in)``) or ``"normal"``
        (``N(0, sigma**2)`` for every weight matrix, the reports' sensitivity experiment).
        Biases start at 0, ``gamma`` at 1 and ``beta`` at 0.
    sigma : float, standard deviation for ``init="normal"``.
    eps : float added to the batch variance.
    dtype : ``"float32"`` or ``"float64"``.
    dropout : probability of zeroing a hidden unit's output in training (inverted dropout:
        survivors are scaled by ``1 / (1 - dropout)``, so evaluation uses the network unchanged).
    input_dropout : the same for the input features.
    """

    input_size: int = 3072
    hidden: tuple[int, ...] = (50, 50)
    n_classes: int = 10
    batch_norm: bool = False
    init: str = "he"
    sigma: float = 1e-1
    eps: float = 1e-10
    dtype: str = "float64"
    dropout: float = 0.0
    input_dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(m) for m in self.hidden))
        if self.input_size < 1 or self.n_classes < 2 or any(m < 1 for m in self.hidden):
            raise ConfigError(
                f"invalid network sizes: input_size={self.input_size}, hidden={list(self.hidden)}, "
                f"n_classes={self.n_classes} (need positive widths and at least 2 classes)"
            )
        if self.init not in INITS:
            raise ConfigError(f"model.init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.sigma > 0 or not self.eps > 0:
            raise ConfigError(f"sigma and eps must be positive, got {self.sigma}, {self.eps}")
        if not (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1):
            raise ConfigError(f"dropout rates must be in [0, 1), got {self.dropout}, {self.input_dropout}")

    @property
    def n_layers(self) -> int:
        """Number of linear layers ``k``."""
        return len(self.hidden) + 1

    @property
    def sizes(self) -> list[int]:
        """``[d, m_1, ..., m_{k-1}, C]``."""
        return [self.input_size, *self.hidden, self.n_classes]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def param_names(self) -> list[str]:
        """Parameter names in layer order: ``W1, b1, gamma1, beta1, ..., Wk, bk``."""
        names = []
        for l in range(1, self.n_layers + 1):
            names += [f"W{l}", f"b{l}"]
            if self.batch_norm and l < self.n_layers:
                names += [f"gamma{l}", f"beta{l}"]
        return names


def init_params(config: NetworkConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh parameters of one network, drawn from ``rng``.

    Returns
    -------
    dict name -> array: ``W{l}: (m_l, m_{l-1})``, ``b{l}: (m_l,)``, and with batch norm
    ``gamma{l}, beta{l}: (m_l,)`` for hidden layers.
    """
    dtype = np.dtype(config.dtype)
    params = {}
    sizes = config.sizes
    for l in range(1, config.n_layers + 1):
        m_in, m_out = sizes[l - 1], sizes[l]
        std = {"he": np.sqrt(2.0 / m_in), "xavier": np.sqrt(1.0 / m_in), "normal": config.sigma}[config.init]
        params[f"W{l}"] = (std * rng.standard_normal((m_out, m_in))).astype(dtype)
        params[f"b{l}"] = np.zeros(m_out, dtype)
        if config.batch_norm and l < config.n_layers:
            params[f"gamma{l}"] = np.ones(m_out, dtype)
            params[f"beta{l}"] = np.zeros(m_out, dtype)
    return params


def init_bn_state(config: NetworkConfig, K: int | None = None) -> dict[str, np.ndarray]:
    """Running statistics ``mu{l}`` (zeros) and ``var{l}`` (ones), ``(m_l,)`` or ``(K, m_l)``."""
    if not config.batch_norm:
        return {}
    lead = () if K is None else (K,)
    dtype = np.dtype(config.dtype)
    state = {}
    for l, m in enumerate(config.hidden, start=1):
        state[f"mu{l}"] = np.zeros((*lead, m), dtype)
        state[f"var{l}"] = np.ones((*lead, m), dtype)
    return state


def dropout_masks(config: NetworkConfig, n: int, rng: np.random.Generator, K: int | None = None) -> dict:
    """Inverted-dropout masks for one training batch of ``n`` rows, drawn from ``rng``.

    Returns
    -------
    dict ``H0`` (the input, ``(..., n, d)``) and ``H{l}`` (hidden layer ``l``'s output,
    ``(..., n, m_l)``), only for the rates that are non-zero; ``...`` is ``(K,)`` for a stack, so
    every network of a lockstep stack has masks of its own.
    """
    lead = () if K is None else (K,)
    masks = {}
    if config.input_dropout:
        masks["H0"] = layers.dropout_mask((*lead, n, config.input_size), config.input_dropout, rng, config.dtype)
    if config.dropout:
        for l, m in enumerate(config.hidden, start=1):
            masks[f"H{l}"] = layers.dropout_mask((*lead, n, m), config.dropout, rng, config.dtype)
    return masks


def forward(params, X, config: NetworkConfig, *, train: bool = True, bn_state=None, masks=None):
    """Class scores of a batch. Pure: nothing is modified.

    Parameters
    ----------
    params : dict of arrays (optionally with a leading model axis K).
    X : (N, d) array, or (K, N, d).
    config : NetworkConfig.
    train : bool
        Batch norm with batch statistics (True) or with ``bn_state`` running averages (False).
    bn_state : dict ``mu{l}, var{l}``, needed when ``train`` is False and batch norm is on.
    masks : dropout masks (:func:`dropout_masks`) applied in training; None: no dropout.

    Returns
    -------
    scores : (..., N, C) array.
    cache : list of per-layer caches for :func:`backward` (None when ``train`` is False).
    batch_stats : dict ``mu{l}, var{l}`` of this batch (empty unless training with batch norm).
    """
    k = config.n_layers
    masks = masks if (train and masks) else {}
    H = layers.dropout_forward(X, masks["H0"]) if "H0" in masks else X
    caches = []
    batch_stats = {}
    for l in range(1, k):
        S, lin_cache = layers.linear_forward(H, params[f"W{l}"], params[f"b{l}"])
        bn_cache = None
        if config.batch_norm:
            gamma, beta = params[f"gamma{l}"], params[f"beta{l}"]
            if train:
                S, bn_cache, (mu, var) = layers.batchnorm_train_forward(S, gamma, beta, config.eps)
                batch_stats[f"mu{l}"], batch_stats[f"var{l}"] = mu, var
            else:
                S = layers.batchnorm_eval_forward(S, gamma, beta, bn_state[f"mu{l}"], bn_state[f"var{l}"], config.eps)
        H, relu_cache = layers.relu_forward_inplace(S)  # S is this function's own array
        mask = masks.get(f"H{l}")
        if mask is not None:
            H = layers.dropout_forward(H, mask)
        if train:
            caches.append((lin_cache, bn_cache, relu_cache, mask))
    scores, lin_cache = layers.linear_forward(H, params[f"W{k}"], params[f"b{k}"])
    if train:
        caches.append((lin_cache, None, None, None))
        return scores, caches, batch_stats
    return scores, None, batch_stats


def hidden_activations(params, X, config: NetworkConfig):
    """Yield ``(l, S, Z, H)`` for each hidden layer in training mode: the linear output ``S``,
    the ReLU input ``Z`` (``S`` after batch norm, if any) and the ReLU output ``H``.
    For inspection (diagnostics, kink detection); :func:`forward` is the fast path."""
    H = X
    for l in range(1, config.n_layers):
        S, _ = layers.linear_forward(H, params[f"W{l}"], params[f"b{l}"])
        Z = S
        if config.batch_norm:
            Z = layers.batchnorm_train_forward(S, params[f"gamma{l}"], params[f"beta{l}"], config.eps)[0]
        H = np.maximum(Z, 0)
        yield l, S, Z, H


def backward(dscores, caches, config: NetworkConfig, bn_upstream: dict | None = None) -> dict[str, np.ndarray]:
    """Gradients of every parameter given the upstream gradient ``dscores: (..., N, C)``.

    ``bn_upstream``: None, or a dict that receives, for each batch-norm layer ``l``, the gradient
    with respect to its output ``S_tilde{l}`` (``(..., N, m_l)``, what :func:`klayer.layers.
    batchnorm_backward` is given), for inspection (the gradient check's round-off scale).

    Returns
    -------
    dict ``W{l}, b{l}, gamma{l}, beta{l}`` -> gradient of the same shape as the parameter (the
    data term only: :func:`loss_and_grads` adds the regularization).
    """
    k = config.n_layers
    grads = {}
    dH, grads[f"W{k}"], grads[f"b{k}"] = layers.linear_backward(dscores, caches[k - 1][0])
    for l in range(k - 1, 0, -1):
        lin_cache, bn_cache, H, mask = caches[l - 1]
        if mask is not None:
            dH = layers.dropout_backward(dH, mask)
        dS = layers.relu_backward_inplace(dH, H)  # dH is this function's own array
        if config.batch_norm:
            if bn_upstream is not None:
                bn_upstream[l] = dS.copy()
            dS, grads[f"gamma{l}"], grads[f"beta{l}"] = layers.batchnorm_backward(dS, bn_cache)
        dH, grads[f"W{l}"], grads[f"b{l}"] = layers.linear_backward(dS, lin_cache, need_dX=l > 1)
    return grads


def fold_batchnorm(params, bn_state, config: NetworkConfig, dtype=None):
    """The same network in evaluation mode with its batch norm folded into the linear layers.

    With ``a = gamma / sqrt(var + eps)`` of the running statistics, hidden layer ``l`` becomes
    ``W' = a[:, None] * W`` and ``b' = a * (b - mu) + beta``, computed in float64 and cast to
    ``dtype`` (default: the parameters' own); works on stacks. Returns ``(params, config)``
    with only ``W{l}, b{l}`` and ``batch_norm`` off. The scores equal :func:`forward` in
    evaluation mode up to float rounding (tests/test_fastpath.py); the ONNX export uses it too.
    """
    dtype = np.dtype(dtype) if dtype is not None else params["W1"].dtype
    k = config.n_layers
    out = {}
    for l in range(1, k + 1):
        W, b = params[f"W{l}"], params[f"b{l}"]
        if config.batch_norm and l < k:
            a = np.asarray(params[f"gamma{l}"], np.float64) / np.sqrt(
                np.asarray(bn_state[f"var{l}"], np.float64) + config.eps
            )
            W = a[..., :, None] * W
            b = a * (b - np.asarray(bn_state[f"mu{l}"], np.float64)) + params[f"beta{l}"]
        out[f"W{l}"], out[f"b{l}"] = W.astype(dtype, copy=False), b.astype(dtype, copy=False)
    return out, replace(config, batch_norm=False)


def fold_standardization(params, mean, inv_std, dtype=None):
    """The first layer taking raw rows ``x`` in place of the features ``(x - mean) * inv_std``.

    ``W1' = W1 * inv_std`` (column ``j`` scaled by ``inv_std[j]``) and ``b1' = b1 - W1' @ mean``,
    computed in float64 and cast to ``dtype`` (default: ``W1``'s); ``mean, inv_std: (d,)``; works
    on stacks. The evaluation pass uses it, so that a chunk of raw rows needs one cast instead of
    a cast, a subtraction and a multiplication. Returns new ``params`` (the others shared).
    """
    dtype = np.dtype(dtype) if dtype is not None else params["W1"].dtype
    W1 = np.asarray(params["W1"], np.float64) * np.asarray(inv_std, np.float64)
    b1 = np.asarray(params["b1"], np.float64) - W1 @ np.asarray(mean, np.float64)
    return {**params, "W1": W1.astype(dtype), "b1": b1.astype(dtype)}


def _lam_like(lam, W):
    """``lam`` as a scalar or as ``(K, 1, 1)`` to broadcast against a stack of weight matrices."""
    lam = np.asarray(lam, dtype=W.dtype)
    return lam if lam.ndim == 0 else lam[..., None, None]


def weight_penalty(params, config: NetworkConfig):
    """``sum_l ||W_l||_F^2`` per model: a scalar or a ``(K,)`` array."""
    return sum(np.einsum("...ij,...ij->...", params[f"W{l}"], params[f"W{l}"]) for l in range(1, config.n_layers + 1))


def data_loss_and_grads(params, X, y, config: NetworkConfig, scale=None, masks=None, smoothing: float = 0.0):
    """Mean cross-entropy and the gradients of its data term only (no penalty).

    Parameters
    ----------
    scale : None, or a (K,) array multiplying each network's upstream gradient, so that every
        gradient comes out multiplied by it (the trainer passes the learning rates, which saves a
        pass over the weights).
    masks : dropout masks (:func:`dropout_masks`), or None.
    smoothing : label smoothing of the targets (:func:`klayer.layers.softmax_cross_entropy`).

    Returns
    -------
    loss : (...) array; grads : dict; batch_stats : dict (see :func:`loss_and_grads`).
    """
    scores, caches, batch_stats = forward(params, X, config, train=True, masks=masks)
    loss, dscores = layers.softmax_cross_entropy(scores, y, smoothing)
    if scale is not None:
        dscores *= np.asarray(scale, dscores.dtype).reshape(-1, 1, 1)
    return loss, backward(dscores, caches, config), batch_stats


def loss_and_grads(params, X, y, config: NetworkConfig, lam, masks=None, smoothing: float = 0.0):
    """Cost, loss and gradients of every parameter on one batch, batch norm in training mode.

    Parameters
    ----------
    params : dict of arrays (optionally with a leading model axis K).
    X : (N, d) or (K, N, d) array.
    y : (N,) integer labels.
    lam : float, or (K,) array, the L2 penalty on weight matrices.
    masks : dropout masks for this batch (:func:`dropout_masks`), or None.
    smoothing : label smoothing of the targets.

    Returns
    -------
    cost : (...) array ``J = mean_i CE_i + lam * sum_l ||W_l||^2``.
    loss : (...) array, the mean cross-entropy.
    grads : dict name -> array, ``dJ/dparam``.
    batch_stats : dict ``mu{l}, var{l}`` of this batch, for the running averages.

    Notes
    -----
    The penalty is the assignments' ``lam * sum ||W||^2`` (gradient ``2 lam W``). scikit-learn's
    ``alpha`` is ``0.5 * alpha * ||W||^2 / n_samples``, so ``alpha = 2 * lam * batch_size``.
    """
    loss, grads, batch_stats = data_loss_and_grads(params, X, y, config, masks=masks, smoothing=smoothing)
    for l in range(1, config.n_layers + 1):
        W = params[f"W{l}"]
        grads[f"W{l}"] += 2 * _lam_like(lam, W) * W
    cost = loss + np.asarray(lam) * weight_penalty(params, config)
    return cost, loss, grads, batch_stats


@dataclass
class Network:
    """A network: its config, parameter dict and (separate) batch-norm running statistics.

    ``params`` and ``bn_state`` may carry a leading model axis (see :func:`stack_networks`).
    """

    config: NetworkConfig
    params: dict[str, np.ndarray]
    bn_state: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def init(cls, config: NetworkConfig, rng: np.random.Generator) -> Network:
        """A fresh network, parameters drawn from ``rng``."""
        return cls(config, init_params(config, rng), init_bn_state(config))

    @property
    def n_models(self) -> int | None:
        """K for a stack of networks, None for one network."""
        W = self.params["W1"]
        return W.shape[0] if W.ndim == 3 else None

    def forward(self, X, *, train: bool = False):
        """Scores ``(..., N, C)``; evaluation mode (running statistics) unless ``train``."""
        return forward(self.params, X, self.config, train=train, bn_state=self.bn_state)[0]

    def loss_and_grads(self, X, y, lam):
        """See :func:`loss_and_grads`."""
        return loss_and_grads(self.params, X, y, self.config, lam)

    def predict_proba(self, X, chunk: int = 2500, prep=None):
        """Class probabilities ``(..., N, C)`` in evaluation mode, ``chunk`` rows at a time.

        ``prep`` maps a chunk of raw rows to features (e.g. :meth:`klayer.data.Dataset.features`).
        """
        prep = prep or (lambda a: a)
        parts = [layers.softmax(self.forward(prep(X[i : i + chunk]))) for i in range(0, max(len(X), 1), chunk)]
        return np.concatenate(parts, axis=-2)

    def evaluate(self, X, y, lam=0.0, chunk: int = EVAL_CHUNK, prep=None, standardize=None, chunk_fn=None, threads=1):
        """Cost, loss and accuracy on a whole data set in evaluation mode, chunk by chunk, with
        batch norm folded into the weights (:func:`fold_batchnorm`).

        Parameters
        ----------
        X : (N, d) features, or raw rows with ``prep`` or ``standardize``.
        y : (N,) labels.
        lam : penalty for the reported cost.
        prep : None, or a function mapping a chunk of rows of ``X`` to features.
        standardize : None, or ``(mean, inv_std)``, ``(d,)`` each: ``X`` holds raw rows whose
            features are ``(X - mean) * inv_std``; the standardization is folded into the first
            layer (:func:`fold_standardization`) and each chunk is only cast (into a reused
            buffer). The same numbers as ``prep`` up to float rounding.
        chunk_fn : None, or a function ``(params, X, y, config) -> (loss_sum, correct)`` of a
            chunk, given the folded network (the compiled :func:`klayer.kernels.step.eval_chunk`);
            None: :func:`forward` and :func:`klayer.layers.log_softmax`.
        threads : the chunks are shared out among this many threads, each with one BLAS thread
            (a chunk's products are too narrow for a multithreaded BLAS to keep the cores busy).
            The chunks' sums are added in chunk order: the same bits for any ``threads``. A
            ``prep`` or ``chunk_fn`` that reuses arrays is given as a list, one per thread.

        Returns
        -------
        dict with ``cost``, ``loss``, ``accuracy``: floats, or (K,) arrays for a stack.
        """
        N = len(y)
        params, config = fold_batchnorm(self.params, self.bn_state, self.config)
        starts = range(0, N, chunk)
        threads = max(1, min(int(threads), len(starts)))
        preps, fns = _per_thread(prep, threads), _per_thread(chunk_fn, threads)
        if standardize is not None:
            params = fold_standardization(params, *standardize)
            preps = [_caster(np.empty((min(chunk, N), X.shape[-1]), params["W1"].dtype)) for _ in range(threads)]

        def part(k: int, i: int):
            """Thread ``k``'s sums of the chunk of rows ``i : i + chunk``."""
            Xc, yc = X[i : i + chunk], y[i : i + chunk]
            Xc = preps[k](Xc) if preps[k] else Xc
            if fns[k] is not None:
                return fns[k](params, Xc, yc, config)
            scores = forward(params, Xc, config, train=False)[0]
            logP = layers.log_softmax(scores)
            loss_sum = -logP[..., np.arange(len(yc)), yc].sum(axis=-1, dtype=np.float64)
            return loss_sum, (scores.argmax(axis=-1) == yc).sum(axis=-1)

        sums = _map_chunks(part, starts, threads)
        loss_sum, correct = 0.0, 0
        for s, c in sums:
            loss_sum, correct = loss_sum + s, correct + c
        loss = loss_sum / N
        penalty = weight_penalty(self.params, self.config).astype(np.float64)
        cost = loss + np.asarray(lam, dtype=np.float64) * penalty
        acc = correct / N

        def out(v):
            v = np.asarray(v, dtype=np.float64)
            return float(v) if v.ndim == 0 else v

        return {"cost": out(cost), "loss": out(loss), "accuracy": out(acc)}


def _per_thread(fn, threads: int) -> list:
    """``fn`` for each of ``threads`` threads: a list of them as given, or one function shared."""
    if isinstance(fn, (list, tuple)):
        if len(fn) < threads:
            raise ValueError(f"{len(fn)} functions for {threads} threads")
        return list(fn[:threads])
    return [fn] * threads


def _caster(buf: np.ndarray):
    """A function casting a chunk of rows into (the first rows of) ``buf``."""

    def cast(a):
        out = buf[: len(a)]
        np.copyto(out, a, casting="unsafe")
        return out

    return cast


def _map_chunks(part, starts, threads: int) -> list:
    """``[part(k, i) for i in starts]``, in order, computed by ``threads`` threads (``k`` the
    thread's index) taking the next chunk as they finish one, each with one BLAS thread and the
    caller's floating-point error settings."""
    if threads == 1:
        return [part(0, i) for i in starts]
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    results = [None] * len(starts)
    todo = iter(enumerate(starts))
    lock = threading.Lock()
    err = np.geterr()  # numpy's error state is per thread
    failed = []

    def worker(k):
        with np.errstate(**err):
            while not failed:
                with lock:
                    job = next(todo, None)
                if job is None:
                    return
                try:
                    results[job[0]] = part(k, job[1])
                except BaseException:
                    failed.append(k)
                    raise

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads, "klayer-eval") as ex:
        for f in [ex.submit(worker, k) for k in range(threads)]:
            f.result()
    return results


def stack_networks(networks: list[Network]) -> Network:
    """K networks of one architecture as one stack with a leading model axis."""
    config = networks[0].config
    for net in networks[1:]:
        if net.config.sizes != config.sizes or net.config.batch_norm != config.batch_norm:
            raise ConfigError("networks in one stack must share their architecture")
    params = {n: np.stack([net.params[n] for net in networks]) for n in networks[0].params}
    bn_state = {n: np.stack([net.bn_state[n] for net in networks]) for n in networks[0].bn_state}
    return Network(config, params, bn_state)


def unstack_network(stack: Network, i: int, config: NetworkConfig | None = None) -> Network:
    """Model ``i`` of a stack, as a network of its own (arrays are copied)."""
    return Network(
        config or stack.config,
        {n: p[i].copy() for n, p in stack.params.items()},
        {n: s[i].copy() for n, s in stack.bn_state.items()},
    )
