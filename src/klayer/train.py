"""Mini-batch gradient descent for one network or K networks in lockstep.

:class:`Trainer` always trains a stack of K networks (K = 1 for an ordinary run) on the same
shuffled mini-batches: the parameters carry a leading model axis, so the first layer of all K
networks is one matrix product. Networks in one stack may differ in ``lam``, ``eta_min``,
``eta_max``, ``eta``, ``seed`` (their initialization), ``init`` and ``sigma``; everything else,
including the shuffling seed, is shared. Each network's result equals the same network trained
alone, up to float round-off.

Randomness: ``seed`` draws the initialization, ``shuffle_seed`` (default ``seed``) the epoch
permutations and the fixed training-evaluation subset, each from its own
``numpy.random.SeedSequence`` stream. A seed fully determines a run.
"""

from __future__ import annotations

import json
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm.auto import tqdm

from . import __version__
from .config import ExperimentConfig
from .data.prepare import Dataset, load_dataset
from .errors import ConfigError, DivergenceError, KlayerError
from .network import Network, data_loss_and_grads, forward, stack_networks, unstack_network
from .optim import sgd_update
from .runs import atomic_write, save_model, write_history, write_json, write_rows
from .schedules import constant_eta, cyclic_eta, decay_eta

__all__ = ["Trainer", "TrainResult", "train", "train_lockstep", "rng_for", "LOCKSTEP_KEYS"]

_STREAMS = {"init": 0, "shuffle": 1, "eval": 2}
# keys that may differ between networks trained in lockstep
LOCKSTEP_KEYS = {
    "model": {"init", "sigma"},
    "train": {"lam", "eta_min", "eta_max", "eta", "seed", "shuffle_seed"},
}


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """The Generator of one named random stream (init, shuffle, eval) of a seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, _STREAMS[stream]]))


def _shared_part(cfg: ExperimentConfig) -> dict:
    d = cfg.to_dict()
    for section, keys in LOCKSTEP_KEYS.items():
        for k in keys:
            d[section].pop(k, None)
    d.pop("name")
    d.pop("description")
    d["data_seed"] = cfg.train.data_seed
    return d


class Trainer:
    """Training state of K networks in lockstep, stepped one update at a time.

    Parameters
    ----------
    configs : K experiment configs that differ only in :data:`LOCKSTEP_KEYS`.
    data : the standardized Dataset.
    """

    def __init__(self, configs: list[ExperimentConfig], data: Dataset):
        if not configs:
            raise ConfigError("no configs to train")
        shared = _shared_part(configs[0])
        for c in configs[1:]:
            if _shared_part(c) != shared:
                raise ConfigError(
                    f"{c.name} cannot be trained in lockstep with {configs[0].name}: only "
                    "lam, eta_min, eta_max, eta, seed, init and sigma may differ (and the "
                    "shuffle seed must be the same)"
                )
        self.configs = configs
        self.data = data
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
        if tc.schedule == "cyclic":
            self.total_steps = 2 * tc.n_s * tc.n_cycles
            cycle = 2 * tc.n_s
        else:
            self.total_steps = tc.n_epochs * self.steps_per_epoch
            cycle = self.steps_per_epoch
        self.eval_every = max(1, round(cycle / tc.evals_per_cycle))
        self.rng = rng_for(tc.data_seed, "shuffle")
        n_sub = tc.eval_train_subset
        if n_sub and n_sub < N:
            sub = np.sort(rng_for(tc.data_seed, "eval").choice(N, n_sub, replace=False))
            self.X_eval, self.y_eval = data.X_train[sub], data.y_train[sub]
        else:
            self.X_eval, self.y_eval = data.X_train, data.y_train
        self.t = 0
        self.perm = np.arange(N)
        self.perm_epoch = -1
        self.velocity = {k: np.zeros_like(p) for k, p in self.stack.params.items()} if tc.momentum else {}
        self.history: list[list[dict]] = [[] for _ in range(self.K)]
        self.diagnostics: list[list[dict]] = [[] for _ in range(self.K)]
        self._diag_batch = (self.X_eval[:500], self.y_eval[:500]) if tc.diagnostics else None
        self.diverged: list[int | None] = [None] * self.K
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self._xbuf = np.empty((tc.batch_size, data.input_size), data.X_train.dtype)
        self._stop = False

    # -- schedule -----------------------------------------------------------------------------
    def eta_at(self, t: int) -> np.ndarray:
        """Learning rate of every network at update step ``t``, shape (K,)."""
        tc = self.tc
        if tc.schedule == "cyclic":
            return cyclic_eta(t, self.eta_min, self.eta_max, tc.n_s)
        if tc.schedule == "constant":
            return constant_eta(t, self.eta)
        return decay_eta(t, self.eta, tc.decay, self.steps_per_epoch)

    # -- one update ---------------------------------------------------------------------------
    def _batch(self):
        spe, B = self.steps_per_epoch, self.tc.batch_size
        epoch, j = divmod(self.t, spe)
        if epoch != self.perm_epoch:
            self.perm = self.rng.permutation(len(self.data.y_train))
            self.perm_epoch = epoch
        idx = self.perm[j * B : (j + 1) * B]
        np.take(self.data.X_train, idx, axis=0, out=self._xbuf)
        return self._xbuf, self.data.y_train[idx]

    def init_bn_state(self):
        """Running statistics start at the first mini-batch's statistics (as the assignments do)."""
        if not self.config.batch_norm:
            return
        saved = (self.rng.bit_generator.state, self.perm.copy(), self.perm_epoch)
        X, _ = self._batch()
        self.rng.bit_generator.state, self.perm, self.perm_epoch = saved
        _, _, stats = forward(self.stack.params, X, self.config, train=True)
        for k, v in stats.items():
            self.stack.bn_state[k][...] = v

    def step(self):
        """One mini-batch update of every network."""
        X, y = self._batch()
        params, bn_state = self.stack.params, self.stack.bn_state
        eta = self.eta_at(self.t).astype(self.lam.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite loss is handled below
            loss, grads, stats = data_loss_and_grads(params, X, y, self.config, scale=eta)
        bad = ~np.isfinite(loss)
        if bad.any():
            self._diverge(bad, loss, grads)
        sgd_update(params, grads, eta, self.lam, self.velocity, self.tc.momentum)
        a = self.tc.bn_alpha
        for k, mu in stats.items():
            s = bn_state[k]
            s *= a
            s += (1 - a) * mu
        self.t += 1

    def _diverge(self, bad, loss, grads):
        if self.K == 1:
            raise DivergenceError(self.t, float(loss[0]))  # a non-finite loss makes the cost so
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
        with np.errstate(over="ignore", invalid="ignore"):  # diverged networks of a stack
            tr = self.stack.evaluate(self.X_eval, self.y_eval, self.lam)
            va = self.stack.evaluate(self.data.X_val, self.data.y_val, self.lam)
        eta = self.eta_at(self.t)
        if self._diag_batch is not None:
            from .diagnostics import layer_diagnostics

            stats = layer_diagnostics(self.stack.params, *self._diag_batch, self.config, self.lam)
            for i in range(self.K):
                self.diagnostics[i].append({"step": self.t, **stats[i]})
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
    def run(self, checkpoint=None, progress: bool | None = None, desc: str = "train"):
        """Train to the end. ``checkpoint(trainer)`` is called every ``checkpoint_every`` updates
        and, on Ctrl-C, once before KeyboardInterrupt is re-raised."""
        T = self.total_steps
        every = self.tc.checkpoint_every
        previous = None
        if checkpoint is not None:
            try:
                previous = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread
                previous = None
        t_start = time.perf_counter()
        eval_before = self.eval_seconds
        try:
            if self.t == 0 and not self.history[0]:
                self.init_bn_state()
                self.evaluate()
            with tqdm(
                total=T,
                initial=self.t,
                desc=desc,
                unit="upd",
                disable=progress is False or None,
                leave=False,
                mininterval=1.0,
            ) as bar:
                while self.t < T:
                    self.step()
                    bar.update(1)
                    if self.t % self.eval_every == 0 or self.t == T:
                        self.evaluate()
                        bar.set_postfix(val_acc=f"{self.history[0][-1]['val_accuracy']:.4f}")
                    if checkpoint is not None and self.t < T:
                        if (every and self.t % every == 0) or self._stop:
                            checkpoint(self)
                    if self._stop:
                        raise KeyboardInterrupt
        finally:
            self.train_seconds += time.perf_counter() - t_start - (self.eval_seconds - eval_before)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum, frame):
        self._stop = True

    # -- state --------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """Everything needed to continue bitwise: ``(tensors, metadata)``."""
        tensors = {f"param.{k}": v for k, v in self.stack.params.items()}
        tensors.update({f"bn.{k}": v for k, v in self.stack.bn_state.items()})
        tensors.update({f"vel.{k}": v for k, v in self.velocity.items()})
        tensors["perm"] = self.perm
        meta = {
            "t": self.t,
            "perm_epoch": self.perm_epoch,
            "rng": self.rng.bit_generator.state,
            "history": self.history,
            "diagnostics": self.diagnostics,
            "diverged": self.diverged,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "K": self.K,
        }
        return tensors, {"state": json.dumps(meta)}

    def load_state(self, tensors: dict, metadata: dict):
        meta = json.loads(metadata["state"])
        if meta["K"] != self.K:
            raise KlayerError("checkpoint holds a different number of networks")
        for k in self.stack.params:
            self.stack.params[k][...] = tensors[f"param.{k}"]
        for k in self.stack.bn_state:
            self.stack.bn_state[k][...] = tensors[f"bn.{k}"]
        for k in self.velocity:
            self.velocity[k][...] = tensors[f"vel.{k}"]
        self.perm = tensors["perm"].astype(np.int64)
        self.t = meta["t"]
        self.perm_epoch = meta["perm_epoch"]
        self.rng.bit_generator.state = meta["rng"]
        self.history = meta["history"]
        self.diagnostics = meta["diagnostics"]
        self.diverged = meta["diverged"]
        self.train_seconds = meta["train_seconds"]
        self.eval_seconds = meta["eval_seconds"]

    def network(self, i: int = 0) -> Network:
        """Network ``i`` of the stack, on its own."""
        return unstack_network(self.stack, i, self.net_configs[i])


@dataclass
class TrainResult:
    """What a run produced: the trained network, its history rows and its results."""

    network: Network
    history: list[dict]
    results: dict
    run_dir: Path | None = None


def _versions(blas_threads: int) -> dict:
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "klayer": __version__,
        "platform": platform.platform(),
        "blas": blas,
        "blas_threads": blas_threads,
    }


def _results(trainer: Trainer, i: int, wall: float, net: Network) -> dict:
    cfg = trainer.configs[i]
    tc = cfg.train
    data = trainer.data
    test = net.evaluate(data.X_test, data.y_test, tc.lam)
    final = trainer.history[i][-1]
    epochs = trainer.total_steps / trainer.steps_per_epoch
    status = "complete" if trainer.diverged[i] is None else "diverged"
    return {
        "name": cfg.name,
        "status": status,
        "diverged_at_step": trainer.diverged[i],
        "test_accuracy": test["accuracy"] if status == "complete" else None,
        "test_loss": test["loss"] if status == "complete" else None,
        "test_cost": test["cost"] if status == "complete" else None,
        "final": {k: v for k, v in final.items() if k.startswith(("train_", "val_"))},
        "best_val_accuracy": max(r["val_accuracy"] for r in trainer.history[i]),
        "updates": trainer.total_steps,
        "epochs": epochs,
        "wall_seconds": wall,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": trainer.eval_seconds,
        "seconds_per_epoch": (trainer.train_seconds + trainer.eval_seconds) / epochs,
        "seed": tc.seed,
        "shuffle_seed": tc.data_seed,
        "train_eval_on": (
            f"fixed random subset of {len(trainer.y_eval)} training images"
            if len(trainer.y_eval) < len(data.y_train)
            else f"all {len(data.y_train)} training images"
        ),
        "eval_train_subset": len(trainer.y_eval),
        "sizes": data.sizes(),
        "data_source": data.source,
        "lockstep_k": trainer.K,
        "versions": _versions(tc.blas_threads),
    }


def _finish_run(trainer: Trainer, i: int, out: Path, wall: float, net: Network) -> dict:
    """Write history, model, results and plots of network ``i`` (``net``) into its run folder."""
    from .plots import plot_diagnostics, plot_history

    res = _results(trainer, i, wall, net)
    write_history(out / "history.csv", trainer.history[i])
    if trainer.diagnostics[i]:
        write_rows(out / "diagnostics.csv", trainer.diagnostics[i])
        plot_diagnostics(trainer.diagnostics[i], out / "diagnostics.png", title=res["name"])
    if res["status"] == "complete":
        save_model(
            out / "model.safetensors",
            net,
            trainer.data.mean,
            trainer.data.std,
            {"name": res["name"], "test_accuracy": res["test_accuracy"]},
        )
    plot_history(trainer.history[i], out, title=res["name"])
    write_json(out / "results.json", res)
    return res


def _checkpoint_writer(out: Path):
    from safetensors.numpy import save as st_save

    def write(trainer: Trainer):
        tensors, meta = trainer.state()
        atomic_write(out / "checkpoint.safetensors", st_save(tensors, metadata=meta))
        write_history(out / "history.csv", trainer.history[0])

    return write


def _load_checkpoint(trainer: Trainer, out: Path):
    from .runs import _read_safetensors

    tensors, meta = _read_safetensors(out / "checkpoint.safetensors")
    trainer.load_state(tensors, meta)


def train(
    config: ExperimentConfig,
    data: Dataset | None = None,
    out=None,
    resume: bool = False,
    data_root=None,
    progress: bool | None = None,
) -> TrainResult:
    """Train one network as ``config`` says and, with ``out``, write its run folder.

    Parameters
    ----------
    config : the experiment.
    data : a prepared Dataset (default: loaded as ``config.data`` says, from ``data_root``).
    out : run folder (None: nothing is written, no checkpoints).
    resume : continue from ``out/checkpoint.safetensors`` (the config must be the same).

    Raises
    ------
    DivergenceError
        The cost became NaN or infinite; the last checkpoint stays, no model is written.
    """
    t_wall = time.perf_counter()
    tc = config.train
    with threadpool_limits(limits=tc.blas_threads, user_api="blas"):
        if data is None:
            data = load_dataset(config.data, data_root, dtype=tc.dtype, progress=progress)
        trainer = Trainer([config], data)
        checkpoint = None
        if out is not None:
            out = Path(out)
            toml = config.to_toml()
            ckpt = out / "checkpoint.safetensors"
            if resume:
                if not (out / "config.toml").is_file():
                    raise KlayerError(f"{out}: nothing to resume (no config.toml)")
                if (out / "config.toml").read_text() != toml:
                    raise KlayerError(f"{out}: config differs from the run being resumed")
                if ckpt.is_file():
                    _load_checkpoint(trainer, out)
            else:
                if (out / "results.json").exists() or ckpt.exists():
                    raise KlayerError(
                        f"{out} already holds a run; use --resume to continue it or --out for a new folder"
                    )
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / "config.toml", toml)
            for stale in ("results.json", "model.safetensors"):
                (out / stale).unlink(missing_ok=True)
            checkpoint = _checkpoint_writer(out)
        try:
            trainer.run(checkpoint=checkpoint, progress=progress, desc=config.name)
        except DivergenceError:
            if out is not None:
                write_history(out / "history.csv", trainer.history[0])
                write_json(
                    out / "results.json",
                    {
                        "name": config.name,
                        "status": "diverged",
                        "diverged_at_step": trainer.t,
                        "seed": tc.seed,
                        "note": "no model written; checkpoint.safetensors is the last good state",
                    },
                )
            raise
        wall = time.perf_counter() - t_wall
        net = trainer.network(0)
        if out is None:
            res = _results(trainer, 0, wall, net)
        else:
            res = _finish_run(trainer, 0, out, wall, net)
            (out / "checkpoint.safetensors").unlink(missing_ok=True)
    return TrainResult(net, trainer.history[0], res, out)


def train_lockstep(
    configs: list[ExperimentConfig],
    data: Dataset,
    outs=None,
    progress: bool | None = None,
    blas_threads: int | None = None,
) -> list[dict]:
    """Train K networks in lockstep on the same mini-batches; write one run folder each.

    Returns
    -------
    The K results dicts (``status`` is ``"diverged"`` for a network whose cost blew up; the
    others are unaffected).
    """
    t_wall = time.perf_counter()
    threads = blas_threads or configs[0].train.blas_threads
    with threadpool_limits(limits=threads, user_api="blas"):
        trainer = Trainer(configs, data)
        trainer.run(progress=progress, desc=f"{len(configs)} networks")
        wall = time.perf_counter() - t_wall
        out = []
        for i, cfg in enumerate(configs):
            if outs is None:
                out.append(_results(trainer, i, wall, trainer.network(i)))
            else:
                d = Path(outs[i])
                d.mkdir(parents=True, exist_ok=True)
                atomic_write(d / "config.toml", cfg.to_toml())
                out.append(_finish_run(trainer, i, d, wall, trainer.network(i)))
    return out
