"""The faults of the parts flowdeck stands on, replayed against a real ``flowdeck serve``:
its PostgreSQL stopped or hung (shorter and longer than the lease), its step supervisor
killed, its disk full, and the server killed between a pause's or resume's signals and
their commit. After each, every run must end as it should and :func:`tests.crashkit.audit`
must find no violation (steps recorded as they really ran, no overlap, gapless events,
intact products, no process left).

Each scenario runs once per seed: ``FLOWDECK_TEST_FAULT_SEEDS`` seeds (1..N, default 3),
or only ``FLOWDECK_TEST_CRASH_SEED``. A failure names its seed; the seed replays it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.crashkit import (
    API,
    Server,
    add_workflows,
    audit,
    base_env,
    call,
    guarded,
    run_processes,
    seeds,
    serving,
    sign_up,
    states_of,
    submit,
    tally,
    wait_ended,
    wait_until,
)
from tests.helpers import fill, small_tmpfs
from tests.pgcluster import PgCluster, pg_cluster

seeded = pytest.mark.parametrize("seed", seeds(), ids=lambda s: f"seed{s}")
LEASE_TTL_S = 3
# runs end within ~11 s of a fault here: one that has not after this long never will
DEADLINE_S = 60


def replay(seed: int) -> str:
    return f"seed {seed} (FLOWDECK_TEST_CRASH_SEED={seed} replays it)"


def begin(tmp: Path, seed: int) -> tuple[random.Random, Path]:
    """A scenario's start: its seed said, its random source, its markers' folder (outside
    the data directory)."""
    print(replay(seed))
    counters = tmp / "counters"
    counters.mkdir()
    return random.Random(seed), counters


def settings(data_dir: Path, **more: str) -> dict[str, str]:
    """A short lease, and two slots so that some runs queue while others run."""
    return {
        **base_env(data_dir),
        "FLOWDECK_LEASE_TTL_S": str(LEASE_TTL_S),
        "FLOWDECK_SLOTS": "2",
        **more,
    }


def workflows(
    counters: Path, seconds: float = 0.25, retries: int = 0
) -> dict[str, tuple[str, str]]:
    """name -> (workflow text, the state its runs end in without faults): a chain a→b→c
    passing a file along, a fan-out of three and a join, a step that fails (after one
    retry). ``retries`` more attempts for every step of the chain and the fan-out."""

    def step(then: str = "true", wait: float = seconds) -> str:
        return json.dumps(["sh", "-c", guarded(counters, wait, then)])

    again = f", retries: {{count: {retries}, backoff: 0.1}}" if retries else ""
    chain = (
        'name: chain\nversion: "1"\nsteps:\n'
        f"  a: {{run: {step('echo a > out')}, outputs: {{f: {{path: out}}}}{again}}}\n"
        f"  b: {{run: {step('cat ../a/out > out; echo b >> out')}, needs: [a],"
        f" outputs: {{f: {{path: out}}}}{again}}}\n"
        f"  c: {{run: {step('cat ../b/out > out; echo c >> out')}, needs: [b],"
        f" outputs: {{f: {{path: out}}}}{again}}}\n"
    )
    fanout = (
        'name: fanout\nversion: "1"\ninputs:\n  n: {type: array, items: int, default: [1,2,3]}\n'
        "steps:\n  t:\n    foreach: ${{ inputs.n }}\n"
        f"    run: {step('echo $FLOWDECK_INDEX > out')}\n"
        f"    outputs: {{f: {{path: out}}}}\n"
        + (f"    retries: {{count: {retries}, backoff: 0.1}}\n" if retries else "")
        + f"  join: {{run: {step(wait=0.1)}, needs: [t]{again}}}\n"
    )
    fails = (
        'name: fails\nversion: "1"\nsteps:\n'
        f"  s: {{run: {step('exit 3', 0.1)}, retries: {{count: 1, backoff: 0.1}}}}\n"
    )
    return {
        "chain": (chain, "succeeded"),
        "fanout": (fanout, "succeeded"),
        "fails": (fails, "failed"),
    }


MIX = ["chain"] * 4 + ["fanout"] * 2 + ["fails"]


def launch(
    server: Server, token: str, shapes: dict[str, tuple[str, str]], names: list[str]
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Add the workflows, queue a run of each name: (run id -> expected state, run id ->
    name)."""
    add_workflows(server, token, [text for text, _ in shapes.values()])
    expected: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for name in names:
        run_id = submit(server, token, f"{name}@1")
        expected[run_id] = shapes[name][1]
        kinds[run_id] = name
    return expected, kinds


def running_and_queued(server: Server, token: str, run_ids: list[str]) -> bool:
    states = set(states_of(server, token, run_ids).values())
    return {"running", "queued"} <= states


def ready_again(server: Server, timeout: float = 30) -> None:
    """The server is still there and says it is ready (the fault is over)."""

    def ready() -> bool:
        assert server.proc is not None and server.proc.poll() is None, (
            f"the server exited ({server.proc.returncode if server.proc else None}):\n"
            + server.excerpt()
        )
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
        return False

    wait_until("/readyz to answer 200 again", ready, timeout, 0.2)


# -- PostgreSQL stopped or hung ----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """This module's own PostgreSQL cluster (never the shared one on 5432)."""
    with pg_cluster() as c:
        yield c


@pytest.fixture
def database(cluster: PgCluster) -> str:
    """A fresh database of the module's cluster, which is up (whatever the test before
    did to it)."""
    cluster.resume()
    if cluster.postmaster() is None:
        cluster.start()
    return cluster.create_database(f"flowdeck_{uuid.uuid4().hex[:12]}")


def database_outage(
    tmp: Path,
    url: str,
    seed: int,
    fault: Callable[[], None],
    repair: Callable[[], None],
    seconds: tuple[float, float],
    crash: bool = False,
    **more: str,
) -> None:
    """Runs going and queued; the database fails for a seeded time (with ``crash``, the
    server is killed at its end and started again once the database is back); then every
    run must end as expected (within a generous deadline) and the audit pass."""
    rng, counters = begin(tmp, seed)
    shapes = workflows(counters)
    names = list(MIX)
    rng.shuffle(names)
    env = settings(tmp / "data", FLOWDECK_DATABASE_URL=url, **more)
    with serving(tmp, env) as server:
        token = sign_up(server)
        expected, kinds = launch(server, token, shapes, names)
        wait_until(
            "runs running while others queue",
            lambda: running_and_queued(server, token, list(expected)),
            30,
            0.05,
        )
        time.sleep(rng.uniform(0.0, 0.5))  # the seeded moment
        down = rng.uniform(*seconds)
        t0 = time.monotonic()
        fault()
        try:
            time.sleep(down)  # steps end and start meanwhile; nothing is committed
            if crash:
                server.crash()
        finally:
            repair()
        if crash:
            server.start()
        ready_again(server)
        wait_ended(server, token, expected, timeout=DEADLINE_S, context=replay(seed))
        audit(server, token, counters, expected, kinds=kinds, context=replay(seed))
        print(
            f"{replay(seed)}: {len(expected)} runs, database down {down:.1f} s, "
            f"all ended {time.monotonic() - t0:.1f} s after it failed; {tally(counters)}; "
            "0 violations"
        )


HUNG = {"FLOWDECK_DB_TIMEOUT_S": "2"}
# name -> (fault, repair, how long in s, the server killed at its end, more settings).
# Killed meanwhile: steps the supervisor runs may start before the commit that records
# them (while the lease is fresh), so the next start must find each such attempt (the
# supervisor answers for it from its journal) and record it.
OUTAGES: dict[str, tuple[str, str, tuple[float, float], bool, dict[str, str]]] = {
    "stopped_briefly": ("stop", "start", (1.5, 3.0), False, {}),
    "stopped_longer_than_the_lease": ("stop", "start", (5.0, 7.0), False, {}),
    "hung_briefly": ("hang", "resume", (1.5, 3.0), False, HUNG),
    "hung_longer_than_the_lease": ("hang", "resume", (5.0, 7.0), False, HUNG),
    "stopped_and_the_server_killed_meanwhile": ("stop", "start", (0.3, 1.2), True, {}),
}


@seeded
@pytest.mark.parametrize("outage", list(OUTAGES))
def test_postgres(
    tmp_path: Path, cluster: PgCluster, database: str, outage: str, seed: int
) -> None:
    """PostgreSQL stopped cleanly (connections refused) or hung (SIGSTOP: connections
    time out), for less and for more than the lease."""
    fault, repair, seconds, crash, more = OUTAGES[outage]
    database_outage(
        tmp_path,
        database,
        seed,
        getattr(cluster, fault),
        getattr(cluster, repair),
        seconds,
        crash,
        **more,
    )


# -- the step supervisor killed -----------------------------------------------------------


def supervisors(data_dir: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"supervisor --socket {data_dir}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


@seeded
def test_step_supervisor_killed(tmp_path: Path, seed: int) -> None:
    rng, counters = begin(tmp_path, seed)
    shapes = workflows(counters, seconds=0.4, retries=4)
    names = list(MIX)
    rng.shuffle(names)
    with serving(tmp_path, settings(tmp_path / "data")) as server:
        token = sign_up(server)
        expected, kinds = launch(server, token, shapes, names)
        kills = rng.randint(1, 2)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.2))
            wait_until("a step running", lambda: run_processes(expected), 30, 0.02)
            for pid in wait_until(
                "the step supervisor", lambda: supervisors(server.data_dir), 10, 0.02
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        wait_ended(server, token, expected, timeout=DEADLINE_S, context=replay(seed))
        audit(server, token, counters, expected, kinds=kinds, context=replay(seed))
        print(
            f"{replay(seed)}: {len(expected)} runs, supervisor killed {kills}x; "
            f"{tally(counters)}; 0 violations"
        )


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs for the data directory."""
    with small_tmpfs(tmp_path, "24m") as mount:
        yield mount


@seeded
def test_disk_full_for_a_while(tmp_path: Path, small_disk: Path, seed: int) -> None:
    rng, counters = begin(tmp_path, seed)  # the markers are not on the full disk
    # odd seeds: no retries, a step that hits the full disk fails its run; even: two
    retries = 0 if seed % 2 else 2
    shapes = workflows(counters, retries=retries)
    names = list(MIX)
    rng.shuffle(names)
    with serving(tmp_path, settings(small_disk / "data")) as server:
        token = sign_up(server)
        submitted, kinds = launch(server, token, shapes, names)
        # a step that hit the full disk may fail its run: each run must end as its steps
        # really ended, whichever that is
        expected: dict[str, str | None] = dict.fromkeys(submitted)
        wait_until(
            "runs running while others queue",
            lambda: running_and_queued(server, token, list(expected)),
            30,
            0.05,
        )
        time.sleep(rng.uniform(0.0, 1.0))
        filler = small_disk / "filler"
        held = rng.uniform(1.5, 3.0)
        fill(filler)
        try:
            time.sleep(held)
        finally:
            filler.unlink()
        ready_again(server)
        states = wait_ended(server, token, expected, timeout=DEADLINE_S, context=replay(seed))
        audit(server, token, counters, expected, kinds=kinds, context=replay(seed))
        ended = sorted(f"{kinds[r]}={s}" for r, s in states.items())
        print(
            f"{replay(seed)}: disk full {held:.1f} s, {retries} retries; runs {ended}; "
            f"{tally(counters)}; 0 violations"
        )


# -- the server killed between a pause's or resume's signals and their commit -------------


@contextlib.contextmanager
def poised(server: Server, token: str, paths: list[str]) -> Iterator[threading.Event]:
    """One thread per path, each with a connection to the server already open, that POSTs
    to its path when the event yielded is set (their answers may never come)."""
    go = threading.Event()
    ready = threading.Barrier(len(paths) + 1)

    def post(path: str) -> None:
        with httpx.Client(
            base_url=server.url + API, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            client.get("/auth/me")  # the connection is open: the POST goes at once
            ready.wait()
            go.wait()
            with contextlib.suppress(httpx.TransportError):
                client.post(path)

    threads = [threading.Thread(target=post, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    ready.wait(30)
    try:
        yield go
    finally:
        go.set()
        for t in threads:
            t.join()


def processes_match_records(server: Server, token: str, run_ids: list[str]) -> str:
    """'' when each run's step processes are what its record says — all stopped (state T)
    for a run recorded paused, none stopped for a running one — else what differs."""
    before = states_of(server, token, run_ids)
    procs = run_processes(run_ids)
    after = states_of(server, token, run_ids)
    if before != after:
        return f"states changed while looking: {before} -> {after}"
    wrong = []
    for pid, (run_id, letter) in procs.items():
        state = after[run_id]
        if (state == "paused") != (letter == "T"):
            wrong.append(f"{run_id} is {state}, its process {pid} is in state {letter}")
    return "; ".join(wrong)


def kill_after_command(
    server: Server, token: str, run_ids: list[str], command: str, rng: random.Random
) -> str:
    """Send ``command`` (pause, resume) for every run, SIGKILL the server a seeded few
    milliseconds later, start it again; then the processes must come to match the
    records (the start makes them so). Gives what the records say after the restart."""
    delay = rng.uniform(0.0, 0.008)
    with poised(server, token, [f"/runs/{r}/{command}" for r in run_ids]) as go:
        go.set()
        time.sleep(delay)
        server.crash()
    server.start()
    last = [""]

    def consistent() -> bool:
        last[0] = processes_match_records(server, token, run_ids)
        return last[0] == ""

    try:
        wait_until(f"processes to match the records after a kill during {command}", consistent, 10)
    except AssertionError:
        raise AssertionError(f"after {command} and a kill: {last[0]}\n{server.excerpt()}") from None
    after = sorted(str(s) for s in states_of(server, token, run_ids).values())
    return f"{command} + kill {1000 * delay:.0f} ms later: {after}"


def pause_everywhere(server: Server, token: str, run_ids: list[str]) -> None:
    for run_id in run_ids:
        r = call(server, token, "POST", f"/runs/{run_id}/pause")
        assert r.status_code == 200, r.text
    wait_until(
        "the runs paused, their processes stopped",
        lambda: (
            processes_match_records(server, token, run_ids) == ""
            and set(states_of(server, token, run_ids).values()) == {"paused"}
        ),
        10,
    )


def steps_running(run_ids: list[str]) -> bool:
    """Each run has a step process."""
    return {run_id for run_id, _ in run_processes(run_ids).values()} == set(run_ids)


def resume_paused(server: Server, token: str, run_ids: list[str]) -> None:
    for run_id, state in states_of(server, token, run_ids).items():
        if state == "paused":
            r = call(server, token, "POST", f"/runs/{run_id}/resume")
            assert r.status_code == 200, r.text


@seeded
def test_server_killed_during_pause_and_resume(tmp_path: Path, seed: int) -> None:
    rng, counters = begin(tmp_path, seed)
    shapes = workflows(counters, seconds=1.0)
    expected: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    rounds: list[str] = []
    with serving(tmp_path, settings(tmp_path / "data")) as server:
        token = sign_up(server)
        for command in ("pause", "resume"):
            runs, names = launch(server, token, {"chain": shapes["chain"]}, ["chain"] * 2)
            expected.update(runs)
            kinds.update(names)
            ids = list(runs)
            wait_until("both runs' steps running", partial(steps_running, ids), 30, 0.02)
            if command == "resume":
                pause_everywhere(server, token, ids)
            rounds.append(kill_after_command(server, token, ids, command, rng))
            resume_paused(server, token, ids)
        wait_ended(server, token, expected, timeout=DEADLINE_S, context=replay(seed))
        audit(server, token, counters, expected, kinds=kinds, context=replay(seed))
        print(f"{replay(seed)}: {'; '.join(rounds)}; {tally(counters)}; 0 violations")
