"""The step supervisor with a real supervisor process: steps outlive their server's
connection, are adopted again, run at most once per key, and leave no zombie."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowdeck.executors.base import Launch, Outcome
from flowdeck.executors.supervised import SupervisedExecutor
from flowdeck.executors.wire import append_record, read_record, same_process_alive


def launch(tmp: Path, key: str, *argv: str) -> Launch:
    tmp.mkdir(parents=True, exist_ok=True)
    name = key.replace("/", "_")
    return Launch(
        key=key,
        cwd=tmp,
        env={"PATH": "/usr/bin:/bin"},
        stdout=tmp / f"{name}.out",
        stderr=tmp / f"{name}.err",
        argv=argv,
        record=tmp / "attempts.jsonl",
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"  # its supervisor exits by itself once idle


def supervisor_pid(data: Path) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"supervisor --socket {data}"], capture_output=True, text=True
    ).stdout.split()
    return int(out[0])


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == pid and state == "Z":
                found.append(int(entry.name))
    return found


def test_a_step_survives_its_server_and_is_adopted_again(data: Path) -> None:
    work = data / "work"

    async def first() -> int:
        ex = SupervisedExecutor(data, idle_s=5)
        ex.connect(asyncio.get_running_loop())
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        proc = ex.start(
            launch(work, "r/s/-1/1", "sh", "-c", "sleep 1; echo ok"),
            done.set_result,
            asyncio.get_running_loop(),
        )
        for _ in range(200):
            if proc.pid is not None:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        ex.close()  # the server goes away; the step goes on
        return int(proc.pid)  # type: ignore[attr-defined]

    pid = asyncio.run(first())
    record = read_record(work / "attempts.jsonl", "r/s/-1/1")
    assert record is not None and record["pid"] == pid and "outcome" not in record
    assert same_process_alive(pid, record["start_time"])

    async def second() -> Outcome:
        ex = SupervisedExecutor(data, idle_s=5)
        state = ex.connect(asyncio.get_running_loop())
        assert "r/s/-1/1" in state.running
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        ex.adopt("r/s/-1/1", done.set_result, work / "attempts.jsonl")
        outcome = await asyncio.wait_for(done, 10)
        ex.close()
        return outcome

    outcome = asyncio.run(second())
    assert outcome.ok and (work / "r_s_-1_1.out").read_text() == "ok\n"
    deadline = time.monotonic() + 5  # the server is told first, then the record kept
    while "outcome" not in (read_record(work / "attempts.jsonl", "r/s/-1/1") or {}):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert read_record(work / "attempts.jsonl", "r/s/-1/1")["outcome"]["exit_code"] == 0  # type: ignore[index]


def test_a_key_runs_at_most_once_and_orphans_are_reaped(data: Path) -> None:
    work = data / "work"
    count = work / "count"

    async def main() -> tuple[Outcome, Outcome]:
        loop = asyncio.get_running_loop()
        ex = SupervisedExecutor(data, idle_s=5)
        ex.connect(loop)
        one = launch(work, "r/t/-1/1", "sh", "-c", f"echo x >> {count}; sleep 100 & sleep 0.3")
        first: asyncio.Future[Outcome] = loop.create_future()
        ex.start(one, first.set_result, loop)
        a = await asyncio.wait_for(first, 10)
        again: asyncio.Future[Outcome] = loop.create_future()
        ex.start(one, again.set_result, loop)  # the same attempt asked for twice
        b = await asyncio.wait_for(again, 10)
        ex.close()
        return a, b

    a, b = asyncio.run(main())
    assert a.ok and b == a  # answered with what is known, not run again
    assert count.read_text() == "x\n"
    sup = supervisor_pid(data)
    deadline = time.monotonic() + 5
    while zombies_of(sup):  # the killed `sleep 100` was reparented to the supervisor
        assert time.monotonic() < deadline, zombies_of(sup)
        time.sleep(0.05)


def test_an_attempt_its_supervisor_forgot_is_lost_and_killed(data: Path, tmp_path: Path) -> None:
    work = data / "work"
    work.mkdir(parents=True)
    # an orphan of a supervisor that died: still running, known only by its record
    orphan = subprocess.Popen(["sleep", "100"], start_new_session=True)
    from flowdeck.executors.wire import process_start_time

    record = work / "attempts.jsonl"
    append_record(
        record, {"key": "r/u/-1/1", "pid": orphan.pid, "start_time": process_start_time(orphan.pid)}
    )

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        ex = SupervisedExecutor(data, idle_s=5)
        ex.connect(loop)
        done: asyncio.Future[Outcome] = loop.create_future()
        ex.adopt("r/u/-1/1", done.set_result, record)
        outcome = await asyncio.wait_for(done, 10)
        ex.close()
        return outcome

    outcome = asyncio.run(main())
    assert outcome.lost
    assert orphan.wait(10) == -signal.SIGKILL  # killed, never left running
    assert not os.path.exists(f"/proc/{orphan.pid}/stat") or not same_process_alive(
        orphan.pid, None
    )


def test_the_attempt_journal_keeps_the_last_record_and_survives_a_cut_line(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "attempts.jsonl"
    append_record(journal, {"key": "r/a/-1/1", "pid": 10, "start_time": 5})
    append_record(journal, {"key": "r/b/-1/1", "pid": 11, "start_time": 6})
    with journal.open("ab") as f:  # the supervisor died in the middle of a write
        f.write(b'{"key":"r/a/-1/1","pid":10,"outc')
    append_record(journal, {"key": "r/a/-1/1", "pid": 10, "outcome": {"exit_code": 0}})
    assert read_record(journal, "r/a/-1/1") == {
        "key": "r/a/-1/1",
        "pid": 10,
        "outcome": {"exit_code": 0},
    }
    assert read_record(journal, "r/b/-1/1") == {"key": "r/b/-1/1", "pid": 11, "start_time": 6}
    assert read_record(journal, "r/c/-1/1") is None
    assert read_record(tmp_path / "missing.jsonl", "r/a/-1/1") is None


def test_when_the_supervisor_dies_its_attempts_are_lost_and_their_processes_killed(
    data: Path,
) -> None:
    """kill -9 of the supervisor (not the server): the running attempt is lost, and before
    the server hears so, every process of it is gone — a retry never runs beside it."""
    work = data / "work"

    async def scenario() -> tuple[Outcome, int, int]:
        loop = asyncio.get_running_loop()
        ex = SupervisedExecutor(data, idle_s=5)
        ex.connect(loop)
        done: asyncio.Future[Outcome] = loop.create_future()
        seen: list[bool] = []

        def exited(outcome: Outcome) -> None:
            seen.append(same_process_alive(leader, start) or same_process_alive(child, None))
            done.set_result(outcome)

        step = "sleep 100 & echo $! > child; exec sleep 100"
        proc = ex.start(launch(work, "r/s/-1/1", "sh", "-c", step), exited, loop)
        for _ in range(300):
            if proc.pid is not None and (work / "child").exists():  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        leader = int(proc.pid)  # type: ignore[attr-defined]
        record = read_record(work / "attempts.jsonl", "r/s/-1/1") or {}
        start = record.get("start_time")
        child = int((work / "child").read_text())
        os.kill(supervisor_pid(data), signal.SIGKILL)
        outcome = await asyncio.wait_for(done, 10)
        ex.close()
        assert seen == [False]  # gone before the server was told
        return outcome, leader, child

    outcome, leader, child = asyncio.run(scenario())
    assert outcome.lost
    assert not same_process_alive(leader, None) and not same_process_alive(child, None)


def test_a_supervisor_of_another_protocol_is_retired_and_its_steps_are_lost(
    data: Path,
) -> None:
    """Another flowdeck version's supervisor (here: one saying protocol 99) is asked to
    exit when a server connects; the step it ran is killed and reported lost (to be
    retried), and the server's own supervisor takes its place."""
    import json
    import socket
    import sys

    from flowdeck.executors.supervised import socket_path
    from flowdeck.executors.wire import encode, launch_to_wire

    work = data / "work"
    data.mkdir(parents=True)
    sock_path = socket_path(data)
    code = (
        "import sys; from flowdeck.executors import wire; wire.PROTOCOL = 99; "
        "from flowdeck.executors.supervisor import main; sys.exit(main(sys.argv[1:]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, "--socket", str(sock_path), "--lock",
         str(data / "supervisor.lock"), "--idle-s", "5", "--daemon"],
        check=True, timeout=30,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not sock_path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        replies = s.makefile()
        s.sendall(encode({"op": "hello", "protocol": 1}))
        hello = json.loads(replies.readline())
        assert hello["protocol"] == 99
        old = hello["pid"]
        step = launch(work, "r/v/-1/1", "sleep", "100")
        s.sendall(encode({"op": "start", "launch": launch_to_wire(step)}))
        started = json.loads(replies.readline())
        assert started["op"] == "started"
        replies.close()

    async def main() -> tuple[int, Outcome]:
        loop = asyncio.get_running_loop()
        ex = SupervisedExecutor(data, idle_s=5)
        state = ex.connect(loop)
        done: asyncio.Future[Outcome] = loop.create_future()
        ex.adopt("r/v/-1/1", done.set_result, work / "attempts.jsonl")
        outcome = await asyncio.wait_for(done, 10)
        ex.close()
        return state.pid, outcome

    pid, outcome = asyncio.run(main())
    assert pid != old and not same_process_alive(old, None)
    assert outcome.lost
    assert not same_process_alive(started["pid"], started["start_time"])


def wait_dead(pid: int) -> None:
    """Block until ``pid`` has exited (gone, or a zombie)."""
    for _ in range(500):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} still runs")


def test_a_start_that_finds_the_supervisor_gone_is_lost_after_it_returns(data: Path) -> None:
    """The supervisor was killed and the server has not noticed yet: the next start's send
    finds it gone.  Its loss is told after ``start`` returned the attempt's process (the
    scheduler keeps that process until it hears of the end: told within ``start``, the
    end came first and the step was never retried)."""
    work = data / "work"

    async def scenario() -> tuple[list[str], Outcome]:
        loop = asyncio.get_running_loop()
        ex = SupervisedExecutor(data, idle_s=5)
        ex.connect(loop)
        pid = supervisor_pid(data)
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)  # its socket closed; the loop does not run meanwhile
        order: list[str] = []
        done: asyncio.Future[Outcome] = loop.create_future()

        def exited(outcome: Outcome) -> None:
            order.append("exited")
            done.set_result(outcome)

        ex.start(launch(work, "r/s/-1/1", "true"), exited, loop)
        order.append("returned")
        outcome = await asyncio.wait_for(done, 10)
        ex.close()
        return order, outcome

    order, outcome = asyncio.run(scenario())
    assert order == ["returned", "exited"]
    assert outcome.lost
