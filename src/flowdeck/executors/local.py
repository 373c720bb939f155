"""Run each step attempt as a local process in its own session and process group.

Exits are noticed through a pidfd registered with the scheduler's loop (no thread, no
polling); signals go to the whole process group, so a step's children follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import IO, Any

from flowdeck.executors.base import Executor, Launch, NoProcess, Outcome, StepProcess
from flowdeck.executors.cgroups import AttemptGroup, Cgroups
from flowdeck.executors.cwlpool import Pool
from flowdeck.executors.group import (
    ARGS_FILE,
    RESULT_FILE,
    GroupProcess,
    Limits,
    apply_limits,
    limits_for,
    send_group,
    setup_argv,
    start_error,
    unstartable,
)
from flowdeck.executors.runbox import RunBoxes
from flowdeck.executors.sandbox import Box, SandboxError, exit_signal
from flowdeck.executors.wire import boottime_ticks, spawned_start_time


class LocalProcess(GroupProcess):
    """A step started as our child (in a bwrap of its own, when sandboxed)."""

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
        super().__init__(executor._running, launch, on_exit, loop, started, box)
        self.pid = popen.pid
        self._popen = popen
        self._pidfd = pidfd
        loop.add_reader(pidfd, self._leader_exited)

    def reap(self, timeout: float = 5.0) -> None:
        """Wait for the killed leader when nobody else will (the loop has stopped)."""
        if self._exited:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            self._popen.wait(timeout)

    def _leader_exited(self) -> None:
        if not self._ending():
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        # The leader is a zombie until reaped, so its group id cannot have been reused.
        send_group(self._popen.pid, signal.SIGKILL)  # leftovers must not outlive the step
        try:
            _, status, usage = os.wait4(self._popen.pid, 0)
        except ChildProcessError:  # someone else reaped it
            self._popen.returncode = -1
            outcome = Outcome(exit_code=None, timed_out=self._timed_out, error="exit status lost")
        else:
            code = os.waitstatus_to_exitcode(status)
            self._popen.returncode = code
            if self.box is not None and (sig := exit_signal(code)) is not None:
                code = -sig  # bwrap says 128 + N for a step ended by signal N
            outcome = self._ended_with(code, usage.ru_utime, usage.ru_stime, usage.ru_maxrss)
        self._finish(outcome)


class LocalExecutor(Executor):
    """Runs run steps and python steps as local processes (see the module docstring)."""

    name = "local"
    can_freeze = True

    def __init__(self, cgroups: Cgroups | None = None) -> None:
        self._cgroups = cgroups  # a cgroup v2 per attempt (executors/cgroups.py), or none
        self._running: dict[str, GroupProcess] = {}
        self._boxes = RunBoxes()
        self.pool = Pool()  # warm cwltool workers (executors/cwlpool.py)

    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        group: AttemptGroup | None = None
        if self._cgroups is not None:
            group = self._cgroups.attempt(launch.key, launch.memory_bytes, launch.max_processes)
        return self._start_in(group, launch, on_exit, loop)

    def _start_in(
        self,
        group: AttemptGroup | None,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        pool: bool = True,
    ) -> StepProcess:
        """Start the attempt in its cgroup (if it has one); ``pool``: in a warm cwltool
        worker if it is a CWL step and one can take it."""
        join: int | None = None  # the step writes 0 to it: it joins its cgroup
        try:
            join = group.procs_fd() if group is not None else None
        except OSError:
            group = None
        try:
            procs = str(group.path / "cgroup.procs") if group is not None else None
            proc = self._start(launch, on_exit, loop, join, pool, procs)
        finally:
            if join is not None:
                os.close(join)
        if group is not None and isinstance(proc, GroupProcess):
            proc.cgroup = group
        elif group is not None:
            group.remove()
        return proc

    def _start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        join: int | None,
        pool: bool = True,
        procs: str | None = None,
    ) -> StepProcess:
        """Start the attempt (``join``: a descriptor of its cgroup's ``procs`` file)."""
        try:
            argv = self.command_of(launch)
        except (OSError, TypeError, ValueError) as exc:
            return self._failed(launch, launch.python or "", exc, on_exit, loop)
        box: Box | None = None
        if launch.sandbox is not None:
            busy = {p.box.uid for p in self._running.values() if p.box and p.box.uid is not None}
            try:
                box = Box.make(launch.sandbox, launch.cwd, busy)
                box.hand_over()
            except (SandboxError, OSError) as exc:
                loop.call_soon(on_exit, Outcome(exit_code=126, error=str(exc)))
                return NoProcess(launch.key)
        limits = limits_for(launch)
        if box is not None and launch.python and pool:
            args = argv[3:]  # those of pystep: a warm worker calls it in process
            pooled = self.pool.start(launch, args, limits, box, on_exit, loop, self._running, join)
            if pooled is not None:
                pooled.cold = functools.partial(self._cold, launch, on_exit, loop)
                self._running[launch.key] = pooled
                return pooled
        if box is not None:
            try:
                boxed = self._boxes.start(
                    launch, argv, limits, box, on_exit, loop, self._running, join
                )
            except OSError as exc:  # its stdin, stdout or stderr
                box.ended()
                return self._failed(launch, argv[0], exc, on_exit, loop)
            if boxed is not None:
                self._running[launch.key] = boxed
                return boxed
            argv = box.argv(argv)
        prog = argv[0]  # what a failure to start names
        kwargs: dict[str, Any] = {}
        if limits or join is not None:
            setup = setup_argv(argv, limits, procs if join is not None else None)
            if setup is None:  # forces a fork over vfork (see setup_argv)
                kwargs["preexec_fn"] = functools.partial(_in_child, join, limits)
            elif (error := unstartable(prog, launch.env, str(launch.cwd))) is not None:
                if box is not None:
                    box.abandon()
                    box.ended()
                return self._failed(launch, prog, error, on_exit, loop)
            else:
                argv = setup
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
            return self._failed(launch, prog, exc, on_exit, loop)
        if box is not None:
            try:
                box.started(popen.pid)
            except (SandboxError, OSError, ValueError, subprocess.SubprocessError) as exc:
                send_group(popen.pid, signal.SIGKILL)
                popen.wait()
                box.ended()
                loop.call_soon(on_exit, Outcome(exit_code=126, error=str(exc)))
                return NoProcess(launch.key)

        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:  # out of descriptors: do not leave the group running
            send_group(popen.pid, signal.SIGKILL)
            popen.wait()
            return self._failed(launch, prog, exc, on_exit, loop)
        proc = LocalProcess(self, launch, popen, pidfd, on_exit, loop, started, box)
        proc.start_time = spawned_start_time(popen.pid, before, boottime_ticks())
        self._running[launch.key] = proc
        return proc

    def _cold(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        group: AttemptGroup | None,
    ) -> StepProcess:
        """Start a CWL step cold that a warm worker could not start."""
        return self._start_in(group, launch, on_exit, loop, pool=False)

    @classmethod
    def command_of(cls, launch: Launch) -> list[str]:
        """A step's command: its ``argv``, or the python-step runner's (``OSError``,
        ``TypeError`` or ``ValueError`` when it cannot be made)."""
        if launch.argv:
            return list(launch.argv)
        if launch.python:
            return cls.python_argv(launch)
        raise ValueError("neither argv nor python is set")

    @staticmethod
    def python_argv(launch: Launch) -> list[str]:
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
        loop.call_soon(on_exit, start_error(prog, exc))
        return NoProcess(launch.key)

    def close(self) -> None:
        """Kill every attempt still running (their exits are still reported while the loop
        runs) and reap the leaders the loop will no longer see exit."""
        for proc in list(self._running.values()):
            proc.kill()
        for proc in list(self._running.values()):
            proc.reap()
        self._boxes.close()
        self.pool.close()


def _in_child(join: int | None, limits: Limits) -> None:
    """In the forked child, before the exec: join the attempt's cgroup, set its limits."""
    if join is not None:
        os.write(join, b"0")
    apply_limits(limits)
