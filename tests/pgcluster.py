"""A PostgreSQL cluster of a test's own, from Debian's packages, that the test may stop,
start, hang (SIGSTOP) and resume without touching the shared cluster on 5432.

Debian's ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root (CI runs as root):
as root they run as the ``postgres`` user through ``runuser``; otherwise as the current
user. The cluster lives in a fresh directory under /tmp that its user owns: the data
directory, the log and the unix socket; it listens on 127.0.0.1 on a free port, with trust
authentication."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import free_port

PG_ROOT = Path("/usr/lib/postgresql")
TOOLS = ("initdb", "pg_ctl", "postgres")


def find_bindir() -> Path | None:
    """The newest installed version's bin directory that has every tool, if any."""
    found = []
    if PG_ROOT.is_dir():
        for version in PG_ROOT.iterdir():
            bindir = version / "bin"
            if re.fullmatch(r"\d+(\.\d+)?", version.name) and all(
                (bindir / tool).is_file() for tool in TOOLS
            ):
                found.append((tuple(int(p) for p in version.name.split(".")), bindir))
    return max(found)[1] if found else None


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


class PgCluster:
    """One cluster: ``initdb`` at construction, started with :meth:`start`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        if self.as_root and shutil.which("runuser") is None:
            raise RuntimeError("running as root needs runuser (util-linux) to drop to postgres")
        self.base = Path(tempfile.mkdtemp(prefix="flowdeck-pg-", dir="/tmp"))
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.data = self.base / "data"
        self.logfile = self.base / "postgres.log"
        self.port = free_port()
        self.stopped: list[int] = []
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.base, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        """The SQLAlchemy URL of database ``dbname``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new, empty database: its URL."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        """A clean, fast shutdown: sessions are ended, connections refused until start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def postmaster(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def hang(self) -> None:
        """SIGSTOP the postmaster, then every process it started (it cannot start more
        while stopped): connections and queries wait, answered by no one."""
        pid = self.postmaster()
        assert pid is not None, "the cluster is not running"
        os.kill(pid, signal.SIGSTOP)
        self.stopped = [pid]
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                self.stopped.append(child)

    def resume(self) -> None:
        """SIGCONT every process :meth:`hang` stopped (and any child of the postmaster)."""
        pid = self.postmaster()
        more = _children(pid) if pid is not None else []
        for target in dict.fromkeys([*self.stopped[1:], *more, *self.stopped[:1]]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGCONT)
        self.stopped = []

    def destroy(self) -> None:
        """Stop it at once, whatever its state, and remove its files."""
        self.resume()
        if self.postmaster() is not None:
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, destroyed at the end; skips the test when PostgreSQL's server
    binaries are missing."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL's server binaries (initdb, pg_ctl, postgres) not found under "
            f"{PG_ROOT}/VERSION/bin: apt-get install postgresql"
        )
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
