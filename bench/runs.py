"""Run lifecycle benchmarks, each beside the floor of starting a process measured in the
same run.  The goals (the performance issue) apply with the sandbox on (the default), against
the sandboxed floor (a bare ``bwrap ... /bin/true``); the same workloads with ``sandbox =
"off"`` are measured beside them, against a plain ``/bin/true``:

- chain of 40 `/bin/true` steps: latency per step (goal <= 1.5x the sandboxed floor);
- fan-out of 1,000 `/bin/true` steps: overhead per step above the floor, two at a time
  (goal <= 0.5 ms);
- 1,000 single-step runs created, started and finished over HTTP by a load generator at
  concurrency 16: runs per second end to end (goal >= 0.6x the floor's starts per second);
  again with the step asking 0.25 CPU, so that 8 run at once on a 2-CPU machine instead
  of 2.

    python -m bench.runs [--runs 1000] [--fanout 1000] [--chain 40] [--sandbox on off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import time
from datetime import datetime

import httpx

from bench import rawhttp
from bench.common import Figure, report
from bench.server import server

API = "/api/v1"


TRUE = ["/bin/true"]


def bwrap_true() -> list[str]:
    """A bare bwrap with the namespaces and mounts of a step's sandbox, running /bin/true:
    the sandboxed floor."""
    bwrap = shutil.which("bwrap")
    assert bwrap is not None, "the sandboxed floor needs bubblewrap"
    box = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"]
    box += ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib"]
    box += ["--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin"]
    box += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/bin/true"]
    if os.geteuid() != 0:
        box.insert(1, "--unshare-user")
    return box


def spawn_floor(n: int, parallel: int, argv: list[str] = TRUE) -> float:
    """Seconds to spawn and reap n ``argv`` (/bin/true), `parallel` at a time, from plain
    Python."""
    t0 = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    for _ in range(n):
        if len(running) >= parallel:
            running.pop(0).wait()
        running.append(subprocess.Popen(argv, start_new_session=True))
    for p in running:
        p.wait()
    return time.perf_counter() - t0


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def push(c: httpx.Client, text: str) -> None:
    r = c.post(f"{API}/workflows", content=text, headers={"content-type": "application/yaml"})
    r.raise_for_status()


# How often the benchmark asks whether a run ended.  The figures come from the run's own
# start and end times, so asking less often changes nothing in them but the load the
# asking puts on the two cores they share (a status of a 1,000-step run costs the server
# about 2 ms of CPU, and httpx about 1 ms more).
POLL_S = 0.2


def wait_for_end(c: httpx.Client, run_id: str) -> dict[str, object]:
    while True:
        status: dict[str, object] = c.get(f"{API}/runs/{run_id}").json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(POLL_S)


def run_and_wait(c: httpx.Client, workflow: str) -> dict[str, object]:
    run_id = c.post(f"{API}/runs", json={"workflow": workflow, "start": True}).json()["id"]
    return wait_for_end(c, run_id)


def chain_spec(n: int) -> str:
    lines = ['name: chain-bench\nversion: "1"\nsteps:']
    for i in range(n):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  s{i}: {{run: [/bin/true]{needs}}}")
    return "\n".join(lines) + "\n"


FANOUT = (
    'name: fanout-bench\nversion: "1"\ninputs:\n  n: {type: array, items: int}\n'
    "steps:\n  t:\n    foreach: ${{ inputs.n }}\n    run: [/bin/true]\n"
)


def duration(status: dict[str, object]) -> float:
    return _ts(str(status["finished_at"])) - _ts(str(status["started_at"]))


async def _load(url: str, token: str, n: int, concurrency: int, workflow: str = "one@1") -> float:
    """Seconds for ``n`` single-step runs to be created, started and finished; the
    requests come from a lean raw-HTTP generator (bench/rawhttp.py)."""
    body = {"workflow": workflow, "start": True}
    create = rawhttp.request(url, token, "POST", f"{API}/runs", body)
    active = rawhttp.request(url, token, "GET", f"{API}/runs?state=queued&state=running&limit=1")
    t0 = time.perf_counter()
    await rawhttp.fixed_count(url, create, n, concurrency)
    submitted = time.perf_counter() - t0
    conn = await rawhttp.Connection.open(url)
    try:
        while True:
            page = (await conn.send(active)).json()
            if not page["items"]:  # type: ignore[index]
                break
            await asyncio.sleep(0.05)
    finally:
        conn.close()
    done = time.perf_counter() - t0
    print(f"  submitted {n} runs in {submitted:.2f} s ({n / submitted:.0f}/s)")
    return done


def measure(sandbox: str, args: argparse.Namespace) -> list[Figure]:
    """The chain, fan-out and end-to-end figures on a fresh server, ``sandbox`` "on" (the
    default settings) or "off", each beside its floor measured here."""
    on = sandbox == "on"
    argv = bwrap_true() if on else TRUE
    floor_name = "bwrap /bin/true" if on else "/bin/true"
    tail = f", sandbox {sandbox}"
    figures: list[Figure] = []
    with (
        server(**({} if on else {"sandbox": "off"})) as (url, token, _data, _pid),
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        slots = 2
        spawn_floor(20, 1, argv)  # warm-up: the file cache
        floor_one = spawn_floor(200, 1, argv) / 200 * 1000
        push(c, chain_spec(args.chain))
        run_and_wait(c, "chain-bench@1")  # warm-up
        status = run_and_wait(c, "chain-bench@1")
        assert status["state"] == "succeeded", status
        per_step = duration(status) / args.chain * 1000
        figures.append(
            Figure(
                f"chain-{args.chain}: latency per step{tail}",
                per_step,
                "ms",
                f"spawn+wait {floor_name}",
                floor_one,
                goal="<= 1.5x the floor" if on else "",
            )
        )

        push(c, FANOUT)
        run_id = c.post(
            f"{API}/runs",
            json={
                "workflow": "fanout-bench@1",
                "params": {"n": list(range(args.fanout))},
                "start": True,
            },
        ).json()["id"]
        status = wait_for_end(c, run_id)
        assert status["state"] == "succeeded", status
        floor_wall = spawn_floor(args.fanout, slots, argv)
        wall = duration(status)
        figures.append(
            Figure(
                f"fan-out-{args.fanout}: wall per step{tail}",
                wall / args.fanout * 1000,
                "ms",
                f"{floor_name}, {slots} at a time",
                floor_wall / args.fanout * 1000,
            )
        )
        figures.append(
            Figure(
                f"fan-out-{args.fanout}: overhead per step above the floor{tail}",
                (wall - floor_wall) / args.fanout * 1000,
                "ms",
                f"{floor_name} per step, {slots} at a time",
                floor_wall / args.fanout * 1000,
                goal="<= 0.5 ms" if on else "",
            )
        )

        push(c, 'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n')
        elapsed = asyncio.run(_load(url, token, args.runs, 16))
        floor_runs = 1 / (floor_one / 1000)
        figures.append(
            Figure(
                f"{args.runs} single-step runs over HTTP (c=16){tail}",
                args.runs / elapsed,
                "runs/s",
                f"{floor_name} starts/s",
                floor_runs,
                goal=">= 0.6x the floor" if on else "",
            )
        )
        if on:
            # The same runs with the step asking a quarter of a CPU (a /bin/true needs no
            # more): 8 steps at a time on 2 slots instead of 2, so commits gather more runs.
            push(
                c,
                'name: quarter\nversion: "1"\nsteps:\n'
                "  t: {run: [/bin/true], resources: {cpus: 0.25}}\n",
            )
            elapsed = asyncio.run(_load(url, token, args.runs, 16, "quarter@1"))
            figures.append(
                Figure(
                    f"{args.runs} single-step runs over HTTP (c=16), step cpus: 0.25{tail}",
                    args.runs / elapsed,
                    "runs/s",
                    f"{floor_name} starts/s",
                    floor_runs,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", type=int, default=40)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sandbox", nargs="+", choices=["on", "off"], default=["on", "off"])
    args = parser.parse_args()
    figures = [f for sandbox in args.sandbox for f in measure(sandbox, args)]
    report(
        "runs",
        figures,
        {"chain": args.chain, "fanout": args.fanout, "runs": args.runs, "sandbox": args.sandbox},
    )


if __name__ == "__main__":
    main()
