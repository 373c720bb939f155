"""A single-node Slurm cluster of a test's own, from Debian's ``slurm-wlm`` and ``munge``.

Everything lives in a fresh directory under /tmp: a generated munge key and munged's
socket, ``slurm.conf`` (this machine's CPUs and memory, ``proctrack/linuxproc``,
``task/none``, no accounting, ``SlurmUser=root``), slurmctld's state and slurmd's spool,
their logs. slurmctld and slurmd listen on free ports of 127.0.0.1; all three daemons run
in the foreground as this process's children, so :meth:`SlurmCluster.destroy` ends them
and nothing of the machine's own Slurm or munge (if any) is touched. Clients find the
cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`).

Slurm's daemons run as root here (``SlurmUser=root``, jobs run as their submitter), so
the cluster needs root; without it, or without the binaries, the fixture skips."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol")
START_TIMEOUT_S = 60.0


def _binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS) if _binary(name) is None]
    if absent:
        return (
            f"Slurm/munge binaries not found ({', '.join(absent)}): apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "a private Slurm cluster needs root (SlurmUser=root)"
    return None


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    """One cluster: its files at construction, its daemons with :meth:`start`."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="flowdeck-slurm-", dir="/tmp"))
        self.base.chmod(0o755)
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mb = max(256, _memory_mb() - 1024)
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.munge_dir = self.base / "munge"
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o711)  # its socket is reached by path
        self.key = self.munge_dir / "munge.key"
        self.key.write_bytes(secrets.token_bytes(1024))
        self.key.chmod(0o600)
        self.socket = self.munge_dir / "munge.socket"
        self.state = self.base / "state"
        self.spool = self.base / "spool"
        for path in (self.state, self.spool):
            path.mkdir(mode=0o755)
        self.conf = self.base / "slurm.conf"
        self._write_conf()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, flowdeck's server) needs to reach the cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        lines = [
            "ClusterName=flowdeck-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # a requeued job waits cred_expire (default 120 s) before it may run again
            f"AuthInfo=socket={self.socket},cred_expire=10",
            f"StateSaveLocation={self.state}",
            f"SlurmdSpoolDir={self.spool}/%n",
            f"SlurmctldPidFile={self.base}/slurmctld.pid",
            f"SlurmdPidFile={self.base}/slurmd.pid",
            f"SlurmctldLogFile={self.base}/slurmctld.log",
            f"SlurmdLogFile={self.base}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "DefMemPerCPU=64",
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "MinJobAge=30",
            "KillWait=5",
            "InactiveLimit=0",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "MessageTimeout=20",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=NO",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    # -- daemons -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.out", "ab")  # noqa: SIM115 - held by the child
        try:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            log.close()

    def start_munge(self) -> None:
        munged = _binary("munged")
        assert munged is not None
        self._spawn(
            "munged",
            [
                munged,
                "--foreground",
                "--force",
                f"--socket={self.socket}",
                f"--key-file={self.key}",
                f"--pid-file={self.munge_dir}/munged.pid",
                f"--log-file={self.munge_dir}/munged.log",
                f"--seed-file={self.munge_dir}/munged.seed",
            ],
        )
        self._wait(lambda: self.socket.exists(), "munged's socket")

    def start_ctld(self, clear: bool = True) -> None:
        """slurmctld; ``clear``: without the saved state (the first start only)."""
        slurmctld = _binary("slurmctld")
        assert slurmctld is not None
        self._spawn(
            "slurmctld", [slurmctld, "-D", *(["-c"] if clear else []), "-f", str(self.conf)]
        )
        self._wait(self._ctld_up, "slurmctld to answer")

    def start_slurmd(self) -> None:
        slurmd = _binary("slurmd")
        assert slurmd is not None
        self._spawn("slurmd", [slurmd, "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(self._node_idle, f"node {self.node} to be idle")

    def start(self) -> None:
        self.start_munge()
        self.start_ctld(clear=True)
        self.start_slurmd()

    def stop_daemon(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart_ctld(self) -> None:
        """Stop slurmctld and start it again from its saved state (jobs go on meanwhile)."""
        self.stop_daemon("slurmctld")
        self.start_ctld(clear=False)

    def hold_every_cpu(self) -> str:
        """Submit a job (not flowdeck's) that takes every CPU of the node for 5 minutes:
        its id, to scancel when done."""
        blocker = self.command(
            "sbatch",
            "--parsable",
            "--job-name=not-flowdeck",
            f"--cpus-per-task={self.cpus}",
            "--output=/dev/null",
            "--wrap=sleep 300",
        )
        assert blocker.returncode == 0, blocker.stderr
        return blocker.stdout.strip()

    def command(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **self.env},
        )

    def _ctld_up(self) -> bool:
        return self.command("scontrol", "ping", timeout=10).stdout.count("UP") > 0

    def _node_idle(self) -> bool:
        done = self.command("sinfo", "-h", "-n", self.node, "-o", "%T", timeout=10)
        return done.returncode == 0 and done.stdout.strip().rstrip("*") == "idle"

    def _wait(self, ready: object, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gave up waiting for {what}:\n{self.logs()}")

    def logs(self, lines: int = 30) -> str:
        out = []
        for name in ("munged.out", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.base / name
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(out)

    def destroy(self) -> None:
        """Cancel what is left, stop the daemons, remove the files."""
        if "slurmctld" in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.command("scancel", "--full", "--user=root", timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):
            self.stop_daemon(name)
        if not os.environ.get("FLOWDECK_TEST_KEEP_SLURM"):
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A started cluster, destroyed at the end; skips when Slurm or root is missing."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
