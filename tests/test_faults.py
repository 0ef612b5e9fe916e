"""Faults met by a QA pass: interrupted work must continue where it stopped."""

import numpy as np
import pytest

import klayer.sweep as sweep
from klayer.training import Trainer

from .conftest import tiny_dataset
from .test_runs import assert_same_model, run_config


def test_an_interrupted_sweep_without_lockstep_continues_where_it_stopped(tmp_path, monkeypatch):
    """run_many(lockstep=False) trains run by run with checkpoints; after a Ctrl-C in the second
    run it continues that run from its checkpoint, and finishes bitwise equal to a sweep that was
    never interrupted (it used to refuse: 'already holds a run; use --resume')."""
    data = tiny_dataset(np.random.default_rng(0))
    monkeypatch.setattr(sweep, "_dataset", lambda config, root: data)
    configs = [run_config(lam=lam, checkpoint_every=7).replace(name=f"r{i}") for i, lam in enumerate([0.001, 0.01])]
    ref = [tmp_path / "ref" / c.name for c in configs]
    sweep.run_many(configs, ref, n_jobs=1, lockstep=False, progress=False)
    real = Trainer.step

    def interrupted_step(self):
        real(self)
        if self.t == 50 and self.configs[0].name == "r1":
            self._stop = True  # what SIGINT does

    runs = [tmp_path / "run" / c.name for c in configs]
    monkeypatch.setattr(Trainer, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_many(configs, runs, n_jobs=1, lockstep=False, progress=False)
    monkeypatch.setattr(Trainer, "step", real)
    results = sweep.run_many(configs, runs, n_jobs=1, lockstep=False, progress=False)
    assert [r["status"] for r in results] == ["complete", "complete"]
    for a, b in zip(ref, runs, strict=True):
        assert_same_model(a, b)
