"""The worker's half of the Dask executor (``executor: dask``): what one task does on a
Dask worker, and the files an attempt keeps in the shared run folder.

A task is :func:`run_attempt` of one attempt's ``spec`` (its program and arguments, its
environment, its folder, logs and limits), submitted under the attempt's key.  It runs the
step as a subprocess of the worker, in its own process group, and writes how it ended into
the attempt's exit file.  An attempt whose logs are ``logs/<label>.<attempt>.stdout|stderr``
keeps, next to them:

``.dask.lock``    locked (``flock``) by the task while the step runs: a second task of
                  the same attempt (resubmitted after a scheduler restart) waits for it, so
                  an attempt never runs twice at once
``.dask.started`` written when the step is about to start (the worker's host and pid)
``.dask.pid``     the step's process group
``.dask.stop``    flowdeck asked it to stop (``stop``: SIGTERM to the group) or to end now
                  (``kill``: SIGKILL); the task looks for it while the step runs
``.dask.exit``    how it ended (JSON), written atomically; the task returns the same
``.dask.job``     written by flowdeck: the task's key and the scheduler it went to

A task that finds the exit file returns it without running anything; one that finds the
attempt started but not ended (its worker died meanwhile) kills what is left of the step's
process group when it runs on the same host, and writes a ``lost`` end.  So how an
attempt ended never depends on the scheduler remembering it.

This module is imported on the workers: standard library only (besides flowdeck's own
python-step runner, ``python -m flowdeck.executors.pystep``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flowdeck.executors.attempt_files import AttemptFiles

SUFFIXES = ("lock", "started", "pid", "stop", "exit", "job")
PYTHON = "{python}"  # argv[0] of a python step: the worker's own interpreter
LOCK_WAIT_S = 0.2
LOOK_S = 0.1  # how often a running task looks for a stop, and at its walltime
NOT_ALLOWED_AS_ROOT = "flowdeck's Dask tasks do not run on a worker running as root"


@dataclass(frozen=True, slots=True)
class Files(AttemptFiles):
    """The files of one attempt (see the module docstring)."""

    KIND: ClassVar[str] = "dask"
    SUFFIXES: ClassVar[tuple[str, ...]] = SUFFIXES

    @classmethod
    def of(cls, stdout: Path) -> Files:
        return cls(stdout.with_suffix(""))

    def stop_asked(self) -> str | None:
        text = self.read("stop")
        return None if text is None else ("kill" if text == "kill" else "stop")

    def job(self) -> tuple[str, str] | None:
        """(key, scheduler id) flowdeck wrote when it submitted the attempt."""
        text = self.read("job")
        if not text:
            return None
        key, _, scheduler = text.partition("\n")
        return key, scheduler


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _finish(files: Files, record: dict[str, Any]) -> dict[str, Any]:
    record.setdefault("host", socket.gethostname())
    write_atomically(files.path("exit"), json.dumps(record))
    return record


def _limits(spec: dict[str, Any]) -> list[tuple[int, int]]:
    limits = []
    for name, res in (
        ("cpu_seconds", resource.RLIMIT_CPU),
        ("memory_bytes", resource.RLIMIT_AS),
        ("file_size_bytes", resource.RLIMIT_FSIZE),
        ("max_processes", resource.RLIMIT_NPROC),
    ):
        value = spec.get(name)
        if value is not None:
            limits.append((res, max(1, int(value))))
    return limits


def _boxed(argv: list[str], box: list[str] | None, err: Any) -> list[str]:
    """The step's command in its sandbox (``box``: bwrap and its options, made by the
    server), with this worker's interpreter and flowdeck shown read-only too; where the
    worker has no bubblewrap, without it, said on the step's stderr."""
    if not box:
        return argv
    bwrap = box[0] if os.access(box[0], os.X_OK) else shutil.which("bwrap")
    if bwrap is None:
        err.write(b"flowdeck: no bubblewrap on this worker: the step runs without its sandbox\n")
        err.flush()
        return argv
    own = {
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        str(Path(__file__).resolve().parents[2]),  # where flowdeck (pystep) is
    }
    shown = [x for p in sorted(own) if os.path.isdir(p) for x in ("--ro-bind-try", p, p)]
    return [bwrap, *box[1:], *shown, "--", *argv]


def _set_limits(pid: int, limits: list[tuple[int, int]]) -> None:
    """The step's limits, set on it as it starts (no code runs in the child between fork
    and exec: a worker is a large process, and a fork that runs Python costs ~8 ms)."""
    for res, value in limits:
        with contextlib.suppress(OSError, ValueError):
            resource.prlimit(pid, res, (value, value))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _take_lock(fd: int) -> None:
    """Wait (in this worker thread) until no other task of the attempt holds its lock."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(LOCK_WAIT_S)


def run_attempt(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt on this worker (at most once, whatever resubmits it): its exit
    record."""
    files = Files(Path(spec["base"]))
    fd = os.open(files.path("lock"), os.O_RDWR | os.O_CREAT, 0o660)
    try:
        _take_lock(fd)
        done = files.exit_record()
        if done is not None:  # it ran already (this is a resubmission)
            return done
        if files.path("started").exists():
            _end_stray(files)
            return _finish(
                files,
                {
                    "exit_code": None,
                    "lost": True,
                    "error": "its Dask worker went away while it ran (its process ended with it)",
                },
            )
        files.path("started").write_text(f"{socket.gethostname()} {os.getpid()}")
        asked = files.stop_asked()
        now = time.time()
        if asked is not None:  # stopped before it started: it does not run
            sig = signal.SIGKILL if asked == "kill" else signal.SIGTERM
            return _finish(
                files,
                {"exit_code": None, "signal": int(sig), "started": now, "ended": now},
            )
        if os.geteuid() == 0:
            return _finish(
                files,
                {"exit_code": 126, "error": NOT_ALLOWED_AS_ROOT, "started": now, "ended": now},
            )
        return _run(spec, files)
    finally:
        os.close(fd)


def _end_stray(files: Files) -> None:
    """A task of this attempt started it on this host, and its worker died: what is left
    of the step's process group (its leader died with the worker) is ended."""
    host = (files.read("started") or "").split(" ")[0]
    pgid = files.read("pid")
    if host == socket.gethostname() and pgid and pgid.isdigit():
        _signal_group(int(pgid), signal.SIGKILL)


def _run(spec: dict[str, Any], files: Files) -> dict[str, Any]:
    argv = [str(a) for a in spec["argv"]]
    if argv and argv[0] == PYTHON:
        argv[0] = sys.executable
    started = time.time()
    try:
        with contextlib.ExitStack() as stack:
            stdin = stack.enter_context(open(spec.get("stdin") or os.devnull, "rb"))
            out = stack.enter_context(open(spec["stdout"], "wb"))
            err = stack.enter_context(open(spec["stderr"], "wb"))
            argv = _boxed(argv, spec.get("box"), err)
            limits = _limits(spec)
            proc = subprocess.Popen(  # noqa: S603 - the step's own command
                argv,
                cwd=spec["cwd"],
                env=dict(spec["env"]),
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
        reason = exc.strerror or str(exc)
        return _finish(
            files,
            {
                "exit_code": code,
                "error": f"cannot start {argv[0]!r}: {reason}",
                "started": started,
                "ended": time.time(),
            },
        )
    _set_limits(proc.pid, limits)
    files.path("pid").write_text(str(proc.pid))
    status, usage, ended_by = _wait(proc, files, spec)
    proc.returncode = status  # (Popen must not think it still runs)
    _signal_group(proc.pid, signal.SIGKILL)  # what it left behind in its group
    record: dict[str, Any] = {
        "started": started,
        "ended": time.time(),
        "max_rss_kb": int(usage.ru_maxrss),
        "cpu_time_s": usage.ru_utime + usage.ru_stime,
        "ended_by": ended_by,
    }
    if status < 0:
        record.update(exit_code=None, signal=-status)
    else:
        record.update(exit_code=status)
    if ended_by == "timeout":
        record["timed_out"] = True
    return _finish(files, record)


def _wait(
    proc: subprocess.Popen[bytes], files: Files, spec: dict[str, Any]
) -> tuple[int, Any, str]:
    """Wait for the step, acting on a stop or kill flowdeck asks for and on its walltime:
    (status as Popen's returncode, its resource usage, who ended it)."""
    walltime = spec.get("walltime_s")
    grace = float(spec.get("grace_s") or 10.0)
    deadline = None if walltime is None else time.monotonic() + float(walltime)
    termed_at: float | None = None
    killed = False
    ended_by = ""
    try:  # readable when the step exits: no polling delay at its end
        pidfd: int | None = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        pidfd = None
    try:
        while True:
            pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status = -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)
                return status, usage, ended_by
            if pidfd is not None:
                if select.select([pidfd], [], [], LOOK_S)[0]:
                    continue  # it exited: reaped above
            else:
                time.sleep(LOOK_S / 10)
            ended_by, termed_at, killed = _act(
                proc.pid, files, deadline, grace, (ended_by, termed_at, killed)
            )
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _act(
    pgid: int,
    files: Files,
    deadline: float | None,
    grace: float,
    state: tuple[str, float | None, bool],
) -> tuple[str, float | None, bool]:
    """Signal the step's group as flowdeck asks (``.stop``), at its walltime, and with
    SIGKILL after the grace time: (who ended it, when TERM went, whether KILL went)."""
    ended_by, termed_at, killed = state
    now = time.monotonic()
    asked = files.stop_asked()
    if asked == "kill" and not killed:
        ended_by, killed = "flowdeck", True
        _signal_group(pgid, signal.SIGKILL)
    elif asked == "stop" and termed_at is None:
        ended_by, termed_at = "flowdeck", now
        _signal_group(pgid, signal.SIGTERM)
        _signal_group(pgid, signal.SIGCONT)
    elif deadline is not None and now >= deadline and termed_at is None:
        ended_by, termed_at = "timeout", now
        _signal_group(pgid, signal.SIGTERM)
    if termed_at is not None and not killed and now - termed_at >= grace:
        killed = True
        _signal_group(pgid, signal.SIGKILL)
    return ended_by, termed_at, killed


def probe(path: str) -> str:
    """A worker reads what the server wrote into its data directory (and says who it is)."""
    return Path(path).read_text(encoding="utf-8").strip() + f" {os.geteuid()}"
