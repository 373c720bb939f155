"""What every local step attempt is: a process group, led by the step's first process,
signalled as a whole; its limits; how its end becomes an :class:`Outcome`."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import resource
import shutil
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flowdeck.executors.base import Launch, Outcome, StepProcess

if TYPE_CHECKING:
    from flowdeck.executors.cgroups import AttemptGroup
    from flowdeck.executors.sandbox import Box

ARGS_FILE = ".flowdeck-args.json"
RESULT_FILE = ".flowdeck-result.json"

Limits = list[tuple[int, tuple[int, int]]]


def send_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def limits_for(launch: Launch) -> Limits:
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
    if launch.max_processes is not None and launch.sandbox is not None:
        # Counted per uid (see executors/sandbox.py): a sandboxed step's uid.  Without the
        # sandbox a step runs as the server's user, whose every process it would count
        # (as root it does not apply); its attempt's cgroup still holds pids.max.
        wanted.append((resource.RLIMIT_NPROC, launch.max_processes, launch.max_processes))
    limits: Limits = []
    for res, soft, hard in wanted:
        _, current = resource.getrlimit(res)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        limits.append((res, (soft, hard)))
    return limits


# dash's ulimit option for each limit and the unit it counts in (bytes per unit)
ULIMIT = {
    resource.RLIMIT_CPU: ("-t", 1),
    resource.RLIMIT_AS: ("-v", 1024),
    resource.RLIMIT_FSIZE: ("-f", 512),
    resource.RLIMIT_NPROC: ("-p", 1),
}


@functools.cache
def dash() -> str | None:
    """The dash shell, where there is one (Debian's and Ubuntu's /bin/sh); looked up once."""
    return shutil.which("dash", path="/usr/bin:/bin")


def setup_argv(argv: list[str], limits: Limits, procs: str | None) -> list[str] | None:
    """``argv`` started by dash, which first sets ``limits`` and writes itself to
    ``procs`` (its cgroup's ``cgroup.procs``), then execs ``argv`` in its place; None
    where it cannot (no dash, a limit it cannot say exactly).

    Setting either up in the child after a ``fork`` costs a copy of this process's page
    tables (1.5-10 ms here, growing with its size); this spawns with ``vfork`` and pays
    one exec of a small shell instead.  The script holds only numbers; the cgroup file
    and the step's argv are its arguments."""
    shell = dash()
    if shell is None:
        return None
    words: list[str] = []
    for res, (soft, hard) in limits:
        if res not in ULIMIT:
            return None
        option, unit = ULIMIT[res]
        said: list[str] = []
        for value in (hard, soft):
            if value == resource.RLIM_INFINITY:
                said.append("unlimited")
            elif value % unit:
                return None
            else:
                said.append(str(value // unit))
        words.append(f"ulimit {option} {said[0]}")  # both, then the soft one lower
        if soft != hard:
            words.append(f"ulimit -S {option} {said[1]}")
    args = list(argv)
    if procs is not None:  # joined first: all that follows is in it
        words[:0] = ['printf 0 >"$1"', "shift"]
        args = [procs, *args]
    script = " && ".join([*words, 'exec "$@"']) + "; exit 126"
    return [shell, "-c", script, "flowdeck-step", *args]


def unstartable(prog: str, env: dict[str, str], cwd: str) -> OSError | None:
    """Why ``prog`` cannot be executed as a spawn would find it, or None (checked before a
    shell is asked to exec it, so that the error is the one a spawn would raise)."""
    if "/" in prog:
        candidates = [os.path.join(cwd, prog)]
    else:
        path = env.get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", prog) for d in path.split(os.pathsep)]
    denied = False
    for candidate in candidates:
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return None
        denied = True
    if denied:
        return PermissionError(13, os.strerror(13), prog)
    return FileNotFoundError(2, os.strerror(2), prog)


def start_error(prog: str, exc: BaseException) -> Outcome:
    code = 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
        if exc.filename is not None and str(exc.filename) != prog:
            reason += f": {exc.filename}"
    else:
        reason = str(exc) or type(exc).__name__
    return Outcome(exit_code=code, error=f"cannot start {prog!r}: {reason}")


class GroupProcess(StepProcess):
    """A running attempt: a process group, led by the step's first process, whose leader's
    (host) pid is the group id.  How it is started and how its end is seen differ:
    :class:`LocalProcess` (a child of ours) and ``runbox.BoxedProcess`` (a child of its
    run's sandbox)."""

    def __init__(
        self,
        running: dict[str, Any],
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        started: float,
        box: Box | None = None,
    ) -> None:
        self.key = launch.key
        self.box = box
        # [pid, start time] of processes of the attempt outside its group (its pasta)
        self.helpers: list[list[int | None]] = box.helpers() if box is not None else []
        self.pid: int | None = None
        self.start_time: int | None = None  # in /proc/pid/stat's ticks (see wire.py)
        self._running = running  # the executor's attempts, this one until it ends
        self._launch = launch
        self._on_exit = on_exit
        self._loop = loop
        self._started = started
        self._timed_out = False
        self._exited = False
        self._group_gone = False
        self._timer: asyncio.TimerHandle | None = None
        self.cgroup: AttemptGroup | None = None  # its cgroup v2, where it has one
        if launch.walltime_s is not None:
            self._timer = loop.call_later(launch.walltime_s, self._walltime_passed)

    def _signal(self, sig: int) -> None:
        # Keep sending to the group after the leader is reaped: members may remain.  Once
        # the group is seen empty after that, its id could be reused, so stop.
        if self._group_gone or self.pid is None:
            return
        if not send_group(self.pid, sig) and self._exited:
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
        if self.cgroup is not None and self.pid is not None:
            self.cgroup.kill()  # also what left its process group

    def reap(self, timeout: float = 5.0) -> None:
        """Wait for the killed leader when nobody else will (the loop has stopped)."""

    def _walltime_passed(self) -> None:
        self._timer = None
        if not self._exited:
            self._timed_out = True
            self.kill()

    def _ending(self) -> bool:
        """The leader ended: whether this is news (else it was handled)."""
        if self._exited:
            return False
        self._exited = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return True

    def _finish(self, outcome: Outcome) -> None:
        if self.cgroup is not None:
            outcome = self._cgroup_ended(self.cgroup, outcome)
        if self._launch.python and outcome.exit_code is not None:
            outcome = with_result(outcome, self._launch)
        self._running.pop(self.key, None)
        if self.box is not None:
            self.box.ended()
        self._on_exit(outcome)

    def _cgroup_ended(self, group: AttemptGroup, outcome: Outcome) -> Outcome:
        """What is left of the attempt is killed; its cgroup counts all its CPU time and
        says whether its memory.max was hit."""
        group.kill()
        cpu = group.cpu_s()
        if cpu is not None and cpu > outcome.cpu_time_s:
            outcome = replace(outcome, cpu_time_s=cpu)
        if group.memory_max is not None and group.oom_killed() and outcome.error is None:
            error = f"out of memory: the step used more than its {group.memory_max} bytes"
            outcome = replace(outcome, error=error)
        self._remove_cgroup(group, 50)
        return outcome

    def _remove_cgroup(self, group: AttemptGroup, tries: int) -> None:
        if not group.remove() and tries > 0:  # its processes are still going
            self._loop.call_later(0.1, self._remove_cgroup, group, tries - 1)

    def _ended_with(self, code: int, utime: float, stime: float, maxrss: int) -> Outcome:
        return Outcome(
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            timed_out=self._timed_out,
            max_rss_kb=maxrss,
            cpu_time_s=utime + stime,
            wall_s=time.monotonic() - self._started,
        )


def with_result(outcome: Outcome, launch: Launch) -> Outcome:
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


def apply_limits(limits: Limits) -> None:
    for res, pair in limits:
        resource.setrlimit(res, pair)
