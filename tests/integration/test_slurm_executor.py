"""The Slurm executor against a real single-node cluster of the module's own
(tests/slurmcluster.py): one batch job per attempt, its end from the wrapper's exit file,
stop, kill, a cancel by someone else, a timeout, and adoption by a new executor."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowdeck.executors import slurm
from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.slurm import SlurmConfig, SlurmExecutor, SlurmJob
from flowdeck.executors.slurm_jobs import Files, JobOptions
from tests.slurmcluster import SlurmCluster, slurm_cluster

WAIT_S = 90.0  # a generous bound: a hung test fails instead of hanging


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with slurm_cluster() as c:
        saved = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = c.env["SLURM_CONF"]
        try:
            yield c
        finally:
            if saved is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = saved


def executor(name: str) -> SlurmExecutor:
    return SlurmExecutor(SlurmConfig(JobOptions(job_name=name), poll_s=0.3, grace_s=2))


def launch(tmp: Path, key: str, *argv: str, **more: object) -> Launch:
    cwd = tmp / "work"
    logs = tmp / "logs"
    cwd.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    label = key.replace("/", "_")
    env = {"PATH": "/usr/bin:/bin", "GREETING": "hello there", "HOME": str(cwd)}
    return Launch(
        key=key,
        cwd=cwd,
        env=env,
        stdout=logs / f"{label}.stdout",
        stderr=logs / f"{label}.stderr",
        argv=argv,
        **more,  # type: ignore[arg-type]
    )


class Ends:
    """Outcomes by attempt key, with an event set at each."""

    def __init__(self) -> None:
        self.by_key: dict[str, Outcome] = {}
        self.changed = asyncio.Event()

    def on_exit(self, key: str) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            self.by_key[key] = outcome
            self.changed.set()

        return record

    async def of(self, key: str) -> Outcome:
        async with asyncio.timeout(WAIT_S):
            while key not in self.by_key:
                self.changed.clear()
                await self.changed.wait()
        return self.by_key[key]


async def run_one(ex: SlurmExecutor, lc: Launch, act: str | None = None) -> Outcome:
    ends = Ends()
    proc = ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
    if act is not None:
        await started(lc)
        getattr(proc, act)()
    outcome = await ends.of(lc.key)
    ex.close()
    return outcome


async def started(lc: Launch) -> None:
    """Until the step itself wrote its first line."""
    async with asyncio.timeout(WAIT_S):
        while not lc.stdout.exists() or b"started" not in lc.stdout.read_bytes():  # noqa: ASYNC110 - a file, no event
            await asyncio.sleep(0.05)


def test_a_step_runs_with_its_environment_only(cluster: SlurmCluster, tmp_path: Path) -> None:
    lc = launch(
        tmp_path,
        "run_a/echo/-1/1",
        "/bin/sh",
        "-c",
        'echo "$GREETING from $(pwd)"; env | sort >&2; exit 0',
    )
    outcome = asyncio.run(run_one(executor("fd-env"), lc))
    assert outcome.ok, outcome
    assert lc.stdout.read_text() == f"hello there from {lc.cwd}\n"
    names = {line.split("=", 1)[0] for line in lc.stderr.read_text().splitlines()}
    # what the shell itself adds (PWD, SHLVL, _) and nothing of Slurm's or the server's
    assert (
        {"PATH", "GREETING", "HOME"} <= names <= {"PATH", "GREETING", "HOME", "PWD", "SHLVL", "_"}
    )
    files = Files.of(lc.stdout)
    assert not files.path("env").exists()  # it may hold secrets: gone with the attempt
    assert not files.path("argv").exists()
    assert files.job_id() is not None and files.job_id().isdigit()  # type: ignore[union-attr]


def test_exit_codes_and_signals(cluster: SlurmCluster, tmp_path: Path) -> None:
    ex = executor("fd-codes")
    failed = asyncio.run(run_one(ex, launch(tmp_path, "r/f/-1/1", "/bin/sh", "-c", "exit 3")))
    assert (failed.exit_code, failed.signal, failed.ok) == (3, None, False)
    lc = launch(tmp_path, "r/s/-1/1", "/bin/sh", "-c", "kill -USR1 $$")
    signalled = asyncio.run(run_one(ex, lc))
    assert (signalled.exit_code, signalled.signal) == (None, signal.SIGUSR1)
    missing = asyncio.run(run_one(ex, launch(tmp_path, "r/m/-1/1", "/no/such/program")))
    assert missing.exit_code == 127


def test_timeout(cluster: SlurmCluster, tmp_path: Path) -> None:
    lc = launch(tmp_path, "r/t/-1/1", "/bin/sh", "-c", "echo started; sleep 300", walltime_s=1.5)
    outcome = asyncio.run(run_one(executor("fd-timeout"), lc))
    assert outcome.timed_out and not outcome.ok, outcome


@pytest.mark.parametrize(("act", "sig"), [("terminate", signal.SIGTERM), ("kill", None)])
def test_stop_and_kill(cluster: SlurmCluster, tmp_path: Path, act: str, sig: int | None) -> None:
    script = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 300 & wait"
    lc = launch(tmp_path, f"r/{act}/-1/1", "/bin/sh", "-c", script)
    outcome = asyncio.run(run_one(executor(f"fd-{act}"), lc, act))
    assert outcome.exit_code is None and outcome.error is None, outcome
    if sig is not None:
        assert outcome.signal == sig
        assert "got TERM" in lc.stdout.read_text()  # the step itself saw the TERM
    assert Files.of(lc.stdout).stop_asked() == ("stop" if act == "terminate" else "kill")


def test_a_job_cancelled_outside_flowdeck(cluster: SlurmCluster, tmp_path: Path) -> None:
    lc = launch(tmp_path, "r/c/-1/1", "/bin/sh", "-c", "echo started; sleep 300")

    async def scenario() -> Outcome:
        ex = executor("fd-outside")
        ends = Ends()
        proc = ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
        await started(lc)
        assert isinstance(proc, SlurmJob) and proc.job_id is not None
        done = cluster.command("scancel", proc.job_id)
        assert done.returncode == 0, done.stderr
        outcome = await ends.of(lc.key)
        ex.close()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.error is not None and "cancelled in Slurm" in outcome.error, outcome


def test_a_new_executor_adopts_running_and_ended_jobs(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    """The first executor goes away while its jobs run; a second one follows them by id."""
    gate = tmp_path / "gate"
    wait_gate = f"echo started; while [ ! -e {gate} ]; do sleep 0.1; done; exit 5"
    running = launch(tmp_path, "r/live/-1/1", "/bin/sh", "-c", wait_gate)
    ended = launch(tmp_path, "r/done/-1/1", "/bin/sh", "-c", "echo started; exit 0")

    async def first() -> None:
        ex = executor("fd-adopt")
        loop = asyncio.get_running_loop()
        procs: list[StepProcess] = [ex.start(lc, lambda o: None, loop) for lc in (running, ended)]
        await started(running)
        await started(ended)
        assert all(isinstance(p, SlurmJob) and p.job_id for p in procs)
        ex.close()  # the server is gone; the jobs go on

    async def second() -> list[Outcome]:
        ex = executor("fd-adopt")
        loop = asyncio.get_running_loop()
        ends = Ends()
        for lc in (running, ended):
            ex.adopt(lc.key, lc.stdout, ends.on_exit(lc.key), loop)
        done = await ends.of(ended.key)
        assert running.key not in ends.by_key
        gate.touch()
        live = await ends.of(running.key)
        ex.close()
        return [live, done]

    asyncio.run(first())
    live, done = asyncio.run(second())
    assert (live.exit_code, done.exit_code) == (5, 0)


def test_a_job_that_never_reached_slurm_is_lost(cluster: SlurmCluster, tmp_path: Path) -> None:
    lc = launch(tmp_path, "r/never/-1/1", "/bin/true")

    async def scenario() -> Outcome:
        ex = executor("fd-never")
        ends = Ends()
        ex.adopt(lc.key, lc.stdout, ends.on_exit(lc.key), asyncio.get_running_loop())
        outcome = await ends.of(lc.key)
        ex.close()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.lost and outcome.error == "it never reached Slurm", outcome


def test_the_start_up_probe(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job must read what the server wrote into its data directory: it can here; a
    refused submission and a probe that waits too long in the queue say why (the latter
    leaves no job behind).  Once passed, a start with the same settings does not probe
    again (a restart must not wait for a CPU of a full cluster)."""
    assert executor("fd-probe").check_shared(tmp_path / "data") is None
    assert not list((tmp_path / "data" / "slurm-probe").iterdir())
    refused = SlurmExecutor(SlurmConfig(JobOptions(job_name="fd-probe", partition="nope")))
    problem = refused.check_shared(tmp_path / "data")
    assert problem is not None and problem.startswith("the probe job failed:")
    assert "partition" in problem
    blocker = cluster.hold_every_cpu()
    try:
        monkeypatch.setattr(slurm, "PROBE_TIMEOUT_S", 3.0)
        problem = executor("fd-probe-wait").check_shared(tmp_path / "data")
        assert problem is not None and "did not end within 3 s" in problem, problem
        left = cluster.command("squeue", "-h", "--name=fd-probe-wait-probe", "-t", "PD,R")
        assert left.stdout.strip() == ""
        assert executor("fd-probe").check_shared(tmp_path / "data") is None  # passed before
    finally:
        cluster.command("scancel", blocker)


def test_only_an_operator_may_freeze(cluster: SlurmCluster, tmp_path: Path) -> None:
    """The server's user may freeze (``scontrol suspend``) only as root or the cluster's
    SlurmUser: the cluster's own configuration says so for root and not for an ordinary
    user (whose server's freezes are refused with a 409), and Slurm indeed refuses that
    user's suspend."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to ask Slurm as another user (flowdeck-step)")
    try:
        step_user = pwd.getpwnam("flowdeck-step")
    except KeyError:
        pytest.skip("needs the user flowdeck-step (docs/operations.md: the step user)")
    assert executor("fd-rights").operator_rights()  # root, against this cluster
    config = cluster.command("scontrol", "show", "config").stdout
    assert "SlurmUser" in config
    assert slurm.may_suspend(config, 0, "root")
    assert not slurm.may_suspend(config, step_user.pw_uid, "flowdeck-step")
    drop = ["setpriv", "--reuid=flowdeck-step", "--regid=flowdeck-step", "--clear-groups"]
    job = cluster.hold_every_cpu()  # a running job of root's
    try:
        refused = subprocess.run(
            [*drop, "scontrol", "suspend", job],
            env={**os.environ, **cluster.env},
            cwd="/",
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0, refused.stderr
        assert "Access/permission denied" in refused.stderr, refused.stderr  # Slurm's own
    finally:
        cluster.command("scancel", job)


FAKE_SBATCH = """#!/bin/sh
# counts the sbatch calls running at once (no cluster: this test needs none)
d={d}
flock "$d/lock" sh -c 'n=$(($(cat "$1/now") + 1)); echo $n > "$1/now";
  [ $n -gt $(cat "$1/max") ] && echo $n > "$1/max"; true' - "$d"
sleep 0.3
flock "$d/lock" sh -c 'echo $(($(cat "$1/now") - 1)) > "$1/now"' - "$d"
echo $$
"""


def test_a_wide_scatter_runs_few_slurm_commands_at_once(tmp_path: Path) -> None:
    """Twenty steps started at once: at most COMMANDS_AT_ONCE sbatch at a time."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("sbatch", FAKE_SBATCH.format(d=tmp_path)),
        ("squeue", "#!/bin/sh\nexit 0\n"),  # every job gone: each attempt ends lost
        ("sacct", "#!/bin/sh\nexit 1\n"),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "now").write_text("0")
    (tmp_path / "max").write_text("0")
    ex = SlurmExecutor(
        SlurmConfig(JobOptions(job_name="fd-fake"), bin_dir=bin_dir, poll_s=0.1, grace_s=1)
    )

    async def scenario() -> list[Outcome]:
        ends = Ends()
        loop = asyncio.get_running_loop()
        keys = [f"r/wide{i}/-1/1" for i in range(20)]  # (a scatter's would be one array)
        for key in keys:
            ex.start(launch(tmp_path, key, "/bin/true"), ends.on_exit(key), loop)
        outcomes = [await ends.of(key) for key in keys]
        ex.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(o.lost for o in outcomes), outcomes
    most = int((tmp_path / "max").read_text())
    assert 1 <= most <= slurm.COMMANDS_AT_ONCE, most


def test_a_cancel_is_asked_again_while_slurmctld_is_down(tmp_path: Path) -> None:
    """scancel fails twice as if slurmctld were down, then works: the kill is not lost."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scancel-calls"
    scancel = (
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f"[ $(wc -l < {calls}) -ge 3 ] && exit 0\n"
        'echo "scancel: error: Unable to contact slurm controller (connect failure)" >&2\n'
        "exit 1\n"
    )
    for name, text in (
        ("sbatch", "#!/bin/sh\necho 77\n"),
        ("squeue", "#!/bin/sh\necho '77|RUNNING|None|r/k/-1/1'\n"),
        ("scancel", scancel),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    ex = SlurmExecutor(
        SlurmConfig(JobOptions(job_name="fd-fake"), bin_dir=bin_dir, poll_s=0.05, grace_s=1)
    )

    async def scenario() -> None:
        lc = launch(tmp_path, "r/k/-1/1", "/bin/true")
        proc = ex.start(lc, lambda o: None, asyncio.get_running_loop())
        assert isinstance(proc, SlurmJob)
        async with asyncio.timeout(WAIT_S):
            while proc.job_id is None:  # noqa: ASYNC110 - sbatch's answer, no event
                await asyncio.sleep(0.01)
            proc.kill()
            while not calls.exists() or len(calls.read_text().splitlines()) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        ex.close()

    asyncio.run(scenario())
    assert calls.read_text().splitlines() == ["77"] * 3
