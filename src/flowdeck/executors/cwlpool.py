"""Warm cwltool workers: CWL runs start as forks of a process that imported cwltool once.

A CWL step started cold pays the interpreter and cwltool's imports (~0.65 s of CPU).  The
local executor keeps up to ``cwl_warm_workers`` warm workers (:mod:`flowdeck.executors.
zygote`), each the first process of a bubblewrap sandbox of its own showing the system,
the interpreter and what every step may read (``data_root``, ``sandbox_extra_ro``), but
nothing of the data directory.  A CWL step then becomes a child forked from a worker that
sees only its own run's folders: the server clones them as detached mounts
(``open_tree``), read-only or writable as the step's sandbox plan says, and passes them
with the run's request; the worker never reads the request (see the worker's module).

A pooled run is a step like any other: its host pid (from a pidfd) is what the executor
signals, freezes, journals and kills; its cgroup, limits and uid are its own.  Workers
start lazily, at the first CWL step a supervisor starts (that step starts cold); a worker
that dies is replaced at once unless it never became ready (then CWL steps start cold for
``RETRY_S`` seconds); one that cannot import cwltool makes CWL steps start cold for as
long; a step whose view a worker cannot set up is started cold.  When the executor
closes, the workers are killed (and they die with it anyway: ``--die-with-parent``).

A step is pooled only when it is a CWL step, sandboxed without network, and the server is
root with ``step_uids`` (each run its own uid: runs of one uid could signal each other).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from flowdeck import clock
from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.cgroups import AttemptGroup
from flowdeck.executors.group import Limits
from flowdeck.executors.runbox import BoxedProcess, RunBox
from flowdeck.executors.sandbox import Box, bwrap_args
from flowdeck.executors.zygote import MAX_FDS, PAD_ARG, PAD_ENV, clone_tree

log = logging.getLogger("flowdeck.executors")
CWL_TARGET = "_flowdeck_cwl:run"  # engines/cwl_names.SHIM_TARGET (not imported: light)
RETRY_S = 60.0  # after a worker that failed to start, CWL steps start cold this long
WORKER_CAPS = (
    *("--cap-drop", "ALL"),
    *("--cap-add", "CAP_SYS_ADMIN"),
    *("--cap-add", "CAP_SETUID"),
    *("--cap-add", "CAP_SETGID"),
    *("--cap-add", "CAP_NET_ADMIN"),
)
PRIVATE_DIRS = ("/tmp", "/dev/shm")  # noqa: S108 - fresh in every child, so not shared
SCRUB_SPEC = ("rw", "ro", "grant", "work", "box")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def split_spec(spec: dict[str, Any]) -> tuple[dict[str, Any], str, list[tuple[str, bool]]] | None:
    """(what a worker's sandbox shows, the data directory, the run's own folders as
    (path, read-only)) for a step's sandbox plan; None when no worker can run it."""
    deny = [str(d) for d in spec.get("deny", [])]
    if not deny or spec.get("network") or not spec.get("uids") or not spec.get("rw"):
        return None
    root = deny[0]
    own: list[tuple[str, bool]] = []
    shared: dict[str, list[str]] = {"ro": [], "rw": []}
    for kind in ("ro", "rw"):
        for path in spec.get(kind, []):
            if _under(path, root):
                own.append((path, kind == "ro"))
            elif any(_under(path, p) for p in PRIVATE_DIRS):
                return None  # hidden by the fresh /tmp of each child
            else:
                shared[kind].append(path)
    worker = {k: v for k, v in spec.items() if k not in SCRUB_SPEC}
    worker.update(shared, grant=[], work=None, box=False)
    own.sort(key=lambda m: (m[0].count("/"), not m[1]))
    return worker, root, own


def worker_env() -> dict[str, str]:
    """The worker's environment: this process's (the server's, which an admin sets) for
    what decides where Python imports from — never a step's, which a workflow may set:
    the worker is privileged and must import nothing a user chose."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}
    path = os.environ.get("PATH", "/usr/bin:/bin")
    pad, _, filler = PAD_ENV.partition("=")  # room for a run's (see zygote._show_as)
    return {"PATH": path, "LANG": "C.UTF-8", **keep, pad: filler}


def running_workers(data_dir: Path) -> int:
    """How many warm workers of a data directory's step supervisor run (their sandboxes'
    outer bwrap, which names the data directory)."""
    found: dict[int, int] = {}
    want = os.fsencode(str(data_dir))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"flowdeck.executors.zygote" in words and want in words:
            found[int(entry)] = parent
    return sum(1 for parent in found.values() if parent not in found)  # bwrap forks once


def describe(
    workers: int, sandbox: str, step_uids: str, data_dir: Path, root: bool | None = None
) -> str:
    """The warm cwltool workers of a server, for ``flowdeck admin status``."""
    if workers <= 0:
        return "off: CWL steps start cold (cwl_warm_workers = 0)"
    root = os.geteuid() == 0 if root is None else root
    if sandbox == "off" or not root or not step_uids.strip():
        return "not used: CWL steps start cold (needs a root server, step_uids and the sandbox)"
    running = running_workers(data_dir)
    return f"{running} running of {workers} (started by the first CWL step; runs fork from them)"


class PooledProcess(BoxedProcess):
    """A CWL step forked from a warm worker.  Should the worker not set up its view (the
    child reports it before running anything of the run's), it is started cold instead
    (``cold``: the executor's), and this stands for that process."""

    cold: Callable[[AttemptGroup | None], StepProcess] | None = None
    _delegate: StepProcess | None = None

    def _not_started(self, msg: dict[str, Any]) -> None:
        if self.cold is None or self._exited:
            super()._not_started(msg)
            return
        log.warning(
            "warm cwltool worker: cannot start %s (%s); starting it cold",
            self.key,
            msg.get("error"),
        )
        self._ending()  # no exit of ours is reported: the cold process reports its own
        group, self.cgroup = self.cgroup, None
        self._running.pop(self.key, None)
        if self.box is not None:
            self.box.ended()  # the cold start gives the folder to its own uid
        proc = self._delegate = self.cold(group)
        self._is_running(getattr(proc, "pid", None), getattr(proc, "start_time", None))

    def pause(self) -> None:
        if self._delegate is not None:
            self._delegate.pause()
        else:
            super().pause()

    def resume(self) -> None:
        if self._delegate is not None:
            self._delegate.resume()
        else:
            super().resume()

    def terminate(self) -> None:
        if self._delegate is not None:
            self._delegate.terminate()
        else:
            super().terminate()

    def kill(self) -> None:
        if self._delegate is not None:
            self._delegate.kill()
        else:
            super().kill()


class Worker(RunBox):
    """One warm worker: a run sandbox whose first process is the zygote."""

    def __init__(
        self,
        spec: dict[str, Any],
        root: str,
        env: dict[str, str],
        loop: asyncio.AbstractEventLoop,
        gone: Callable[[Worker], None],
    ) -> None:
        self.root = root
        self.env = env
        self.cold: str | None = None  # why it cannot import cwltool
        self.served = 0
        super().__init__(spec, loop, lambda: gone(self))

    def command(self, spec: dict[str, Any], fd: int) -> list[str]:
        argv = bwrap_args(spec, Path("/"), user_ns=False, extra=("--die-with-parent", *WORKER_CAPS))
        argv += ["--dir", self.root]
        zygote = [sys.executable, "-m", "flowdeck.executors.zygote", str(fd), PAD_ARG]
        return [*argv, "--", *zygote]

    def _plan_idle(self) -> None:
        """A worker does not end when idle: it waits for the next CWL run."""

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        if msg.get("op") == "cold":
            self.cold = str(msg.get("error") or "?")
            log.warning("warm cwltool worker: cannot import cwltool (%s)", self.cold)
            self.close(kill=True)
            return
        super()._handle(msg, fds)

    def start_run(
        self,
        launch: Launch,
        argv: list[str],
        limits: Limits,
        box: Box,
        own: list[tuple[str, bool]],
        on_exit: Callable[[Outcome], None],
        running: dict[str, Any],
        join: int | None,
    ) -> PooledProcess | None:
        """Fork a child for the run (see :class:`Pool`); None: start it cold."""
        if not self.ready or self.closed or box.uid is None or box.gid is None:
            return None
        targets: list[tuple[str, bool]] = []  # (path, a folder)
        request: dict[str, Any] = {
            "argv": argv,
            "cwd": str(launch.cwd),
            "env": launch.env,
            "uid": box.uid,
            "gid": box.gid,
            "limits": [[res, soft, hard] for res, (soft, hard) in limits],
            "root": self.root,
            "targets": targets,
        }
        started = time.monotonic()  # as GroupProcess measures wall_s
        with ExitStack() as files:  # ours close once sent
            mounts: list[int] = []
            for path, read_only in own:
                if not os.path.exists(path):
                    continue  # like bwrap's --bind-try
                fd = clone_tree(path, read_only)
                files.callback(os.close, fd)
                mounts.append(fd)
                targets.append((path, os.path.isdir(path)))
            memfd = os.memfd_create("flowdeck-request", os.MFD_CLOEXEC)
            files.callback(os.close, memfd)
            os.write(memfd, json.dumps(request).encode())
            stdin = (
                files.enter_context(open(launch.stdin, "rb"))
                if launch.stdin is not None
                else files.enter_context(open(os.devnull, "rb"))
            )
            stdout = files.enter_context(open(launch.stdout, "wb"))
            stderr = files.enter_context(open(launch.stderr, "wb"))
            fds = [stdin.fileno(), stdout.fileno(), stderr.fileno(), memfd, *mounts]
            if join is not None:
                fds.append(join)
            if len(fds) > MAX_FDS:
                return None  # too many folders (a graph node's many inputs): cold
            self._next += 1
            ident = self._next
            msg = {"op": "start", "id": ident, "mounts": len(mounts), "cgroup": join is not None}
            try:
                socket.send_fds(self.sock, [json.dumps(msg).encode()], fds)
            except OSError:
                return None
        proc = PooledProcess(running, launch, on_exit, self.loop, started, box, "cwltool")
        self.steps[ident] = proc
        self.served += 1
        return proc


class Pool:
    """The warm workers of one executor (``size`` at most), by what their sandbox shows."""

    def __init__(self) -> None:
        self.size = 0
        self._workers: dict[str, Worker] = {}
        self._cold_until: dict[str, float] = {}
        self._closed = False

    def start(
        self,
        launch: Launch,
        argv: list[str],
        limits: Limits,
        box: Box,
        on_exit: Callable[[Outcome], None],
        loop: asyncio.AbstractEventLoop,
        running: dict[str, Any],
        join: int | None,
    ) -> PooledProcess | None:
        """Start a CWL step in a warm worker; None: start it cold (and warm a worker up
        for the next ones when there is none)."""
        self.size = int(box.spec.get("warm") or 0)
        if launch.python != CWL_TARGET or self.size <= 0 or self._closed:
            return None
        if os.geteuid() != 0:
            return None
        split = split_spec(box.spec)
        if split is None:
            return None
        spec, root, own = split
        env = worker_env()
        key = json.dumps([spec, root, env], sort_keys=True)
        worker = self._workers.get(key)
        if worker is None:
            self._spawn(key, spec, root, env, loop)
            return None
        try:
            return worker.start_run(launch, argv, limits, box, own, on_exit, running, join)
        except OSError as exc:  # a folder that cannot be cloned: cold
            log.warning("warm cwltool worker: %s; starting the step cold", exc)
            return None

    def _spawn(
        self,
        key: str,
        spec: dict[str, Any],
        root: str,
        env: dict[str, str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if len(self._workers) >= self.size or clock.monotonic() < self._cold_until.get(key, 0):
            return

        def gone(worker: Worker) -> None:
            if self._workers.get(key) is worker:
                del self._workers[key]
            if self._closed:
                return
            if worker.cold is not None or (not worker.served and not worker.ready):
                self._cold_until[key] = clock.monotonic() + RETRY_S
            else:  # it died: replace it
                loop.call_soon(self._spawn, key, spec, root, env, loop)
            worker.close(kill=True)

        try:
            self._workers[key] = Worker(spec, root, env, loop, gone)
        except OSError as exc:
            log.warning("cannot start a warm cwltool worker (CWL steps start cold): %s", exc)
            self._cold_until[key] = clock.monotonic() + RETRY_S

    def pids(self) -> list[int]:
        """The workers' sandboxes (their bwrap)."""
        return [w.popen.pid for w in self._workers.values() if not w.closed]

    def close(self) -> None:
        self._closed = True
        for worker in list(self._workers.values()):
            worker.close(kill=True)
        self._workers.clear()
