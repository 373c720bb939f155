"""Run each step attempt as a local process in its own session and process group.

Exits are noticed through a pidfd registered with the scheduler's loop (no thread, no
polling); signals go to the whole process group, so a step's children follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import IO, Any

from flowdeck.executors.base import Executor, Launch, NoProcess, Outcome, StepProcess
from flowdeck.executors.sandbox import Box, SandboxError, exit_signal
from flowdeck.executors.wire import boottime_ticks, spawned_start_time

ARGS_FILE = ".flowdeck-args.json"
RESULT_FILE = ".flowdeck-result.json"

Limits = list[tuple[int, tuple[int, int]]]


def _send(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _limits(launch: Launch) -> Limits:
    """The (resource, (soft, hard)) pairs to set in the child, computed in the parent.

    The step cannot raise them again; past the CPU soft limit it gets SIGXCPU, a second
    later SIGKILL."""
    wanted: list[tuple[int, int, int]] = []
    if launch.cpu_seconds is not None:
        seconds = max(1, math.ceil(launch.cpu_seconds))
        wanted.append((resource.RLIMIT_CPU, seconds, seconds + 1))
    if launch.memory_bytes is not None:
        wanted.append((resource.RLIMIT_AS, launch.memory_bytes, launch.memory_bytes))
    if launch.file_size_bytes is not None:
        size = launch.file_size_bytes
        wanted.append((resource.RLIMIT_FSIZE, size, size))
    if launch.max_processes is not None:  # counted per uid (see executors/sandbox.py)
        wanted.append((resource.RLIMIT_NPROC, launch.max_processes, launch.max_processes))
    limits: Limits = []
    for res, soft, hard in wanted:
        _, current = resource.getrlimit(res)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        limits.append((res, (soft, hard)))
    return limits


def _start_error(prog: str, exc: BaseException) -> Outcome:
    code = 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
        if exc.filename is not None and str(exc.filename) != prog:
            reason += f": {exc.filename}"
    else:
        reason = str(exc) or type(exc).__name__
    return Outcome(exit_code=code, error=f"cannot start {prog!r}: {reason}")


class LocalProcess(StepProcess):
    """A running process group; its leader's pid is the group id."""

    def __init__(
        self,
        executor: LocalExecutor,
        launch: Launch,
        popen: subprocess.Popen[bytes],
        pidfd: int,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        started: float,
        box: Box | None = None,
    ) -> None:
        self.key = launch.key
        self.box = box
        # [pid, start time] of processes of the attempt outside its group (its pasta)
        self.helpers: list[list[int | None]] = box.helpers() if box is not None else []
        self.pid = popen.pid
        self.start_time: int | None = None  # in /proc/pid/stat's ticks (see wire.py)
        self._executor = executor
        self._launch = launch
        self._popen = popen
        self._pidfd = pidfd
        self._on_exit = on_exit
        self._loop = loop
        self._started = started
        self._timed_out = False
        self._exited = False
        self._group_gone = False
        self._timer: asyncio.TimerHandle | None = None
        loop.add_reader(pidfd, self._leader_exited)
        if launch.walltime_s is not None:
            self._timer = loop.call_later(launch.walltime_s, self._walltime_passed)

    def _signal(self, sig: int) -> None:
        # Keep sending to the group after the leader is reaped: members may remain.  Once
        # the group is seen empty after that, its id could be reused, so stop.
        if self._group_gone:
            return
        if not _send(self.pid, sig) and self._exited:
            self._group_gone = True

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)  # a frozen group must wake up to act on it

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def reap(self, timeout: float = 5.0) -> None:
        """Wait for the killed leader when nobody else will (the loop has stopped)."""
        if self._exited:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            self._popen.wait(timeout)

    def _walltime_passed(self) -> None:
        self._timer = None
        if not self._exited:
            self._timed_out = True
            self.kill()

    def _leader_exited(self) -> None:
        if self._exited:
            return
        self._exited = True
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # The leader is a zombie until reaped, so its group id cannot have been reused.
        _send(self.pid, signal.SIGKILL)  # leftovers must not outlive the step
        try:
            _, status, usage = os.wait4(self.pid, 0)
        except ChildProcessError:  # someone else reaped it
            self._popen.returncode = -1
            outcome = Outcome(exit_code=None, timed_out=self._timed_out, error="exit status lost")
        else:
            code = os.waitstatus_to_exitcode(status)
            self._popen.returncode = code
            if self.box is not None and (sig := exit_signal(code)) is not None:
                code = -sig  # bwrap says 128 + N for a step ended by signal N
            outcome = Outcome(
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                timed_out=self._timed_out,
                max_rss_kb=usage.ru_maxrss,
                cpu_time_s=usage.ru_utime + usage.ru_stime,
                wall_s=time.monotonic() - self._started,
            )
            if self._launch.python:
                outcome = _with_result(outcome, self._launch)
        self._executor._running.pop(self.key, None)
        if self.box is not None:
            self.box.ended()
        self._on_exit(outcome)


def _with_result(outcome: Outcome, launch: Launch) -> Outcome:
    """Add a python step's result (or its traceback) from the runner's result file."""
    if outcome.exit_code is None:  # ended by a signal: no result to look for
        return outcome
    try:
        data: Any = json.loads((launch.cwd / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        what = f"exited with code {outcome.exit_code} and wrote" if outcome.exit_code else "wrote"
        error = f"python step {launch.python} {what} no result (see its stderr)"
        return replace(outcome, error=error)
    if data.get("ok") is True:
        return replace(outcome, result=data.get("result"))
    return replace(outcome, error=str(data.get("error") or "python step failed"))


class LocalExecutor(Executor):
    """Runs run steps and python steps as local processes (see the module docstring)."""

    name = "local"
    can_freeze = True

    def __init__(self) -> None:
        self._running: dict[str, LocalProcess] = {}

    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        if launch.argv:
            argv = list(launch.argv)
        elif launch.python:
            try:
                argv = self._python_argv(launch)
            except (OSError, TypeError, ValueError) as exc:
                return self._failed(launch, launch.python, exc, on_exit, loop)
        else:
            error = ValueError("neither argv nor python is set")
            return self._failed(launch, "", error, on_exit, loop)
        box: Box | None = None
        if launch.sandbox is not None:
            busy = {p.box.uid for p in self._running.values() if p.box and p.box.uid is not None}
            try:
                box = Box.make(launch.sandbox, launch.cwd, busy)
                box.hand_over()
            except (SandboxError, OSError) as exc:
                loop.call_soon(on_exit, Outcome(exit_code=126, error=str(exc)))
                return NoProcess(launch.key)
            argv = box.argv(argv)
        limits = _limits(launch)
        kwargs: dict[str, Any] = {}
        if limits:
            kwargs["preexec_fn"] = lambda: _apply_limits(limits)  # forces fork over vfork
        if box is not None and box.pass_fds:
            kwargs["pass_fds"] = box.pass_fds

        started = time.monotonic()
        before = boottime_ticks()
        try:
            with ExitStack() as files:  # the parent's copies close right after spawning
                stdin: IO[bytes] | int = subprocess.DEVNULL
                if launch.stdin is not None:
                    stdin = files.enter_context(open(launch.stdin, "rb"))
                stdout = files.enter_context(open(launch.stdout, "wb"))
                stderr = files.enter_context(open(launch.stderr, "wb"))
                popen = subprocess.Popen(  # noqa: S603 - running the step is the point
                    argv,
                    cwd=launch.cwd,
                    env=launch.env,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                    close_fds=True,
                    **kwargs,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            if box is not None:
                box.abandon()
                box.ended()
            return self._failed(launch, argv[0], exc, on_exit, loop)
        if box is not None:
            try:
                box.started(popen.pid)
            except (SandboxError, OSError, ValueError, subprocess.SubprocessError) as exc:
                _send(popen.pid, signal.SIGKILL)
                popen.wait()
                box.ended()
                loop.call_soon(on_exit, Outcome(exit_code=126, error=str(exc)))
                return NoProcess(launch.key)

        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:  # out of descriptors: do not leave the group running
            _send(popen.pid, signal.SIGKILL)
            popen.wait()
            return self._failed(launch, argv[0], exc, on_exit, loop)
        proc = LocalProcess(self, launch, popen, pidfd, on_exit, loop, started, box)
        proc.start_time = spawned_start_time(popen.pid, before, boottime_ticks())
        self._running[launch.key] = proc
        return proc

    @staticmethod
    def _python_argv(launch: Launch) -> list[str]:
        args_path = launch.cwd / ARGS_FILE
        result_path = launch.cwd / RESULT_FILE
        args_path.write_text(json.dumps(launch.kwargs), encoding="utf-8")
        result_path.unlink(missing_ok=True)  # a stale result must not pass for this one
        code_dir = str(launch.code_dir or "")
        module = "flowdeck.executors.pystep"
        target = str(launch.python)
        return [sys.executable, "-m", module, target, code_dir, str(args_path), str(result_path)]

    @staticmethod
    def _failed(
        launch: Launch,
        prog: str,
        exc: BaseException,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        loop.call_soon(on_exit, _start_error(prog, exc))
        return NoProcess(launch.key)

    def close(self) -> None:
        """Kill every attempt still running (their exits are still reported while the loop
        runs) and reap the leaders the loop will no longer see exit."""
        for proc in list(self._running.values()):
            proc.kill()
        for proc in list(self._running.values()):
            proc.reap()


def _apply_limits(limits: Limits) -> None:
    for res, pair in limits:
        resource.setrlimit(res, pair)
