"""The training loop: mini-batches, forward and backward, update, evaluation. No files.

:class:`Trainer` always trains a stack of K networks (K = 1 for an ordinary run) on the same
shuffled mini-batches: the parameters carry a leading model axis, so the first layer of all K
networks is one matrix product. Networks in one stack may differ in the keys of
:data:`LOCKSTEP_KEYS` (``lam``, the learning rates, ``seed``, ``init``, ``sigma``); everything
else, including the shuffling seed, is shared. Each network's result equals the same network
trained alone, up to float round-off.

Everything that is not training hangs on the loop through :class:`~klayer.training.Callback`
events: checkpoints, history files, models and plots (:mod:`klayer.runs`), per-layer diagnostics
(:mod:`klayer.diagnostics`).

Techniques plug in at one place each: the optimizer (:mod:`klayer.training.optim`) updates the
parameters, the schedule (:mod:`klayer.training.schedules`) gives ``eta``, the augmenter
(:mod:`klayer.training.augment`) transforms the raw mini-batch before standardization (shared by
a lockstep stack), dropout masks (:func:`klayer.network.dropout_masks`, one per network) and label
smoothing go to the loss.

Randomness: ``seed`` draws the initialization (and the dropout masks), ``shuffle_seed`` (default
``seed``) the epoch permutations, the fixed training-evaluation subset and the augmentation, each
from its own ``numpy.random.SeedSequence`` stream. A seed fully determines a run.
"""

from __future__ import annotations

import functools
import json
import signal
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from .. import kernels
from ..config import ExperimentConfig
from ..data.prepare import Dataset
from ..errors import ConfigError, DivergenceError, KlayerError
from ..network import EVAL_CHUNK, Network, data_loss_and_grads, dropout_masks, forward, stack_networks, unstack_network
from .augment import Augmenter
from .callbacks import Callback
from .optim import SGD, make_optimizer
from .schedules import (
    CYCLIC_SCHEDULES,
    constant_eta,
    cosine_eta,
    cyclic_eta,
    decay_eta,
    exp_range_eta,
    one_cycle_eta,
    triangular2_eta,
)

__all__ = ["Trainer", "rng_for", "LOCKSTEP_KEYS", "lockstep_signature"]

_STREAMS = {"init": 0, "shuffle": 1, "eval": 2, "augment": 3, "dropout": 4}
# keys that may differ between networks trained in lockstep
LOCKSTEP_KEYS = {
    "model": {"init", "sigma"},
    "train": {"lam", "eta_min", "eta_max", "eta", "seed", "shuffle_seed"},
}


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """The Generator of one named random stream (init, shuffle, eval) of a seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream]]))


def lockstep_signature(cfg: ExperimentConfig) -> dict:
    """What networks trained in one lockstep stack must share: the config without
    :data:`LOCKSTEP_KEYS`, names and descriptions, plus the shuffling seed."""
    d = cfg.to_dict()
    for section, keys in LOCKSTEP_KEYS.items():
        for k in keys:
            d[section].pop(k, None)
    d.pop("name")
    d.pop("description")
    d["data_seed"] = cfg.train.data_seed
    return d


def _features_into(data: Dataset, buf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``data``'s features of raw ``rows``, written into the first rows of ``buf``."""
    return data.features(rows, out=buf[: len(rows)])


class Trainer:
    """Training state of K networks in lockstep, stepped one update at a time.

    Parameters
    ----------
    configs : K experiment configs that differ only in :data:`LOCKSTEP_KEYS`.
    data : the Dataset (raw rows; mini-batches are standardized on the fly).
    callbacks : :class:`~klayer.training.Callback` objects told of the loop's events.
    schedule : None, or a function ``t -> (K,) eta`` replacing the configured schedule (the
        learning-rate range test uses it).
    eval_threads : threads of the evaluation pass (default ``train.blas_threads``): the chunks
        of rows are shared out among them (:meth:`klayer.network.Network.evaluate`).
    """

    def __init__(self, configs: list[ExperimentConfig], data: Dataset, callbacks=(), schedule=None, eval_threads=None):
        if not configs:
            raise ConfigError("no configs to train")
        shared = lockstep_signature(configs[0])
        for c in configs[1:]:
            if lockstep_signature(c) != shared:
                raise ConfigError(
                    f"{c.name} cannot be trained in lockstep with {configs[0].name}: only "
                    "lam, eta_min, eta_max, eta, seed, init and sigma may differ (and the "
                    "shuffle seed must be the same)"
                )
        self.configs = configs
        self.data = data.validate()
        self.callbacks: list[Callback] = list(callbacks)
        tc = configs[0].train
        self.tc = tc
        self.K = len(configs)
        dtype = np.dtype(tc.dtype)
        nets = []
        for c in configs:
            nc = c.model.network_config(data.input_size, data.n_classes, tc.dtype)
            nets.append(Network.init(nc, rng_for(c.train.seed, "init")))
        self.net_configs = [n.config for n in nets]
        self.stack = stack_networks(nets)
        self.config = self.stack.config
        self.lam = np.array([c.train.lam for c in configs], dtype)
        self.eta_min = np.array([c.train.eta_min for c in configs], dtype)
        self.eta_max = np.array([c.train.eta_max for c in configs], dtype)
        self.eta = np.array([c.train.eta for c in configs], dtype)
        N = len(data.y_train)
        if N < tc.batch_size:
            raise ConfigError(f"train.batch_size={tc.batch_size} exceeds the {N} training images")
        self.steps_per_epoch = N // tc.batch_size
        if tc.schedule in CYCLIC_SCHEDULES:
            self.total_steps = 2 * tc.n_s * tc.n_cycles
            self.cycle = 2 * tc.n_s
        else:
            self.total_steps = tc.n_epochs * self.steps_per_epoch
            self.cycle = self.steps_per_epoch
        self.eval_every = max(1, round(self.cycle / tc.evals_per_cycle))
        self.schedule = schedule
        self.rng = rng_for(tc.data_seed, "shuffle")
        try:
            self.augmenter = Augmenter.from_config(configs[0].augment, data.image_shape)
        except ValueError as e:
            raise ConfigError(f"augment: {e}") from None
        self.augment_rng = rng_for(tc.data_seed, "augment")
        self.dropout_rngs = [rng_for(c.train.seed, "dropout") for c in configs]  # masks per network
        self.smoothing = tc.label_smoothing
        n_sub = tc.eval_train_subset
        if n_sub and n_sub < N:
            sub = np.sort(rng_for(tc.data_seed, "eval").choice(N, n_sub, replace=False))
            self.X_eval, self.y_eval = data.X_train[sub], data.y_train[sub]
        else:
            self.X_eval, self.y_eval = data.X_train, data.y_train
        self.optimizer = make_optimizer(tc)
        self.opt_state = self.optimizer.init(self.stack.params)
        self.t = 0
        self.perm = np.arange(N)
        self.perm_epoch = -1
        self.history: list[list[dict]] = [[] for _ in range(self.K)]
        self.diverged: list[int | None] = [None] * self.K
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.eval_threads = max(1, int(eval_threads or tc.blas_threads))
        self._select_kernels(dtype)
        self._raw = np.empty((tc.batch_size, data.input_size), data.X_train.dtype)
        self._xbuf = np.empty((tc.batch_size, data.input_size), dtype)
        n_bufs = self.eval_threads if self.standardization is None else 0  # whitened rows: features per chunk
        self._ebufs = [np.empty((EVAL_CHUNK, data.input_size), dtype) for _ in range(n_bufs)]
        self._stop = False

    def _select_kernels(self, dtype):
        """The one place where the compiled kernels (:mod:`klayer.kernels`) replace the numpy
        reference: the mini-batch's gather and standardization (``gather_fn``, or None), the
        forward and backward pass (``loss_fn``), the update (``update_fn``) and the evaluation
        of a chunk (``eval_chunk_fns``, one per evaluation thread, or None); ``kernels`` names
        the choice. Dropout runs use the reference throughout."""
        cfg = self.config
        fast = None if (cfg.dropout or cfg.input_dropout) else kernels.load()
        self.kernels = "numpy" if fast is None else "numba"
        if fast is None:
            self.loss_fn, self.eval_chunk_fns = data_loss_and_grads, None
        else:  # the step's (and each evaluation thread's) arrays are allocated once and reused
            self.loss_fn = functools.partial(fast.data_loss_and_grads, work=fast.Workspace())
            self.eval_chunk_fns = [
                functools.partial(fast.eval_chunk, work=fast.Workspace()) for _ in range(self.eval_threads)
            ]
        opt = self.optimizer
        if fast is not None and isinstance(opt, SGD):
            self.update_fn = lambda p, g, s, eta, lam, t: fast.sgd_update(p, g, s, eta, lam, opt.momentum, opt.nesterov)
        else:
            self.update_fn = opt.update
        # (mean, 1 / std) of raw rows, or None for whitened rows: gathering and evaluation fold it
        self.standardization = std = self.data.standardization()
        self.gather_fn = None
        if fast is not None and std is not None:
            m, inv = (a.astype(dtype) for a in std)
            self.gather_fn = lambda idx, out: fast.gather_features(self.data.X_train, idx, m, inv, out)

    # -- schedule -----------------------------------------------------------------------------
    def eta_at(self, t: int) -> np.ndarray:
        """Learning rate of every network at update step ``t``, shape (K,)."""
        tc = self.tc
        lo, hi, s = self.eta_min, self.eta_max, tc.schedule
        if self.schedule is not None:
            return np.broadcast_to(np.asarray(self.schedule(t), self.lam.dtype), (self.K,))
        if s == "cyclic":
            return cyclic_eta(t, lo, hi, tc.n_s)
        if s == "triangular2":
            return triangular2_eta(t, lo, hi, tc.n_s)
        if s == "exp_range":
            return exp_range_eta(t, lo, hi, tc.n_s, tc.exp_gamma)
        if s == "one_cycle":
            return one_cycle_eta(t, lo, hi, self.total_steps, tc.warmup)
        if s == "cosine":
            return cosine_eta(t, lo, hi, self.total_steps, tc.warmup)
        if s == "constant":
            return constant_eta(t, self.eta)
        return decay_eta(t, self.eta, tc.decay, self.steps_per_epoch)

    # -- one update ---------------------------------------------------------------------------
    def batch(self, augment: bool = True):
        """The mini-batch of update ``t``: standardized ``X: (B, d)`` and labels ``y: (B,)``.

        Each epoch draws a permutation of the training set and takes contiguous slices of it;
        the raw rows are augmented (when configured) before they are standardized."""
        spe, B = self.steps_per_epoch, self.tc.batch_size
        epoch, j = divmod(self.t, spe)
        if epoch != self.perm_epoch:
            self.perm = self.rng.permutation(len(self.data.y_train))
            self.perm_epoch = epoch
        idx = self.perm[j * B : (j + 1) * B]
        if self.gather_fn is not None and not (augment and self.augmenter is not None):
            return self.gather_fn(idx, self._xbuf), self.data.y_train[idx]
        # the indices are valid (a permutation's); mode "raise" would copy through a buffer
        raw = np.take(self.data.X_train, idx, axis=0, out=self._raw, mode="clip")
        if augment and self.augmenter is not None:
            raw = self.augmenter(raw, self.augment_rng)
        return self.data.features(raw, out=self._xbuf), self.data.y_train[idx]

    def init_bn_state(self):
        """Running statistics start at the first mini-batch's statistics (as the assignments do)."""
        if not self.config.batch_norm:
            return
        saved = (self.rng.bit_generator.state, self.perm.copy(), self.perm_epoch)
        X, _ = self.batch(augment=False)
        self.rng.bit_generator.state, self.perm, self.perm_epoch = saved
        _, _, stats = forward(self.stack.params, X, self.config, train=True)
        for k, v in stats.items():
            self.stack.bn_state[k][...] = v

    def step(self):
        """One mini-batch update of every network."""
        X, y = self.batch()
        params, bn_state = self.stack.params, self.stack.bn_state
        eta = self.eta_at(self.t).astype(self.lam.dtype)
        scale = eta if self.optimizer.prescaled else None
        cfg = self.config
        masks = None
        if cfg.dropout or cfg.input_dropout:
            per_net = [dropout_masks(cfg, len(y), rng, 1) for rng in self.dropout_rngs]
            masks = {k: np.concatenate([m[k] for m in per_net]) for k in per_net[0]} if self.K > 1 else per_net[0]
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite loss is handled below
            loss, grads, stats = self.loss_fn(params, X, y, cfg, scale, masks, self.smoothing)
        self.last_loss = loss
        bad = ~np.isfinite(loss)
        if bad.any():
            self._diverge(bad, loss, grads)
        self.update_fn(params, grads, self.opt_state, eta, self.lam, self.t)
        a = self.tc.bn_alpha
        for k, mu in stats.items():
            s = bn_state[k]
            s *= a
            s += (1 - a) * mu
        self.t += 1

    def _diverge(self, bad, loss, grads):
        if self.K == 1:
            raise DivergenceError(self.t, float(loss[0]))
        for i in np.flatnonzero(bad):
            if self.diverged[i] is None:
                self.diverged[i] = self.t
        # A diverged network of a stack stops learning; the others go on unaffected.
        for g in grads.values():
            g[bad] = 0
        for p in self.stack.params.values():
            p[bad] = 0

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self):
        """Append one history row per network: cost, loss, accuracy on train and val."""
        t0 = time.perf_counter()
        # raw rows: the standardization is folded into the first layer (one cast per chunk);
        # else each evaluation thread writes its chunks' features into an array of its own
        std = self.standardization
        kw = {"threads": self.eval_threads, "chunk_fn": self.eval_chunk_fns}
        if std is None:
            kw["prep"] = [functools.partial(_features_into, self.data, buf) for buf in self._ebufs]
        else:
            kw["standardize"] = std
        with np.errstate(over="ignore", invalid="ignore"):  # diverged networks of a stack
            tr = self.stack.evaluate(self.X_eval, self.y_eval, self.lam, EVAL_CHUNK, **kw)
            va = self.stack.evaluate(self.data.X_val, self.data.y_val, self.lam, EVAL_CHUNK, **kw)
        eta = self.eta_at(self.t)
        for i in range(self.K):
            self.history[i].append(
                {
                    "step": self.t,
                    "epoch": self.t / self.steps_per_epoch,
                    "eta": float(eta[i]),
                    **{f"train_{k}": float(v[i]) for k, v in tr.items()},
                    **{f"val_{k}": float(v[i]) for k, v in va.items()},
                }
            )
        self.eval_seconds += time.perf_counter() - t0

    # -- the loop -----------------------------------------------------------------------------
    def _emit(self, event: str, *args):
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def run(self, progress: bool | None = None, desc: str = "train"):
        """Train to the end, telling the callbacks of every event.

        Per update the events come in this order: ``on_evaluate`` (when this update is
        evaluated), ``on_cycle_end`` (at the end of a cycle), ``on_step_end``. On Ctrl-C the
        current update finishes, ``on_interrupt`` is called and KeyboardInterrupt is raised; a
        Ctrl-C that comes after the last update (while the callbacks write the final outputs)
        lets them finish, then raises KeyboardInterrupt too, so that the caller stops.
        """
        T = self.total_steps
        previous = None
        self._stop = False
        if self.callbacks:
            try:
                previous = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread
                previous = None
        self._mark, self._eval_mark = time.perf_counter(), self.eval_seconds
        try:
            self._emit("on_train_begin")
            if self.t == 0 and not self.history[0]:
                self.init_bn_state()
                self.evaluate()
                self._emit("on_evaluate")
            with tqdm(
                total=T, initial=self.t, desc=desc, unit="upd", disable=progress is False or None, leave=False,
                mininterval=1.0,
            ) as bar:  # fmt: skip
                while self.t < T:
                    self.step()
                    bar.update(1)
                    if self.t % self.eval_every == 0 or self.t == T:
                        self.evaluate()
                        self._emit("on_evaluate")
                        bar.set_postfix(val_acc=f"{self.history[0][-1]['val_accuracy']:.4f}")
                    if self.t % self.cycle == 0:
                        self._emit("on_cycle_end")
                    self._tick()  # so that a checkpoint holds the time spent so far
                    self._emit("on_step_end")
                    if self._stop:
                        self._emit("on_interrupt")
                        raise KeyboardInterrupt
            self._tick()
            self._emit("on_train_end")
        except DivergenceError as e:
            self._tick()
            self._emit("on_diverge", e)
            raise
        finally:
            self._tick()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if self._stop:  # Ctrl-C after the loop's last check: the outputs are complete, stop now
            raise KeyboardInterrupt

    def _tick(self):
        """Add the time since the last tick, less the evaluations', to ``train_seconds``."""
        now = time.perf_counter()
        self.train_seconds += now - self._mark - (self.eval_seconds - self._eval_mark)
        self._mark, self._eval_mark = now, self.eval_seconds

    def _on_sigint(self, signum, frame):
        self._stop = True

    # -- state --------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """Everything needed to continue bitwise, callbacks' state included:
        ``(tensors, metadata)`` for a safetensors file."""
        tensors = {f"param.{k}": v for k, v in self.stack.params.items()}
        tensors.update({f"bn.{k}": v for k, v in self.stack.bn_state.items()})
        tensors.update({f"opt.{k}": v for k, v in self.opt_state.items()})
        tensors["perm"] = self.perm
        callbacks = {}
        for cb in self.callbacks:
            if cb.key:
                callbacks[cb.key] = cb.state()
                tensors.update({f"cb.{cb.key}.{k}": v for k, v in cb.tensors().items()})
        meta = {
            "t": self.t,
            "perm_epoch": self.perm_epoch,
            "rng": self.rng.bit_generator.state,
            "rng_augment": self.augment_rng.bit_generator.state,
            "rng_dropout": [r.bit_generator.state for r in self.dropout_rngs],
            "history": self.history,
            "diverged": self.diverged,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "K": self.K,
            "kernels": self.kernels,
            "callbacks": callbacks,
        }
        return tensors, {"state": json.dumps(meta)}

    def load_state(self, tensors: dict, metadata: dict):
        """Restore :meth:`state`; shapes and names must match this trainer's."""
        meta = json.loads(metadata["state"])
        if meta["K"] != self.K:
            raise KlayerError("checkpoint holds a different number of networks")
        if meta.get("kernels", self.kernels) != self.kernels:
            warnings.warn(
                f"the checkpoint was trained with the {meta['kernels']} kernels, this run uses "
                f"{self.kernels} ({kernels.ENV}): it continues within float rounding, not bitwise",
                stacklevel=2,
            )
        for prefix, target in (("param.", self.stack.params), ("bn.", self.stack.bn_state), ("opt.", self.opt_state)):
            for k, v in target.items():
                v[...] = tensors[prefix + k]
        self.perm = tensors["perm"].astype(np.int64)
        self.t = meta["t"]
        self.perm_epoch = meta["perm_epoch"]
        self.rng.bit_generator.state = meta["rng"]
        self.augment_rng.bit_generator.state = meta["rng_augment"]
        for r, s in zip(self.dropout_rngs, meta["rng_dropout"], strict=True):
            r.bit_generator.state = s
        self.history = meta["history"]
        self.diverged = meta["diverged"]
        self.train_seconds = meta["train_seconds"]
        self.eval_seconds = meta["eval_seconds"]
        for cb in self.callbacks:
            if cb.key:
                prefix = f"cb.{cb.key}."
                cb.load_state(
                    meta["callbacks"].get(cb.key, {}),
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                )

    def network(self, i: int = 0) -> Network:
        """Network ``i`` of the stack, on its own."""
        return unstack_network(self.stack, i, self.net_configs[i])
