"""One sandbox per run: the steps of a run started inside one long-lived bubblewrap.

A bwrap per step costs 3-4 ms before the step's own exec.  A run that will start more than
one step (the server says so in its sandbox plan: ``box``) gets a sandbox of its own,
started in the background at its first step, whose first process is a small launcher
(:mod:`flowdeck.executors.launcher`) that forks and execs each later step inside — a fork
and an exec, plus one message each way.  Until that sandbox is ready, and for steps that
differ from the run's (network), steps get a bwrap of their own as before.

The run's sandbox shows what one step's would (``executors/sandbox.py``), except that the
run's whole work folder is writable in it: a root server's steps each run as their own uid
(the launcher switches to it), so a step still writes only to its own folder, the run's
scratch folder and what ``sandbox_extra_rw`` adds; a server that is not root runs every
step of a run as its own uid, which can then write to the run's other steps' folders.
The steps of a run share its pid, IPC and UTS namespaces: they may see each other, never
other runs' processes; processes that leave a step's process group live until the run's
sandbox ends.

The launcher sends back a pidfd of each step; its host pid, read from the pidfd, is what
the executor signals, journals and kills, as for any step.  The launcher holds a step's
exit until we acknowledge the start, so that pid is still the step's when we read it.
A sandbox idle for ``IDLE_S`` seconds ends; if it ends while steps run (killed), they are
reported lost.  If this process dies, bwrap dies with it (``--die-with-parent``), and the
launcher, whose socket closes, kills every step first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.group import GroupProcess, Limits, start_error
from flowdeck.executors.sandbox import Box, bwrap_args

log = logging.getLogger("flowdeck.executors")
LAUNCHER = Path(__file__).with_name("launcher.py")
IDLE_S = 2.0  # an idle run sandbox ends after this long
MAX_BOXES = 32  # run sandboxes alive at once; more runs get a bwrap per step
MAX_MESSAGE = 1 << 20
# the launcher's (root inside): switch a step's uid and gid, signal what it leaves behind
ROOT_CAPS = (
    *("--cap-drop", "ALL"),
    *("--cap-add", "CAP_SETUID"),
    *("--cap-add", "CAP_SETGID"),
    *("--cap-add", "CAP_KILL"),
)
LOST = "its run's sandbox ended while it ran, so how the step ended is unknown"


def box_spec(spec: dict[str, Any], cwd: Path) -> dict[str, Any] | None:
    """What the run's sandbox shows, for a step whose own sandbox is ``spec``; None when
    the step cannot run in it."""
    work = spec.get("work")
    rw = list(spec.get("rw", []))
    if not spec.get("box") or not work or spec.get("network") or not rw:
        return None
    if not str(cwd).startswith(work.rstrip("/") + "/") or rw[0] != str(cwd):
        return None
    return {
        **spec,
        "ro": [p for p in spec.get("ro", []) if p != work],
        "rw": [work, *rw[1:]],
        "grant": [],
    }


class BoxedProcess(GroupProcess):
    """A step started by its run's launcher: its pid is known once the launcher says."""

    def __init__(
        self,
        running: dict[str, Any],
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        started: float,
        box: Box,
        prog: str,
    ) -> None:
        super().__init__(running, launch, on_exit, loop, started, box)
        self.prog = prog
        self.on_started: Callable[[], None] | None = None
        self._queued: list[int] = []

    def _signal(self, sig: int) -> None:
        if self.pid is None and not self._exited:
            self._queued.append(sig)  # sent once it runs
        else:
            super()._signal(sig)

    def _is_running(self, pid: int | None, start_time: int | None) -> None:
        self.pid, self.start_time = pid, start_time
        if self.on_started is not None:
            self.on_started()
        queued, self._queued = self._queued, []
        for sig in queued:
            self._signal(sig)

    def _exited_with(self, msg: dict[str, Any]) -> None:
        if not self._ending():
            return
        self._group_gone = True  # the launcher killed what was left of it, then reaped it
        code = os.waitstatus_to_exitcode(int(msg["status"]))
        utime, stime = float(msg["utime"]), float(msg["stime"])
        self._finish(self._ended_with(code, utime, stime, int(msg["maxrss"])))

    def _not_started(self, msg: dict[str, Any]) -> None:
        if self._ending():
            exc = OSError(int(msg.get("errno") or 0), str(msg.get("error") or "?"))
            exc.filename = msg.get("filename") or None
            self._finish(start_error(self.prog, exc))

    def _lost(self) -> None:
        if self._ending():
            self._group_gone = True
            self._finish(Outcome(exit_code=None, lost=True, error=LOST))


class RunBox:
    """One run's sandbox and its launcher, talked to from the loop."""

    def __init__(
        self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop, gone: Callable[[], None]
    ) -> None:
        self.loop = loop
        self.ready = False
        self.closed = False
        self.steps: dict[int, BoxedProcess] = {}
        self._gone = gone
        self._next = 0
        self._idle: asyncio.TimerHandle | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - our own fixed command
                self.command(spec, theirs.fileno()),
                env=self.env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours
        ours.setblocking(False)
        self._pidfd = os.pidfd_open(self.popen.pid)
        loop.add_reader(ours.fileno(), self._readable)
        loop.add_reader(self._pidfd, self._bwrap_ended)

    env: dict[str, str] | None = None  # the sandbox's first process's (else ours)

    def command(self, spec: dict[str, Any], fd: int) -> list[str]:
        """bwrap, then the launcher that talks on the descriptor ``fd``."""
        root = os.geteuid() == 0
        argv = bwrap_args(
            spec,
            Path(spec["rw"][0]),
            user_ns=not root,
            extra=("--die-with-parent", *(ROOT_CAPS if root else ())),
        )
        return [*argv, "--", sys.executable, "-I", "-S", str(LAUNCHER), str(fd)]

    # -- steps ---------------------------------------------------------------------------
    def start(
        self,
        launch: Launch,
        argv: list[str],
        limits: Limits,
        box: Box,
        on_exit: Callable[[Outcome], None],
        running: dict[str, Any],
        join: int | None = None,
    ) -> BoxedProcess | None:
        """Ask the launcher to start the step (``join``: its cgroup's ``cgroup.procs``);
        None when it cannot take it now (the caller starts it in a sandbox of its own)."""
        if not self.ready or self.closed:
            return None
        self._next += 1
        ident = self._next
        msg = {
            "op": "start",
            "id": ident,
            "argv": argv,
            "cwd": str(launch.cwd),
            "env": launch.env,
            "uid": box.uid,
            "gid": box.gid,
            "limits": [[res, soft, hard] for res, (soft, hard) in limits],
            "cgroup": join is not None,
        }
        data = json.dumps(msg).encode()
        if len(data) > MAX_MESSAGE:
            return None
        started = time.monotonic()
        with ExitStack() as files:  # ours close once sent (an OSError is the caller's)
            stdin = (
                files.enter_context(open(launch.stdin, "rb"))
                if launch.stdin is not None
                else files.enter_context(open(os.devnull, "rb"))
            )
            stdout = files.enter_context(open(launch.stdout, "wb"))
            stderr = files.enter_context(open(launch.stderr, "wb"))
            fds = [stdin.fileno(), stdout.fileno(), stderr.fileno()]
            if join is not None:
                fds.append(join)
            try:
                socket.send_fds(self.sock, [data], fds)
            except OSError:  # full (a slow launcher) or gone: a sandbox of its own
                return None
        proc = BoxedProcess(running, launch, on_exit, self.loop, started, box, argv[0])
        self.steps[ident] = proc
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        return proc

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self.close()
                return
            try:
                self._handle(json.loads(data), fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "ready":
            self.ready = True
            self._plan_idle()
            return
        ident = int(msg.get("id", 0))
        if op == "started":
            proc = self.steps.get(ident)
            pid = _pidfd_pid(fds[0]) if fds else None
            with contextlib.suppress(OSError):  # the launcher may reap it now
                self.sock.send(json.dumps({"op": "ack", "id": ident}).encode())
            if proc is not None:
                start_time = msg.get("start_time")
                proc._is_running(pid, start_time if isinstance(start_time, int) else None)
            return
        proc = self.steps.pop(ident, None)
        if proc is not None and op == "exited":
            proc._exited_with(msg)
        elif proc is not None and op == "failed":
            proc._not_started(msg)
        self._plan_idle()

    # -- its end -------------------------------------------------------------------------
    def _plan_idle(self) -> None:
        if not self.steps and not self.closed and self._idle is None:
            self._idle = self.loop.call_later(IDLE_S, self._idle_passed)

    def _idle_passed(self) -> None:
        self._idle = None
        if not self.steps:
            self.close()

    def _bwrap_ended(self) -> None:
        self.loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        with contextlib.suppress(ChildProcessError):
            self.popen.poll()
        self.close()

    def close(self, kill: bool = False) -> None:
        """End the sandbox: its launcher kills its steps when its socket closes (``kill``:
        kill it outright).  Steps still running are reported lost."""
        if not self.closed:
            self.closed = True
            self.ready = False
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self._gone()
            steps, self.steps = self.steps, {}
            for proc in steps.values():
                proc._lost()
        if kill and self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(RuntimeError):
                self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                self.popen.wait(5)


def _pidfd_pid(fd: int) -> int | None:
    """The pid (in our pid namespace) of the process a pidfd refers to."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError, IndexError):
        return None
    return None


class RunBoxes:
    """The run sandboxes of one executor, by what they show."""

    def __init__(self) -> None:
        self._boxes: dict[str, RunBox] = {}

    def start(
        self,
        launch: Launch,
        argv: list[str],
        limits: Limits,
        box: Box,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        running: dict[str, Any],
        join: int | None = None,
    ) -> BoxedProcess | None:
        """Start the step in its run's sandbox if that is ready; start the sandbox (for the
        run's later steps) if the run should have one.  None: start it on its own."""
        spec = box_spec(box.spec, launch.cwd)
        if spec is None:
            return None
        key = json.dumps(spec, sort_keys=True)
        found = self._boxes.get(key)
        if found is None:
            if len(self._boxes) < MAX_BOXES:
                self._create(key, spec, loop)
            return None
        return found.start(launch, argv, limits, box, on_exit, running, join)

    def _create(self, key: str, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        def gone() -> None:
            if self._boxes.get(key) is made:
                del self._boxes[key]

        try:
            made = RunBox(spec, loop, gone)
        except OSError as exc:
            log.warning("cannot start a run sandbox (steps get one each): %s", exc)
            return
        self._boxes[key] = made

    def close(self) -> None:
        for found in list(self._boxes.values()):
            found.close(kill=True)
