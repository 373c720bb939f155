"""WES and CWL benchmark (the WES issue's Performance section), beside cwltool alone
measured in the same run:

- 50 small CWL runs (the two-step sort-count workflow of tests/data/cwl) submitted
  through WES (multipart, with attachments) by 8 concurrent clients: submissions per
  second, and the time from the first submission until all runs finished;
- the same 50 runs with bare cwltool, one at a time and two at a time;
- CPU seconds per run: flowdeck (the server and everything it ran) against cwltool alone.

    python -m bench.wes [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

from bench.common import Figure, report, scratch_dir
from bench.server import server

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


def through_wes(n: int, clients: int) -> tuple[float, float, float]:
    """(submissions per second, seconds until all finished, CPU seconds) through WES."""
    payload = [("workflow_attachment", (f, (CWL / f).read_bytes())) for f in FILES]
    form = {
        "workflow_url": "sort-count.cwl",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps({"text": {"class": "File", "path": "fruit.txt"}}),
    }
    with server() as (url, token, _data, pid):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            # warm up: the workflow is stored once (later pushes are content-addressed)
            first = c.post(f"{WES}/runs", data=form, files=payload).json()["run_id"]
            while c.get(f"{WES}/runs/{first}/status").json()["state"] not in DONE:
                time.sleep(0.1)
            cpu0 = process_cpu(pid)
            t0, wall0 = time.perf_counter(), time.time()

            def submit(_: int) -> str:
                r = c.post(f"{WES}/runs", data=form, files=payload)
                r.raise_for_status()
                return str(r.json()["run_id"])

            with ThreadPoolExecutor(clients) as pool:
                ids = list(pool.map(submit, range(n)))
            submitted = time.perf_counter() - t0
            pending = set(ids)
            while pending:  # one listing per poll, not one request per run
                time.sleep(0.25)
                runs = c.get(f"{WES}/runs", params={"page_size": 2 * n}).json()["runs"]
                for run in runs:
                    if run["run_id"] in pending and run["state"] in DONE:
                        if run["state"] != "COMPLETE":
                            raise RuntimeError(f"run {run['run_id']} ended {run['state']}")
                        pending.discard(run["run_id"])
            cpu = process_cpu(pid) - cpu0
            # the end is when the last run finished (the server's record), not our last poll
            listed = c.get("/api/v1/runs", params={"limit": 2 * n}).json()["items"]
            ends = [_ts(r["finished_at"]) for r in listed if r["id"] in set(ids)]
            finished = max(ends) - wall0
    return n / submitted, finished, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    n = args.runs
    seq_wall, seq_cpu = cwltool_alone(n, 1)
    two_wall, _two_cpu = cwltool_alone(n, 2)
    print(f"cwltool alone: {seq_wall:.1f} s sequential, {two_wall:.1f} s two at a time")
    rate, wall, cpu = through_wes(n, args.clients)
    report(
        "wes",
        [
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
            Figure("WES submissions per second", rate, "1/s", "wes-service (reference)", 38.0),
        ],
        {"runs": n, "clients": args.clients},
    )


if __name__ == "__main__":
    main()
