"""Worker processes shared by many callers, the longest task first.

``klayer reproduce`` runs its studies at the same time, each in a thread of the main process, and
every study hands its tasks (trainings, gradient-check tables) to one :class:`WorkerPool`: both
cores stay busy until the last task, no study waits for another's stragglers, and a search's next
stage starts as soon as its last task ends. Tasks wait in a queue ordered by ``priority`` (the
caller's estimate of their seconds, plus what waits on them); at most ``n_jobs`` are in the worker
processes at once, so that the order is the queue's. With a Dask ``scheduler`` address the tasks
go to that cluster, with the same priorities.

Workers are spawned (the main process has threads), use one BLAS thread each, keep what a task
caches in their module globals for the next task, and exit when the main process dies.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor

from .errors import KlayerError, one_line

__all__ = ["WorkerPool", "PoolClosed"]


class PoolClosed(CancelledError):
    """The pool was closed (an error elsewhere, Ctrl-C) before this task ended."""


def _watch_parent(parent: int) -> None:  # pragma: no cover - runs in the workers
    import time

    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # the main process died (kill -9): stop training for nobody


def _init_worker(parent: int) -> None:  # pragma: no cover - runs in the workers
    from threadpoolctl import threadpool_limits

    # Ctrl-C in a terminal reaches the whole process group: the main process stops the workers;
    # they would otherwise die printing their own KeyboardInterrupt tracebacks. The worker was
    # started with SIGINT blocked (see _block_sigint), so a Ctrl-C during its start-up waits
    # pending and is discarded here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # tqdm's default lock is a multiprocessing semaphore, which a worker stopped by close(cancel=True)
    # would leave registered (Python then warns at exit of 'leaked semaphore objects'); workers show
    # no bars, so a thread lock is enough
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())

    global _LIMITS
    _LIMITS = threadpool_limits(limits=1, user_api="blas")  # noqa: F841 - held for the worker's life
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _block_sigint() -> None:
    """Block SIGINT in the calling (non-main) thread, so the workers it starts inherit the block.

    A worker ignores Ctrl-C only once its initializer runs, after importing the main module and
    klayer (seconds on a loaded machine): a Ctrl-C in between printed its traceback. The signal
    mask passes through fork and exec; Python delivers signals in the main thread only, so the
    block changes nothing for the main process. Starting the resource tracker unblocks SIGINT in
    the thread that starts it, so it is started first.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class WorkerPool:
    """``n_jobs`` worker processes (default: every core), or a Dask cluster at ``scheduler``.

    Use as a context manager; :meth:`submit` returns a :class:`concurrent.futures.Future`.
    ``bar``: a tqdm progress bar counting the tasks.
    Leaving the ``with`` block by an exception cancels the queued tasks and stops the workers.
    """

    def __init__(self, n_jobs: int | None = None, scheduler: str | None = None, bar=None):
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self._bar = bar  # a tqdm bar: its total grows with every task, it advances as they end
        self._cond = threading.Condition()
        self._queue: list = []  # heap of (-priority, order, fn, args, future)
        self._order = itertools.count()
        self._running: dict[Future, object] = {}  # ours -> the executor's (or Dask's) future
        self._closed = False
        self._client = self._executor = self._thread = None
        if scheduler:
            from dask.distributed import Client

            try:
                self._client = Client(scheduler)
            except Exception as e:  # a malformed or unreachable address, whatever Dask raises for it
                raise KlayerError(f"scheduler {scheduler!r}: {one_line(e) or type(e).__name__}") from None
        else:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(
                self.n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
            )
            self._thread = threading.Thread(target=self._dispatch, name="klayer-pool", daemon=True)
            self._thread.start()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, fn, *args, priority: float = 0.0) -> Future:
        """Queue ``fn(*args)`` (a module-level function, run in a worker); higher priority first."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise PoolClosed("the worker pool is closed")
            if self._bar is not None:
                self._bar.total = (self._bar.total or 0) + 1
                self._bar.refresh()
            if self._client is not None:
                inner = self._client.submit(fn, *args, pure=False, priority=int(priority))
                self._running[fut] = inner  # Dask forgets a task whose future is dropped
                fut.set_running_or_notify_cancel()
                inner.add_done_callback(lambda f, fut=fut: self._finished(fut, f))
                return fut
            heapq.heappush(self._queue, (-priority, next(self._order), fn, args, fut))
            self._cond.notify_all()
        return fut

    def _dispatch(self) -> None:
        """Keep ``n_jobs`` tasks in the executor, taken from the queue by priority."""
        _block_sigint()  # the executor starts its workers from this thread
        while True:
            with self._cond:
                while not self._closed and (not self._queue or len(self._running) >= self.n_jobs):
                    self._cond.wait()
                if self._closed:
                    return
                _, _, fn, args, fut = heapq.heappop(self._queue)
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    inner = self._executor.submit(fn, *args)
                except Exception as e:  # a broken pool (a worker was killed)
                    fut.set_exception(e)
                    continue
                self._running[fut] = inner
            inner.add_done_callback(lambda f, fut=fut: self._finished(fut, f))

    def _finished(self, fut: Future, inner) -> None:
        with self._cond:
            if self._running.pop(fut, None) is None:
                return  # resolved by close()
            self._cond.notify_all()
            if self._bar is not None:
                self._bar.update(1)
        if inner.cancelled():
            fut.set_exception(PoolClosed("the task was cancelled"))
        elif inner.exception() is not None:
            fut.set_exception(inner.exception())
        else:
            fut.set_result(inner.result())

    def close(self, cancel: bool = False) -> None:
        """Wait for every task (``cancel``: cancel the queued ones, stop the running ones)."""
        with self._cond:
            if self._closed:
                return
            if not cancel:
                while self._queue or self._running:
                    self._cond.wait()
            self._closed = True
            queued = [item[-1] for item in self._queue]
            running = dict(self._running)
            self._queue.clear()
            self._running.clear()
            self._cond.notify_all()
        for fut in queued:
            if fut.cancel():
                fut.set_running_or_notify_cancel()  # wakes as_completed and wait
        if self._client is not None:
            for inner in running.values():
                inner.cancel()
            self._client.close()
        else:
            if cancel:
                # the standard executor has no public way to stop a running task
                for proc in list(getattr(self._executor, "_processes", {}).values()):
                    proc.terminate()
            self._executor.shutdown(wait=not cancel, cancel_futures=True)
        for fut in running:
            if not fut.done():
                fut.set_exception(PoolClosed("the worker pool was closed before this task ended"))
