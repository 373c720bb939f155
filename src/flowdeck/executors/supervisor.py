"""The step supervisor: one long-lived process per data directory that starts the local
steps, is their subreaper and keeps their records, so that steps outlive the server.

The server connects over a Unix socket (see :mod:`flowdeck.executors.wire`).  Steps run
exactly as :class:`~flowdeck.executors.local.LocalExecutor` runs them — in this process's
loop instead of the server's.  An exit goes to the server that started or adopted the
attempt; while none listens it is kept (in memory and in the run's attempt journal) until
a server adopts the attempt.  With no server and no
step for ``--idle-s`` seconds, the supervisor exits.

    python -m flowdeck.executors.supervisor --socket PATH --lock PATH [--idle-s 300] [--daemon]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from flowdeck.executors import wire
from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.cgroups import Cgroups
from flowdeck.executors.local import LocalExecutor
from flowdeck.executors.runbox import BoxedProcess
from flowdeck.executors.wire import (
    append_record,
    encode,
    kill_group,
    kill_helpers,
    launch_from_wire,
    outcome_to_wire,
    read_records,
)

log = logging.getLogger("flowdeck.supervisor")
PR_SET_CHILD_SUBREAPER = 36
MAX_UNTOLD = 100_000
MAX_JOURNALS = 256  # runs whose attempt journal is kept in memory
LOST = "the supervisor that ran it stopped, so how it ended is unknown"


class Supervisor:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, idle_s: float, cgroups: Cgroups | None = None
    ) -> None:
        self.loop = loop
        self.idle_s = idle_s
        self.executor = LocalExecutor(cgroups)
        self.procs: dict[str, tuple[StepProcess, dict[str, Any]]] = {}
        self.pending: dict[str, StepProcess] = {}  # asked of a run's sandbox, not yet started
        # exits not yet told to a server (none was connected), until one adopts the key
        self.exited: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, asyncio.StreamWriter] = {}  # key -> the server that follows it
        # Attempt journals read (once) or written by this supervisor, the only writer of
        # them while it lives: run journal -> key -> last record.  Recently used first out.
        self.journals: OrderedDict[Path, dict[str, dict[str, Any]]] = OrderedDict()
        self.clients = 0
        self.done = asyncio.Event()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reap_planned = False
        self._check_idle()

    # -- connections ---------------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients += 1
        self._check_idle()
        try:
            while line := await reader.readline():
                try:
                    self.handle(json.loads(line), writer)
                except Exception:
                    log.exception("bad message %r", line[:200])
        except ConnectionError:
            pass
        finally:
            self.clients -= 1
            for key in [k for k, w in self.owners.items() if w is writer]:
                del self.owners[key]
            writer.close()
            self._check_idle()

    def handle(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = msg.get("op")
        key = str(msg.get("key"))
        if op == "hello":
            running = [info for _proc, info in self.procs.values()]
            state = {"op": "state", "pid": os.getpid(), "protocol": wire.PROTOCOL}
            writer.write(encode({**state, "running": running}))
        elif op == "start":
            launch = launch_from_wire(msg["launch"])
            self.owners[launch.key] = writer
            self.start(launch)
        elif op == "adopt":
            # Exits of key go to this connection from now on; one it missed comes now.
            if key in self.procs or key in self.pending:
                self.owners[key] = writer
            elif key in self.exited:
                writer.write(encode({"op": "exited", "key": key, "outcome": self.exited[key]}))
            else:
                writer.write(encode({"op": "unknown", "key": key}))
        elif op == "ack":
            self.exited.pop(key, None)
        elif op == "signal":
            entry = self.procs.get(key)
            proc = entry[0] if entry is not None else self.pending.get(key)
            action = msg.get("action")
            if proc is not None and action in ("pause", "resume", "terminate", "kill"):
                getattr(proc, str(action))()

    def send(self, key: str, msg: dict[str, Any]) -> bool:
        writer = self.owners.get(key)
        if writer is None or writer.is_closing():
            return False
        writer.write(encode(msg))
        return True

    # -- steps ---------------------------------------------------------------------------
    def start(self, launch: Launch) -> None:
        """Start an attempt — at most once per key, whatever the server asks: a key that
        runs or ran is answered with what is known of it."""
        key = launch.key
        if key in self.procs or key in self.pending:
            return  # running: its exit goes to the server that asked last
        if key in self.exited:
            self.send(key, {"op": "exited", "key": key, "outcome": self.exited.pop(key)})
            return
        record = self._journal(launch.record).get(key) if launch.record is not None else None
        if record is not None:  # started by an earlier supervisor
            outcome = record.get("outcome")
            if not isinstance(outcome, dict):
                pid, start = record.get("pid"), record.get("start_time")
                if isinstance(pid, int):
                    kill_group(pid, start if isinstance(start, int) else None)
                kill_helpers(record)
                outcome = outcome_to_wire(Outcome(exit_code=None, lost=True, error=LOST))
            self.send(key, {"op": "exited", "key": key, "outcome": outcome})
            return
        proc = self.executor.start(launch, functools.partial(self._ended, launch), self.loop)
        if getattr(proc, "pid", None) is not None:
            self._running(launch, proc)
        elif isinstance(proc, BoxedProcess):  # its run's sandbox starts it: soon
            self.pending[key] = proc
            proc.on_started = functools.partial(self._running, launch, proc)
        # else it could not start: _ended reports it

    def _running(self, launch: Launch, proc: StepProcess) -> None:
        self.pending.pop(launch.key, None)
        info = {
            "key": launch.key,
            "pid": getattr(proc, "pid", None),
            "start_time": getattr(proc, "start_time", None),  # read at spawn (wire.py)
            "started_at": time.time(),
        }
        helpers = getattr(proc, "helpers", None)
        if helpers:
            info["helpers"] = helpers  # killed with the attempt should this process die
        self.procs[launch.key] = (proc, info)
        self.send(launch.key, {"op": "started", **info})  # first: the server waits on it
        if launch.record is not None:
            self._keep(launch.record, info)
        self._check_idle()

    def _ended(self, launch: Launch, outcome: Outcome) -> None:
        self.pending.pop(launch.key, None)
        _proc, info = self.procs.pop(launch.key, (None, {"key": launch.key}))
        wire = outcome_to_wire(outcome)
        # Tell the server first (it waits to start what comes next), then keep the record:
        # should this process die in between, the server has the exit or finds the
        # attempt lost, never a wrong outcome.
        if not self.send(launch.key, {"op": "exited", "key": launch.key, "outcome": wire}):
            if len(self.exited) >= MAX_UNTOLD:
                self.exited.pop(next(iter(self.exited)))  # its run's journal still has it
            self.exited[launch.key] = wire
        self.owners.pop(launch.key, None)
        if launch.record is not None:
            with contextlib.suppress(OSError):  # the run directory was removed (kill)
                self._keep(launch.record, {**info, "outcome": wire})
        self._plan_reap()
        self._check_idle()

    # -- the attempt journals ------------------------------------------------------------
    def _journal(self, path: Path) -> dict[str, dict[str, Any]]:
        found = self.journals.get(path)
        if found is None:
            found = self.journals[path] = read_records(path)
            while len(self.journals) > MAX_JOURNALS:
                self.journals.popitem(last=False)
        self.journals.move_to_end(path)
        return found

    def _keep(self, path: Path, record: dict[str, Any]) -> None:
        """Append an attempt's record to its run's journal (and to what is known of it)."""
        journal = self._journal(path)
        append_record(path, record)
        journal[record["key"]] = record

    # -- orphans and idleness ------------------------------------------------------------
    def _plan_reap(self) -> None:
        if not self._reap_planned:
            self._reap_planned = True
            self.loop.call_soon(self._reap_orphans)

    def _reap_orphans(self) -> None:
        """Reap processes that were reparented to us (we are their subreaper) and ended.
        Our own steps are reaped by the executor, with their resource usage: peek without
        reaping (WNOWAIT) and stop at one of them — its exit callback reaps it, then
        plans this again."""
        self._reap_planned = False
        mine = {info["pid"] for _proc, info in self.procs.values()}
        while True:
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return  # no child at all
            if found is None or found.si_pid in mine:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, os.WNOHANG)

    def _check_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.clients == 0 and not self.procs and not self.pending:
            self._idle_timer = self.loop.call_later(self.idle_s, self.done.set)


async def _main(socket_path: Path, idle_s: float, cgroups: Cgroups | None) -> None:
    loop = asyncio.get_running_loop()
    sup = Supervisor(loop, idle_s, cgroups)
    loop.add_signal_handler(signal.SIGCHLD, sup._plan_reap)
    loop.add_signal_handler(signal.SIGTERM, sup.done.set)
    old_umask = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(sup.serve, path=str(socket_path))
    finally:
        os.umask(old_umask)
    try:
        async with server:
            await sup.done.wait()
    finally:
        sup.executor.pool.close()  # warm cwltool workers (they die with us anyway)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowdeck-supervisor")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--idle-s", type=float, default=300.0)
    parser.add_argument("--cgroups", choices=("auto", "off"), default="off")
    parser.add_argument("--daemon", action="store_true", help="detach (double fork)")
    args = parser.parse_args(argv)
    if args.daemon and os.fork() > 0:
        os._exit(0)  # the server reaps this intermediate; init adopts the supervisor
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(message)s")
    lock = args.lock.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another supervisor serves this data directory
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    log.info("pid %d serving %s", os.getpid(), args.socket)
    args.socket.unlink(missing_ok=True)  # we hold the lock: a leftover of a dead supervisor
    cgroups = None
    if args.cgroups == "auto":  # a cgroup v2 per attempt where we may (executors/cgroups.py)
        tag = hashlib.sha256(str(args.socket.absolute()).encode()).hexdigest()[:12]
        cgroups = Cgroups.find(tag)
        log.info("attempt cgroups: %s", cgroups.base if cgroups else "none (no cgroup v2 here)")
    try:
        asyncio.run(_main(args.socket, args.idle_s, cgroups))
    finally:
        if cgroups is not None:
            cgroups.close()
    args.socket.unlink(missing_ok=True)
    log.info("idle: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
