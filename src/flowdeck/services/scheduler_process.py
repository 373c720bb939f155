"""The scheduler in a process of its own (``scheduler_process = true``).

The API process serves HTTP and the scheduler process runs the runs: each has an
interpreter lock of its own, so together they can use two cores where one server process
uses about one.  On a machine of two cores that is not a gain for everything: the steps,
their supervisor and clients need those cores too (docs/performance.md has the figures).
They share the database and talk over a socket pair:

- API -> scheduler: runs queued (``notify``), commands on active runs (pause, resume, stop,
  kill, answered once committed), records pushed to stream inputs, webhook subscriptions
  changed;
- scheduler -> API: the events it committed (the API process hands them on with its own,
  in id order, to the event bus, the port hub, the metrics and the graph driver:
  ``events/order.py``), stream outputs written and inputs read, its slots in use and tick
  times, webhook deliveries to send.

The scheduler process dies with the API process (``PR_SET_PDEATHSIG``), as the scheduler
thread would, and leaves the steps running for the next start.  If it dies alone, the API
process starts another, which takes its runs over (same host: the steps are re-adopted).

    python -m flowdeck.services.scheduler_process FD PARENT_PID   (started by the API)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import itertools
import logging
import logging.config
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from flowdeck.config import Settings
from flowdeck.domain.runs import Run
from flowdeck.errors import Conflict, FlowdeckError
from flowdeck.logs import install_redaction, log_config

if TYPE_CHECKING:
    from flowdeck.runtime.scheduler import Scheduler
    from flowdeck.services.context import Context

log = logging.getLogger("flowdeck.scheduler")
Message = tuple[Any, ...]
LOCK_FILE = "writer.lock"
GAUGES_S = 0.5  # how often the scheduler process reports its slots in use and tick times
RESTART_S = 1.0


class Link:
    """One end of the socket pair: messages (pickled tuples) sent from any thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, msg: Message) -> None:
        """Send; a message to a process that is gone is dropped (it is restarted, or the
        whole server is stopping)."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(msg)

    def recv(self) -> Message:
        msg = self.conn.recv()
        assert isinstance(msg, tuple)
        return msg

    def close(self) -> None:
        self.conn.close()


class SchedulerProcess:
    """The API process's stand-in for the scheduler (a ``SchedulerHandle``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.instance_id = ""
        self.slots = float(ctx.settings.slots)
        self.used = 0.0
        self.tick_observers: list[Callable[[float], None]] = []
        self.pid: int | None = None
        self._link: Link | None = None
        self._up = threading.Event()
        self._closing = False
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}
        self._ids = itertools.count()
        store = ctx.store
        store.share_writes(ctx.settings.data_dir / LOCK_FILE)
        self.order = ctx.ordered_events()
        ctx.ports.hub.forward = self._send
        ctx.webhooks.changed_elsewhere = lambda: self._send(("webhooks.changed",))
        # Started by a thread that lives as long as this process: the child's death signal
        # follows the thread that started it.
        self._thread = threading.Thread(target=self._keep, name="flowdeck-sched-proc", daemon=True)
        self._thread.start()
        if not self._up.wait(60):
            self._closing = True  # no further attempts
            raise FlowdeckError("the scheduler process did not start within 60 s")

    # -- the child -------------------------------------------------------------------------
    def _keep(self) -> None:
        """Run the scheduler process; start another when it dies (until closing)."""
        while not self._closing:
            ours, theirs = socket.socketpair()
            proc = subprocess.Popen(  # noqa: S603 - this module, by this interpreter
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
            )
            theirs.close()
            self.pid = proc.pid
            link = Link(Connection(ours.detach()))
            link.send(("settings", self.ctx.settings))
            try:
                self._serve(link)
            finally:
                self._down(link)
                proc.wait()
            if not self._closing:
                log.error("the scheduler process ended (%s): starting another", proc.returncode)
                time.sleep(RESTART_S)

    def _serve(self, link: Link) -> None:
        hub = self.ctx.ports.hub
        while True:
            try:
                msg = link.recv()
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == "events":
                self.order.offer(msg[1])
            elif kind == "hub.changed":
                hub.changed_here(msg[1])
            elif kind == "hub.delivered":
                hub.set_delivered_here(msg[1], msg[2], msg[3])
            elif kind == "reply":
                future = self._replies.pop(msg[1], None)
                if future is not None:
                    (future.set_result if msg[2] else future.set_exception)(msg[3])
            elif kind == "gauges":
                self.used = msg[1]
                for seconds in msg[2]:
                    for observe in self.tick_observers:
                        observe(seconds)
            elif kind == "webhooks.wake":
                self.ctx.webhooks.wake()
            elif kind == "hello":
                self.instance_id, self.slots = msg[1], msg[2]
                self._link = link
                self._up.set()

    def _down(self, link: Link) -> None:
        self._link = None
        self._up.clear()
        self.used = 0.0
        link.close()
        replies, self._replies = self._replies, {}
        for future in replies.values():
            future.set_exception(Conflict("the scheduler process restarted: try again"))

    def _send(self, msg: Message) -> None:
        link = self._link
        if link is not None:
            link.send(msg)

    # -- SchedulerHandle -------------------------------------------------------------------
    def notify(self, run: Run) -> None:
        """A run was queued (and committed).  Sent in order with the commands after it; if
        the scheduler process is down, the next one takes the run in at its start."""
        self._send(("notify", run))

    def command(self, action: str, run_id: str, who: str, options: dict[str, Any]) -> Run:
        link = self._link
        if link is None:
            raise Conflict("the scheduler process is restarting: try again")
        rid = next(self._ids)
        future: concurrent.futures.Future[Run] = concurrent.futures.Future()
        self._replies[rid] = future
        link.send(("call", rid, action, run_id, who, options))
        return future.result(timeout=60)

    def close(self) -> None:
        """Stop the scheduler process as the scheduler stops (draining with ``drain``)."""
        self._closing = True
        self._send(("close",))
        self._thread.join(None if self.ctx.settings.drain else 60)


# -- the scheduler process ---------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the socket's end does
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the API process died before the line above
        os._exit(1)


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
    except Exception:
        return FlowdeckError(str(exc))
    return exc


def _answer(link: Link, scheduler: Scheduler, msg: Message) -> None:
    _, rid, action, run_id, who, options = msg
    try:
        link.send(("reply", rid, True, scheduler.command(action, run_id, who, options)))
    except Exception as exc:
        link.send(("reply", rid, False, _portable(exc)))


def _report(link: Link, scheduler: Scheduler, ticks: list[float]) -> None:
    while True:
        time.sleep(GAUGES_S)
        taken = ticks[:]
        del ticks[: len(taken)]
        link.send(("gauges", scheduler.used, taken))


def main(fd: int, parent: int) -> None:
    _die_with_parent(parent)
    # The API process stops this one (over the socket): signals meant for the whole group
    # (Ctrl-C, systemd) are not acted on here.  A handler, not SIG_IGN, which the step
    # processes would inherit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    link = Link(Connection(fd))
    settings = link.recv()[1]
    assert isinstance(settings, Settings)
    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    install_redaction()
    from flowdeck.store import pg_listen

    pg_listen.ORIGIN = pg_listen.origin_of(parent)  # one server: its two processes
    from flowdeck.services.context import build_context

    ctx = build_context(settings, migrate=False)
    ctx.store.share_writes(settings.data_dir / LOCK_FILE)
    ctx.store.add_commit_listener(lambda events: link.send(("events", events)))
    ctx.ports.hub.forward = link.send
    ctx.webhooks.wake_elsewhere = lambda: link.send(("webhooks.wake",))
    scheduler = ctx.start_local_scheduler()
    ticks: list[float] = []
    scheduler.tick_observers.append(ticks.append)
    link.send(("hello", scheduler.instance_id, scheduler.slots))
    log.info(
        "scheduler process %d started: instance %s, %g slots",
        os.getpid(),
        scheduler.instance_id,
        scheduler.slots,
    )
    threading.Thread(target=_report, args=(link, scheduler, ticks), daemon=True).start()
    commands = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="flowdeck-command")
    while True:
        try:
            msg = link.recv()
        except (EOFError, OSError):  # the API process is gone: stop as it did
            os._exit(1)
        kind = msg[0]
        if kind == "notify":
            scheduler.notify(msg[1])
        elif kind == "hub.changed":
            ctx.ports.hub.changed_here(msg[1])
        elif kind == "webhooks.changed":
            ctx.webhooks.changed_here()
        elif kind == "call":
            commands.submit(_answer, link, scheduler, msg)
        elif kind == "close":
            break
    commands.shutdown()
    ctx.close()
    link.send(("closed",))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
