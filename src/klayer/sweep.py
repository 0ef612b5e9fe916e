"""Running many trainings: lockstep stacks, both cores, resumable, optionally on Dask.

:func:`run_many` takes experiment configs and one run folder each. Finished runs (a
``results.json`` in their folder) are read back, not retrained, so an interrupted sweep continues
where it stopped (a finished run is tidied as ``klayer train --resume`` tidies it: the temporary
files and checkpoints a kill left go). The others are grouped into stacks that can train in
lockstep (same architecture, data and shuffle seed; different ``lam``, ``eta``, ``seed``, ``init``, ``sigma``),
split into tasks of at most ``max_k`` networks, and run by ``n_jobs`` worker processes with one
BLAS thread each, or by a Dask cluster when ``scheduler`` gives its address (a
:class:`klayer.pool.WorkerPool`, shared when the caller passes one: ``klayer reproduce`` runs its
studies at once on one pool). Each worker keeps the last data sets it loaded for its next tasks.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tqdm.auto import tqdm

from .config import ExperimentConfig, from_dict, same_config
from .errors import DivergenceError, KlayerError

__all__ = ["run_many", "load_results", "lockstep_groups", "run_seconds"]

_DATA_CACHE: dict = {}
_DATA_KEEP = 3  # data sets a worker keeps (CIFAR-10 as uint8: 184 MB)

# this machine's measured rates (one BLAS thread per worker): per-update overhead and float32
# matrix products; the one-off ZCA whitening
UPDATE_OVERHEAD = 3e-4
FLOP_RATE = 1.25e11
ZCA_SECONDS = 20.0


def _forward_flops(cfg, d: int = 3072, classes: int = 10) -> float:
    sizes = [d, *cfg.model.hidden, classes]
    return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def update_seconds(cfg) -> float:
    """Estimated seconds of one update: forward, backward (about twice the forward) and overhead."""
    return UPDATE_OVERHEAD + 3 * cfg.train.batch_size * _forward_flops(cfg) / FLOP_RATE


def row_seconds(cfg) -> float:
    """Estimated seconds to evaluate one row."""
    return 2e-7 + _forward_flops(cfg) / FLOP_RATE


def run_seconds(cfg: ExperimentConfig) -> float:
    """A rough estimate of one training's seconds on one core: its updates and evaluated rows at
    this machine's measured rates, and ZCA whitening."""
    tc = cfg.train
    n_train = 10000 if cfg.data.split == "batch1" else 50000 - cfg.data.n_val
    spe = n_train // tc.batch_size
    updates = 2 * tc.n_s * tc.n_cycles if tc.cyclic else tc.n_epochs * spe
    cycle = 2 * tc.n_s if tc.cyclic else spe
    evals = updates / max(1, round(cycle / tc.evals_per_cycle)) + 1
    rows = (tc.eval_train_subset or n_train) + (10000 if cfg.data.split == "batch1" else cfg.data.n_val)
    zca = ZCA_SECONDS if cfg.data.whiten == "zca" else 0.0
    return updates * update_seconds(cfg) + evals * rows * row_seconds(cfg) + zca


def load_results(run_dir) -> dict | None:
    """The ``results.json`` of a finished run, as :func:`klayer.runs.run_status` judges it
    (complete with its ``model.safetensors``, or diverged), or None: no file, one that is damaged
    (not JSON, or not the shape klayer writes), or a complete one whose model is missing. Such a
    run is trained again, not trusted."""
    from .runs import run_status
    from .runs.shape import read_results

    if run_status(run_dir) not in ("complete", "diverged"):
        return None
    return read_results(Path(run_dir) / "results.json")[0]


def lockstep_groups(configs: list[ExperimentConfig]) -> list[list[int]]:
    """Indices of configs grouped so that each group can train in one lockstep stack."""
    from .training import lockstep_signature

    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(json.dumps(lockstep_signature(c), sort_keys=True), []).append(i)
    return list(groups.values())


def _dataset(config: ExperimentConfig, root):
    from .data.prepare import load_dataset

    key = (json.dumps(config.data.to_dict(), sort_keys=True), str(root), config.train.dtype)
    data = _DATA_CACHE.pop(key, None)
    if data is None:
        while len(_DATA_CACHE) >= _DATA_KEEP:
            del _DATA_CACHE[next(iter(_DATA_CACHE))]  # the least recently used
        data = load_dataset(config.data, root, dtype=config.train.dtype, progress=False)
    _DATA_CACHE[key] = data
    return data


def _run_task(config_dicts: list[dict], outs: list[str], root, lockstep: bool, threads: int = 1) -> list[dict]:
    """Worker entry point: train one lockstep stack (or its members one by one).

    A run that diverges is recorded, not raised: its folder holds a ``diverged`` results.json
    and the sweep goes on, as a diverged member of a larger stack does.
    """
    from .runs import train, train_lockstep

    configs = [from_dict(d) for d in config_dicts]
    data = _dataset(configs[0], root)
    if lockstep and len(configs) > 1:
        return train_lockstep(configs, data, outs, progress=False, blas_threads=threads)
    results = []
    for c, o in zip(configs, outs, strict=True):
        c = c.replace(train={"blas_threads": threads})
        try:
            if lockstep:  # a stack of one, trained from the start as stacks are
                results += train_lockstep([c], data, [o], progress=False, blas_threads=threads)
            else:  # an interrupted run continues
                results.append(train(c, data, out=o, progress=False, resume=True).results)
        except DivergenceError:  # one network alone raises; its run folder says 'diverged'
            r = load_results(o)
            if r is None:
                raise
            results.append(r)
    return results


def _tasks(configs, pending: list[int], n_jobs: int, max_k: int, lockstep: bool):
    groups = lockstep_groups([configs[i] for i in pending]) if lockstep else [[i] for i in range(len(pending))]
    total = len(pending)
    tasks = []
    for g in groups:
        idx = [pending[i] for i in g]
        # enough tasks to keep every worker busy, none larger than max_k
        n_chunks = max(math.ceil(len(idx) / max_k), min(len(idx), math.ceil(n_jobs * len(idx) / total)))
        size = math.ceil(len(idx) / n_chunks)
        tasks += [idx[j : j + size] for j in range(0, len(idx), size)]
    return tasks


def run_many(
    configs: list[ExperimentConfig],
    run_dirs: list,
    data_root=None,
    n_jobs: int | None = None,
    lockstep: bool = True,
    max_k: int | None = None,
    scheduler: str | None = None,
    progress: bool | None = None,
    pool=None,
    priority: float = 0.0,
) -> list[dict]:
    """Train every config into its run folder; return the results in the same order.

    Parameters
    ----------
    configs, run_dirs : one run folder per config.
    data_root : data folder (``--data``), passed to every worker.
    n_jobs : worker processes (default: every core); each uses one BLAS thread. With one worker,
        or one task, the task runs in this process with every thread we may use.
    lockstep : train compatible configs as one stack (see :mod:`klayer.train`).
    max_k : largest stack (default ``$KLAYER_MAX_K``, else 16); 1 trains every run on its own,
        so that runs finish (and are saved) one at a time.
    scheduler : address of a Dask scheduler (``tcp://host:8786``); the workers there need the
        data at ``data_root``, or their own ``$KLAYER_DATA``.
    pool : a :class:`klayer.pool.WorkerPool` shared with other callers (then ``n_jobs`` and
        ``scheduler`` are the pool's); the tasks are queued there by their estimated seconds
        (:func:`run_seconds`), the longest first.
    priority : with ``pool``, estimated seconds of the work that waits for these runs; when
        positive, every task of this call goes ahead of the queue by ``priority`` plus the longest
        task's seconds, so that the last of them does not wait behind unrelated work.
    """
    from .pool import WorkerPool

    if len(configs) != len(run_dirs):
        raise KlayerError("run_many needs one run folder per config")
    run_dirs = [Path(d) for d in run_dirs]
    results: list[dict | None] = [load_results(d) for d in run_dirs]
    for c, d, r in zip(configs, run_dirs, results, strict=True):
        if r is not None and not same_config(d / "config.toml", c):
            raise KlayerError(
                f"{d} holds a finished run with a different config; remove it or choose another output folder"
            )
    from .runs import tidy_finished

    for d, r in zip(run_dirs, results, strict=True):
        if r is not None:  # reused, not trained: tidied as train/--resume tidies a finished run
            tidy_finished(d)
    pending = [i for i, r in enumerate(results) if r is None]
    n_jobs = pool.n_jobs if pool is not None else n_jobs or os.cpu_count() or 1
    max_k = max_k or int(os.environ.get("KLAYER_MAX_K", 16))
    tasks = _tasks(configs, pending, n_jobs, max_k, lockstep)
    root = str(data_root) if data_root is not None else None
    payload = [([configs[i].to_dict() for i in t], [str(run_dirs[i]) for i in t], root, lockstep) for t in tasks]
    bar = tqdm(total=len(pending), desc="runs", unit="run", disable=progress is False or None)
    with bar:
        if not payload:
            pass
        elif pool is None and not scheduler and (n_jobs == 1 or len(payload) == 1):
            for p, t in zip(payload, tasks, strict=True):  # in this process, with every thread we may use
                for i, r in zip(t, _run_task(*p, threads=n_jobs), strict=True):
                    results[i] = r
                bar.update(len(t))
        else:
            from concurrent.futures import as_completed

            own = pool is None
            pool = pool if pool is not None else WorkerPool(min(n_jobs, len(payload)), scheduler)
            futures = {}
            try:
                seconds = [sum(run_seconds(configs[i]) for i in t) for t in tasks]
                # work waits for the last of these tasks: then they all go ahead as one
                first = priority + max(seconds) if priority > 0 else 0.0
                futures = {
                    pool.submit(_run_task, *p, priority=first + s): t
                    for p, t, s in zip(payload, tasks, seconds, strict=True)
                }
                for fut in as_completed(futures):
                    for i, r in zip(futures[fut], fut.result(), strict=True):
                        results[i] = r
                    bar.update(len(futures[fut]))
            except BaseException:
                if own:
                    pool.close(cancel=True)
                else:
                    for fut in futures:
                        fut.cancel()
                raise
            if own:
                pool.close()
    return results
