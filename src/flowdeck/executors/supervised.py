"""Local steps through the step supervisor (:mod:`flowdeck.executors.supervisor`), so that
they keep running while the server restarts.

The executor connects to the data directory's supervisor, starting it when none answers,
and talks to it from the scheduler's loop: a non-blocking Unix socket whose replies are
read by a loop reader.  After a restart, :meth:`SupervisedExecutor.connect` returns what
the supervisor knows (attempts still running, attempts that ended meanwhile) and
:meth:`adopt` re-attaches the scheduler to a running attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowdeck.executors.base import Executor, Launch, Outcome, StepProcess
from flowdeck.executors.wire import (
    PROTOCOL,
    SPOKEN,
    encode,
    kill_group,
    kill_helpers,
    launch_to_wire,
    outcome_from_wire,
    read_record,
)

log = logging.getLogger("flowdeck.executors")
LOST = "its supervisor stopped, so how the step ended is unknown"


def socket_path(data_dir: Path) -> Path:
    """The supervisor's socket: in the data directory, or (for a path too long for a Unix
    socket) in a private directory under the system's temporary directory."""
    path = data_dir.absolute() / "supervisor.sock"
    if len(str(path)) < 100:
        return path
    private = Path(tempfile.gettempdir()) / f"flowdeck-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:24]
    return private / f"{digest}.sock"


def kill_orphan(journal: Path, key: str) -> bool:
    """Kill the process group of an attempt whose supervisor is gone, if it still runs;
    whether the journal named its process."""
    info = read_record(journal, key) or {}
    pid, start = info.get("pid"), info.get("start_time")
    if not isinstance(pid, int):
        return False
    kill_group(pid, start if isinstance(start, int) else None)
    kill_helpers(info)
    return True


@dataclass
class SupervisorState:
    """What the supervisor said at hello."""

    pid: int
    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> pid, start


class SupervisedProcess(StepProcess):
    def __init__(self, executor: SupervisedExecutor, key: str, journal: Path | None = None) -> None:
        self.key = key
        self._executor = executor
        self.journal = journal  # the run's attempt journal, where the supervisor records it
        self.pid: int | None = None
        self.start_time: int | None = None

    def kill_orphan(self) -> None:
        """Its supervisor is gone: kill what is left of the attempt (its process group, the
        process checked by its start time), as the journal or the supervisor's word has it."""
        if self.journal is not None and kill_orphan(self.journal, self.key):
            return
        if self.pid is not None and self.start_time is not None:
            kill_group(self.pid, self.start_time)

    def _signal(self, action: str) -> None:
        self._executor.send({"op": "signal", "key": self.key, "action": action})

    def pause(self) -> None:
        self._signal("pause")

    def resume(self) -> None:
        self._signal("resume")

    def terminate(self) -> None:
        self._signal("terminate")

    def kill(self) -> None:
        self._signal("kill")


class SupervisedExecutor(Executor):
    name = "local"
    can_freeze = True
    starts_once = True  # the supervisor's rule, kept in each run's attempt journal

    def __init__(self, data_dir: Path, idle_s: float = 300.0, cgroups: str = "off") -> None:
        self.data_dir = data_dir
        self.idle_s = idle_s
        self.cgroups = cgroups  # "auto": the supervisor gives each attempt a cgroup v2
        self.sock_path = socket_path(data_dir)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox = b""
        self._outbox = bytearray()
        self._waiting: dict[str, tuple[Callable[[Outcome], None], SupervisedProcess]] = {}
        self._records: dict[str, Path] = {}  # adopted attempts' run journals
        self._on_started: dict[str, Callable[[], None]] = {}

    # -- connection ----------------------------------------------------------------------
    def connect(self, loop: asyncio.AbstractEventLoop) -> SupervisorState:
        """Connect (starting the supervisor if needed), say hello and attach to ``loop``;
        call in the loop's thread."""
        sock, hello, rest = self._hello()
        spoken = int(hello.get("protocol", 0))
        if spoken not in SPOKEN:
            sock.close()
            self._retire(int(hello["pid"]), spoken)
            sock, hello, rest = self._hello()
        sock.setblocking(False)
        self._sock, self._loop, self._inbox = sock, loop, rest
        loop.add_reader(sock.fileno(), self._readable)
        return SupervisorState(
            pid=int(hello["pid"]),
            running={r["key"]: r for r in hello["running"]},
        )

    def _hello(self) -> tuple[socket.socket, dict[str, Any], bytes]:
        """Connect (starting the supervisor if needed) and say hello: the socket, the
        supervisor's answer and what came after it."""
        sock = self._open()
        sock.sendall(encode({"op": "hello", "protocol": PROTOCOL}))
        reply = b""
        sock.settimeout(30)
        while not reply.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                sock.close()
                raise ConnectionError("the step supervisor closed the connection")
            reply += chunk
        first, _, rest = reply.partition(b"\n")
        hello: dict[str, Any] = json.loads(first)
        return sock, hello, rest

    def _retire(self, pid: int, spoken: int) -> None:
        """A supervisor of a protocol this server does not speak (another flowdeck version)
        is asked to exit, and its socket is awaited free: the next hello starts ours."""
        log.warning(
            "the step supervisor (pid %d) speaks protocol %d, this server %d: asking it to "
            "exit; the steps it ran are killed and retried as lost steps",
            pid,
            spoken,
            PROTOCOL,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # gone, its lock with it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)

    def _open(self) -> socket.socket:
        try:
            return self._dial()
        except OSError:
            pass
        self._spawn()
        deadline = time.monotonic() + 30
        while True:
            try:
                return self._dial()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _dial(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.sock_path))
        except OSError:
            sock.close()
            raise
        return sock

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "supervisor.log"
        with log_path.open("ab") as out:
            intermediate = subprocess.Popen(  # noqa: S603 - our own module
                [
                    sys.executable,
                    "-m",
                    "flowdeck.executors.supervisor",
                    "--socket",
                    str(self.sock_path),
                    "--lock",
                    str(self.data_dir / "supervisor.lock"),
                    "--idle-s",
                    str(self.idle_s),
                    "--cgroups",
                    self.cgroups,
                    "--daemon",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        intermediate.wait(30)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, msg: dict[str, Any]) -> None:
        if self._sock is None:
            return
        self._outbox += encode(msg)
        self._flush()

    def _flush(self) -> None:
        assert self._sock is not None
        assert self._loop is not None
        try:
            sent = self._sock.send(self._outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._disconnected()
            return
        del self._outbox[:sent]
        if self._outbox:
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        assert self._sock is not None
        assert self._loop is not None
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._disconnected()
            return
        lines = (self._inbox + chunk).split(b"\n")
        self._inbox = lines.pop()
        for line in lines:
            msg = json.loads(line)
            if msg["op"] == "exited":
                self._on_started.pop(msg["key"], None)
                entry = self._waiting.pop(msg["key"], None)
                if self._records.pop(msg["key"], None) is not None:
                    self.send({"op": "ack", "key": msg["key"]})
                if entry is not None:
                    entry[0](outcome_from_wire(msg["outcome"]))
            elif msg["op"] == "unknown":
                entry = self._waiting.pop(msg["key"], None)
                record = self._records.pop(msg["key"], None)
                if record is not None:
                    kill_orphan(record, msg["key"])
                if entry is not None:
                    entry[0](Outcome(exit_code=None, lost=True, error=LOST))
            elif msg["op"] == "started":
                entry = self._waiting.get(msg["key"])
                if entry is not None:
                    entry[1].pid = msg["pid"]
                    entry[1].start_time = msg.get("start_time")
                started = self._on_started.pop(msg["key"], None)
                if started is not None:
                    started()

    def _disconnected(self) -> None:
        """The supervisor is gone: its attempts are lost (the scheduler decides what then),
        and what is left of their processes is killed first: a retry never runs beside
        the attempt it replaces.  Their ends are told from the loop, never from within
        :meth:`start` or :meth:`adopt` (a send there finds the supervisor gone): the
        caller has the attempt's process before it hears of its end."""
        loop = self._loop
        if self._sock is not None and loop is not None:
            loop.remove_reader(self._sock.fileno())
            loop.remove_writer(self._sock.fileno())
            self._sock.close()
        self._sock = None
        self._outbox.clear()
        waiting, self._waiting = self._waiting, {}
        for on_exit, proc in waiting.values():
            proc.kill_orphan()
            lost = Outcome(exit_code=None, lost=True, error=LOST)
            if loop is not None and not loop.is_closed():
                loop.call_soon(on_exit, lost)
            else:
                on_exit(lost)

    # -- the executor --------------------------------------------------------------------
    def start(
        self,
        launch: Launch,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
    ) -> StepProcess:
        if self._sock is None:
            try:
                self.connect(loop)
            except OSError as exc:
                error = f"cannot reach the step supervisor: {exc}"
                loop.call_soon(on_exit, Outcome(exit_code=None, error=error))
                return SupervisedProcess(self, launch.key)
        proc = SupervisedProcess(self, launch.key, launch.record)
        self._waiting[launch.key] = (on_exit, proc)
        self.send({"op": "start", "launch": launch_to_wire(launch)})
        return proc

    def when_started(self, key: str, fn: Callable[[], None]) -> None:
        """``fn`` runs when the supervisor says the attempt started (it holds its stdin)."""
        entry = self._waiting.get(key)
        if entry is not None and entry[1].pid is not None:
            fn()
        elif entry is not None:
            self._on_started[key] = fn

    def adopt(
        self, key: str, on_exit: Callable[[Outcome], None], record: Path | None = None
    ) -> SupervisedProcess:
        """Follow an attempt started before a restart: its exit comes to us, or at once
        if it ended meanwhile; if the supervisor does not know it (it restarted), the
        attempt is lost — and a process of it still alive is killed first."""
        proc = SupervisedProcess(self, key, record)
        self._waiting[key] = (on_exit, proc)
        if record is not None:
            self._records[key] = record
        self.send({"op": "adopt", "key": key})
        return proc

    def close(self) -> None:
        """Disconnect; the supervisor keeps the steps running."""
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
        self._sock = None
        self._waiting.clear()
