"""The first process of a run's sandbox (see :mod:`flowdeck.executors.runbox`): it starts
the run's steps inside the sandbox when the process outside asks, and tells it how they
end.  Standard library only: it runs as ``python -I -S launcher.py FD``.

One message a packet on the socket ``FD`` (``SOCK_SEQPACKET``), JSON:

- in: ``{"op": "start", "id", "argv", "cwd", "env", "uid", "gid", "limits"}`` with the
  step's stdin, stdout and stderr as attached descriptors;
- out: ``{"op": "ready"}`` once; ``{"op": "started", "id", "start_time"}`` with a pidfd of
  the step attached (the outside reads the step's host pid from it); ``{"op": "failed",
  "id", "errno", "error"}`` when it could not be started; ``{"op": "exited", "id",
  "status", "utime", "stime", "maxrss"}``.

Each step gets its own session and process group, its limits, and (the sandbox runs as
root) its own uid and gid, without supplementary groups; no step gains privileges
(bubblewrap sets ``no_new_privs`` for the whole sandbox).  When a step's first process
ends, what is left of its group is killed before it is reaped.  When the socket closes,
every step is killed and the launcher exits, which ends the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import Any

MAX_MESSAGE = 4 << 20
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


def _tick_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class Launcher:
    max_fds = 16  # descriptors a start message may carry

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.steps: dict[int, int] = {}  # pid (inside) -> id
        self.pids: dict[int, int] = {}  # id -> pid
        self.acked: set[int] = set()  # pids whose start the outside knows: may be reaped

    def send(self, msg: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def start(self, msg: dict[str, Any], fds: list[int]) -> None:
        ident = msg["id"]
        try:
            self._start(ident, msg, fds)
        except OSError as exc:  # no fork (out of processes or memory): the step fails
            error = {"errno": exc.errno or 0, "error": exc.strerror or str(exc), "filename": ""}
            self.send({"op": "failed", "id": ident, **error})

    def _start(self, ident: int, msg: dict[str, Any], fds: list[int]) -> None:
        try:
            err_r, err_w = os.pipe()  # close-on-exec: EOF means the exec happened
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        try:
            try:
                pid = os.fork()
            except OSError:
                os.close(err_r)
                raise
            if pid == 0:  # the step
                os.close(err_r)
                try:
                    self.become(msg, fds, err_w)
                except BaseException as exc:
                    code = getattr(exc, "errno", None) or 0
                    text = f"{code}\0{getattr(exc, 'strerror', None) or exc}\0"
                    text += str(getattr(exc, "filename", None) or "")
                    os.write(err_w, text.encode(errors="replace")[:4000])
                finally:
                    os._exit(127)
        finally:
            for fd in fds:
                os.close(fd)
            os.close(err_w)
        report = b""
        while chunk := os.read(err_r, 4096):
            report += chunk
        os.close(err_r)
        if report:
            os.waitpid(pid, 0)
            code, text, filename = ([*report.decode(errors="replace").split("\x00"), "", ""])[:3]
            self.send(
                {
                    "op": "failed",
                    "id": ident,
                    "errno": int(code or 0),
                    "error": text,
                    "filename": filename,
                }
            )
            return
        self.steps[pid] = ident
        self.pids[ident] = pid
        pidfd = os.pidfd_open(pid)
        try:
            self.send({"op": "started", "id": ident, "start_time": _tick_start_time(pid)}, [pidfd])
        finally:
            os.close(pidfd)

    def become(self, msg: dict[str, Any], fds: list[int], err_w: int) -> None:
        """In the forked child: become the step; returns only by raising (an error that
        is reported on ``err_w``); closing ``err_w`` (the exec) means it started."""
        _become(msg, fds, err_w)

    def reap(self) -> None:
        """Report and reap the steps that ended and whose start was acknowledged (until
        then the outside may still read its pid from the pidfd: a zombie keeps it)."""
        for pid in [p for p in self.steps if p in self.acked]:
            try:
                found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                found = None
            if found is None:
                continue
            ident = self.steps.pop(pid)
            self.pids.pop(ident, None)
            self.acked.discard(pid)
            # leftovers of the step must not outlive it (the leader is a zombie)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            self.send(
                {
                    "op": "exited",
                    "id": ident,
                    "status": status,
                    "utime": usage.ru_utime,
                    "stime": usage.ru_stime,
                    "maxrss": usage.ru_maxrss,
                }
            )

    def kill_all(self) -> None:
        for pid in self.steps:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.send({"op": "ready"})
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        try:
            while True:
                for fd, _event in poller.poll():
                    if fd == wake_r:
                        os.read(wake_r, 4096)
                        continue
                    data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, self.max_fds)
                    if not data:
                        return
                    msg = json.loads(data)
                    if msg.get("op") == "start":
                        self.start(msg, fds)
                    elif msg.get("op") == "ack" and msg.get("id") in self.pids:
                        self.acked.add(self.pids[msg["id"]])
                    else:
                        for extra in fds:
                            os.close(extra)
                self.reap()
        finally:
            self.kill_all()


def _become(msg: dict[str, Any], fds: list[int], err_w: int) -> None:
    """In the forked child: become the step (in its cgroup, when it has one: the fourth
    descriptor), then exec it; ``err_w`` is kept open to report a failure."""
    if msg.get("cgroup") and len(fds) > 3:
        os.write(fds[3], b"0")
    for sig in DEFAULT_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    os.setsid()
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.closerange(3, err_w)  # all but where an exec error is reported
    os.closerange(err_w + 1, 1 << 20)
    os.chdir(msg["cwd"])
    for res, soft, hard in msg.get("limits") or []:
        resource.setrlimit(res, (soft, hard))
    uid, gid = msg.get("uid"), msg.get("gid")
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    argv = msg["argv"]
    try:
        os.execvpe(argv[0], argv, msg["env"])  # noqa: S606 - running the step is the point
    except OSError as exc:  # named as the step names it (execvpe says the last path tried)
        exc.filename = argv[0]
        raise


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(ConnectionError, OSError):
        Launcher(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
