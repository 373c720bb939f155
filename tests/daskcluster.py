"""A Dask cluster of a test's own: ``dask scheduler`` and two ``dask worker`` processes
from the ``distributed`` package, on free ports of 127.0.0.1.

Each worker declares ``--resources "cpus=2,memory=2GiB"`` (in bytes) and runs without a
nanny, so killing its process is a worker lost mid-task.  Workers never run as root (the
Dask executor's rule): as root, they run as the step user ``flowdeck-step``; the cluster
skips when there is no such user to run them as.  Their files live in a fresh folder
under /tmp that :meth:`DaskCluster.destroy` removes."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

WORKER_USER = "flowdeck-step"
WORKER_CPUS = 2
WORKER_MEMORY = 2 * 2**30
START_TIMEOUT_S = 60.0
SRC = Path(__file__).resolve().parents[1] / "src"


def _reachable_by_others(path: Path) -> bool:
    """Can a user other than root (neither owner nor group) reach ``path``?"""
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents] if p.is_dir())


def _closed_top(path: Path) -> Path:
    """The highest folder above (or at) ``path`` that others cannot pass through."""
    return next(p for p in [*reversed(path.parents), path] if not os.stat(p).st_mode & 0o001)


def _blocked() -> list[Path]:
    """What the workers need (the interpreter, the virtual environment, this checkout)
    that the step user cannot reach, parents first."""
    needed = {
        Path(os.path.realpath(sys.executable)).parents[1],
        Path(sys.prefix).resolve(),
        SRC.parent,
    }
    return sorted((p for p in needed if not _reachable_by_others(p)), key=lambda p: len(p.parts))


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "the distributed package is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(WORKER_USER)
        except KeyError:
            return f"Dask workers must not run as root, and there is no user {WORKER_USER}"
        blocked = _blocked()
        if blocked and shutil.which("bwrap") is None:
            return f"{WORKER_USER} cannot reach {blocked[0]}, and there is no bwrap to show it"
    return None


def alive(pid: int) -> bool:
    """Does ``pid`` still run (not gone, not a zombie waiting for its reaper)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class DaskCluster:
    """One scheduler and its workers (started with :meth:`start`)."""

    def __init__(self, workers: int = 2, tls: bool = False) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="flowdeck-dask-", dir="/tmp"))
        self.base.chmod(0o755)
        self.port = free_port()
        self.address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{self.port}"
        self.tls: dict[str, Path] = self._certificates() if tls else {}
        self.names = [f"w{i}" for i in range(1, workers + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.user: str | None = WORKER_USER if os.geteuid() == 0 else None
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "DASK_DISTRIBUTED__WORKER__DAEMON": "false",
            "HOME": str(self.base),
        }
        self.env.pop("DASK_SCHEDULER_ADDRESS", None)

    def _spawn(self, name: str, argv: list[str], as_user: bool) -> None:
        if as_user and self.user is not None:
            argv = [*self._as_user(), *argv]
        log = open(self.base / f"{name}.out", "ab")  # noqa: SIM115 - held by the child
        try:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.base,
                start_new_session=True,
            )
        finally:
            log.close()

    def _certificates(self) -> dict[str, Path]:
        """A CA of the cluster's own and one certificate for 127.0.0.1 that the scheduler,
        the workers and the client all present (``trustme``)."""
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        files = {"ca": self.base / "ca.pem", "cert": self.base / "cert.pem"}
        ca.cert_pem.write_to_path(str(files["ca"]))
        cert.private_key_and_cert_chain_pem.write_to_path(str(files["cert"]))
        for path in files.values():
            path.chmod(0o644)  # (the workers' user reads them; a test's throwaway CA)
        return files

    def _tls_options(self) -> list[str]:
        if not self.tls:
            return []
        return [
            "--tls-ca-file",
            str(self.tls["ca"]),
            "--tls-cert",
            str(self.tls["cert"]),
            "--tls-key",
            str(self.tls["cert"]),
        ]

    def security(self) -> Any:
        """The client's ``Security`` for a TLS cluster (None for a plain one)."""
        if not self.tls:
            return None
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=str(self.tls["ca"]),
            tls_client_cert=str(self.tls["cert"]),
            tls_client_key=str(self.tls["cert"]),
            require_encryption=True,
        )

    def _as_user(self) -> list[str]:
        """The command that runs a worker as the step user: ``setpriv``; where that user
        cannot reach the interpreter, the virtual environment or this checkout (under
        /root, say), inside ``bwrap`` that shows them, read-only, under empty open folders
        in place of the closed ones (the machine's files otherwise as they are)."""
        assert self.user is not None
        entry = pwd.getpwnam(self.user)
        drop = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--",
        ]
        blocked = _blocked()
        if not blocked:
            return drop
        argv = ["bwrap", "--dev-bind", "/", "/"]
        made: set[Path] = set()
        for path in blocked:
            top = _closed_top(path)
            if top not in made:
                argv += ["--perms", "0755", "--tmpfs", str(top)]
                made.add(top)
            for folder in reversed(path.parents):
                if folder.is_relative_to(top) and folder not in made:
                    argv += ["--perms", "0755", "--dir", str(folder)]
                    made.add(folder)
            argv += ["--ro-bind", str(path), str(path)]
            made.add(path)
        return [*argv, "--", *drop]

    def start_scheduler(self) -> None:
        self._spawn(
            "scheduler",
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
                "--no-show",
                *self._tls_options(),
            ],
            as_user=False,
        )
        self._wait(self._scheduler_up, "the scheduler to listen")

    def start_worker(self, name: str) -> None:
        folder = self.base / name
        folder.mkdir(exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                self.address,
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "4",
                "--nworkers",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--resources",
                f"cpus={WORKER_CPUS},memory={WORKER_MEMORY}",
                "--local-directory",
                str(folder),
                "--death-timeout",
                "120",
                *self._tls_options(),
            ],
            as_user=True,
        )

    def start(self) -> None:
        self.start_scheduler()
        for name in self.names:
            self.start_worker(name)
        self.wait_workers(len(self.names))

    def workers(self) -> int:
        from distributed import Client

        with Client(  # type: ignore[no-untyped-call]
            self.address, timeout=10, set_as_default=False, security=self.security()
        ) as client:
            return len(client.scheduler_info(n_workers=-1)["workers"])

    def wait_workers(self, count: int) -> None:
        self._wait(lambda: self.workers() >= count, f"{count} workers")

    def kill(self, name: str) -> None:
        """SIGKILL a process of the cluster (a worker lost mid-task, a scheduler crash):
        its process group (bwrap and the worker in it)."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart_scheduler(self) -> None:
        """The scheduler crashes (SIGKILL) and starts again, forgetting every task; its
        workers close when they lose it, and are started again (as a service manager
        would)."""
        self.kill("scheduler")
        deadline = time.monotonic() + 30
        for name in self.names:
            proc = self.procs.get(name)
            while proc is not None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            self.stop(name)
        self.start_scheduler()
        for name in self.names:
            self.start_worker(name)
        self.wait_workers(len(self.names))

    def _scheduler_up(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _wait(self, ready: object, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError, TimeoutError):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gave up waiting for {what}:\n{self.logs()}")

    def logs(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.base.glob("*.out")):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def destroy(self) -> None:
        for name in [*self.names, "scheduler"]:
            self.stop(name)
        for name in list(self.procs):
            self.stop(name)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def dask_cluster(workers: int = 2, tls: bool = False) -> Iterator[DaskCluster]:
    """A started cluster, destroyed at the end; skips when it cannot start here."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    cluster = DaskCluster(workers, tls)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
