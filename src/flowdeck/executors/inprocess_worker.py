"""One pre-forked worker of the in-server executor: its loop, and the server's handle.

This module imports only the standard library: the forkserver children that run it stay
small.  The parent sends a task (a dict, see :func:`run_task`) over the worker's pipe and
receives ``(status, payload, cpu_time_s, max_rss_kb)`` back, where ``status`` is ``"ok"``
(``payload`` is the JSON text of the return value) or ``"error"`` (``payload`` is the
traceback text).  ``None`` asks the worker to stop; so does the pipe closing.
:class:`WorkerHandle` and :func:`shutdown_workers` are the server's side of a worker.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio
    from multiprocessing.process import BaseProcess

Reply = tuple[str, str, float, int]
PathLike = str | os.PathLike[str]
T = TypeVar("T")


class WorkerHandle(Generic[T]):
    """The server's side of one worker: its process, its pipe, and the task it runs."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.task: T | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where its readers are
        self.doomed = False  # signalled (or its task may have left a mess): never reused
        self.closed = False
        self.max_rss_kb = 0

    def signal(self, signum: int) -> None:
        """Signal the worker's process group (what the task started too); gone is fine."""
        pid = self.process.pid
        if pid is None or self.closed:
            return
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:  # not yet its own group leader, or already gone
            with suppress(ProcessLookupError):
                os.kill(pid, signum)

    def release(self) -> None:
        self.closed = True
        self.conn.close()
        with suppress(ValueError):  # still running after SIGKILL and a join: leave it be
            self.process.close()


def shutdown_workers(
    workers: list[WorkerHandle[Any]], lock: threading.Lock, grace_s: float = 2.0
) -> None:
    """Stop every worker (idle ones are asked, busy ones killed), join and release them."""
    with lock:
        stopping, workers[:] = list(workers), []
    for worker in stopping:
        if worker.task is None and not worker.doomed:
            with suppress(OSError):
                worker.conn.send(None)
        else:
            worker.signal(signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    for worker in stopping:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.exitcode is None:
            worker.signal(signal.SIGKILL)
            worker.process.join(1.0)
        worker.release()


def worker_main(conn: Connection) -> None:
    """Serve tasks until told to stop or the parent goes away."""
    with suppress(OSError):  # its own group: a stop reaches what the task started too
        os.setpgid(0, 0)
    home = os.getcwd()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # terminate ends the worker, and the step
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops its workers itself
        try:
            reply = run_task(task)
        finally:
            os.chdir(home)
        try:
            conn.send(reply)
        except OSError:
            return


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_task(task: dict[str, Any]) -> Reply:
    """Run one step: ``task`` holds the fields of a ``Launch``."""
    cpu_before = _cpu_seconds()
    try:
        with ExitStack() as stack:
            stack.enter_context(_environment(task["env"]))
            os.chdir(task["cwd"])
            stack.enter_context(_redirected(task["stdout"], task["stderr"], task.get("stdin")))
            stack.enter_context(_limits(task, cpu_before))
            function = stack.enter_context(_imported(task["python"], task.get("code_dir")))
            value = function(**task.get("kwargs", {}))
        try:
            status, payload = "ok", json.dumps(value)
        except (TypeError, ValueError) as exc:
            status = "error"
            payload = (
                f"the return value of {task['python']} is not JSON-serialisable "
                f"({type(value).__name__}): {exc}"
            )
    except BaseException:
        status, payload = "error", traceback.format_exc()
    cpu = max(0.0, _cpu_seconds() - cpu_before)
    return status, payload, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with suppress(OSError, ValueError):
                stream.flush()


@contextmanager
def _redirected(stdout: PathLike, stderr: PathLike, stdin: PathLike | None) -> Iterator[None]:
    """Point fds 0, 1 and 2 (and ``sys.stdin``) at the step's files for the task."""
    _flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    streams = sys.stdin, sys.stdout, sys.stderr
    try:
        with ExitStack() as files:
            fin = files.enter_context(open(stdin or os.devnull, "rb"))
            fout = files.enter_context(open(stdout, "wb"))
            ferr = fout if stderr == stdout else files.enter_context(open(stderr, "wb"))
            for source, fd in ((fin, 0), (fout, 1), (ferr, 2)):
                os.dup2(source.fileno(), fd)
            sys.stdin = files.enter_context(open(0, closefd=False))
            try:
                yield
            finally:
                _flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextmanager
def _limits(task: dict[str, Any], cpu_used: float) -> Iterator[None]:
    """Lower the soft limits for the task (a worker outlives it, so they are put back)."""
    wanted: list[tuple[int, int]] = []
    if task.get("cpu_seconds") is not None:  # RLIMIT_CPU counts the worker's whole life
        wanted.append((resource.RLIMIT_CPU, int(cpu_used + task["cpu_seconds"]) + 1))
    if task.get("memory_bytes") is not None:
        wanted.append((resource.RLIMIT_AS, int(task["memory_bytes"])))
    if task.get("file_size_bytes") is not None:
        wanted.append((resource.RLIMIT_FSIZE, int(task["file_size_bytes"])))
    saved: list[tuple[int, tuple[int, int]]] = []
    try:
        for which, soft in wanted:
            old = resource.getrlimit(which)
            hard = old[1]
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))
            saved.append((which, old))
        yield
    finally:
        for which, old in reversed(saved):
            resource.setrlimit(which, old)


@contextmanager
def _imported(spec: str, code_dir: PathLike | None) -> Iterator[Any]:
    """Import ``module:function`` from ``code_dir``, and forget the step's modules after."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"a python step is 'module:function', not {spec!r}")
    root = str(Path(code_dir).resolve()) if code_dir else None
    before = set(sys.modules)
    if root is not None:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"{spec} is not callable")
        yield target
    finally:
        if root is not None:
            while root in sys.path:
                sys.path.remove(root)
            sys.path_importer_cache.pop(root, None)
        for name in set(sys.modules) - before:
            if name == module_name or _inside(sys.modules[name], root):
                del sys.modules[name]


def _inside(module: Any, root: str | None) -> bool:
    if root is None:
        return False
    origin = getattr(module, "__file__", None)
    return isinstance(origin, str) and os.path.abspath(origin).startswith(root + os.sep)
