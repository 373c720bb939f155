"""Live stream ports: the in-process notifier, and the feeding and tailing of the step
attempts that use them.

- :class:`PortHub` wakes whoever waits on a port (HTTP long polls, SSE and WebSocket
  readers in the server's loop; the feeders here) once records are committed.  It is told
  from any thread; waiters are woken in their own loop.
- :class:`PortRuntime` owns one asyncio loop in its own thread.  For an attempt whose step
  reads a stream input, it opens a FIFO in the run's ``logs/`` as the step's standard input
  and writes the input's stored records into it as JSON lines, from offset 0, as they come;
  EOF follows the last record of a closed input.  For an attempt whose standard output is a
  stream, it tails the attempt's stdout file (inotify, no polling) and stores each complete
  line as a record of the workflow outputs bound to it, with the attempt number.

Both work from durable state — the input's stored records, the stdout file in the run
directory — so both can be resumed after a restart: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowdeck import clock
from flowdeck.domain.ports import INPUT, OUTPUT, ports_of_step, stdin_input
from flowdeck.domain.runs import TERMINAL_STATES, Event
from flowdeck.domain.spec import WorkflowSpec
from flowdeck.executors.base import Launch
from flowdeck.runtime.active import ActiveRun, Instance
from flowdeck.runtime.rundir import attempt_key
from flowdeck.runtime.steps import StepError
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck.ports")
Key = tuple[str, str, str]  # run id, direction, port name
FEED_BATCH = 500
_TERMINAL_EVENTS = frozenset(f"run.{s.value}" for s in TERMINAL_STATES)


class PortHub:
    """Who waits for which port, and how far each input has been delivered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Key, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._watchers: dict[Key, list[Callable[[], None]]] = {}
        self._delivered: dict[tuple[str, str], int] = {}
        # the hub of the other process (API and scheduler in two processes): told of each
        # change and delivery count made here
        self.forward: Callable[[tuple[Any, ...]], None] | None = None
        # the other servers of the database (store/pg_listen): told the same
        self.announce: Callable[[tuple[Any, ...]], None] | None = None

    # -- waiting (in an event loop) -------------------------------------------------------
    def waiter(self, key: Key) -> asyncio.Future[None]:
        """A future of the running loop, set at the next change of ``key``.  Take it
        *before* reading the port, so that no change is missed in between."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.setdefault(key, set()).add((loop, future))
        return future

    def discard(self, key: Key, future: asyncio.Future[None]) -> None:
        with self._lock:
            found = self._waiters.get(key)
            if found is None:
                return
            found.discard((future.get_loop(), future))
            if not found:
                del self._waiters[key]

    def watch(self, key: Key, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (in the notifying thread; it must be quick) at each change."""
        with self._lock:
            self._watchers.setdefault(key, []).append(callback)

    def unwatch(self, key: Key, callback: Callable[[], None]) -> None:
        with self._lock:
            found = self._watchers.get(key, [])
            if callback in found:
                found.remove(callback)
            if not found:
                self._watchers.pop(key, None)

    # -- telling (from any thread) --------------------------------------------------------
    def changed(self, key: Key) -> None:
        """Records were committed to ``key``, or it was closed."""
        self.changed_here(key)
        self._tell(("hub.changed", key))

    def _tell(self, msg: tuple[Any, ...]) -> None:
        if self.forward is not None:
            self.forward(msg)
        if self.announce is not None:
            try:
                self.announce(msg)
            except Exception:  # the readers there wait for their next poll
                log.warning("could not tell the other servers of %s", msg, exc_info=True)

    def told_elsewhere(self, msg: tuple[Any, ...]) -> None:
        """A change or delivery count another server announced: made here, and told to
        this server's other process."""
        if msg[0] == "hub.changed":
            key = (str(msg[1][0]), str(msg[1][1]), str(msg[1][2]))  # a list, from JSON
            msg = ("hub.changed", key)
            self.changed_here(key)
        elif msg[0] == "hub.delivered":
            msg = ("hub.delivered", str(msg[1]), str(msg[2]), int(msg[3]))
            self.set_delivered_here(msg[1], msg[2], msg[3])
        else:
            return
        if self.forward is not None:
            self.forward(msg)

    def changed_here(self, key: Key) -> None:
        """:meth:`changed`, told by the other process."""
        with self._lock:
            waiters = self._waiters.pop(key, set())
            watchers = list(self._watchers.get(key, ()))
        for loop, future in waiters:
            _wake(loop, future)
        for callback in watchers:
            callback()

    def run_ended(self, run_id: str) -> None:
        with self._lock:
            keys = [k for k in self._waiters if k[0] == run_id]
            waiters = [w for k in keys for w in self._waiters.pop(k)]
            for key in [k for k in self._delivered if k[0] == run_id]:
                del self._delivered[key]
        for loop, future in waiters:
            _wake(loop, future)

    def on_commit(self, events: list[Event]) -> None:
        """A store commit listener: a run that ended wakes the readers of its ports."""
        for event in events:
            if event.subject_kind == "run" and event.type in _TERMINAL_EVENTS:
                self.run_ended(event.subject_id)

    # -- delivery of inputs ---------------------------------------------------------------
    def delivered(self, run_id: str, port: str) -> int:
        """Records of an input written to its step's standard input by the current
        attempt (0 before the step starts, and again when a retry starts)."""
        with self._lock:
            return self._delivered.get((run_id, port), 0)

    def set_delivered(self, run_id: str, port: str, count: int) -> None:
        self.set_delivered_here(run_id, port, count)
        self._tell(("hub.delivered", run_id, port, count))

    def set_delivered_here(self, run_id: str, port: str, count: int) -> None:
        with self._lock:
            self._delivered[(run_id, port)] = count


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def done() -> None:
        if not future.done():
            future.set_result(None)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
        loop.call_soon_threadsafe(done)


# -- inotify, through libc ----------------------------------------------------------------

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class _Inotify:
    """A watch for writes to one file; ``fd`` is readable after each write."""

    _libc: Any = None

    def __init__(self, path: Path) -> None:
        if _Inotify._libc is None:
            _Inotify._libc = ctypes.CDLL(None, use_errno=True)
        libc = _Inotify._libc
        fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            raise OSError(code, f"inotify_add_watch failed on {path}")
        self.fd = fd

    def drain(self) -> None:
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


# -- one attempt's feeding and tailing -----------------------------------------------------


class _Feeder:
    """Writes an input's records into a FIFO, from offset 0, then EOF once it is closed."""

    def __init__(self, rt: PortRuntime, run_id: str, port: str, fifo: Path, fd: int) -> None:
        self.rt = rt
        self.run_id = run_id
        self.port = port
        self.fifo = fifo
        self.fd: int | None = fd
        self.next = 0  # offset of the next record to read from the store
        self.buffer = b""
        self.delivered = 0
        self.pending = 0  # records in the buffer
        self.planned = False
        self.waiting_writable = False
        self.key: Key = (run_id, INPUT, port)

    def start(self) -> None:
        self.rt.hub.set_delivered(self.run_id, self.port, 0)
        self.rt.hub.watch(self.key, self.poke)
        self.pump()

    def poke(self) -> None:  # any thread
        self.rt.soon(self._poked)

    def _poked(self) -> None:
        if not self.planned:
            self.planned = True
            self.rt.loop_.call_soon(self.pump)

    def _writable(self) -> None:
        if self.fd is not None and self.waiting_writable:
            self.rt.loop_.remove_writer(self.fd)
            self.waiting_writable = False
        self.pump()

    def pump(self) -> None:
        self.planned = False
        while self.fd is not None and not self.waiting_writable:
            if self.buffer:
                try:
                    written = os.write(self.fd, self.buffer)
                except BlockingIOError:
                    written = 0
                self.buffer = self.buffer[written:]
                if self.buffer:
                    self.waiting_writable = True
                    self.rt.loop_.add_writer(self.fd, self._writable)
                    return
                self.delivered += self.pending
                self.pending = 0
                self.rt.hub.set_delivered(self.run_id, self.port, self.delivered)
                continue
            with self.rt.store.read() as tx:
                port = tx.get_port(self.run_id, INPUT, self.port)
                records = tx.read_records(self.run_id, INPUT, self.port, self.next, FEED_BATCH)
            if records:
                self.buffer = b"".join(_line(r.data) for r in records)
                self.pending = len(records)
                self.next += len(records)
                continue
            if port is not None and port.closed and self.next >= port.length:
                # Every record is in the pipe: say so where a restart looks (a step that
                # ended while no server ran saw this end, not one cut short by a crash of
                # the server, whose write end closed with it).
                fed_marker(self.fifo).touch()
                self.stop()  # EOF: the step sees the end once it read everything
            return

    def stop(self) -> None:
        self.rt.hub.unwatch(self.key, self.poke)
        if self.fd is not None:
            if self.waiting_writable:
                self.rt.loop_.remove_writer(self.fd)
                self.waiting_writable = False
            os.close(self.fd)
            self.fd = None


def stdin_fifo(stdout: Path) -> Path:
    """The FIFO an attempt reads its stream input from, beside its stdout log."""
    return stdout.with_name(stdout.name.removesuffix("stdout") + "stdin")


def fed_marker(fifo: Path) -> Path:
    """The file that says an attempt's standard input was fed whole, up to EOF."""
    return fifo.with_name(fifo.name + ".fed")


def _line(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _Tailer:
    """Reads an attempt's stdout file as it grows; each complete line is a record."""

    def __init__(
        self, rt: PortRuntime, run_id: str, ports: list[str], path: Path, attempt: int
    ) -> None:
        self.rt = rt
        self.run_id = run_id
        self.ports = ports
        self.attempt = attempt
        self.path = path
        self.file = path.open("rb")
        self.partial = b""
        self.skip = 0  # records at the start of the file that are stored already
        self.watch: _Inotify | None = None
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        try:
            self.watch = _Inotify(self.path)
            self.rt.loop_.add_reader(self.watch.fd, self._modified)
        except (OSError, AttributeError):  # no inotify: look every 20 ms
            self.watch = None
            self.timer = self.rt.loop_.call_later(0.02, self._tick)
        self.read()

    def _modified(self) -> None:
        if self.watch is not None:
            self.watch.drain()
        self.read()

    def _tick(self) -> None:
        self.read()
        self.timer = self.rt.loop_.call_later(0.02, self._tick)

    def read(self, final: bool = False) -> None:
        """Store the complete lines written since the last read (at the end, the last line
        too).  Bytes are let go of only once their records are committed: after a failure
        they are tried again at the next write."""
        data = self.partial + self.file.read()
        lines = data.split(b"\n")
        rest = b"" if final else lines.pop()
        records = [_record(line) for line in lines if line.strip()]
        if self.skip:
            stored = min(self.skip, len(records))
            records = records[stored:]
            self.skip -= stored
        if records:
            now = clock.now()
            try:
                with self.rt.store.write() as tx:
                    for name in self.ports:
                        port = tx.lock_port(self.run_id, OUTPUT, name)
                        tx.append_records(port, records, now, self.attempt)
            except Exception:
                self.partial = data
                raise
            for name in self.ports:
                self.rt.hub.changed((self.run_id, OUTPUT, name))
        self.partial = rest

    def stop(self) -> None:
        if self.watch is not None:
            self.rt.loop_.remove_reader(self.watch.fd)
            self.watch.close()
            self.watch = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.read(final=True)
        finally:
            self.file.close()


def _record(line: bytes) -> Any:
    """A JSON line's value; a line that is not JSON is kept as its text."""
    text = line.decode("utf-8", errors="replace")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text.rstrip("\r")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclasses.dataclass
class _Attempt:
    run_id: str
    step: str
    feeder: _Feeder | None = None
    tailer: _Tailer | None = None


class PortRuntime:
    """Feeds and tails the attempts that use stream ports, in a thread of its own."""

    def __init__(self, store: Store, hub: PortHub) -> None:
        self.store = store
        self.hub = hub
        self._attempts: dict[str, _Attempt] = {}
        self._plans: dict[int, tuple[WorkflowSpec, dict[str, tuple[str | None, list[str]]]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    @property
    def loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _ensure_loop(self) -> None:
        with self._started:
            if self._loop is not None:
                return
            ready = threading.Event()

            def main() -> None:
                loop = asyncio.new_event_loop()
                self._loop = loop
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            self._thread = threading.Thread(target=main, name="flowdeck-ports", daemon=True)
            self._thread.start()
            ready.wait(30)

    def soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the ports loop (from any thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # closed
                self._loop.call_soon_threadsafe(self._guarded, fn)

    @staticmethod
    def _guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("stream port work failed")

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the ports loop and wait for it."""
        self._ensure_loop()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        self.loop_.call_soon_threadsafe(run)
        future.result(timeout=60)

    def _plan(self, spec: WorkflowSpec, step: str) -> tuple[str | None, list[str]]:
        """The stream input a step reads and the output ports it fills (specs are shared
        by the runs of a workflow version and never change, so each is looked at once)."""
        found = self._plans.get(id(spec))
        if found is None or found[0] is not spec:
            if len(self._plans) > 1000:
                self._plans.clear()
            plan = {s: (stdin_input(spec, s), ports_of_step(spec, s)) for s in spec.steps}
            found = self._plans[id(spec)] = (spec, plan)
        return found[1][step]

    def streams(self, spec: WorkflowSpec, step: str) -> bool:
        """Does the step read or write a stream port?"""
        source, outputs = self._plan(spec, step)
        return source is not None or bool(outputs)

    # -- called by the scheduler, in its thread -------------------------------------------
    def attach(self, ar: ActiveRun, inst: Instance, launch: Launch) -> Launch:
        """Wire an attempt about to start to its ports: its stdin becomes a FIFO fed with
        the input's records, its stdout file is tailed into its output ports."""
        source, outputs = self._plan(ar.spec, inst.step)
        if source is None and not outputs:
            return launch
        attempt = inst.attempts + 1
        job = _Attempt(ar.run.id, inst.step)
        try:
            if source is not None:
                fifo = stdin_fifo(launch.stdout)
                fifo.unlink(missing_ok=True)
                os.mkfifo(fifo, 0o600)
                # Read-write, so that opening never blocks and the step's open succeeds.
                fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                job.feeder = _Feeder(self, ar.run.id, source, fifo, fd)
                launch = dataclasses.replace(launch, stdin=fifo)
            if outputs:
                launch.stdout.touch()
                job.tailer = _Tailer(self, ar.run.id, outputs, launch.stdout, attempt)
        except OSError as exc:
            self._discard(job)
            raise StepError(f"cannot set up the step's streams: {exc}") from exc
        self._attempts[launch.key] = job
        return launch

    def started(self, key: str) -> None:
        """The attempt ``key`` was started (its process holds the FIFO): feed and tail it."""
        job = self._attempts.get(key)
        if job is None:
            return
        self._ensure_loop()

        def start() -> None:
            if job.feeder is not None:
                job.feeder.start()
            if job.tailer is not None:
                job.tailer.start()

        self.soon(start)

    def fed_whole(self, ar: ActiveRun, inst: Instance) -> bool:
        """Did the attempt get its whole stream input (or read none)?  An attempt that
        ended while the server was down may have seen its input end early: the server's
        crash closed the pipe's write end, which the step cannot tell from the end."""
        if self._plan(ar.spec, inst.step)[0] is None:
            return True
        stdout = ar.rundir.log(inst.step, inst.index, inst.attempts, "stdout")
        return fed_marker(stdin_fifo(stdout)).exists()

    def resume_outputs(self, ar: ActiveRun, inst: Instance) -> None:
        """An attempt that writes a stream output ended while no server tailed it (the
        server was down): when its end is taken, the rest of its stdout file — from the
        first line not stored yet (lines are stored in order, a batch per commit) — is
        stored as if it had been tailed, and the ports are closed as usual."""
        outputs = self._plan(ar.spec, inst.step)[1]
        if not outputs:
            return
        path = ar.rundir.log(inst.step, inst.index, inst.attempts, "stdout")
        try:
            tailer = _Tailer(self, ar.run.id, outputs, path, inst.attempts)
        except OSError:
            log.warning("the stdout of %s is gone: its stream output ends here", inst.label)
            return
        tailer.skip = self._stored(ar.run.id, outputs[0], inst.attempts)
        key = attempt_key(ar.run.id, inst.step, inst.index, inst.attempts)
        self._attempts[key] = _Attempt(ar.run.id, inst.step, tailer=tailer)

    def _stored(self, run_id: str, port: str, attempt: int) -> int:
        """How many records of an output port came from ``attempt``."""
        count = start = 0
        with self.store.read() as tx:
            while batch := tx.read_records(run_id, OUTPUT, port, start, 10_000):
                count += sum(1 for r in batch if r.attempt == attempt)
                start = batch[-1].offset + 1
        return count

    def ended(self, ar: ActiveRun, inst: Instance) -> None:
        """An attempt ended: store the rest of its output; close its output ports when the
        step is done for good (not waiting for a retry)."""
        job = self._attempts.pop(attempt_key(ar.run.id, inst.step, inst.index, inst.attempts), None)
        if job is None:
            return
        done = inst.done
        outputs = self._plan(ar.spec, inst.step)[1]

        def finish() -> None:
            try:
                self._discard(job)
            finally:
                if done and outputs:
                    self._close_outputs(ar.run.id, outputs)

        self._call(finish)

    def _discard(self, job: _Attempt) -> None:
        if job.feeder is not None:
            job.feeder.stop()
            job.feeder.fifo.unlink(missing_ok=True)
            fed_marker(job.feeder.fifo).unlink(missing_ok=True)
        if job.tailer is not None:
            job.tailer.stop()

    def _close_outputs(self, run_id: str, names: list[str]) -> None:
        now = clock.now()
        with self.store.write() as tx:
            for name in names:
                port = tx.close_port(run_id, OUTPUT, name, now)
                tx.add_event(
                    "run",
                    run_id,
                    "output.closed",
                    now,
                    None,
                    {"direction": OUTPUT, "port": name, "records": port.length},
                )
        for name in names:
            self.hub.changed((run_id, OUTPUT, name))

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        for job in list(self._attempts.values()):
            try:
                self._call(lambda j=job: self._discard(j))  # type: ignore[misc]
            except Exception:
                log.exception("closing stream ports")
        self._attempts.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
