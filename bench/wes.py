"""WES and CWL benchmark (the WES issue's Performance section), beside cwltool alone and
the reference WES server (wes-service) measured in the same run:

- 50 small CWL runs (the two-step sort-count workflow of tests/data/cwl) submitted
  through WES (multipart, with its four attachments) over 8 concurrent keep-alive
  connections: submissions per second (the rate of 200 answers; the runs execute
  meanwhile), and the time from the first submission until all runs finished;
- the same 50 submissions, sent the same way, to wes-server of the wes-service package
  (:mod:`bench.wes_service`): as deployed (each accepted run starts cwltool at once), and
  with ``true`` as its runner (its HTTP path alone, no run executing);
- the floor: flowdeck's ``GET /healthz`` over the same connections;
- one more batch on flowdeck, on a fresh wes-service (as deployed) and on a fresh Sapporo
  (:mod:`bench.sapporo`: cwltool without containers; left out, saying why, where it cannot
  be installed or started), after a warm-up run: Sapporo's submissions per second (one
  round), each server's time from the first submission until all runs ended, and the WES
  status p50 and p99 (goal: flowdeck's p50 <= 3 ms) of one client polling
  ``GET /runs/{id}/status`` of the last run sent, from the last answer until all ended
  (:func:`while_running`);
- the same 50 runs with bare cwltool, one at a time and two at a time;
- CPU seconds per run: flowdeck (the server and everything it ran) against cwltool alone.

The submissions are sent by :mod:`bench.rawhttp` (a request built once, written many
times): httpx would spend more CPU per multipart request than the servers do.  Each
submission rate is the median of ``--rounds`` rounds, flowdeck's and wes-service's taken
in turn.

    python -m bench.wes [--runs 50] [--rounds 3] [--submissions-only]
        [--status-pause-ms 10] [--skip sapporo|while-running ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import rawhttp, status_poller
from bench.common import Figure, median, percentile, report, scratch_dir
from bench.sapporo import FORM as SAPPORO_FORM
from bench.sapporo import sapporo_service
from bench.server import server
from bench.venvs import PeerUnavailable
from bench.wes_service import wes_service

WES = "/ga4gh/wes/v1"
CWL = Path(__file__).parents[1] / "tests" / "data" / "cwl"
FILES = ("sort-count.cwl", "sort.cwl", "count.cwl", "fruit.txt")
DONE = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def cwltool_alone(n: int, parallel: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for n runs of bare cwltool, `parallel` at a time."""
    cwltool = str(Path(sys.executable).with_name("cwltool"))
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"text": {"class": "File", "path": str(CWL / "fruit.txt")}}))
        cpu0, t0 = children_cpu(), time.perf_counter()
        running: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            if len(running) >= parallel:
                running.pop(0).wait()
            argv = [cwltool, "--quiet", "--no-container", "--outdir", f"{tmp}/out{i}"]
            argv += [str(CWL / "sort-count.cwl"), str(job)]
            running.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, env={**os.environ, "TMPDIR": tmp})
            )
        for p in running:
            if p.wait() != 0:
                raise RuntimeError("cwltool failed")
        return time.perf_counter() - t0, children_cpu() - cpu0


FORM = {
    "workflow_url": "sort-count.cwl",
    "workflow_type": "CWL",
    "workflow_type_version": "v1.2",
    "workflow_params": json.dumps({"text": {"class": "File", "path": "fruit.txt"}}),
}


def run_request(url: str, token: str | None, extra: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one RunWorkflow request (multipart, the four files attached, ``extra``
    form fields beside the common ones), as httpx encodes it, sent as is over a keep-alive
    connection."""
    payload = [("workflow_attachment", (f, (CWL / f).read_bytes())) for f in FILES]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    form = {**FORM, **(extra or {})}
    req = httpx.Request("POST", f"{url}{WES}/runs", data=form, files=payload, headers=headers)
    body = req.read()
    head = [f"POST {WES}/runs HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
    head += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def submissions(url: str, req: bytes, n: int, clients: int) -> tuple[float, list[str]]:
    """(submissions per second, run ids): ``n`` RunWorkflow requests over ``clients``
    connections, each answered 200 before the next on its connection."""
    ids: list[str] = []

    def answered(r: rawhttp.Response) -> None:
        ids.append(str(r.json()["run_id"]))  # type: ignore[index]

    t0 = time.perf_counter()
    asyncio.run(rawhttp.fixed_count(url, req, n, clients, answered))
    return n / (time.perf_counter() - t0), ids


@dataclass(frozen=True)
class WesPeer:
    """A reference WES server: how to start a fresh one (a context manager giving its base
    URL; :class:`PeerUnavailable` where it cannot be had) and the form fields its
    RunWorkflow needs beside the common ones."""

    name: str
    label: str  # how figures name it as their baseline
    start: Callable[[], AbstractContextManager[str]]
    form: Mapping[str, str] = field(default_factory=dict)


def wes_peers(skip: tuple[str, ...] = ()) -> list[WesPeer]:
    """wes-service as deployed (its runner cwltool) and Sapporo (its cwltool engine run by
    bench.sapporo's run script), each running flowdeck's cwltool without containers."""
    cwltool = str(Path(sys.executable).with_name("cwltool"))
    peers = [
        WesPeer(
            "wes-service", "wes-service, runs cwltool (as deployed)", lambda: wes_service(cwltool)
        )
    ]
    if "sapporo" not in skip:
        label = "Sapporo, runs cwltool --no-container"
        peers.append(WesPeer("Sapporo", label, sapporo_service, SAPPORO_FORM))
    return peers


def wait_all(url: str, token: str | None, ids: list[str], limit_s: float = 1800) -> float:
    """Wait until each of ``ids`` ended, COMPLETE (else RuntimeError): the wall clock
    (``time.time()``) when the last was seen ended.  One status request at a time, for the
    oldest run not yet seen ended (runs end in about the order they were sent), 0.1 s apart
    while that one runs: any WES server, the same way."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    pending = deque(ids)
    deadline = time.monotonic() + limit_s
    with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
        while pending:
            state = c.get(f"{WES}/runs/{pending[0]}/status").json()["state"]
            if state in DONE:
                if state != "COMPLETE":
                    raise RuntimeError(f"run {pending[0]} ended {state}")
                pending.popleft()
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} runs had not ended after {limit_s:.0f} s")
            time.sleep(0.1)
    return time.time()


def while_running(
    url: str, token: str, req: bytes, n: int, clients: int, pause_s: float
) -> dict[str, Any]:
    """``n`` submissions as in the rounds, then, from the last answer until every run
    ended, one client (:mod:`bench.status_poller`, a process of its own) polls the status of
    the last run sent, ``pause_s`` between requests: the submissions per second, the
    seconds from the first submission until all ended, the status requests' count, p50
    and p99 (ms)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    poller = ctx.Process(target=status_poller.poll, args=(url, token, child, pause_s))
    poller.start()
    try:
        parent.recv()  # its imports done: they take no CPU from the submissions
        wall0 = time.time()
        rate, ids = submissions(url, req, n, clients)
        parent.send(f"{WES}/runs/{ids[-1]}/status")
        end = wait_all(url, token, ids)
        parent.send("stop")
        try:
            polled: dict[str, Any] = parent.recv()
        except EOFError:
            raise RuntimeError("the status poller failed (its traceback is above)") from None
    finally:
        poller.join(30)
        if poller.is_alive():
            poller.kill()
            poller.join(30)
    times: list[float] = polled["ms"]
    if not times:
        raise RuntimeError("the runs ended before the first status request")
    return {
        "rate": rate,
        "finished_s": end - wall0,
        "status_requests": len(times),
        "status_p50_ms": percentile(times, 50),
        "status_p99_ms": percentile(times, 99),
        "reconnects": polled["reconnects"],
    }


def peer_while_running(
    peer: WesPeer, n: int, clients: int, pause_s: float
) -> dict[str, Any] | None:
    """:func:`while_running` on a fresh ``peer`` after one warm-up run (which must end
    COMPLETE: the check that its runs work here); None, saying why, where it cannot be
    installed, started or run."""
    try:
        with peer.start() as url:
            req = run_request(url, None, peer.form)
            wait_all(url, None, submissions(url, req, 1, 1)[1], limit_s=300)
            return while_running(url, "", req, n, clients, pause_s)
    except (PeerUnavailable, RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"  {peer.name}: not measured: {type(exc).__name__}: {exc}", flush=True)
        return None


def _print_running(name: str, got: dict[str, Any]) -> None:
    print(
        f"  while running: {name} {got['rate']:.1f}/s, all ended after {got['finished_s']:.1f} s,"
        f" status p50 {got['status_p50_ms']:.2f} ms, p99 {got['status_p99_ms']:.2f} ms"
        f" ({got['status_requests']} requests)",
        flush=True,
    )


def reference_rate(runner: str, n: int, clients: int) -> float:
    """wes-service's submissions per second (a fresh server; its runs ended after)."""
    with wes_service(runner) as url:
        req = run_request(url, None)
        submissions(url, req, 1, 1)  # warm up
        return submissions(url, req, n, clients)[0]


def floor_rate(url: str, token: str, n: int, clients: int) -> float:
    """flowdeck's rate of GET /healthz over the same connections: the server's floor."""
    req = rawhttp.request(url, token, "GET", "/healthz")
    t0 = time.perf_counter()
    asyncio.run(rawhttp.fixed_count(url, req, n, clients))
    return n / (time.perf_counter() - t0)


def through_wes(
    n: int, clients: int, rounds: int, peers: list[WesPeer] | None, pause_s: float
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Per round: flowdeck's submissions per second, then wes-service's (as deployed, and
    with ``true`` as runner); flowdeck's seconds until all its runs finished and CPU
    seconds (first round); flowdeck's /healthz rate.  Then, unless ``peers`` is None, one
    more batch on flowdeck and on each peer (a fresh server) with the status poller of
    :func:`while_running`: its figures by server name."""
    cwltool = str(Path(sys.executable).with_name("cwltool"))
    out: dict[str, list[float]] = {}
    running: dict[str, dict[str, Any]] = {}
    with server() as (url, token, _data, pid):
        req = run_request(url, token)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            # warm up: the workflow is stored once (later submissions find it by content)
            first = submissions(url, req, 1, 1)[1][0]
            while c.get(f"{WES}/runs/{first}/status").json()["state"] not in DONE:
                time.sleep(0.1)
            for i in range(rounds):
                cpu0, wall0 = process_cpu(pid), time.time()
                rate, ids = submissions(url, req, n, clients)
                out.setdefault("flowdeck", []).append(rate)
                finished = _finished(c, n, ids) - wall0
                out.setdefault("finished", []).append(finished)
                out.setdefault("cpu", []).append(process_cpu(pid) - cpu0)
                out.setdefault("healthz", []).append(floor_rate(url, token, 10 * n, clients))
                print(f"  round {i + 1}: flowdeck {rate:.1f}/s ({finished:.1f} s)", end="")
                for name, runner in (("wes-service", cwltool), ("wes-service-true", "true")):
                    out.setdefault(name, []).append(reference_rate(runner, n, clients))
                    print(f", {name} {out[name][-1]:.1f}/s", end="")
                print(flush=True)
            if peers is not None:
                running["flowdeck"] = while_running(url, token, req, n, clients, pause_s)
                _print_running("flowdeck", running["flowdeck"])
    for peer in peers or []:
        if (got := peer_while_running(peer, n, clients, pause_s)) is not None:
            running[peer.name] = got
            _print_running(peer.name, got)
    return out, running


def _finished(c: httpx.Client, n: int, ids: list[str]) -> float:
    """When the last of ``ids`` finished (the server's record); each must be COMPLETE."""
    pending = set(ids)
    while pending:  # one listing per poll, not one request per run
        time.sleep(0.25)
        runs = c.get(f"{WES}/runs", params={"page_size": 2 * n}).json()["runs"]
        for run in runs:
            if run["run_id"] in pending and run["state"] in DONE:
                if run["state"] != "COMPLETE":
                    raise RuntimeError(f"run {run['run_id']} ended {run['state']}")
                pending.discard(run["run_id"])
    # the end is when the last run finished (the server's record), not our last poll
    listed = c.get("/api/v1/runs", params={"limit": 2 * n}).json()["items"]
    return max(_ts(r["finished_at"]) for r in listed if r["id"] in set(ids))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--submissions-only", action="store_true", help="without cwltool alone (minutes)"
    )
    parser.add_argument(
        "--status-pause-ms",
        type=float,
        default=10.0,
        help="between two status requests of the poller while the runs execute",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["sapporo", "while-running"],
        help="leave out Sapporo, or the batch with the status poller (on every server)",
    )
    args = parser.parse_args()
    n = args.runs
    figures = []
    peers = None if "while-running" in args.skip else wes_peers(tuple(args.skip))
    got, running = through_wes(n, args.clients, args.rounds, peers, args.status_pause_ms / 1000)
    rate, reference, accept_only = (
        median(got[k]) for k in ("flowdeck", "wes-service", "wes-service-true")
    )
    wall, cpu = got["finished"][0], got["cpu"][0]
    if not args.submissions_only:
        seq_wall, seq_cpu = cwltool_alone(n, 1)
        two_wall, _two_cpu = cwltool_alone(n, 2)
        print(f"cwltool alone: {seq_wall:.1f} s sequential, {two_wall:.1f} s two at a time")
        figures += [
            Figure(
                f"{n} CWL runs via WES: time until all finish",
                wall,
                "s",
                "cwltool alone, 2 at a time",
                two_wall,
                "within 10% of cwltool two at a time",
            ),
            Figure(
                f"{n} CWL runs via WES: time until all finish",
                wall,
                "s",
                "cwltool alone, sequential",
                seq_wall,
            ),
            Figure(
                "CPU per run via WES (server and steps)",
                1000 * cpu / n,
                "ms",
                "cwltool alone, sequential",
                1000 * seq_cpu / n,
                "overhead under 10%",
            ),
        ]
    figures += [
        Figure(
            "WES submissions per second",
            rate,
            "1/s",
            "wes-service, runs cwltool (as deployed)",
            reference,
            ">= 10x wes-service",
        ),
        Figure(
            "WES submissions per second",
            rate,
            "1/s",
            "wes-service, runner true (HTTP alone)",
            accept_only,
        ),
        Figure(
            "WES submissions per second",
            rate,
            "1/s",
            "flowdeck GET /healthz (the floor)",
            median(got["healthz"]),
        ),
    ]
    figures += running_figures(n, rate, running, peers or [])
    report(
        "wes",
        figures,
        {
            "runs": n,
            "clients": args.clients,
            "rounds": args.rounds,
            "samples": got,
            "while_running": running,
            "status_pause_ms": args.status_pause_ms,
        },
    )


def running_figures(
    n: int, rate: float, running: dict[str, dict[str, Any]], peers: list[WesPeer]
) -> list[Figure]:
    """The figures of the batches with the status poller: flowdeck's beside each peer
    measured (a peer that could not be is named, its figures left out)."""
    ours = running.get("flowdeck")
    figures: list[Figure] = []
    for peer in peers:
        theirs = running.get(peer.name)
        if ours is None or theirs is None:
            print(f"  ({peer.name}: no figures while the runs execute)")
            continue
        if peer.name != "wes-service":  # (wes-service's submissions have figures above)
            figures.append(
                Figure(
                    "WES submissions per second",
                    rate,
                    "1/s",
                    f"{peer.label} (one round)",
                    theirs["rate"],
                )
            )
        figures.append(
            Figure(
                f"{n} CWL runs via WES, status polled: time until all finish",
                ours["finished_s"],
                "s",
                peer.label,
                theirs["finished_s"],
            )
        )
        figures += [
            Figure(
                f"WES status while the runs execute, p{p}",
                ours[f"status_p{p}_ms"],
                "ms",
                peer.label,
                theirs[f"status_p{p}_ms"],
                goal="<= 3 ms" if p == 50 else "",
            )
            for p in (50, 99)
        ]
    return figures


if __name__ == "__main__":
    main()
