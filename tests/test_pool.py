"""The shared worker pool: priority order, errors, cancellation, one BLAS thread, orphaned workers."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import CancelledError

import pytest

from klayer.pool import PoolClosed, WorkerPool


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as dead
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_queued_tasks_run_highest_priority_first():
    with WorkerPool(1) as pool:
        busy = pool.submit(time.sleep, 1.0)  # holds the only worker while the others queue
        order = {p: pool.submit(time.monotonic_ns, priority=p) for p in (1.0, 5.0, -2.0, 3.0, 0.0)}
        busy.result()
        started = sorted(order, key=lambda p: order[p].result())
    assert started == [5.0, 3.0, 1.0, 0.0, -2.0]


def test_equal_priorities_run_in_submission_order():
    with WorkerPool(1) as pool:
        pool.submit(time.sleep, 0.5)
        futures = [pool.submit(time.monotonic_ns, priority=1.0) for _ in range(4)]
        times = [f.result() for f in futures]
    assert times == sorted(times)


def test_results_errors_and_at_most_n_jobs_at_once():
    with WorkerPool(2) as pool:
        ok = [pool.submit(pow, 2, k) for k in range(6)]
        bad = pool.submit(int, "not a number")
        pids = {pool.submit(os.getpid).result() for _ in range(6)}
        assert [f.result() for f in ok] == [2**k for k in range(6)]
        with pytest.raises(ValueError, match="not a number"):
            bad.result()
        assert pool.submit(abs, -3).result() == 3  # an error leaves the pool working
    assert len(pids) <= 2 and os.getpid() not in pids


def test_workers_use_one_blas_thread():
    with WorkerPool(2) as pool:
        assert pool.submit(_blas_threads).result() == {1}


def test_cancel_stops_running_tasks_and_cancels_queued_ones():
    pool = WorkerPool(1)
    pid = pool.submit(os.getpid).result()
    running = pool.submit(time.sleep, 60)
    queued = pool.submit(time.sleep, 60)
    time.sleep(0.5)
    pool.close(cancel=True)
    with pytest.raises(PoolClosed):
        running.result(timeout=30)
    with pytest.raises(CancelledError):
        queued.result(timeout=30)
    deadline = time.time() + 30
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the worker still runs the cancelled task"
    with pytest.raises(PoolClosed):
        pool.submit(abs, 1)


def test_waiting_callers_wake_when_queued_tasks_are_cancelled():
    """as_completed and wait learn of a cancelled queued task (a study waiting for it would hang)."""
    import threading
    from concurrent.futures import as_completed

    pool = WorkerPool(1)
    pool.submit(time.sleep, 60)
    queued = [pool.submit(abs, -1) for _ in range(3)]
    seen = []
    waiter = threading.Thread(target=lambda: seen.extend(as_completed(queued)), daemon=True)
    waiter.start()
    time.sleep(0.3)
    pool.close(cancel=True)
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "a caller still waits for a cancelled task"
    assert len(seen) == 3 and all(f.cancelled() for f in seen)


def test_an_exception_in_the_with_block_cancels():
    with pytest.raises(KeyError):
        with WorkerPool(1) as pool:
            slow = pool.submit(time.sleep, 60)
            time.sleep(0.3)
            raise KeyError("stop")
    with pytest.raises(CancelledError):
        slow.result(timeout=30)


def test_close_waits_for_every_task():
    pool = WorkerPool(2)
    futures = [pool.submit(time.sleep, 0.2) for _ in range(5)]
    pool.close()
    assert all(f.done() and f.exception() is None for f in futures)


def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    """kill -9 of the process that owns the pool: its workers stop instead of training for nobody."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from klayer.pool import WorkerPool
        if __name__ == "__main__":
            pool = WorkerPool(1)
            pid = pool.submit(os.getpid).result()
            pool.submit(time.sleep, 120)
            print(pid, flush=True)
            time.sleep(120)
        """
    )
    (tmp_path / "owner.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "owner.py")], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    assert _alive(worker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), "an orphaned worker kept running"


@pytest.mark.parametrize("moment", ["start", "task"])
def test_ctrl_c_in_a_terminal_gives_one_line(tmp_path, moment):
    """Ctrl-C reaches the whole process group: the workers ignore it (no tracebacks of theirs),
    whether it comes while they run their tasks or while they are still starting (importing the
    main module and klayer, before their initializer runs), and, stopped by the owner, leave no
    semaphore behind (tqdm's default lock is one: Python's resource tracker warned of 'leaked
    semaphore objects' at exit)."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from klayer.pool import WorkerPool

        MARKS = os.environ["MARKS"]
        if __name__ == "__mp_main__":  # a worker importing the main module, before its initializer
            open(os.path.join(MARKS, f"start-{os.getpid()}"), "w").close()
            time.sleep(float(os.environ["SLOW_START"]))

        def task():
            from tqdm import tqdm
            open(os.path.join(MARKS, f"task-{os.getpid()}"), "w").close()
            with tqdm(total=1, disable=True):  # what a worker's training does
                time.sleep(120)

        if __name__ == "__main__":
            try:
                with WorkerPool(2) as pool:
                    futures = [pool.submit(task) for _ in range(2)]
                    time.sleep(120)
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                sys.exit(130)
        """
    )
    (tmp_path / "owner.py").write_text(script)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "MARKS": str(marks), "SLOW_START": "60" if moment == "start" else "0"}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "owner.py")], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.glob(f"{moment}-*"))) < 2:  # both workers are where the case wants
            assert time.monotonic() < deadline and proc.poll() is None, proc.poll()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and err == "interrupted\n", err


def _raise(error):
    raise error


def test_klayer_errors_travel_from_the_workers_whole():
    """Every error class, raised in a worker, reaches the caller with its class, message and fields
    (an exception that cannot be unpickled breaks the whole pool)."""
    import errno

    from klayer.errors import (
        ChecksumError,
        ConfigError,
        DataError,
        DivergenceError,
        KlayerError,
        ModelFileError,
        OutputError,
    )

    errors = [
        KlayerError("plain"),
        ConfigError("train.lam: must be >= 0"),
        DataError("/x/data_batch_1", "truncated\nfile"),
        ChecksumError("/x/a.tar.gz", "md5 abc, expected def"),
        ModelFileError("/x/model.safetensors", "tensor W1: shape (3, 2)"),
        OutputError("/x/out", OSError(errno.ENOSPC, "No space left on device")),
        DivergenceError(120, float("nan"), model=3),
    ]
    with WorkerPool(1) as pool:
        for e in errors:
            with pytest.raises(type(e)) as got:
                pool.submit(_raise, e).result()
            assert type(got.value) is type(e) and str(got.value) == str(e)
            assert {k: str(v) for k, v in vars(got.value).items()} == {k: str(v) for k, v in vars(e).items()}
        assert pool.submit(abs, -1).result() == 1  # and the pool still works


def test_the_progress_bar_counts_submitted_and_finished_tasks():
    class Bar:
        total, n, refreshed = None, 0, 0

        def refresh(self):
            self.refreshed += 1

        def update(self, k):
            self.n += k

    bar = Bar()
    with WorkerPool(2, bar=bar) as pool:
        futures = [pool.submit(abs, -k) for k in range(5)]
        assert bar.total == 5 and bar.refreshed == 5
    assert [f.result() for f in futures] == list(range(5))
    assert bar.n == 5


@pytest.mark.parametrize("address", ["not a url", "tcp://127.0.0.1:notaport"])
def test_a_malformed_scheduler_address_is_one_klayer_error(address):
    pytest.importorskip("dask.distributed")
    from klayer.errors import KlayerError

    with pytest.raises(KlayerError, match=f"scheduler {address!r}: ") as info:
        WorkerPool(1, scheduler=address)
    assert "\n" not in str(info.value)
