"""The run folder, written by callbacks attached to the training loop.

``runs/<name>/`` (or ``--out``) holds:

- ``config.toml``: the fully resolved experiment config;
- ``history.csv``: one row per evaluation (step, epoch, eta, cost/loss/accuracy on train and val);
- ``results.json``: final metrics, timings, seed, versions, BLAS threads, status (written last:
  its presence with ``"status": "complete"`` marks a finished run);
- ``model.safetensors``: weights, batch-norm state, standardization statistics and class names,
  with the architecture in its metadata and a SHA-256 per tensor (:mod:`klayer.runs.model`);
- ``checkpoint.safetensors`` (and its previous slot) while the run is unfinished
  (:mod:`klayer.runs.checkpoint`);
- ``cost.png``, ``loss.png``, ``accuracy.png``, ``confusion.png`` (the test set's confusion matrix;
  per-class accuracy, precision and recall are in ``results.json``); ``diagnostics.csv`` and
  ``diagnostics.png`` when
  diagnostics are on;
- ``snapshots/cycle<c>.safetensors`` with ``train.snapshots``: the model at the end of every cycle
  (where a cyclical learning rate is at its minimum), and the snapshot ensemble's test accuracy
  in ``results.json``.

Every file is written atomically (:mod:`klayer.io`).
"""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from .. import __version__
from ..io import write_json, write_rows
from ..network import Network
from ..training.callbacks import Callback
from .checkpoint import remove_checkpoints, write_checkpoint
from .history import write_history
from .model import save_model

__all__ = ["Checkpointer", "RunFolder", "SnapshotWriter", "run_results", "versions"]


def versions(blas_threads: int) -> dict:
    """Python, NumPy, klayer, platform and BLAS versions and threads, for ``results.json``."""
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


def run_results(trainer, i: int, wall: float) -> dict:
    """The ``results.json`` of network ``i`` of a finished trainer (evaluates the test set)."""
    cfg = trainer.configs[i]
    tc = cfg.train
    data = trainer.data
    status = "complete" if trainer.diverged[i] is None else "diverged"
    test = {"accuracy": None, "loss": None, "cost": None}
    if status == "complete":
        net = trainer.network(i)
        prep = functools.partial(data.features, dtype=tc.dtype)  # a new array per chunk: thread-safe
        test = net.evaluate(data.X_test, data.y_test, tc.lam, prep=prep, threads=trainer.eval_threads)
    final = trainer.history[i][-1]
    epochs = trainer.total_steps / trainer.steps_per_epoch
    return {
        "name": cfg.name,
        "status": status,
        "diverged_at_step": trainer.diverged[i],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_cost": test["cost"],
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
        "classes": list(data.classes),
        "lockstep_k": trainer.K,
        "kernels": trainer.kernels,
        "versions": versions(tc.blas_threads),
    }


def deployable(trainer, i: int):
    """Network ``i`` and the statistics of its model file: ``(network, mean, std)``, taking raw
    rows (a whitening of the data is folded into the first layer)."""
    net = trainer.network(i)
    params, mean, std = trainer.data.deployable(net.params)
    return Network(net.config, params, net.bn_state), mean, std


class Checkpointer(Callback):
    """Write a checkpoint (and ``history.csv``) every ``every`` updates, after the last update
    (so that writing the final outputs can fail and be resumed), and on Ctrl-C."""

    def __init__(self, folder, every: int):
        self.folder = Path(folder)
        self.every = every

    def save(self, trainer) -> None:
        tensors, meta = trainer.state()
        write_checkpoint(self.folder, tensors, meta)
        write_history(self.folder / "history.csv", trainer.history[0])

    def on_step_end(self, trainer) -> None:
        if (self.every and trainer.t % self.every == 0) or trainer.t == trainer.total_steps:
            self.save(trainer)

    def on_interrupt(self, trainer) -> None:
        self.save(trainer)


def _image_shape(data) -> list[int]:
    """The ``image_shape`` field of a model file: ``[C, H, W]`` of image data, ``[]`` otherwise."""
    return list(data.image_shape or [])


class SnapshotWriter(Callback):
    """Save network ``index`` as ``snapshots/cycle<c>.safetensors`` at the end of every cycle."""

    def __init__(self, folder, index: int = 0):
        self.folder = Path(folder) / "snapshots"
        self.index = index

    def on_cycle_end(self, trainer) -> None:
        c = trainer.t // trainer.cycle
        name = trainer.configs[self.index].name
        save_model(
            self.folder / f"cycle{c}.safetensors",
            *deployable(trainer, self.index),
            # the image shape, as in model.safetensors: a 3 x 12 x 16 model would otherwise be
            # taken for a 1 x 24 x 24 one when it predicts images (both take 576 values)
            {"name": f"{name} cycle {c}", "cycle": c, "step": trainer.t, "image_shape": _image_shape(trainer.data)},
            classes=trainer.data.classes,
        )

    def paths(self) -> list[Path]:
        """The snapshots saved so far, in cycle order."""
        return sorted(self.folder.glob("cycle*.safetensors"), key=lambda p: int(p.stem[5:]))


def snapshot_results(paths, data, dtype) -> dict:
    """Test accuracy of every snapshot and of their probability-averaged ensemble."""
    from ..ensemble import evaluate_ensemble
    from .model import load_model

    models = [load_model(p) for p in paths]
    r = evaluate_ensemble(models, data.raw_test(), data.y_test)
    return {
        "snapshots": [p.name for p in paths],
        "member_test_accuracy": [m["accuracy"] for m in r["members"]],
        "test_accuracy": r["ensemble"]["accuracy"],
        "test_loss": r["ensemble"]["loss"],
    }


class RunFolder(Callback):
    """Write network ``index``'s history, model, plots and results when training ends (or its
    history and a ``diverged`` status when it diverges)."""

    def __init__(self, folder, index: int = 0, started: float | None = None, diagnostics=None, snapshots=None):
        self.folder = Path(folder)
        self.index = index
        self.started = time.perf_counter() if started is None else started
        self.diagnostics = diagnostics
        self.snapshots = snapshots
        self.results: dict | None = None

    def on_diverge(self, trainer, error) -> None:
        write_history(self.folder / "history.csv", trainer.history[self.index])
        write_json(
            self.folder / "results.json",
            {
                "name": trainer.configs[self.index].name,
                "status": "diverged",
                "diverged_at_step": error.step,
                "seed": trainer.configs[self.index].train.seed,
                "note": "no model written; checkpoint.safetensors is the last good state",
            },
        )

    def on_train_end(self, trainer) -> None:
        from ..plots import plot_diagnostics, plot_history

        i, out = self.index, self.folder
        res = run_results(trainer, i, time.perf_counter() - self.started)
        if self.snapshots is not None and res["status"] == "complete" and self.snapshots.paths():
            res["snapshot_ensemble"] = snapshot_results(self.snapshots.paths(), trainer.data, trainer.tc.dtype)
        write_history(out / "history.csv", trainer.history[i])
        rows = self.diagnostics.rows[i] if self.diagnostics is not None else []
        if rows:
            write_rows(out / "diagnostics.csv", rows, float_format=".6g")
            plot_diagnostics(rows, out / "diagnostics.png", title=res["name"])
        if res["status"] == "complete":
            from ..inference import evaluate_run

            res.update(evaluate_run(out, trainer.network(i), trainer.data, trainer.tc.dtype, res["name"]))
            extra = {"name": res["name"], "test_accuracy": res["test_accuracy"]}
            extra["image_shape"] = _image_shape(trainer.data)
            save_model(
                out / "model.safetensors",
                *deployable(trainer, i),
                extra,
                classes=trainer.data.classes,
            )
        plot_history(trainer.history[i], out, title=res["name"])
        write_json(out / "results.json", res)
        remove_checkpoints(out)
        self.results = res
