"""The crash harness's parts: a real ``flowdeck serve`` process that can be killed and
restarted, step bodies that leave a trace of every real execution outside flowdeck's
reach, and :func:`audit`, which checks what flowdeck recorded against what happened.

A guarded step appends to ``<counters>/<run>.<step>.<index>.runs`` the line
``ATTEMPT PID`` when an execution starts and ``ATTEMPT PID exit=CODE`` when it ends (an
execution killed by a signal leaves no end line), and holds an ``flock`` while it runs:
an execution that finds the lock taken appends its key to ``<counters>/overlaps``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import STRONG, free_port
from tests.receiver import Receiver, eventually, receiver

API = "/api/v1"
TERMINAL = {"succeeded", "failed", "cancelled", "killed", "system_error"}
# the step states whose recorded attempt is the step's final one
STEP_ENDED = {"succeeded", "failed", "timed_out", "skipped", "cancelled", "killed", "lost"}


def seeds(regression: Sequence[int] = (), count: int = 3) -> list[int]:
    """The seeds a harness runs with: only ``FLOWDECK_TEST_CRASH_SEED`` when set (to replay
    one), else the ``regression`` seeds and 1..N, N from ``FLOWDECK_TEST_FAULT_SEEDS``
    (default ``count``)."""
    if os.environ.get("FLOWDECK_TEST_CRASH_SEED"):
        return [int(os.environ["FLOWDECK_TEST_CRASH_SEED"])]
    n = int(os.environ.get("FLOWDECK_TEST_FAULT_SEEDS", str(count)))
    return list(dict.fromkeys([*regression, *range(1, n + 1)]))


def guarded(counters: Path, seconds: float, then: str = "true") -> str:
    """A step body that records each execution (its attempt, an id, and how it ended)
    and any overlap with another execution of the same step (a lock held while it runs;
    SIGKILL releases it). ``then`` runs in a subshell, so an ``exit`` in it still lets the
    end be recorded; the step exits with its status."""
    key = "$FLOWDECK_RUN_ID.$FLOWDECK_STEP.${FLOWDECK_INDEX:-x}"
    runs = f"{counters}/{key}.runs"
    return (
        "umask 0; "  # each attempt has a uid of its own (step_uids): all share the markers
        f"exec 9>>{counters}/{key}.lock; "
        f"flock -n 9 || echo {key} >> {counters}/overlaps; "
        # an id of this execution: $$ would not do, each sandbox has its own pids
        "x=$(od -An -N6 -tu8 /dev/urandom | tr -d ' '); "
        f'echo "$FLOWDECK_ATTEMPT $x" >> {runs}; sleep {seconds}; ({then}); rc=$?; '
        f'echo "$FLOWDECK_ATTEMPT $x exit=$rc" >> {runs}; exit $rc'
    )


def specs(counters: Path) -> dict[str, tuple[str, str]]:
    """name -> (workflow text, the state its runs must end in)."""

    def step(seconds: float, then: str = "true") -> str:
        return json.dumps(["sh", "-c", guarded(counters, seconds, then)])

    chain = (
        'name: chain\nversion: "1"\nsteps:\n'
        f"  a: {{run: {step(0.4, 'echo a > out')}, outputs: {{f: {{path: out}}}}}}\n"
        f"  b: {{run: {step(0.4, 'cat ../a/out > out; echo b >> out')}, needs: [a],"
        " outputs: {f: {path: out}}}\n"
        f"  c: {{run: {step(0.4, 'cat ../b/out > out; echo c >> out')}, needs: [b],"
        " outputs: {f: {path: out}}}\n"
    )
    fanout = (
        'name: fanout\nversion: "1"\ninputs:\n  n: {type: array, items: int, default: [1,2,3,4]}\n'
        "steps:\n  t:\n    foreach: ${{ inputs.n }}\n"
        f"    run: {step(0.3, 'echo $FLOWDECK_INDEX > out')}\n"
        "    outputs: {f: {path: out}}\n"
        f"  join: {{run: {step(0.1)}, needs: [t]}}\n"
    )
    long = f'name: long\nversion: "1"\nsteps:\n  s: {{run: {step(2.5)}}}\n'
    fails = (
        'name: fails\nversion: "1"\nsteps:\n'
        f"  s: {{run: {step(0.2, 'exit 3')}, retries: {{count: 1, backoff: 0.1}}}}\n"
    )
    flaky = (
        'name: flaky\nversion: "1"\nsteps:\n'
        f"  s: {{run: {step(0.2, '[ $FLOWDECK_ATTEMPT -ge 2 ]')},"
        " retries: {count: 5, backoff: 0.1}}\n"
    )
    double = json.dumps(
        [
            "python3",
            "-u",
            "-c",
            "import json, sys\nfor line in sys.stdin:\n"
            "    print(json.dumps({'n': 2 * json.loads(line)['n']}), flush=True)\n",
        ]
    )
    stream = (
        'name: stream\nversion: "1"\ninputs:\n  records: {type: stream}\n'
        'outputs:\n  results: {from: "${{ steps.double.outputs.out }}"}\n'
        f"steps:\n  double:\n    run: {double}\n"
        "    stdin: ${{ inputs.records }}\n"
        "    retries: {count: 10, backoff: 0.1}\n"
        "    outputs:\n      out: {stdout: stream}\n"
    )
    return {
        "chain": (chain, "succeeded"),
        "fanout": (fanout, "succeeded"),
        "long": (long, "succeeded"),
        "fails": (fails, "failed"),
        "flaky": (flaky, "succeeded"),
        "stream": (stream, "succeeded"),
    }


class Server:
    """``python -m flowdeck serve`` as a process of its own, with ``env`` over the test's
    environment, logging to ``<tmp>/server.log`` (appended across restarts)."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_times: list[float] = []

    @property
    def log(self) -> Path:
        return self.tmp / "server.log"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FLOWDECK_DATA_DIR"])

    def start(self) -> None:
        with self.log.open("ab") as log:
            log.write(f"--- start at {time.strftime('%H:%M:%S')} ---\n".encode())
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flowdeck", "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = t0 + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.02)
        self.ready_times.append(time.monotonic() - t0)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def excerpt(self, lines: int = 40) -> str:
        """The server log's last warnings, errors and exception messages (tracebacks'
        frames, and lines repeating one of the eight before, left out), and its
        restarts."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        keep: list[str] = []
        for line in text:
            frame = line.startswith((" ", "\t", "Traceback", "The above", "During handling"))
            if frame or not line.strip() or "GET /" in line or line in keep[-8:]:
                continue
            keep.append(line)
        return "\n".join(keep[-lines:])


def base_env(data_dir: Path) -> dict[str, str]:
    """The settings every harness server starts with (more may be added per test)."""
    return {
        "FLOWDECK_DATA_DIR": str(data_dir),
        "FLOWDECK_REGISTRATION": "open",
        "FLOWDECK_STOP_GRACE_S": "1",
        "FLOWDECK_SUPERVISOR_IDLE_S": "3",
        "FLOWDECK_LOG_LEVEL": "warning",
    }


@contextmanager
def serving(tmp: Path, env: dict[str, str]) -> Iterator[Server]:
    """A started server; stopped (SIGTERM) at the end, whatever happened.  Its steps may
    write the markers in ``tmp/counters`` (outside their sandbox: ``sandbox_extra_rw``)."""
    env = {"FLOWDECK_SANDBOX_EXTRA_RW": str(tmp / "counters"), **env}
    server = Server(tmp, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def two_servers(
    tmp: Path, env: dict[str, str], hosts: tuple[str, str] | None = None
) -> Iterator[tuple[Server, Server]]:
    """Two started servers of one deployment (``env``: one database, one data directory),
    logging under ``tmp/a`` and ``tmp/b``; with ``hosts``, each claims a host of its own
    (``host_id``).  Stopped at the end, whatever happened."""
    servers = []
    for i, name in enumerate(("a", "b")):
        (tmp / name).mkdir()
        host = {"FLOWDECK_HOST_ID": hosts[i]} if hosts else {}
        servers.append(Server(tmp / name, {**env, **host}))
    a, b = servers
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


@contextmanager
def harness(tmp: Path) -> Iterator[tuple[Server, Receiver]]:
    with receiver() as rec:
        env = {
            **base_env(tmp / "data"),
            "FLOWDECK_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
            "FLOWDECK_WEBHOOK_TIMEOUT_S": "2",
            "FLOWDECK_WEBHOOK_RETRY_BASE_S": "0.2",
            "FLOWDECK_WEBHOOK_RETRY_MAX_S": "1",
        }
        with serving(tmp, env) as server:
            yield server, rec


def call(
    server: Server, token: str, method: str, path: str, *, wait_s: float = 60, **kw: Any
) -> httpx.Response:
    """A request that waits out the moments the server is down."""
    deadline = time.monotonic() + wait_s
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    while True:
        try:
            return httpx.request(method, server.url + API + path, headers=headers, timeout=30, **kw)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{method} {path}: the server did not answer"
            time.sleep(0.05)


def sign_up(server: Server, username: str = "crash") -> str:
    """A new user's token."""
    with httpx.Client(base_url=server.url + API, timeout=30) as c:
        r = c.post("/auth/register", json={"username": username, "password": STRONG})
        assert r.status_code == 201, r.text
        r = c.post("/auth/login", json={"username": username, "password": STRONG})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


def add_workflows(server: Server, token: str, texts: Collection[str]) -> None:
    for text in texts:
        r = call(
            server,
            token,
            "POST",
            "/workflows",
            content=text,
            headers={"content-type": "application/yaml"},
        )
        assert r.status_code in (200, 201), r.text


def submit(server: Server, token: str, workflow: str) -> str:
    """A queued run of ``workflow`` (``name@version``): its id."""
    r = call(server, token, "POST", "/runs", json={"workflow": workflow, "start": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def states_of(server: Server, token: str, run_ids: Collection[str]) -> dict[str, str | None]:
    """Each run's state (None while the server cannot tell: it answered an error)."""
    out: dict[str, str | None] = {}
    for run_id in run_ids:
        r = call(server, token, "GET", f"/runs/{run_id}")
        out[run_id] = r.json()["state"] if r.status_code == 200 else None
    return out


def wait_until(what: str, check: Any, timeout: float, interval: float = 0.1) -> Any:
    """Poll ``check()`` until it gives a true value (returned); fail after ``timeout``
    saying ``what`` was awaited."""
    return eventually(check, timeout, what, interval)


def wait_ended(
    server: Server, token: str, run_ids: Collection[str], timeout: float = 120, context: str = ""
) -> dict[str, str]:
    """Wait until every run is in a terminal state (answers with errors meanwhile are
    waited out too); fail naming the runs still going, with the server log's end."""
    deadline = time.monotonic() + timeout
    while True:
        states = states_of(server, token, run_ids)
        if all(s in TERMINAL for s in states.values()):
            return {k: str(v) for k, v in states.items()}
        assert time.monotonic() < deadline, (
            f"{context}: runs still not ended after {timeout} s: "
            f"{ {k: v for k, v in states.items() if v not in TERMINAL} }\n"
            f"server log:\n{server.excerpt()}"
        )
        time.sleep(0.2)


def run_processes(run_ids: Collection[str]) -> dict[int, tuple[str, str]]:
    """The live processes (not zombies) of these runs: pid -> (run id, state letter of
    /proc/PID/stat: T for stopped)."""
    wanted = set(run_ids)
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        for var in environ:
            if var.startswith(b"FLOWDECK_RUN_ID=") and var[16:].decode() in wanted:
                if state != "Z":
                    found[int(entry.name)] = (var[16:].decode(), state)
                break
    return found


def leftover_processes(run_ids: set[str]) -> list[int]:
    return sorted(run_processes(run_ids))


@dataclass(frozen=True)
class Execution:
    """One real execution of a guarded step: its attempt number, an id of its own, and its
    exit status (None: it never reported an end — killed, or still running)."""

    attempt: int
    pid: int
    exit: int | None


StepKey = tuple[str, str, int | None]  # run id, step name, foreach index (None: no foreach)


def executions(counters: Path) -> dict[StepKey, list[Execution]]:
    """Every guarded step's executions, from the markers, in the order they started."""
    out: dict[StepKey, list[Execution]] = {}
    for path in sorted(counters.glob("*.runs")):
        run_id, step, index = path.name.removesuffix(".runs").rsplit(".", 2)
        started: dict[tuple[int, int], int | None] = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
                continue  # a line cut short cannot be told apart: there is none (appends)
            attempt, pid = int(parts[0]), int(parts[1])
            if len(parts) == 3 and parts[2].startswith("exit="):
                started[(attempt, pid)] = int(parts[2].removeprefix("exit="))
            else:
                started.setdefault((attempt, pid), None)
        key = (run_id, step, None if index == "x" else int(index))
        out[key] = [Execution(a, p, code) for (a, p), code in started.items()]
    return out


def tally(counters: Path) -> str:
    """How the guarded steps really ran: executions, how many exited non-zero, how many
    never reported an end (killed)."""
    seen = [e for runs in executions(counters).values() for e in runs]
    failed = sum(1 for e in seen if e.exit not in (0, None))
    killed = sum(1 for e in seen if e.exit is None)
    return f"{len(seen)} executions, {failed} exited non-zero, {killed} killed"


def audit(
    server: Server,
    token: str,
    counters: Path,
    expected: Mapping[str, str | None],
    *,
    unguarded: Collection[str] = (),
    kinds: Mapping[str, str] | None = None,
    context: str = "",
) -> dict[str, str]:
    """Check every invariant over the runs of ``expected`` (run id -> the state it must end
    in; None: whichever its steps' real outcomes give). Steps named in ``unguarded`` leave
    no markers and are left out of the checks that need them; ``kinds`` names each run's
    shape in the messages. Fails with every violation found, ``context`` (the seed) and
    the server log's end; gives the runs' states.

    - each run ended in the expected state, and in the state its steps' real outcomes give
      (``succeeded`` exactly when every step's recorded last attempt really ran and exited
      0, ``failed`` otherwise);
    - every execution seen in the markers is recorded: its step is listed by
      ``GET /runs/{id}/steps`` with at least as many attempts; a step recorded
      ``succeeded`` had its last attempt really executed with exit 0, and a recorded exit
      code is the one its execution reported;
    - no two executions of a step overlapped;
    - each run's events are gapless (``seq`` 1..n) and end with ``run.<state>``; the run,
      and each attempt of a step, ended once in them;
    - every product matches its size and sha256;
    - no process of any run is left."""
    problems: list[str] = []
    runs = executions(counters)
    states: dict[str, str] = {}
    for run_id, want in expected.items():
        who = f"{run_id} ({kinds[run_id]})" if kinds and run_id in kinds else run_id
        r = call(server, token, "GET", f"/runs/{run_id}")
        assert r.status_code == 200, r.text
        run = r.json()
        state = states[run_id] = run["state"]
        if state not in TERMINAL:
            problems.append(f"{who}: not ended ({state})")
            continue
        if want is not None and state != want:
            problems.append(f"{who}: ended {state}, expected {want} (error: {run['error']})")
        r = call(server, token, "GET", f"/runs/{run_id}/steps")
        assert r.status_code == 200, r.text
        steps = {(s["name"], s["index"]): s for s in r.json()}
        really_ok = True
        for (name, index), s in steps.items():
            if name in unguarded:
                really_ok = really_ok and s["state"] == "succeeded"
                continue
            label = f"{who} step {s['label']}"
            seen = runs.get((run_id, name, index), [])
            last = [e for e in seen if e.attempt == s["attempts"]]
            ok = any(e.exit == 0 for e in last)
            if s["state"] == "succeeded" and not ok:
                problems.append(
                    f"{label}: recorded succeeded at attempt {s['attempts']}, but that attempt"
                    f" {'never ran' if not last else 'did not exit 0'} (executions: {seen})"
                )
            ended = [e.exit for e in last if e.exit is not None]
            recorded = s["exit_code"] if s["state"] in STEP_ENDED else None
            if recorded is not None and ended and recorded not in ended:
                problems.append(
                    f"{label}: recorded exit code {recorded} at attempt "
                    f"{s['attempts']}, its execution exited {ended}"
                )
            really_ok = really_ok and ok
        for (rid, name, index), seen in runs.items():
            if rid != run_id:
                continue
            s = steps.get((name, index))
            top = max(e.attempt for e in seen)
            if s is None:
                problems.append(f"{who} step {name}[{index}]: executed, not recorded")
            elif top > s["attempts"]:
                problems.append(
                    f"{who} step {s['label']}: attempt {top} executed, "
                    f"{s['attempts']} recorded (executions: {seen})"
                )
        derived = "succeeded" if really_ok and steps else "failed"
        if state != derived:
            problems.append(
                f"{who}: ended {state}, its steps' real outcomes give {derived} "
                f"(error: {run['error']}; steps: "
                + ", ".join(f"{s['label']}={s['state']}/{s['attempts']}" for s in steps.values())
                + ")"
            )
        events = call(server, token, "GET", f"/runs/{run_id}/events", params={"limit": 1000})
        seqs = [e["seq"] for e in events.json()]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{who}: events not gapless: seq {seqs}")
        if not seqs or events.json()[-1]["type"] != f"run.{state}":
            last_type = events.json()[-1]["type"] if seqs else None
            problems.append(f"{who}: last event {last_type}, not run.{state}")
        # a change committed twice (a batch taken again after its commit went through)
        endings = [
            (e["type"], e["data"].get("step"), e["data"].get("index"), e["data"].get("attempt"))
            for e in events.json()
            if e["type"] in {f"run.{t}" for t in TERMINAL}
            or e["type"] in {f"step.{t}" for t in STEP_ENDED}
        ]
        twice = sorted({str(e) for e in endings if endings.count(e) > 1})
        if twice:
            problems.append(f"{who}: ended twice in the events: {twice}")
        for product in call(server, token, "GET", f"/runs/{run_id}/products").json():
            body = call(server, token, "GET", f"/runs/{run_id}/products/{product['id']}")
            if body.status_code != 200:
                problems.append(f"{who} product {product['name']}: {body.status_code}")
            elif (len(body.content), hashlib.sha256(body.content).hexdigest()) != (
                product["size"],
                product["sha256"],
            ):
                problems.append(f"{who} product {product['name']}: size or sha256 differ")
    overlaps = counters / "overlaps"
    if overlaps.exists():
        problems.append(f"executions overlapped: {overlaps.read_text().split()}")
    left = run_processes(expected)
    if left:
        problems.append(f"processes left: {left}")
    assert problems == [], (
        f"{context}: {len(problems)} violations:\n"
        + "\n".join(problems)
        + f"\nserver log:\n{server.excerpt()}"
    )
    return states
