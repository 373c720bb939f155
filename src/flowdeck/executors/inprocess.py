"""The in-server executor: trusted python steps run in a pool of pre-forked workers.

No interpreter starts per step: each worker is a long-lived process (started lazily, from
the ``forkserver`` context because the server has threads) that receives one task at a
time over its own pipe (see :mod:`flowdeck.executors.inprocess_worker`).  Workers are
processes, not threads, so a step can still be stopped: terminate and kill signal the
worker's process group, and a worker that died is replaced on the next need.  Results and
deaths are noticed by readers on the asyncio loop (the pipe and the process sentinel).
Steps are trusted: one step can leave state behind in a worker (threads, patched modules,
modules imported from outside its code directory) that later steps see.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import fields
from functools import partial
from typing import Any

from flowdeck.executors.base import Executor, Launch, Outcome, StepProcess
from flowdeck.executors.inprocess_worker import WorkerHandle, shutdown_workers, worker_main

_Worker = WorkerHandle["_Task"]


def _in_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn`` now when in ``loop``'s thread, else hand it over (a closed loop: drop it)."""
    if _in_thread_of(loop):
        fn(*args)
        return
    with suppress(RuntimeError):  # a closed loop: nobody is left to tell
        loop.call_soon_threadsafe(fn, *args)


class _Task(StepProcess):
    def __init__(
        self,
        executor: InProcessExecutor,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.key = launch.key
        self.launch = launch
        self.on_exit = on_exit
        self.loop = loop
        self.executor = executor
        self.worker: _Worker | None = None
        self.done = False
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.stopping = False  # terminate/kill/walltime asked for the end
        self.timed_out = False

    def pause(self) -> None:
        raise NotImplementedError("the in-server executor can only drain")

    def resume(self) -> None:
        raise NotImplementedError("the in-server executor can only drain")

    def terminate(self) -> None:
        _call_in_loop(self.loop, self.executor._stop, self, signal.SIGTERM, False)

    def kill(self) -> None:
        _call_in_loop(self.loop, self.executor._stop, self, signal.SIGKILL, False)

    def payload(self) -> dict[str, Any]:
        """What the worker needs: the launch's fields (paths travel as ``Path``)."""
        return {f.name: getattr(self.launch, f.name) for f in fields(self.launch)}


class InProcessExecutor(Executor):
    """Run ``module:function`` steps in ``workers`` pre-forked worker processes."""

    name = "inprocess"
    can_freeze = False

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError("an in-server pool needs at least one worker")
        self.size = workers
        self._ctx = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()  # guards _all and _closed (close may come from anywhere)
        self._all: list[_Worker] = []  # every live worker, idle, busy or dying
        self._idle: deque[_Worker] = deque()
        self._queue: deque[_Task] = deque()
        self._spawning = 0
        self._closed = False
        # Also stops the workers of an executor nobody closed (at exit, or when collected).
        self._finalizer = weakref.finalize(self, shutdown_workers, self._all, self._lock)

    def start(
        self, launch: Launch, on_exit: Callable[[Outcome], None], loop: asyncio.AbstractEventLoop
    ) -> StepProcess:
        task = _Task(self, launch, on_exit, loop)
        if self._closed:
            self._finish(task, Outcome(exit_code=None, error="the in-server executor is closed"))
        elif not launch.python:
            error = "the in-server executor runs python steps only ('module:function')"
            self._finish(task, Outcome(exit_code=None, error=error))
        else:
            self._queue.append(task)
            self._dispatch(loop)
        return task

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
        running = [w.task for w in workers if w.task is not None]
        queued, self._queue = list(self._queue), deque()
        self._idle.clear()
        for worker in workers:
            self._remove_readers(worker)
        self._finalizer()  # stops and releases the workers (once)
        for task in running + queued:
            sig = signal.SIGKILL.value if task.worker is not None else None
            error = "the in-server executor was closed"
            self._finish(task, Outcome(exit_code=None, signal=sig, error=error))

    # -- the pool (all below runs in the loop's thread) --------------------------------------

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._queue and not self._closed:
            worker = self._take_idle()
            if worker is None:
                break
            self._run(worker, self._queue.popleft(), loop)
        with self._lock:
            room = self.size - len(self._all) - self._spawning
        for _ in range(min(room, len(self._queue) - self._spawning)):
            self._spawning += 1
            future = loop.run_in_executor(None, self._spawn)
            future.add_done_callback(partial(self._spawned, loop))

    def _take_idle(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.popleft()
            if worker.process.exitcode is None:
                return worker
            self._forget(worker)  # died while idle
        return None

    def _spawn(self) -> _Worker:
        """Start one worker (in a thread: the first start also starts the forkserver)."""
        parent, child = self._ctx.Pipe()
        try:
            process = self._ctx.Process(
                target=worker_main, args=(child,), name="flowdeck-inprocess-worker"
            )
            process.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        worker: _Worker = WorkerHandle(process, parent)
        with self._lock:
            if not self._closed:
                self._all.append(worker)
                return worker
        shutdown_workers([worker], threading.Lock())
        raise RuntimeError("the in-server executor was closed")

    def _spawned(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[_Worker]) -> None:
        self._spawning -= 1
        if future.cancelled() or self._closed:
            return
        error = future.exception()
        if error is None:
            self._idle.append(future.result())
            self._dispatch(loop)
            return
        with self._lock:
            stranded = not self._all and not self._spawning
        while stranded and self._queue:  # no worker will ever come: fail what waits
            message = f"could not start an in-server worker: {error!r}"
            self._finish(self._queue.popleft(), Outcome(exit_code=None, error=message))

    def _run(self, worker: _Worker, task: _Task, loop: asyncio.AbstractEventLoop) -> None:
        try:
            worker.conn.send(task.payload())
        except OSError:  # the worker is gone: it goes, the task waits for another
            self._forget(worker)
            self._queue.appendleft(task)
            return
        except Exception as exc:  # the arguments would not pickle; nothing was sent
            self._idle.appendleft(worker)
            message = f"could not send the step to a worker: {exc!r}"
            self._finish(task, Outcome(exit_code=None, error=message))
            return
        worker.task, task.worker, task.started = task, worker, time.monotonic()
        worker.loop = loop
        loop.add_reader(worker.conn.fileno(), self._on_reply, worker)
        loop.add_reader(worker.process.sentinel, self._on_death, worker)
        if task.launch.walltime_s is not None:
            task.timer = loop.call_later(task.launch.walltime_s, self._stop, task, 9, True)

    def _on_reply(self, worker: _Worker) -> None:
        loop = worker.loop
        if worker.closed or loop is None:
            return
        try:
            status, payload, cpu, rss = worker.conn.recv()
        except (EOFError, OSError):  # it died: the sentinel reader reports it
            loop.remove_reader(worker.conn.fileno())
            return
        task, worker.task = worker.task, None
        worker.max_rss_kb = rss
        if worker.doomed:  # a stop raced the reply: the worker ends, the sentinel reaps it
            loop.remove_reader(worker.conn.fileno())
            worker.signal(signal.SIGKILL)
        else:
            self._remove_readers(worker)
            self._idle.append(worker)
        if task is not None:
            usage: dict[str, Any] = {"cpu_time_s": cpu, "max_rss_kb": rss}
            usage["wall_s"] = time.monotonic() - task.started
            if status == "ok":
                self._finish(task, Outcome(exit_code=0, result=json.loads(payload), **usage))
            else:
                self._finish(task, Outcome(exit_code=1, error=payload, **usage))
        self._dispatch(loop)

    def _on_death(self, worker: _Worker) -> None:
        if worker.closed:
            return
        loop = worker.loop
        self._remove_readers(worker)
        worker.process.join(1.0)
        code = worker.process.exitcode
        task, worker.task = worker.task, None
        self._forget(worker)
        if task is not None:
            sig = -code if code is not None and code < 0 else None
            error = None
            if not task.stopping:
                how = f"signal {sig}" if sig else f"exit code {code}"
                error = f"the in-server worker died ({how}) while running the step"
            outcome = Outcome(
                exit_code=code if sig is None else None,
                signal=sig,
                timed_out=task.timed_out,
                max_rss_kb=worker.max_rss_kb,
                wall_s=time.monotonic() - task.started,
                error=error,
            )
            self._finish(task, outcome)
        if loop is not None:
            self._dispatch(loop)

    def _stop(self, task: _Task, signum: int, timed_out: bool) -> None:
        if task.done:
            return
        worker = task.worker
        if worker is None:  # still queued: it ends without running
            if task in self._queue:
                self._queue.remove(task)
            self._finish(task, Outcome(exit_code=None, signal=int(signum)))
            return
        task.stopping = True
        task.timed_out = task.timed_out or timed_out
        worker.doomed = True
        worker.signal(signum)

    def _finish(self, task: _Task, outcome: Outcome) -> None:
        if task.done:
            return
        task.done = True
        if task.timer is not None:
            task.timer.cancel()
        with suppress(RuntimeError):  # a closed loop: nobody is left to tell
            task.loop.call_soon_threadsafe(task.on_exit, outcome)

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
        if worker.process.exitcode is None:
            worker.signal(signal.SIGKILL)
            worker.process.join(1.0)
        worker.release()

    def _remove_readers(self, worker: _Worker) -> None:
        loop, worker.loop = worker.loop, None
        if loop is None or loop.is_closed() or worker.closed:
            return
        for fd in (worker.conn.fileno(), worker.process.sentinel):
            if loop.is_running() and not _in_thread_of(loop):
                _call_in_loop(loop, partial(_remove_reader, loop, fd))
            else:
                _remove_reader(loop, fd)


def _remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    with suppress(RuntimeError, ValueError, OSError):  # a closed loop or fd: nothing to do
        loop.remove_reader(fd)
