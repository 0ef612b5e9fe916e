"""Training an experiment into a run folder: data, trainer, persistence wired together."""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from ..config import ExperimentConfig, load_experiment
from ..data.prepare import Dataset, load_dataset
from ..diagnostics import DiagnosticsRecorder
from ..errors import ConfigError, KlayerError, OutputError
from ..io import atomic_write, ensure_dir, sole_writer
from ..network import Network
from ..training.loop import Trainer
from .checkpoint import checkpoint_files, read_checkpoint, remove_checkpoints, restore, validate
from .folder import Checkpointer, RunFolder, SnapshotWriter, run_results
from .history import read_history
from .model import load_model
from .shape import read_results

__all__ = ["TrainResult", "train", "train_lockstep", "run_status", "tidy_finished", "OUTPUTS"]

# every file a run may write, removed when a run is started over
OUTPUTS = (
    "snapshots",
    "results.json",
    "model.safetensors",
    "history.csv",
    "diagnostics.csv",
    "diagnostics.png",
    "cost.png",
    "loss.png",
    "accuracy.png",
    "confusion.png",
)


@dataclass
class TrainResult:
    """What a run produced: the trained network, its history rows and its results."""

    network: Network
    history: list[dict]
    results: dict
    run_dir: Path | None = None
    finished_before: bool = False  # True when ``resume`` found the run already finished


def run_status(folder, log=None) -> str:
    """``"empty"``, ``"unfinished"``, ``"complete"`` or ``"diverged"``.

    A ``results.json`` that is damaged (not JSON, or not the shape klayer writes) is not
    trusted: the run counts as unfinished, and ``log`` is told which field is wrong."""
    folder = Path(folder)
    res, problem = read_results(folder / "results.json")
    if res is not None:
        if res["status"] == "complete" and not (folder / "model.safetensors").is_file():
            return "unfinished"
        return res["status"]
    if log is not None and (folder / "results.json").exists():
        log(f"{problem}; the run is not trusted as finished and is trained again")
    if checkpoint_files(folder) or (folder / "config.toml").exists():
        return "unfinished"
    return "empty"


def _remove_outputs(folder: Path) -> None:
    """Remove a run's outputs and checkpoints, ``results.json`` first: a fault midway must not
    leave a run that looks finished (``results.json`` complete, its model there) with some of its
    outputs gone."""
    try:
        for name in ("results.json", *OUTPUTS):
            p = folder / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        remove_checkpoints(folder)
    except OSError as e:
        raise OutputError(getattr(e, "filename", None) or folder, e) from None


def _claim(folder: Path, held: contextlib.ExitStack) -> bool:
    """Lock run ``folder`` for this writer until ``held`` closes (KlayerError when another klayer
    process writes it), then remove the temporary files a write killed midway left in it and in
    its ``snapshots``; True."""
    held.enter_context(sole_writer(folder, "run folder", ("snapshots",)))
    return True


def _remove_leftover_checkpoints(folder: Path, claimed: bool) -> None:
    """Remove the checkpoints of a finished run (``results.json`` complete and its model present):
    :class:`RunFolder` removes them after writing ``results.json``, and a kill in between left them.
    Only by the folder's writer (``claimed``)."""
    if claimed and checkpoint_files(folder):
        try:
            remove_checkpoints(folder)
        except OSError as e:
            raise OutputError(getattr(e, "filename", None) or folder, e) from None


def tidy_finished(folder) -> None:
    """Open the finished run in ``folder`` as train/--resume opens it, for a sweep that reads it
    back instead of training it: holding the folder's lock, remove the temporary files a kill left
    (folder and ``snapshots``) and, when the run is complete, the checkpoints a kill between
    ``results.json`` and their removal left. A diverged run keeps its checkpoint, its last good
    state; nothing else changes. KlayerError when another klayer process writes the folder."""
    folder = Path(folder)
    with contextlib.ExitStack() as held:
        claimed = _claim(folder, held)
        if run_status(folder) == "complete":
            _remove_leftover_checkpoints(folder, claimed)


def _warn(message: str) -> None:
    print(f"klayer: warning: {message}", file=sys.stderr)


def _prepare_folder(out: Path, config: ExperimentConfig, resume: bool, retrain: bool, log=None) -> str:
    """The run's status in ``out``; KlayerError when it may not be trained as asked. Nothing is
    removed here: with ``retrain`` the old outputs go once the new training is ready to start."""
    if retrain:
        return "empty"
    status = run_status(out, log if resume else None)
    if resume:
        if status == "empty":  # nothing was saved yet (or a fault came first): start from the beginning
            return status
        saved = out / "config.toml"
        if not saved.is_file():
            raise KlayerError(f"{out}: nothing to resume (a checkpoint but no config.toml)")
        try:
            same = load_experiment(saved) == config
        except ConfigError as e:
            raise KlayerError(f"cannot resume {out}: its config.toml is damaged ({e})") from None
        if not same:
            raise KlayerError(f"{out}: config differs from the run being resumed")
    elif status != "empty":
        raise KlayerError(
            f"{out} already holds a run; use --resume to continue it, --retrain to start it over, "
            "or --out for a new folder"
        )
    return status


def train(
    config: ExperimentConfig,
    data: Dataset | None = None,
    out=None,
    resume: bool = False,
    data_root=None,
    progress: bool | None = None,
    retrain: bool = False,
    log=_warn,
) -> TrainResult:
    """Train one network as ``config`` says and, with ``out``, write its run folder.

    Parameters
    ----------
    config : the experiment.
    data : a Dataset (default: loaded as ``config.data`` says, from ``data_root``).
    out : run folder (None: nothing is written, no checkpoints).
    resume : continue the run in ``out`` from its newest good checkpoint (the config must be the
        same). A finished run is left as it is and returned (``finished_before``).
    retrain : start the run in ``out`` over, replacing what it holds (its old outputs are
        removed only once the data are loaded and the trainer is built, so that a fault before
        that leaves the finished run as it was).
    log : called with a one-line message when a corrupt or invalid checkpoint, or a damaged
        ``results.json``, is skipped.

    Raises
    ------
    DivergenceError
        The cost became NaN or infinite; the last checkpoint stays, no model is written.
    OutputError
        A file could not be written; what was written before is intact and ``resume`` continues.
    """
    t_wall = time.perf_counter()
    tc = config.train
    status = "empty"
    with contextlib.ExitStack() as held:  # the run folder's lock, once the folder exists
        claimed = False
        if out is not None:
            out = Path(out)
            if out.is_dir():
                claimed = _claim(out, held)
            status = _prepare_folder(out, config, resume, retrain, log)
            if status == "complete":
                # checkpoints left by a kill between results.json and their removal: the run is finished
                _remove_leftover_checkpoints(out, claimed)
                saved = load_model(out / "model.safetensors")
                res, _ = read_results(out / "results.json")
                return TrainResult(saved.network, read_history(out / "history.csv"), res, out, True)
        with threadpool_limits(limits=tc.blas_threads, user_api="blas"):
            if data is None:
                data = load_dataset(config.data, data_root, dtype=tc.dtype, progress=progress)
            recorder = DiagnosticsRecorder() if tc.diagnostics else None
            callbacks = [recorder] if recorder else []
            folder = None
            if out is not None:
                snapshots = SnapshotWriter(out, 0) if tc.snapshots else None
                folder = RunFolder(out, 0, t_wall, recorder, snapshots)
                callbacks += [snapshots] if snapshots else []
                callbacks += [Checkpointer(out, tc.checkpoint_every), folder]
            trainer = Trainer([config], data, callbacks)
            if out is not None:
                ensure_dir(out)
                if not claimed:
                    claimed = _claim(out, held)
                if resume and status != "empty":
                    found = read_checkpoint(out, log, functools.partial(validate, trainer))
                    if found is not None:
                        restore(trainer, *found)
                if retrain:  # the data loaded and the trainer is built: the new outputs are coming
                    _remove_outputs(out)
                atomic_write(out / "config.toml", config.to_toml())
                for stale in ("results.json", "model.safetensors"):
                    try:
                        (out / stale).unlink(missing_ok=True)
                    except OSError as e:
                        raise OutputError(out / stale, e) from None
            trainer.run(progress=progress, desc=config.name)
            res = folder.results if folder is not None else run_results(trainer, 0, time.perf_counter() - t_wall)
            return TrainResult(trainer.network(0), trainer.history[0], res, out)


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
    with contextlib.ExitStack() as held, threadpool_limits(limits=threads, user_api="blas"):
        recorder = DiagnosticsRecorder() if configs[0].train.diagnostics else None
        folders = []
        if outs is not None:
            for i, cfg in enumerate(configs):
                d = ensure_dir(outs[i])
                _claim(d, held)
                _remove_outputs(d)  # an unfinished run of a sweep is retrained from the start
                atomic_write(d / "config.toml", cfg.to_toml())
                snapshots = SnapshotWriter(d, i) if cfg.train.snapshots else None
                folders += [snapshots] if snapshots else []
                folders.append(RunFolder(d, i, t_wall, recorder, snapshots))
        trainer = Trainer(configs, data, ([recorder] if recorder else []) + folders, eval_threads=threads)
        trainer.run(progress=progress, desc=f"{len(configs)} networks")
        if outs is not None:
            return [f.results for f in folders if isinstance(f, RunFolder)]
        return [run_results(trainer, i, time.perf_counter() - t_wall) for i in range(len(configs))]
