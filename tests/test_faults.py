"""Faults met by a QA pass: interrupted work must continue where it stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import klayer.sweep as sweep
from klayer.training import Trainer

from .conftest import tiny_dataset, write_idx_data
from .test_runs import assert_same_model, run_config
from .test_suite import BASE, SEARCH
from .test_train import EXP, run_cli


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


# -- SIGTERM is Ctrl-C ---------------------------------------------------------------------------
def test_sigterm_stops_train_at_a_checkpoint_with_143_and_resume_finishes_bitwise(tmp_path, rng):
    """kill (a batch scheduler's stop, docker stop) on klayer train: the update finishes, a
    checkpoint is written, one line says what to --resume, exit 143; the resumed run has the bits
    of a run never stopped. (SIGTERM used to kill Python at once: exit -15, nothing said.)"""
    data = write_idx_data(tmp_path / "data", rng, n_train=2100)
    exp = tmp_path / "e.toml"
    exp.write_text(EXP.format(n_s=1000, ckpt=100))
    ref, out = tmp_path / "ref", tmp_path / "run"
    p = run_cli("train", exp, "--data", data, "--out", ref, "--quiet")
    assert p.returncode == 0, p.stderr
    args = ["train", str(exp), "--data", str(data), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "klayer", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline:
        time.sleep(0.01)  # training is under way: its first checkpoint is written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err == f"klayer: terminated; checkpoint in {out}; continue with --resume\n"
    assert (out / "checkpoint.safetensors").exists() and not (out / "results.json").exists()
    p = run_cli("train", exp, "--data", data, "--out", out, "--resume", "--quiet")
    assert p.returncode == 0, p.stderr
    assert_same_model(ref, out)


def test_sigterm_before_training_says_no_checkpoint_yet_and_restores_the_handler(tmp_path, rng, monkeypatch, capsys):
    import klayer.runs as runs
    from klayer.cli import main

    data = write_idx_data(tmp_path / "data", rng, n_train=300)
    exp = tmp_path / "e.toml"
    exp.write_text(EXP.format(n_s=10, ckpt=200))
    out = tmp_path / "run"

    def terminated_while_loading(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this

    def unhandled(signum, frame):  # instead of pytest dying of the signal
        raise AssertionError("klayer main() left SIGTERM to the caller's handler")

    monkeypatch.setattr(runs, "train", terminated_while_loading)
    original = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main(["train", str(exp), "--data", str(data), "--out", str(out), "--quiet"]) == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored when main returns
    finally:
        signal.signal(signal.SIGTERM, original)
    err = capsys.readouterr().err
    assert err == f"klayer: terminated; no checkpoint yet in {out}; --resume starts the run from the beginning\n"


def _workers(pid: int) -> list[int]:
    """The pool's worker processes of ``pid`` (not its resource tracker)."""
    kids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                if not (d.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid):
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if b"resource_tracker" not in f.read():
                    kids.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists the workers in /proc")
def test_sigterm_on_reproduce_stops_the_pool_with_one_line_and_143(tmp_path, rng):
    """SIGTERM to reproduce's main process: one line, exit 143, its workers stopped (the pool
    stops them with SIGTERM, which they must not catch), and the next reproduce continues."""
    data = write_idx_data(tmp_path / "data", rng, n_train=3000)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "idx_base.toml").write_text(BASE.format(data=data, n_s=600))
    (exp / "idx_search.toml").write_text(SEARCH.format(coarse=6))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "klayer", "reproduce", str(exp / "idx_search.toml"), "--out", str(out)]
    cmd += ["--jobs", "2", "--seeds", "1"]
    env = {**os.environ, "KLAYER_MAX_K": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    runs = out / "idx_search" / "runs"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(runs.glob("*/results.json")):
        time.sleep(0.05)
    workers = [w for w in _workers(proc.pid) if _alive(w)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err == "klayer: terminated\n"
    assert workers and not [w for w in workers if _alive(w)], "a worker outlived the pool"
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert sum(e["stage"] == "coarse" for e in json.loads((out / "idx_search" / "study.json").read_text())["runs"]) == 6


# -- temporary files left by a kill -9 mid-write ---------------------------------------------------
STALE = [".checkpoint.next.safetensors.k2x_9q0a.tmp", ".history.csv.abcdefgh.tmp", ".results.json.00000000.tmp"]
NOT_OURS = [
    "notes.tmp",  # no leading dot
    ".hidden.tmp",  # no random part
    ".history.csv.abc.tmp",  # not mkstemp's 8 characters
    ".history.csv.ABCDEFGH.tmp",  # not mkstemp's alphabet
    "history.csv.abcdefgh.tmp",
    ".history.csv.abcdefgh.tmp.bak",
]


def _plant(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in STALE + NOT_OURS:
        (folder / name).write_text("partial")
    (folder / ".dir.abcdefgh.tmp").mkdir(exist_ok=True)  # a folder with the pattern's name stays


def _assert_only_ours_removed(folder):
    names = {p.name for p in folder.iterdir()}
    assert not names & set(STALE), names & set(STALE)
    assert set(NOT_OURS) | {".dir.abcdefgh.tmp"} <= names
    assert all((folder / n).read_text() == "partial" for n in NOT_OURS)


def test_resume_removes_the_temporary_files_a_kill_left_and_nothing_else(tmp_path, monkeypatch):
    """atomic_write's hidden .NAME.XXXXXXXX.tmp files, left by a kill -9 mid-write, stayed in the run
    folder forever; resuming (or starting) the run removes them, in snapshots/ too, and only them."""
    from klayer.runs import train, train_lockstep

    from .test_runs import interrupt_at

    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    config = run_config(checkpoint_every=7, snapshots=True)
    real = interrupt_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        train(config, data, out=out)
    monkeypatch.setattr(Trainer, "step", real)
    _plant(out)
    _plant(out / "snapshots")
    assert train(config, data, out=out, resume=True).results["status"] == "complete"
    _assert_only_ours_removed(out)
    _assert_only_ours_removed(out / "snapshots")
    fresh = tmp_path / "fresh"
    _plant(fresh)  # a new run in a folder holding only someone's files (and klayer's leftovers)
    train(config, data, out=fresh)
    _assert_only_ours_removed(fresh)
    lockstep = tmp_path / "lockstep"
    _plant(lockstep)
    train_lockstep([run_config()], data, [lockstep])
    _assert_only_ours_removed(lockstep)


def test_a_run_folder_has_one_writer_and_a_second_is_refused_in_one_line(tmp_path):
    """Removing temporary files is safe because no other klayer process writes the folder: a
    second writer (here: the lock held elsewhere) is refused at once, leaving the files alone."""
    from klayer.errors import KlayerError
    from klayer.io import folder_lock
    from klayer.runs import train

    data = tiny_dataset(np.random.default_rng(0))
    out = tmp_path / "run"
    _plant(out)
    with folder_lock(out, "run folder"):
        with pytest.raises(KlayerError, match=f"^{out}: another klayer process is writing this run folder"):
            train(run_config(), data, out=out, retrain=True)
        assert {p.name for p in out.iterdir()} >= set(STALE)
    assert train(run_config(), data, out=out, retrain=True).results["status"] == "complete"  # the lock went


# -- a finished run with checkpoints left ---------------------------------------------------------
def test_resuming_a_finished_run_removes_the_checkpoints_a_kill_left(tmp_path, monkeypatch):
    """A kill between writing results.json and removing the checkpoints left a finished run with
    checkpoints forever (--resume said finished and kept them). Opening it removes them and
    changes nothing else."""
    from klayer.runs import train
    from klayer.runs.checkpoint import checkpoint_files

    from .test_runs import interrupt_at

    data = tiny_dataset(np.random.default_rng(0))
    config = run_config(checkpoint_every=7)
    stopped, out = tmp_path / "stopped", tmp_path / "run"
    real = interrupt_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        train(config, data, out=stopped)
    monkeypatch.setattr(Trainer, "step", real)
    train(config, data, out=out)
    assert not checkpoint_files(out)
    for src in checkpoint_files(stopped):  # the state a kill after results.json leaves
        (out / src.name).write_bytes(src.read_bytes())
    assert checkpoint_files(out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if "checkpoint" not in p.name}
    again = train(config, data, out=out, resume=True)
    assert again.finished_before and not checkpoint_files(out)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_a_reader_that_goes_away_stops_the_output_quietly():
    # klayer predict ... | head: the reader closes the pipe; klayer said "klayer: error: Broken
    # pipe" and exited 1 (or Python printed "Exception ignored ... BrokenPipeError" at exit); it
    # stops quietly with SIGPIPE's status, as cat does
    p = subprocess.Popen(
        [sys.executable, "-m", "klayer", "vectors", "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    p.stdout.close()  # before klayer has written anything
    err = p.stderr.read()
    p.wait(timeout=60)
    assert (p.returncode, err) == (128 + signal.SIGPIPE, b"")


def _leave_checkpoints(tmp_path, monkeypatch, data, config, outs):
    """Copy the checkpoints of an interrupted run of ``config`` into the finished runs ``outs``
    and plant stale temporary files: the state a kill between results.json and the checkpoints'
    removal (and a kill mid-write) leaves. Returns each folder's other files as they were."""
    from klayer.runs import train
    from klayer.runs.checkpoint import checkpoint_files

    from .test_runs import interrupt_at

    stopped = tmp_path / "stopped"
    real = interrupt_at(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        train(config, data, out=stopped)
    monkeypatch.setattr(Trainer, "step", real)
    before = []
    for out in outs:
        assert not checkpoint_files(out)
        before.append({p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()})
        for src in checkpoint_files(stopped):
            (out / src.name).write_bytes(src.read_bytes())
        _plant(out)
    return before


def _others(out):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}


@pytest.mark.parametrize("lockstep", [True, False])
def test_a_sweep_reusing_a_finished_run_removes_what_a_kill_left(tmp_path, monkeypatch, lockstep):
    """run_many (klayer reproduce's runs) read a finished run back and left its checkpoints and
    stale temporary files forever; it now tidies the run as train/--resume does, under the run
    folder's lock, and changes nothing else. A diverged run keeps its checkpoint."""
    from klayer.errors import KlayerError
    from klayer.io import folder_lock
    from klayer.runs.checkpoint import checkpoint_files

    data = tiny_dataset(np.random.default_rng(0))
    monkeypatch.setattr(sweep, "_dataset", lambda config, root: data)
    configs = [run_config(lam=lam, checkpoint_every=7).replace(name=f"r{i}") for i, lam in enumerate([0.001, 0.01])]
    outs = [tmp_path / "sweep" / c.name for c in configs]
    first = sweep.run_many(configs, outs, n_jobs=1, lockstep=lockstep, progress=False)
    before = _leave_checkpoints(tmp_path, monkeypatch, data, configs[0], outs)
    with folder_lock(outs[1], "run folder"):  # a second writer is refused, as train refuses it
        with pytest.raises(KlayerError, match=f"^{outs[1]}: another klayer process is writing this run folder"):
            sweep.run_many(configs, outs, n_jobs=1, lockstep=lockstep, progress=False)
    again = sweep.run_many(configs, outs, n_jobs=1, lockstep=lockstep, progress=False)
    assert again == first
    for out, was in zip(outs, before, strict=True):
        assert not checkpoint_files(out)
        _assert_only_ours_removed(out)
        assert {k: v for k, v in _others(out).items() if k not in NOT_OURS} == was
    # a diverged run: its checkpoint is its last good state and stays
    from klayer.errors import DivergenceError
    from klayer.runs import train

    diverged = tmp_path / "diverged"
    # lam = 1: every update multiplies every W by 1 - 2 eta lam < -2e4 (see test_train.py)
    bad = run_config(eta_min=1e4, eta_max=1e5, lam=1.0, checkpoint_every=1).replace(name="d")
    with pytest.raises(DivergenceError):
        train(bad, data, out=diverged)
    kept = {p.name: p.read_bytes() for p in checkpoint_files(diverged)}
    assert kept
    assert sweep.run_many([bad], [diverged], n_jobs=1, lockstep=lockstep, progress=False)[0]["status"] == "diverged"
    assert {p.name: p.read_bytes() for p in checkpoint_files(diverged)} == kept


def test_reproduce_reusing_a_finished_run_removes_what_a_kill_left(tmp_path, rng):
    """klayer reproduce skipped a finished run of a study and left its checkpoints (and the
    temporary files of a kill mid-write) forever; the rerun removes them and reuses the run."""
    from klayer.runs.checkpoint import checkpoint_files
    from klayer.suite import reproduce

    from .synthetic_suite import synthetic_reproduce

    out, data = synthetic_reproduce(tmp_path, rng)
    run = out / "idx_networks" / "runs" / "idx_plain-s0"
    before = _others(run)
    for name in ("checkpoint.safetensors", "checkpoint.prev.safetensors"):
        (run / name).write_bytes(b"the state a kill after results.json left")
    _plant(run)
    _plant(run / "snapshots")
    exp = tmp_path / "exp"
    reproduce([exp / "suite_grad.toml", exp / "suite_runs.toml"], out, seeds=2, data_root=data, n_jobs=1,
              report=False, log=lambda *a: None)  # fmt: skip
    assert not checkpoint_files(run)
    _assert_only_ours_removed(run)
    _assert_only_ours_removed(run / "snapshots")
    assert {k: v for k, v in _others(run).items() if k not in NOT_OURS} == before


# -- the suite's folders: one writer, stale temporary files removed ------------------------------
def _hold_lock_in_another_process(folder):
    """A process holding ``folder``'s lock as a klayer writer does, until it is killed."""
    code = "import sys, time\nfrom klayer.io import folder_lock\nwith folder_lock(sys.argv[1]):\n"
    code += "    print('held', flush=True)\n    time.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_second_reproduce_on_the_same_folder_is_refused_and_a_killed_one_blocks_nothing(tmp_path, rng, capsys):
    """A second klayer reproduce on the same output folder ran beside the first (both writing
    study.json, suite.json and the report there) and the temporary files a killed reproduce left
    in the suite's folders stayed forever. It is now refused in one line, writing nothing; once
    the holder is killed (kill -9) the next reproduce runs and removes those files, and only them."""
    from klayer.cli import main

    from .synthetic_suite import synthetic_reproduce

    out, data = synthetic_reproduce(tmp_path, rng)
    exp = tmp_path / "exp"
    for folder in (out, out / "figures", out / "gradcheck", out / "idx_networks"):
        _plant(folder)
    listing = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    args = ["reproduce", str(exp / "suite_grad.toml"), str(exp / "suite_runs.toml"), "--out", str(out)]
    args += ["--data", str(data), "--seeds", "2", "--jobs", "1"]
    holder = _hold_lock_in_another_process(out)
    try:
        assert main(args) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"klayer: error: {out}: another klayer process is writing this reproduce folder; "
            "wait for it to end or use another folder\n"
        )
        assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == listing
    finally:
        holder.kill()  # kill -9: the kernel releases its lock
        holder.wait()
    assert main(args) == 0, capsys.readouterr().err
    for folder in (out, out / "figures", out / "gradcheck", out / "idx_networks"):
        _assert_only_ours_removed(folder)


def test_the_suites_locks_are_released_on_errors_and_ctrl_c(tmp_path, rng, monkeypatch):
    """reproduce holds its output folder, and run_study its study folder, only while it runs:
    an error or a Ctrl-C inside lets the next writer in. A study folder held by another writer is
    refused in one line, and so is a report into a folder another klayer process writes."""
    from klayer.errors import KlayerError
    from klayer.io import folder_lock
    from klayer.suite import build_report, reproduce, studies

    from .synthetic_suite import synthetic_reproduce

    out, data = synthetic_reproduce(tmp_path, rng)
    files = [tmp_path / "exp" / "suite_grad.toml", tmp_path / "exp" / "suite_runs.toml"]
    real = studies._RUNNERS["runs"]
    for error in (KeyboardInterrupt(), KlayerError("a study failed")):

        def failing(study, ctx, sdir, error=error):
            raise error

        monkeypatch.setitem(studies._RUNNERS, "runs", failing)
        with pytest.raises(type(error)):
            reproduce(files, out, seeds=2, data_root=data, n_jobs=1, log=lambda *a: None)
        for folder in (out, out / "idx_networks"):
            with folder_lock(folder):  # taken at once: nobody holds it any more
                pass
    monkeypatch.setitem(studies._RUNNERS, "runs", real)
    with folder_lock(out / "idx_networks"):
        with pytest.raises(KlayerError, match=f"^{out / 'idx_networks'}: another klayer process is writing this study"):
            reproduce(files, out, seeds=2, data_root=data, n_jobs=1, log=lambda *a: None)
        with pytest.raises(
            KlayerError, match=f"^{out / 'idx_networks'}: another klayer process is writing this report"
        ):
            build_report([out / "idx_networks"])
    with folder_lock(out):
        with pytest.raises(KlayerError, match=f"^{out}: another klayer process is writing this report folder"):
            build_report([out])
    assert reproduce(files, out, seeds=2, data_root=data, n_jobs=1, log=lambda *a: None) == out
    assert build_report([out]) == (out / "report.md", out / "report.html")


# -- starting a run over: a fault midway leaves no run that looks finished -----------------------
def test_a_fault_while_a_run_is_started_over_never_leaves_a_finished_looking_run_with_outputs_gone(
    tmp_path, monkeypatch
):
    """--retrain (and a sweep's retraining) removed the old outputs in the order snapshots/,
    results.json, model, ...: a fault (kill, permission denied) after snapshots/ went left
    results.json complete and the model there, a run that looked finished with its snapshots (and
    their ensemble's accuracy in results.json) gone; --resume then called it finished. Now
    results.json goes first: at every point of failure the run either is the finished run,
    whole, or does not look finished."""
    import pathlib
    import shutil

    import klayer.runs.run as run_module
    from klayer.runs import run_status, train

    data = tiny_dataset(np.random.default_rng(0))
    config = run_config(snapshots=True)
    out = tmp_path / "run"
    train(config, data, out=out)
    whole = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(k.startswith("snapshots/") for k in whole) and "results.json" in whole
    real_unlink, real_rmtree = pathlib.Path.unlink, shutil.rmtree

    def counted(real, k, calls):
        def removal(*a, **kw):
            if len(calls) == k:
                raise PermissionError(13, "Permission denied", str(a[0]))
            calls.append(a[0])
            return real(*a, **kw)

        return removal

    for k in range(100):  # a fault at the k-th removal, until training gets through
        calls = []
        monkeypatch.setattr(pathlib.Path, "unlink", counted(real_unlink, k, calls))
        monkeypatch.setattr(run_module.shutil, "rmtree", counted(real_rmtree, k, calls))
        try:
            train(config, data, out=out, retrain=True)
            break
        except OSError:  # OutputError: the fault at removal k
            pass
        finally:
            monkeypatch.setattr(pathlib.Path, "unlink", real_unlink)
            monkeypatch.setattr(run_module.shutil, "rmtree", real_rmtree)
        now = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
        if run_status(out) == "complete":
            assert now >= whole.keys(), (
                f"a fault at removal {k} left a finished-looking run without {whole.keys() - now}"
            )
        train(config, data, out=out, retrain=True)  # whole again for the next point of failure
        whole = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert k >= 3  # the faults did land inside the removal


def test_a_sweep_does_not_reuse_a_complete_run_whose_model_is_missing(tmp_path, monkeypatch):
    """run_many took any complete results.json for a finished run, though train/--resume (and
    run_status) call a complete run without its model.safetensors unfinished: reproduce reused
    it and its report had no model to evaluate. It is trained again, as --resume would."""
    from klayer.runs import run_status

    data = tiny_dataset(np.random.default_rng(0))
    monkeypatch.setattr(sweep, "_dataset", lambda config, root: data)
    configs = [run_config(lam=lam).replace(name=f"r{i}") for i, lam in enumerate([0.001, 0.01])]
    for lockstep in (True, False):
        outs = [tmp_path / str(lockstep) / c.name for c in configs]
        first = sweep.run_many(configs, outs, n_jobs=1, lockstep=lockstep, progress=False)
        model = (outs[1] / "model.safetensors").read_bytes()
        (outs[1] / "model.safetensors").unlink()
        assert run_status(outs[1]) == "unfinished" and sweep.load_results(outs[1]) is None
        again = sweep.run_many(configs, outs, n_jobs=1, lockstep=lockstep, progress=False)
        assert (outs[1] / "model.safetensors").read_bytes() == model  # trained again, the same bits
        assert again[0] == first[0] and again[1]["status"] == "complete"


@pytest.mark.parametrize("lockstep", [True, False])
def test_a_sweep_records_a_diverged_run_and_goes_on(tmp_path, monkeypatch, lockstep):
    """A run that diverges alone (every run without lockstep; a stack of one with it) raised
    DivergenceError out of run_many and stopped the whole sweep, though a diverged member of a
    larger stack is recorded as 'diverged' and the others go on: now every diverged run is recorded,
    and the sweep's other runs train and finish."""
    from klayer.config import ModelConfig
    from klayer.runs import run_status

    data = tiny_dataset(np.random.default_rng(0))
    monkeypatch.setattr(sweep, "_dataset", lambda config, root: data)
    good = run_config().replace(name="good")
    # lam = 1: every update multiplies every W by 1 - 2 eta lam < -2e4; another architecture, so
    # that with lockstep it is a stack of its own
    bad = run_config(eta_min=1e4, eta_max=1e5, lam=1.0).replace(name="bad", model=ModelConfig(hidden=(5,)))
    outs = [tmp_path / "bad", tmp_path / "good"]
    results = sweep.run_many([bad, good], outs, n_jobs=1, lockstep=lockstep, progress=False)
    assert [r["status"] for r in results] == ["diverged", "complete"]
    assert [run_status(o) for o in outs] == ["diverged", "complete"]
    # read back, not trained again, on the next call
    assert sweep.run_many([bad, good], outs, n_jobs=1, lockstep=lockstep, progress=False) == results
