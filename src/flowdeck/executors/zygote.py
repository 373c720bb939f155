"""A warm cwltool worker: the first process of a sandbox of its own (see
:mod:`flowdeck.executors.cwlpool`), with cwltool imported once, that forks one child per
CWL run.  ``python -m flowdeck.executors.zygote FD PAD``; the protocol is the launcher's
(:mod:`flowdeck.executors.launcher`), but a start message says only how many descriptors
come with it: ``{"op": "start", "id", "mounts": K, "cgroup": bool}`` with the run's
stdin, stdout, stderr, its request (a memfd of JSON), K detached mounts (``open_tree``)
and its cgroup's ``cgroup.procs``.  The worker never reads a request: what a run is (its
environment, files, arguments) only ever exists in that run's own child.

Each child, before it runs anything of the run's: joins its cgroup; gets its own session
and process group; enters new mount, IPC, network and UTS namespaces; mounts a fresh
tmpfs on ``/tmp``, ``/dev/shm`` and on the data directory, where it attaches the run's
own folders (read-only or writable as the step's sandbox plan says) and nothing else; a
fresh ``/proc`` that shows only its uid's processes (``hidepid``); sets its limits; drops
to the attempt's uid and gid (losing every capability) and calls the python step in
process (:mod:`flowdeck.executors.pystep`).  The worker keeps ``CAP_SYS_ADMIN`` (with
``CAP_SETUID``, ``CAP_SETGID`` and ``CAP_NET_ADMIN``: the loopback of a child) for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import struct
import sys
import traceback
from typing import Any

from flowdeck.executors.launcher import DEFAULT_SIGNALS, Launcher

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
# the same numbers on every architecture (added after the syscall tables were unified)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
SYS_UNSHARE = {"x86_64": 272, "aarch64": 97}
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_DUMPABLE = 4
# the worker's own arguments and environment are padded so that a run's fit where they
# were (see _show_as): its command line is a few paths, its environment what a step's is
PAD_ARG = "-" * 4096
PAD_ENV = "FLOWDECK_WORKER_PAD=" + "-" * 32768
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
MAX_FDS = 64  # of a start message: stdio, request, cgroup and the run's folders
BANNER = "flowdeck: cwltool from a warm worker (cwltool imported once, this run forked)\n"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, path: str = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)
    return result


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def clone_tree(path: str, read_only: bool) -> int:
    """A detached copy of the mounts at ``path`` (a descriptor; closing it unmounts them),
    no set-uid files nor devices, read-only if asked.  Needs CAP_SYS_ADMIN (the host)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    fd = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, os.fsencode(path), flags), "open_tree", path)
    attr = _MountAttr(
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if read_only else 0), 0, 0, 0
    )
    try:
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR,
                fd,
                b"",
                AT_EMPTY_PATH | AT_RECURSIVE,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            "mount_setattr",
            path,
        )
    except OSError:
        os.close(fd)
        raise
    return fd


def _attach(fd: int, target: str) -> None:
    _check(
        _libc.syscall(
            SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH
        ),
        "move_mount",
        target,
    )


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            os.fsencode(source),
            os.fsencode(target),
            os.fsencode(fstype) if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        "mount",
        target,
    )


def _show_as(argv: list[str], env: dict[str, str]) -> None:
    """Make ``/proc/PID/cmdline`` and ``environ`` of this child say the step's command and
    environment, as for a cold step (``ps``; tools that find a run's processes by
    ``FLOWDECK_RUN_ID``), not the worker's: both are read from where the worker's own
    arguments and environment were when it started, which it made large
    (:data:`PAD_ARG`, :data:`PAD_ENV`); what does not fit is left out.  Only once the
    process no longer refers to them (its environment is the step's)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.read().rsplit(")", 1)[1].split()[45:49]]
    except (OSError, ValueError):
        return
    arg_start, arg_end, env_start, env_end = fields
    entries = [f"{k}={v}" for k, v in env.items()]
    for start, end, words in ((arg_start, arg_end, argv), (env_start, env_end, entries)):
        size = end - start
        block = b""
        for word in words:
            item = os.fsencode(word) + b"\0"
            if len(block) + len(item) > size:
                break
            block += item
        if size > 0:
            ctypes.memmove(start, block.ljust(size, b"\0"), size)


def _read_request(fd: int) -> dict[str, Any]:
    data = b""
    while chunk := os.pread(fd, 1 << 16, len(data)):
        data += chunk
    os.close(fd)
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")
    return request


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags))


def kept_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The worker's own mounts under /tmp or /dev/shm, outermost first: its Python and
    flowdeck's code when they live there (a checkout under /tmp), which bwrap bound into
    its view.  A run's fresh /tmp and /dev/shm would hide them, so each run's view attaches
    them again, read-only: nothing the worker's view did not already show."""
    found: set[str] = set()
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point.startswith(("/tmp/", "/dev/shm/")):  # noqa: S108
                found.add(point)
    outer: list[str] = []
    for point in sorted(found):
        if not any(point.startswith(o + "/") for o in outer):
            outer.append(point)
    return outer


KEPT: list[str] = []  # kept_mounts() of this worker, read once at its start


def _namespaces() -> None:
    """New mount, IPC, network and UTS namespaces; fresh /tmp and /dev/shm (but for the
    worker's own code there: :data:`KEPT`)."""
    unshare = SYS_UNSHARE.get(os.uname().machine)
    if unshare is None:
        raise OSError(0, f"unsupported machine {os.uname().machine}")
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS
    _check(_libc.syscall(unshare, flags), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    # taken before the fresh /tmp and /dev/shm hide them
    kept = [(point, os.path.isdir(point), clone_tree(point, True)) for point in KEPT]
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # noqa: S108
    with contextlib.suppress(FileNotFoundError):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")  # noqa: S108
    for point, folder, fd in kept:
        os.makedirs(point if folder else os.path.dirname(point), exist_ok=True)
        if not folder:
            os.close(os.open(point, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        _attach(fd, point)
        os.close(fd)


def _fresh_proc() -> None:
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    _loopback_up()


def self_test() -> None:
    """Check in a throwaway child that a run's view can be set up here (else the pool
    must not take runs: they would fail instead of starting cold)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _namespaces()
            _fresh_proc()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(0, "cannot give a run a view of its own here (namespaces, mounts)")


def _isolate(request: dict[str, Any], mounts: list[int]) -> None:
    """New namespaces and a view of the run's own folders only (see the module doc)."""
    _namespaces()
    root = str(request["root"])
    os.makedirs(root, exist_ok=True)  # in the fresh /tmp when the data directory is there
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for (target, folder), fd in zip(request["targets"], mounts, strict=True):
        try:  # where to attach it: a folder, or a file (another run's file as an input)
            os.makedirs(target if folder else os.path.dirname(target), exist_ok=True)
            if not folder:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
        except OSError:  # under a read-only folder that lacks it: like bwrap's --bind-try
            continue
        _attach(fd, target)
        os.close(fd)
    _fresh_proc()


class Zygote(Launcher):
    """The launcher, but a started child runs the python step in this warm process."""

    max_fds = MAX_FDS

    def start(self, msg: dict[str, Any], fds: list[int]) -> None:
        sys.stdout.flush()  # nothing of ours may be written again by a child
        sys.stderr.flush()
        super().start(msg, fds)

    def become(self, msg: dict[str, Any], fds: list[int], err_w: int) -> None:
        count = int(msg.get("mounts") or 0)
        stdio, request_fd, mounts = fds[:3], fds[3], fds[4 : 4 + count]
        if msg.get("cgroup") and len(fds) > 4 + count:
            os.write(fds[4 + count], b"0")
        for sig in DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        os.setsid()
        request = _read_request(request_fd)
        _isolate(request, mounts)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 1 << 20)
        os.chdir(request["cwd"])
        import resource

        for res, soft, hard in request.get("limits") or []:
            resource.setrlimit(res, (soft, hard))
        os.environ.clear()  # the worker's strings are no longer referred to: _show_as
        os.environ.update(request["env"])
        _show_as(
            [sys.executable, "-m", "flowdeck.executors.pystep", *request["argv"]], request["env"]
        )
        uid, gid = int(request["uid"]), int(request["gid"])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # every capability is gone from here on
        # as a cold step's process is after its exec: its own uid may see it in /proc (what
        # cwltool's job monitor does with its tools' pids); it holds only this run's data
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl")
        sys.argv = ["flowdeck.executors.pystep", *request["argv"]]
        os.close(err_w)  # it runs: the worker says so
        code = 1
        try:
            sys.stderr.write(BANNER)
            from flowdeck.executors import pystep

            code = pystep.main(list(request["argv"]))
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def warm_up() -> None:
    """Import what a CWL run uses (and load CWL's schemas): paid once, here."""
    import cwltool.main
    import cwltool.process

    import flowdeck.executors.pystep  # noqa: F401
    from flowdeck.engines import cwl_runner

    for version in ("v1.0", "v1.1", "v1.2"):
        cwltool.process.get_schema(version)
    cwl_runner.WARM = True  # runs keep these schemas


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    try:
        KEPT[:] = kept_mounts()
        warm_up()
        self_test()
    except Exception as exc:  # the pool starts CWL runs cold then
        with contextlib.suppress(OSError):
            sock.send(json.dumps({"op": "cold", "error": f"{type(exc).__name__}: {exc}"}).encode())
        return 1
    with contextlib.suppress(ConnectionError, OSError):
        Zygote(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
