"""The Dask executor against a real cluster of the module's own (tests/daskcluster.py):
a command and a python step as tasks on the workers, failures, stop and kill, a step no
worker can take (pending with the reason), adoption by a new executor after the first
went away, a worker killed mid-task, a scheduler restart, and a cluster on TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowdeck.executors.base import Launch, Outcome, StepProcess
from flowdeck.executors.dask import DaskConfig, DaskExecutor
from flowdeck.executors.dask_tasks import Files
from tests.daskcluster import SRC, DaskCluster, alive, dask_cluster

WAIT_S = 90.0  # a generous bound: a hung test fails instead of hanging


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskCluster]:
    with dask_cluster() as c:
        yield c


@pytest.fixture
def work(cluster: DaskCluster, request: pytest.FixtureRequest) -> Path:
    """A folder the workers reach (the cluster's, not pytest's private one)."""
    folder: Path = cluster.base / "t" / request.node.name
    folder.mkdir(parents=True)
    folder.parent.chmod(0o755)
    folder.chmod(0o777)  # (steps, as the workers' user, write their markers here)
    return folder


def executor(cluster: DaskCluster) -> DaskExecutor:
    return DaskExecutor(
        DaskConfig(cluster.address, worker_user=cluster.user, poll_s=0.3, grace_s=2)
    )


def launch(tmp: Path, key: str, *argv: str, **more: object) -> Launch:
    cwd = tmp / "work"
    logs = tmp / "logs"
    cwd.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    label = key.replace("/", "_")
    env = {
        "PATH": "/usr/bin:/bin",
        "GREETING": "hello there",
        "HOME": str(cwd),
        "PYTHONPATH": str(SRC),
    }
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
        self.news: list[tuple[str, str | None]] = []

    def on_exit(self, key: str) -> Callable[[Outcome], None]:
        def record(outcome: Outcome) -> None:
            self.by_key[key] = outcome
            self.changed.set()

        return record

    def on_news(self, job: str, waiting: str | None) -> None:
        self.news.append((job, waiting))
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not done():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.2)

    async def of(self, key: str) -> Outcome:
        await self.until(lambda: key in self.by_key)
        return self.by_key[key]


async def run_one(ex: DaskExecutor, lc: Launch) -> Outcome:
    ends = Ends()
    ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
    outcome = await ends.of(lc.key)
    ex.close()
    return outcome


async def started(lc: Launch) -> None:
    """Until the attempt's step runs on a worker (its process group is written)."""
    async with asyncio.timeout(WAIT_S):
        while not Files.of(lc.stdout).path("pid").exists():  # noqa: ASYNC110 - a file, no event
            await asyncio.sleep(0.05)


def test_a_command_runs_on_a_worker_as_its_user(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_command_runs_on_a_worker_as_its_user(cluster, work))


async def _a_command_runs_on_a_worker_as_its_user(cluster: DaskCluster, work: Path) -> None:
    lc = launch(work, "r/greet/-1/1", "sh", "-c", 'echo "$GREETING"; id -u; echo oops >&2')
    outcome = await run_one(executor(cluster), lc)
    assert outcome.ok, outcome
    out = lc.stdout.read_text().split()
    assert out[:2] == ["hello", "there"]
    expected = pwd.getpwnam(cluster.user).pw_uid if cluster.user else os.geteuid()
    assert int(out[2]) == expected != 0  # the worker's user, never root
    assert lc.stderr.read_text() == "oops\n"


def test_a_failing_command_and_a_missing_program(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_failing_command_and_a_missing_program(cluster, work))


async def _a_failing_command_and_a_missing_program(cluster: DaskCluster, work: Path) -> None:
    failed = await run_one(executor(cluster), launch(work, "r/f/-1/1", "sh", "-c", "exit 3"))
    assert failed.exit_code == 3 and not failed.ok
    missing = await run_one(executor(cluster), launch(work, "r/m/-1/1", "/no/such/program"))
    assert missing.exit_code == 127
    assert missing.error is not None and "/no/such/program" in missing.error


def test_a_python_step_returns_its_value(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_python_step_returns_its_value(cluster, work))


async def _a_python_step_returns_its_value(cluster: DaskCluster, work: Path) -> None:
    code = work / "code"
    code.mkdir()
    (code / "stepmod.py").write_text(
        "import os\n"
        "def double(x):\n"
        "    print('doubling', x)\n"
        "    return {'value': 2 * x, 'uid': os.getuid()}\n"
        "def broken(x):\n"
        "    raise ValueError(f'cannot take {x}')\n"
    )
    lc = launch(work, "r/py/-1/1", python="stepmod:double", code_dir=code, kwargs={"x": 21})
    outcome = await run_one(executor(cluster), lc)
    assert outcome.ok, outcome
    assert outcome.result["value"] == 42 and outcome.result["uid"] != 0
    assert "doubling 21" in lc.stdout.read_text()
    bad = launch(work, "r/py/-1/2", python="stepmod:broken", code_dir=code, kwargs={"x": 1})
    failed = await run_one(executor(cluster), bad)
    assert not failed.ok
    assert failed.error is not None and "ValueError: cannot take 1" in failed.error


@pytest.mark.parametrize(("act", "sig"), [("terminate", signal.SIGTERM), ("kill", 9)])
def test_stop_and_kill_signal_the_step_on_its_worker(
    cluster: DaskCluster, work: Path, act: str, sig: int
) -> None:
    asyncio.run(_stop_and_kill_signal_the_step_on_its_worker(cluster, work, act, sig))


async def _stop_and_kill_signal_the_step_on_its_worker(
    cluster: DaskCluster, work: Path, act: str, sig: int
) -> None:
    ex = executor(cluster)
    ends = Ends()
    lc = launch(work, f"r/{act}/-1/1", "sh", "-c", "echo up; sleep 60")
    proc: StepProcess = ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
    await started(lc)
    getattr(proc, act)()
    outcome = await ends.of(lc.key)
    ex.close()
    assert outcome.signal == sig and outcome.exit_code is None
    assert lc.stdout.read_text() == "up\n"


def test_a_step_no_worker_can_take_waits_with_the_reason(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_step_no_worker_can_take_waits_with_the_reason(cluster, work))


async def _a_step_no_worker_can_take_waits_with_the_reason(
    cluster: DaskCluster, work: Path
) -> None:
    ex = executor(cluster)
    ends = Ends()
    lc = launch(work, "r/big/-1/1", "true", cpus=64.0)
    proc = ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
    proc.watch(ends.on_news)
    await ends.until(lambda: bool(ends.news))
    assert ends.news[-1] == ("r/big/-1/1", "no Dask worker offers cpus=64")
    proc.terminate()  # never started: cancelled, and it never runs
    outcome = await ends.of(lc.key)
    ex.close()
    assert outcome.signal == signal.SIGTERM
    assert not Files.of(lc.stdout).path("pid").exists()


def test_a_new_executor_adopts_a_task_by_its_key(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_new_executor_adopts_a_task_by_its_key(cluster, work))


async def _a_new_executor_adopts_a_task_by_its_key(cluster: DaskCluster, work: Path) -> None:
    gate = work / "gate"
    count = work / "count"
    first = executor(cluster)
    lc = launch(
        work,
        "r/adopt/-1/1",
        "sh",
        "-c",
        f"echo ran >> {count}; while [ ! -e {gate} ]; do sleep 0.1; done; echo after",
    )
    first.start(lc, lambda outcome: None, asyncio.get_running_loop())
    await started(lc)
    first.close()  # the server goes away; the task goes on (fire and forget)
    second = executor(cluster)
    ends = Ends()
    second.adopt(lc.key, lc.stdout, ends.on_exit(lc.key), asyncio.get_running_loop())
    gate.touch()
    outcome = await ends.of(lc.key)
    second.close()
    assert outcome.ok, outcome
    assert lc.stdout.read_text() == "after\n"
    assert count.read_text() == "ran\n"  # once


def test_an_attempt_adopted_after_it_ended_is_read_from_its_exit_file(
    cluster: DaskCluster, work: Path
) -> None:
    asyncio.run(_an_attempt_adopted_after_it_ended_is_read_from_its_exit_file(cluster, work))


async def _an_attempt_adopted_after_it_ended_is_read_from_its_exit_file(
    cluster: DaskCluster, work: Path
) -> None:
    lc = launch(work, "r/ended/-1/1", "sh", "-c", "exit 4")
    await run_one(executor(cluster), lc)
    ends = Ends()
    later = executor(cluster)
    later.adopt(lc.key, lc.stdout, ends.on_exit(lc.key), asyncio.get_running_loop())
    outcome = await ends.of(lc.key)
    later.close()
    assert outcome.exit_code == 4


def test_an_attempt_the_scheduler_never_had_is_lost(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_an_attempt_the_scheduler_never_had_is_lost(cluster, work))


async def _an_attempt_the_scheduler_never_had_is_lost(cluster: DaskCluster, work: Path) -> None:
    lc = launch(work, "r/never/-1/1", "true")
    Files.of(lc.stdout).path("job").write_text(f"{lc.key}\nsome-scheduler")
    ex = executor(cluster)
    ends = Ends()
    ex.adopt(lc.key, lc.stdout, ends.on_exit(lc.key), asyncio.get_running_loop())
    outcome = await ends.of(lc.key)
    ex.close()
    assert outcome.lost


def test_a_worker_killed_mid_task_loses_the_attempt(cluster: DaskCluster, work: Path) -> None:
    asyncio.run(_a_worker_killed_mid_task_loses_the_attempt(cluster, work))


async def _a_worker_killed_mid_task_loses_the_attempt(cluster: DaskCluster, work: Path) -> None:
    ex = executor(cluster)
    ends = Ends()
    lc = launch(work, "r/victim/-1/1", "sh", "-c", "sleep 60")
    ex.start(lc, ends.on_exit(lc.key), asyncio.get_running_loop())
    await started(lc)
    host = Files.of(lc.stdout).path("started").read_text().split()
    pid = int(host[1])
    victim = next(n for n, p in cluster.procs.items() if n != "scheduler" and _holds(p.pid, pid))
    cluster.kill(victim)
    try:
        outcome = await ends.of(lc.key)
    finally:
        ex.close()
        cluster.start_worker(victim)
        cluster.wait_workers(len(cluster.names))
    assert outcome.lost, outcome
    step_pid = int(Files.of(lc.stdout).path("pid").read_text())
    assert not alive(step_pid)  # its step ended with it


def _holds(group_leader: int, pid: int) -> bool:
    """Is ``pid`` in the process group led by ``group_leader``?"""
    try:
        return os.getpgid(pid) == group_leader
    except ProcessLookupError:
        return False


def test_a_scheduler_restart_resubmits_and_never_runs_twice(
    cluster: DaskCluster, work: Path
) -> None:
    asyncio.run(_a_scheduler_restart_resubmits_and_never_runs_twice(cluster, work))


async def _a_scheduler_restart_resubmits_and_never_runs_twice(
    cluster: DaskCluster, work: Path
) -> None:
    count = work / "count"
    ex = executor(cluster)
    ends = Ends()
    running = launch(work, "r/through/-1/1", "sh", "-c", f"echo ran >> {count}; sleep 2")
    queued = launch(work, "r/queued/-1/1", "sh", "-c", "echo later", cpus=2.0)
    hog = launch(work, "r/hog/-1/1", "sh", "-c", "sleep 2", cpus=2.0)
    loop = asyncio.get_running_loop()
    for lc in (running, hog, queued):
        ex.start(lc, ends.on_exit(lc.key), loop)
    await started(running)
    await asyncio.to_thread(cluster.restart_scheduler)
    await ends.until(lambda: len(ends.by_key) == 3)
    ex.close()
    assert ends.by_key[running.key].ok, ends.by_key[running.key]
    assert count.read_text() == "ran\n"  # once, though it was submitted again
    assert ends.by_key[queued.key].ok, ends.by_key[queued.key]
    assert queued.stdout.read_text() == "later\n"


def test_a_tls_cluster_with_the_servers_certificates() -> None:
    """The dask_tls_* settings make the client's Security: a step runs on a cluster that
    takes TLS connections only."""
    with dask_cluster(workers=1, tls=True) as tls:
        work = tls.base / "work"
        work.mkdir(mode=0o777)
        work.chmod(0o777)
        config = DaskConfig(
            tls.address,
            tls_ca_file=tls.tls["ca"],
            tls_cert=tls.tls["cert"],
            tls_key=tls.tls["cert"],
            worker_user=tls.user,
            poll_s=0.3,
        )
        lc = launch(work, "r/tls/-1/1", "sh", "-c", 'echo "$GREETING over TLS"')
        outcome = asyncio.run(run_one(DaskExecutor(config), lc))
        assert outcome.ok, outcome
        assert lc.stdout.read_text() == "hello there over TLS\n"
