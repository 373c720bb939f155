"""Warm cwltool workers (executors/cwlpool.py): 50 runs of a one-step CWL tool (sort.cwl
of tests/data/cwl, with its input file attached) submitted through WES, with the pool on
and off, beside bare ``cwltool --no-container`` running the same 50 two at a time, all
measured in this run:

- time from the first submission until all runs finished (the server's record), pool on
  and off, against bare cwltool two at a time (goal: pool on at most 0.5x);
- CPU seconds per run (the server, its supervisor and everything they ran).

    python -m bench.cwl_pool [--runs 50] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
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
TOOL = "sort.cwl"
FILES = (TOOL, "fruit.txt")
PARAMS = {"reverse": True, "text": {"class": "File", "path": "fruit.txt"}}
DONE = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry)] = (int(stat[1]), cmd)
    return found


def step_runners(data: Path) -> list[int]:
    """The step supervisor of a data directory (it starts the steps, not the server) and
    its warm cwltool workers (whose CPU counts their forked runs once reaped)."""
    procs = _processes()
    sups = [
        p
        for p, (_, cmd) in procs.items()
        if b"executors.supervisor" in cmd and str(data).encode() in cmd
    ]

    def under_supervisor(pid: int) -> bool:
        while pid > 1 and pid in procs:
            pid = procs[pid][0]
            if pid in sups:
                return True
        return False

    workers = [
        p for p, (_, cmd) in procs.items() if b"executors.zygote" in cmd and under_supervisor(p)
    ]
    return sups + workers


def bare_cwltool(n: int, parallel: int) -> float:
    """Wall seconds for n runs of bare cwltool, ``parallel`` at a time."""
    cwltool = str(Path(sys.executable).with_name("cwltool"))
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(
            json.dumps({**PARAMS, "text": {"class": "File", "path": str(CWL / "fruit.txt")}})
        )
        t0 = time.perf_counter()
        running: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            if len(running) >= parallel and running.pop(0).wait() != 0:
                raise RuntimeError("cwltool failed")
            argv = [cwltool, "--quiet", "--no-container", "--outdir", f"{tmp}/out{i}"]
            running.append(
                subprocess.Popen(
                    [*argv, str(CWL / TOOL), str(job)],
                    stdout=subprocess.DEVNULL,
                    env={**os.environ, "TMPDIR": tmp},
                )
            )
        for p in running:
            if p.wait() != 0:
                raise RuntimeError("cwltool failed")
        return time.perf_counter() - t0


def through_wes(n: int, clients: int, workers: int) -> tuple[float, float, int]:
    """(seconds until all n runs finished, CPU seconds, runs that said they were warm)
    through WES, with ``workers`` warm cwltool workers."""
    payload = [("workflow_attachment", (f, (CWL / f).read_bytes())) for f in FILES]
    form = {
        "workflow_url": TOOL,
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(PARAMS),
    }
    settings = {"cwl_warm_workers": str(workers), "step_env_passthrough": "PATH,PYTHONPATH"}
    with server(**settings) as (url, token, data, pid):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            # warm up: the workflow is stored (later pushes are content-addressed), the
            # supervisor and (pool on) its warm worker started
            for _ in range(2):
                first = c.post(f"{WES}/runs", data=form, files=payload).json()["run_id"]
                while c.get(f"{WES}/runs/{first}/status").json()["state"] not in DONE:
                    time.sleep(0.1)
                time.sleep(1.0)  # the worker imports cwltool
            runners = step_runners(data)
            cpu0 = tree_cpu(pid) + sum(tree_cpu(s) for s in runners)
            wall0 = time.time()

            def submit(_: int) -> str:
                r = c.post(f"{WES}/runs", data=form, files=payload)
                r.raise_for_status()
                return str(r.json()["run_id"])

            with ThreadPoolExecutor(clients) as pool:
                ids = list(pool.map(submit, range(n)))
            pending = set(ids)
            while pending:
                time.sleep(0.25)
                runs = c.get(f"{WES}/runs", params={"page_size": 4 * n}).json()["runs"]
                for run in runs:
                    if run["run_id"] in pending and run["state"] in DONE:
                        if run["state"] != "COMPLETE":
                            raise RuntimeError(f"run {run['run_id']} ended {run['state']}")
                        pending.discard(run["run_id"])
            cpu = tree_cpu(pid) + sum(tree_cpu(s) for s in runners) - cpu0
            listed = c.get("/api/v1/runs", params={"limit": 4 * n}).json()["items"]
            ends = [_ts(r["finished_at"]) for r in listed if r["id"] in set(ids)]
            warm = _warm_runs(data, ids)
            return max(ends) - wall0, cpu, warm


def _warm_runs(data: Path, ids: list[str]) -> int:
    """How many of the runs say (in their step's stderr) that a warm worker ran them."""
    count = 0
    for run_id in ids:
        logs = data / "runs" / run_id / "logs"
        texts = [p.read_text(errors="replace") for p in logs.rglob("*stderr*")]
        count += any("warm worker" in t for t in texts)
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    n = args.runs
    if os.geteuid() != 0:
        print("the warm pool needs a root server (step_uids): pool on = pool off here")
    two = bare_cwltool(n, 2)
    print(f"bare cwltool: {two:.1f} s two at a time", flush=True)
    on_wall, on_cpu, warm = through_wes(n, args.clients, 1)
    print(f"pool on: {on_wall:.1f} s ({warm}/{n} runs from the warm worker)", flush=True)
    off_wall, off_cpu, cold_warm = through_wes(n, args.clients, 0)
    print(f"pool off: {off_wall:.1f} s ({cold_warm}/{n} from a warm worker)", flush=True)
    name = f"{n} one-step CWL runs via WES until all finish"
    report(
        "cwl_pool",
        [
            Figure(f"{name}, pool on", on_wall, "s", "bare cwltool, 2 at a time", two, "<= 0.5"),
            Figure(f"{name}, pool off", off_wall, "s", "bare cwltool, 2 at a time", two),
            Figure(f"{name}, pool on", on_wall, "s", "pool off", off_wall),
            Figure(
                "CPU per run via WES, pool on",
                1000 * on_cpu / n,
                "ms",
                "pool off",
                1000 * off_cpu / n,
            ),
        ],
        {"runs": n, "clients": args.clients, "warm_runs": warm},
    )


if __name__ == "__main__":
    main()
