"""The step sandbox: each step the local executor starts runs inside bubblewrap (``bwrap``).

The server decides *what* a step may see (:func:`plan`, carried by ``Launch.sandbox``); the
process that starts the step (the supervisor) decides *as whom* and builds the command
(:class:`Box`), since it knows which attempts run and which uids they hold.

Inside: new mount, pid, IPC, UTS and network namespaces (loopback only, unless the step
asked for network and the admin allows it: then ``pasta`` gives user-mode networking that
cannot reach the host's loopback); the system read-only (``/usr``, ``/bin``, ``/lib*``,
``/etc`` without its secrets), a fresh ``/proc``, ``/dev`` and ``/tmp``; the run's work
folder and inputs, the workflow's code and ``data_root`` read-only; the step's own folder
and the run's scratch folder writable.  Nothing else of the host is there.

When the server runs as root, bwrap does the mounts as root and ``setpriv`` then drops the
step to an unprivileged uid of its own (one per running attempt, from ``step_uids``, the
group of ``step_user``), without capabilities and with ``no_new_privs``; as another user,
bwrap uses a user namespace and the step keeps that user's uid.

bwrap stays the first process of the attempt's process group: what the executor tracks,
signals (the group spans the pid namespace) and kills.  When it dies the kernel kills
everything left in the pid namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowdeck.executors.wire import process_start_time

# Files of /etc no step reads: replaced by an empty file (directories by an empty tmpfs).
HIDDEN_ETC = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/flowdeck",
)
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PASTA_OPTIONS = ("--config-net", "-q", "-t", "none", "-u", "none", "-T", "none", "-U", "none")


class SandboxError(Exception):
    """The sandbox cannot be set up: the step fails with this message."""


def plan(
    *,
    ro: list[Path | None],
    rw: list[Path],
    grant: list[Path | None],
    deny: list[Path],
    network: bool,
    step_user: str,
    step_uids: tuple[int, int] | None,
    max_processes: int | None,
    work: Path | None = None,
    box: bool = False,
    warm: int = 0,
) -> dict[str, Any]:
    """What one step may see, as sent to the supervisor (JSON): ``ro`` read-only, ``rw``
    writable (the first is its own folder, given to its uid; the others are made 1777),
    ``grant`` server files made readable to its uid, ``deny`` never mounted; ``work`` its
    run's work folder and ``box``: whether the run should get a sandbox of its own that its
    steps start in (executors/runbox.py); ``warm``: how many warm cwltool workers the
    executor may keep for CWL steps (executors/cwlpool.py)."""
    return {
        "work": str(work) if work is not None else None,
        "box": box,
        "ro": [str(p) for p in ro if p is not None],
        "rw": [str(p) for p in rw],
        "grant": [str(p) for p in grant if p is not None],
        "deny": [str(p) for p in deny],
        "network": network,
        "user": step_user,
        "uids": list(step_uids) if step_uids is not None else None,
        "max_processes": max_processes,
        "warm": warm,
    }


def parse_uids(text: str) -> tuple[int, int] | None:
    """``"900000-900999"`` → (900000, 900999); ``""`` → None."""
    text = text.strip()
    if not text:
        return None
    lo, sep, hi = text.partition("-")
    first = int(lo)
    last = int(hi) if sep else first
    if not 1000 <= first <= last < 2**31:
        raise ValueError("a range of uids like 900000-900999, at or above 1000")
    return first, last


@functools.cache
def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH") or os.defpath)


@functools.cache
def _python_paths(cwd: str) -> tuple[str, ...]:
    """Where the interpreter and flowdeck's own modules live (python steps run
    ``python -m flowdeck.executors.pystep``): read-only in every sandbox."""
    found: list[str] = []
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "purelib", "platlib")),
        *sys.path,
    ]
    for entry in candidates:
        if not entry or entry == cwd or not os.path.isdir(entry):
            continue
        path = os.path.realpath(entry)
        if path.startswith(("/usr/", "/etc/")) or path in found or path == "/":
            continue
        found.append(path)
    return tuple(found)


@functools.cache
def _system_args() -> tuple[str, ...]:
    """The system, read-only, without the secrets of /etc; fresh /proc, /dev, /tmp, /run."""
    out = ["--ro-bind", "/usr", "/usr"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            out += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            out += ["--ro-bind", d, d]
    out += ["--ro-bind", "/etc", "/etc"]
    for hidden in HIDDEN_ETC:
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            out += ["--tmpfs", hidden]
        elif os.path.lexists(hidden):
            out += ["--ro-bind", "/dev/null", hidden]
    out += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]  # noqa: S108
    return tuple(out)


@functools.cache
def _resolver_dirs() -> tuple[str, ...]:
    """Where /etc/resolv.conf points when it is a link (systemd-resolved: /run/...): the
    sandbox's /run is empty, and a networked step needs its name server."""
    if not os.path.islink("/etc/resolv.conf"):
        return ()
    target = os.path.dirname(os.path.realpath("/etc/resolv.conf"))
    return () if target.startswith(("/etc", "/usr")) else (target,)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class Box:
    """One attempt's sandbox, built in the process that starts it."""

    spec: dict[str, Any]
    cwd: Path
    uid: int | None = None  # the attempt's own uid (the server runs as root)
    gid: int | None = None
    pasta_pid: int | None = None
    _fds: list[int] = field(default_factory=list)

    @classmethod
    def make(cls, spec: dict[str, Any], cwd: Path, busy: set[int]) -> Box:
        if _tool("bwrap") is None:
            raise SandboxError(
                "cannot start the step: the step sandbox needs bubblewrap (bwrap), which is "
                'not on the PATH; install it (docs/install.md) or set sandbox = "off" '
                "(unsafe: steps then see everything the server sees)"
            )
        if spec.get("network") and _tool("pasta") is None:
            raise SandboxError(
                "cannot start the step: network for steps needs pasta (Debian package "
                "passt), which is not on the PATH"
            )
        box = cls(spec, cwd)
        if os.geteuid() == 0:
            box._pick_identity(busy)
        return box

    def _pick_identity(self, busy: set[int]) -> None:
        user = str(self.spec.get("user") or "flowdeck-step")
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise SandboxError(
                f"cannot start the step: the step user {user!r} (setting step_user) does not "
                "exist; create it (docs/install.md)"
            ) from None
        self.gid = entry.pw_gid
        uids = self.spec.get("uids")
        if not uids:
            self.uid = entry.pw_uid
            return
        for uid in range(int(uids[0]), int(uids[1]) + 1):
            if uid not in busy:
                self.uid = uid
                return
        raise SandboxError(
            f"cannot start the step: every uid of step_uids ({uids[0]}-{uids[1]}) is held "
            "by a running attempt; widen the range"
        )

    # -- before the start ----------------------------------------------------------------
    def hand_over(self) -> None:
        """Give the attempt's folders to its uid (the server's files stay the server's)."""
        if self.uid is None or self.gid is None:
            return
        chown_tree(self.cwd, self.uid, self.gid)
        # what it reads of the server's files (uploads are private on the host: the run's
        # folder is 0700) must be readable by its uid inside
        for ro in self.spec.get("grant", []):  # the run's inputs, the workflow's code
            if ro not in _readable:
                grant_read(ro)
                if "/runs/" not in ro:  # a workflow's code does not change
                    _readable.add(ro)
        for rw in self.spec.get("rw", [])[1:]:  # the run's scratch folder is shared
            with contextlib.suppress(OSError):
                if os.stat(rw).st_mode & 0o7777 != 0o1777:
                    os.chmod(rw, 0o1777)  # noqa: S103 - shared by the run's uids, sticky

    def argv(self, argv: list[str]) -> list[str]:
        out = bwrap_args(self.spec, self.cwd, user_ns=self.uid is None)
        if self.spec.get("network"):
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            self._fds = [info_r, info_w, block_r, block_w]
            out += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
        out.append("--")
        if self.uid is not None:
            out += [
                "/usr/bin/setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return out + argv

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._fds[1], self._fds[2]) if self._fds else ()

    # -- after the start -----------------------------------------------------------------
    def started(self, pid: int) -> None:
        """Networked steps: attach pasta to the sandbox's network namespace, then let the
        step go on (bwrap waits on its block fd until then)."""
        if not self._fds:
            return
        info_r, info_w, block_r, block_w = self._fds
        os.close(info_w)
        os.close(block_r)
        try:
            data = b""
            while b"}" not in data:
                chunk = os.read(info_r, 4096)
                if not chunk:
                    raise SandboxError("the sandbox ended before it started")
                data += chunk
            child = int(json.loads(data[: data.index(b"}") + 1])["child-pid"])
            self.pasta_pid = _attach_pasta(child)
        finally:
            os.close(info_r)
            with contextlib.suppress(OSError):
                os.write(block_w, b"1")
            os.close(block_w)
            self._fds = []

    def helpers(self) -> list[list[int | None]]:
        """The attempt's processes outside its process group, as [pid, start time]."""
        if self.pasta_pid is None:
            return []
        return [[self.pasta_pid, process_start_time(self.pasta_pid)]]

    def abandon(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def ended(self) -> None:
        """The attempt is over: stop its network, take its folder back."""
        if self.pasta_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pasta_pid, signal.SIGKILL)
            self.pasta_pid = None
        if self.uid is not None:
            with contextlib.suppress(OSError):
                chown_tree(self.cwd, os.getuid(), os.getgid(), readable=True)


def bwrap_args(
    spec: dict[str, Any], cwd: Path, *, user_ns: bool, extra: tuple[str, ...] = ()
) -> list[str]:
    """bwrap and its options for a sandbox showing what ``spec`` says, started in ``cwd``
    (the command and its ``--`` follow)."""
    out = [
        str(_tool("bwrap")),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--hostname",
        "flowdeck-step",
        *extra,
    ]
    if user_ns:  # not root: an unprivileged user namespace
        out.append("--unshare-user")
    out += _system_args()
    deny = [str(d) for d in spec.get("deny", [])]
    mounts: list[tuple[str, str]] = []
    for path in _python_paths(os.getcwd()):
        if not any(_under(d, path) for d in deny):
            mounts.append(("--ro-bind-try", path))
    mounts += [("--ro-bind-try", p) for p in spec.get("ro", [])]
    if spec.get("network"):
        mounts += [("--ro-bind-try", p) for p in _resolver_dirs()]
    mounts += [("--bind-try", p) for p in spec.get("rw", [])]
    mounts = [(k, p) for k, p in mounts if not p.startswith(("/usr/", "/etc/"))]
    targets = {p for _k, p in mounts}
    parents: set[str] = set()
    for p in targets:
        for parent in Path(p).parents:
            q = str(parent)
            skip = q in ("/", "/tmp")  # noqa: S108 - the sandbox's own
            if not skip and not any(_under(q, t) for t in targets):
                parents.add(q)
    for q in sorted(parents, key=lambda s: s.count("/")):
        out += ["--dir", q]
    for kind, p in sorted(mounts, key=lambda m: (m[1].count("/"), m[0] != "--ro-bind-try")):
        out += [kind, p, p]
    return [*out, "--chdir", str(cwd)]


def _attach_pasta(child: int) -> int | None:
    """Start pasta on the namespace of the sandbox's ``child``: outbound TCP/UDP through
    the host's sockets, no port forwarded either way, the gateway not mapped to the host's
    loopback.  Its pid (a daemon)."""
    netns = os.open(f"/proc/{child}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ns_path = f"/proc/self/fd/{netns}"  # pasta opens the namespace through this fd
    try:
        r, w = os.pipe()
        try:
            done = subprocess.run(  # noqa: S603 - our own fixed command
                [
                    str(_tool("pasta")),
                    *PASTA_OPTIONS,
                    "--no-map-gw",
                    *(["--runas", "0"] if os.geteuid() == 0 else []),
                    "-P",
                    f"/proc/self/fd/{w}",
                    "--netns",
                    ns_path,
                ],
                pass_fds=(netns, w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=10,
                check=False,
                start_new_session=True,
            )
            os.close(w)
            w = -1
            pid_text = os.read(r, 64).decode().strip()
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    finally:
        os.close(netns)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise SandboxError(f"cannot give the step network: pasta: {err[-1] if err else '?'}")
    return int(pid_text) if pid_text.isdigit() else None


_readable: set[str] = set()


def chown_tree(root: Path, uid: int, gid: int, readable: bool = False) -> None:
    """Give a folder and all in it to ``uid``; ``readable``: for the run's later steps
    (other uids) too, as they were before the sandbox."""
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                os.chown(path, uid, gid, follow_symlinks=False)
                if readable:
                    _add_read(path)


def _add_read(path: str) -> None:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return
    want = mode | 0o044 | (0o011 if stat.S_ISDIR(mode) or mode & 0o100 else 0)
    if want != mode:
        os.chmod(path, stat.S_IMODE(want))


def grant_read(root: str) -> None:
    """Readable (and searchable) by every uid: files the server keeps private on the host
    (their run's folder is 0700) that a step reads in its sandbox."""
    if not os.path.isdir(root):
        return
    with contextlib.suppress(OSError):
        _add_read(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                _add_read(os.path.join(dirpath, name))


def exit_signal(code: int) -> int | None:
    """bwrap reports a step ended by signal N as exit code 128 + N."""
    sig = code - 128
    return sig if 0 < sig < 65 and sig in signal.Signals._value2member_map_ else None
