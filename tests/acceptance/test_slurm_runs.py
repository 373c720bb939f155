"""Runs on Slurm: ``flowdeck serve`` as a real process with ``slurm = true``, against a
single-node cluster of the module's own (tests/slurmcluster.py), shared by every test.

A chain, a job array for a scatter, a failure, a timeout, stop, kill, a job cancelled
outside flowdeck, freeze and drain, stream ports refused, a pending step with Slurm's
reason, sbatch options the admin allows, the step sandbox inside jobs, a slurmctld restart,
and the server killed with SIGKILL while jobs run: the next server adopts them by the job
ids stored with the steps and cancels jobs nobody runs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowdeck.executors.slurm_jobs import Files
from tests.clusterruns import (
    WAIT_S,
    api,
    cli_as,
    one_step,
    push,
    status,
    steps,
    submit_on,
    wait_state,
)
from tests.crashkit import Server, base_env, sign_up, two_servers
from tests.helpers import STRONG, free_port, fresh_pg_database, loopback_service, network_probe
from tests.slurmcluster import SlurmCluster, slurm_cluster

SLURM = {"executor": "slurm"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with slurm_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def server(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slurm-runs")
    (tmp / "gates").mkdir()  # files the tests and the steps share (their sandbox has it)
    env = {
        **base_env(tmp / "data"),
        **cluster.env,
        "FLOWDECK_SLURM": "true",
        "FLOWDECK_SLURM_POLL_S": "0.3",
        "FLOWDECK_SLURM_JOB_NAME": "fd-accept",
        "FLOWDECK_SLURM_USER_OPTIONS": "nice,constraint",
        "FLOWDECK_SANDBOX_EXTRA_RW": str(tmp / "gates"),
        "FLOWDECK_STEP_NETWORK": "allowed",
    }
    srv = Server(tmp, env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return sign_up(server, "slurmer")


def submit(server: Server, token: str, workflow: str, **body: Any) -> str:
    return submit_on("slurm", server, token, workflow, **body)


def cli(server: Server, *args: str, ok: bool = True) -> str:
    return cli_as("slurmer", server, *args, ok=ok)


def files_of(server: Server, run_id: str, label: str, attempt: int = 1) -> Files:
    logs = server.data_dir / "runs" / run_id / "logs"
    return Files.of(logs / f"{label}.{attempt}.stdout")


def wait_started(server: Server, run_id: str, label: str = "main") -> str:
    """Until the step's job runs and wrote its first line: its job id."""
    files = files_of(server, run_id, label)
    stdout = files.base.with_name(f"{files.base.name}.stdout")
    deadline = time.monotonic() + WAIT_S
    while not (stdout.exists() and b"started" in stdout.read_bytes()):
        assert time.monotonic() < deadline, server.excerpt()
        time.sleep(0.1)
    job = files.job_id()
    assert job is not None
    return job


def test_a_chain_runs_as_one_job_per_step(server: Server, token: str) -> None:
    chain = Path(__file__).parents[2] / "examples" / "chain" / "flowdeck.yaml"
    r = api(
        server,
        token,
        "POST",
        "/workflows",
        content=chain.read_text(),
        headers={"content-type": "application/yaml"},
    )
    assert r.status_code in (200, 201), r.text
    run_id = submit(server, token, "chain@1.0", params={"who": "slurm"})
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", done
    assert done["outputs"] == {"shouted": "HELLO SLURM", "length": 11}
    jobs = {
        label: files_of(server, run_id, label).job_id() for label in ("greet", "shout", "count")
    }
    assert all(job is not None and job.isdigit() for job in jobs.values()), jobs
    assert len(set(jobs.values())) == 3
    r = api(server, token, "GET", f"/runs/{run_id}/steps/shout/logs", params={"stream": "stdout"})
    assert r.text == "HELLO SLURM"
    listed = steps(server, token, run_id)
    assert {label: s["slurm_job"] for label, s in listed.items()} == jobs


COUNTED = """\
  each:
    foreach: ${{{{ inputs.items }}}}
    foreach_limit: 1
    retries: 1
    run:
      - sh
      - -c
      - |
        flock {d}/lock sh -c 'n=$(($(cat {d}/now) + 1)); echo $n > {d}/now
          [ $n -gt $(cat {d}/max) ] && echo $n > {d}/max; true'
        sleep 0.5
        flock {d}/lock sh -c 'echo $(($(cat {d}/now) - 1)) > {d}/now'
        echo "element $1 attempt $FLOWDECK_ATTEMPT"
        [ "$1" = 3 ] && [ "$FLOWDECK_ATTEMPT" = 1 ] && exit 5
        echo $(($1 * 10)) > out.txt
      - each
      - ${{{{ item }}}}
    outputs:
      tenfold: {{json: out.txt}}
"""


def test_a_scatter_is_one_job_array_with_a_throttle(server: Server, token: str) -> None:
    """A foreach over four elements with foreach_limit 1: one job array (task i: element
    i), never two elements at once; element 3 fails its first attempt and is retried on
    its own; outputs and logs per element as for local steps."""
    d = server.tmp / "gates" / "array-count"
    d.mkdir(mode=0o777)
    d.chmod(0o777)  # (the steps run as the step user)
    for name in ("now", "max"):
        (d / name).write_text("0")
        (d / name).chmod(0o666)
    extra = (
        "inputs:\n  items: {type: array, items: int, default: [1, 2, 3, 4]}\n"
        "outputs:\n  all: {from: '${{ steps.each.outputs.tenfold }}'}\n"
    )
    wf = push(server, token, "sarray", COUNTED.format(d=d), extra)
    run_id = submit(server, token, wf)
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", done
    assert done["outputs"] == {"all": [10, 20, 30, 40]}
    assert (d / "max").read_text().strip() == "1"  # the throttle held
    listed = steps(server, token, run_id)
    jobs = {label: s["slurm_job"] for label, s in listed.items() if label.startswith("each[")}
    arrays = {job.split("_")[0] for label, job in jobs.items() if label != "each[2]"}
    assert len(arrays) == 1, jobs  # one array for the first attempts
    [array] = arrays
    assert jobs == {"each[0]": f"{array}_0", "each[1]": f"{array}_1", "each[3]": f"{array}_3"} | {
        "each[2]": jobs["each[2]"]
    }
    assert "_" not in jobs["each[2]"], jobs  # the retry: a job of its own
    assert listed["each[2]"]["attempts"] == 2 and listed["each[0]"]["attempts"] == 1
    for index, item in enumerate((1, 2, 3, 4)):
        attempt = 2 if item == 3 else 1
        r = api(
            server,
            token,
            "GET",
            f"/runs/{run_id}/steps/each/logs",
            params={"stream": "stdout", "index": index, "attempt": attempt},
        )
        assert r.text == f"element {item} attempt {attempt}\n", r.text


def test_a_step_on_slurm_runs_in_the_step_sandbox(server: Server, token: str) -> None:
    """The node has bubblewrap: the job's step runs in the same sandbox as a local step,
    as the step user (the server is root), seeing of the data directory only its own
    run's folder (not the database, not other runs)."""
    d = server.data_dir
    look = f"[sh, -c, 'echo started; id -u; ls -A {d}; ls -A {d}/runs', look]"
    wf = push(server, token, "sboxed", one_step(look, "    outputs: {seen: {stdout: text}}\n"))
    run_id = submit(server, token, wf)
    done = wait_state(server, token, run_id)
    assert done["state"] == "succeeded", done
    seen = steps(server, token, run_id)["main"]["outputs"]["seen"].split()
    assert seen[0] == "started" and seen[1] != "0", seen  # not root
    assert seen[2:] == ["runs", run_id], seen  # the data directory shows its run only
    assert files_of(server, run_id, "main").path("box").exists()


def test_a_networked_step_on_slurm_gets_the_sandboxs_network(server: Server, token: str) -> None:
    """A step asking for network gets it inside its job as a local step does: outbound
    through pasta, in the sandbox's own network namespace, so the node's loopback services
    (PostgreSQL's, a private one) and the gateway stay out of reach."""
    with loopback_service() as port:
        spec = {
            "name": "snet",
            "version": "1",
            "steps": {
                "main": {
                    "run": ["python3", "-c", network_probe(port)],
                    "resources": {"network": True},
                }
            },
        }
        r = api(server, token, "POST", "/workflows", json=spec)
        assert r.status_code in (200, 201), r.text
        run_id = submit(server, token, "snet@1")
        done = wait_state(server, token, run_id)
    out = api(
        server, token, "GET", f"/runs/{run_id}/steps/main/logs", params={"stream": "stdout"}
    ).text
    assert done["state"] == "succeeded", (done, out, files_of(server, run_id, "main").base)
    assert "outside 200" in out and "ESCAPED" not in out, out
    assert out.count("refused") == 3, out
    assert "--info-fd" in files_of(server, run_id, "main").path("box").read_text()


def test_a_run_started_from_the_dashboard_on_slurm_shows_each_steps_job_id(
    server: Server, token: str
) -> None:
    """The new-run form offers the executors of the server (slurm here): a run created and
    started there on Slurm runs as a job, whose id its page shows beside the step."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"no Chromium at {chromium} (apt-get install chromium)")
    wf = push(server, token, "sweb", one_step("[sh, -c, 'echo started']"))
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            page = browser.new_context(base_url=server.url).new_page()
            page.set_default_timeout(30_000)
            page.goto("/login")
            page.get_by_label("Username").fill("slurmer")
            page.get_by_label("Password").fill(STRONG)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/")
            page.goto(f"/runs/new?workflow={wf}")
            where = page.get_by_label("Where it runs")
            options = where.locator("option").all_inner_texts()
            assert options[0] == "local (the server's default)" and "slurm" in options, options
            where.select_option("slurm")
            page.get_by_role("button", name="Create and start").click()
            page.wait_for_url(re.compile(r".*/runs/run_[0-9a-z]+$"))
            run_id = page.url.rsplit("/", 1)[1]
            assert wait_state(server, token, run_id)["state"] == "succeeded"
            assert status(server, token, run_id)["resources"]["executor"] == "slurm"
            job = files_of(server, run_id, "main").job_id()
            assert job is not None
            page.reload()
            row = page.locator('[data-step-row="main"]')
            playwright.expect(row.locator(".slurm-job")).to_have_text(f" Slurm job {job}")
        finally:
            browser.close()


def test_a_python_step_and_its_result(server: Server, token: str) -> None:
    spec = (
        'name: pyslurm\nversion: "1"\noutputs:\n  total: {from: "${{ steps.s.outputs.total }}"}\n'
        "steps:\n  s:\n    python: adder:add\n    with: {a: 2, b: 3}\n"
        "    outputs:\n      total: {return: total}\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("flowdeck.yaml", spec)
        zf.writestr("adder.py", "def add(a: int, b: int) -> dict:\n    return {'total': a + b}\n")
    r = api(
        server,
        token,
        "POST",
        "/workflows",
        content=buf.getvalue(),
        headers={"content-type": "application/zip"},
    )
    assert r.status_code in (200, 201), r.text
    done = wait_state(server, token, submit(server, token, "pyslurm@1"))
    assert done["state"] == "succeeded", done
    assert done["outputs"] == {"total": 5}


def test_a_failure_names_the_exit_code(server: Server, token: str) -> None:
    wf = push(server, token, "sfails", one_step("[sh, -c, 'echo broken >&2; exit 3']"))
    done = wait_state(server, token, submit(server, token, wf))
    assert done["state"] == "failed"
    assert "exit code 3" in done["error"]["message"] and "broken" in done["error"]["message"]


def test_a_timeout(server: Server, token: str) -> None:
    wf = push(server, token, "sslow", one_step("[sleep, '300']", "    resources: {timeout: 1}\n"))
    run_id = submit(server, token, wf)
    done = wait_state(server, token, run_id)
    assert done["state"] == "failed" and "timed out" in done["error"]["message"], done
    assert steps(server, token, run_id)["main"]["state"] == "timed_out"


LONG = "[sh, -c, 'trap \"echo got TERM; exit 143\" TERM; echo started; sleep 300 & wait']"


def test_stop(server: Server, token: str, cluster: SlurmCluster) -> None:
    wf = push(server, token, "sstop", one_step(LONG))
    run_id = submit(server, token, wf)
    wait_started(server, run_id)
    r = api(server, token, "POST", f"/runs/{run_id}/stop", json={"grace_s": 5})
    assert r.status_code == 200, r.text
    done = wait_state(server, token, run_id)
    assert done["state"] == "cancelled", done
    logs = api(server, token, "GET", f"/runs/{run_id}/steps/main/logs", params={"stream": "stdout"})
    assert "got TERM" in logs.text  # the step itself got the TERM
    assert files_of(server, run_id, "main").stop_asked() == "stop"


def test_stop_while_the_job_waits_in_the_queue(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """A step pending in Slurm's queue has no process to signal: a stop cancels its job
    at once, not after the grace time (ten minutes here)."""
    blocker = cluster.hold_every_cpu()
    try:
        wf = push(server, token, "sstopq", one_step("[sh, -c, 'echo started']"))
        run_id = submit(server, token, wf)
        deadline = time.monotonic() + WAIT_S
        while (main := steps(server, token, run_id)["main"])["state"] != "pending" or not main[
            "slurm_job"
        ]:
            assert time.monotonic() < deadline, main
            time.sleep(0.1)
        r = api(server, token, "POST", f"/runs/{run_id}/stop", json={"grace_s": 600})
        assert r.status_code == 200, r.text
        assert wait_state(server, token, run_id)["state"] == "cancelled"
        assert steps(server, token, run_id)["main"]["state"] == "cancelled"
        assert job_state(cluster, main["slurm_job"]) not in ("PENDING", "RUNNING")
    finally:
        cluster.command("scancel", blocker)


def test_kill(server: Server, token: str, cluster: SlurmCluster) -> None:
    wf = push(server, token, "skill", one_step("[sh, -c, 'echo started; sleep 300']"))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    r = api(server, token, "POST", f"/runs/{run_id}/kill")
    assert r.status_code == 200, r.text
    assert wait_state(server, token, run_id)["state"] == "killed"
    deadline = time.monotonic() + WAIT_S
    while cluster.command("squeue", "-h", "-j", job, "-t", "PD,R,CG").stdout.strip():
        assert time.monotonic() < deadline, "the job still runs after the kill"
        time.sleep(0.2)


def test_a_job_cancelled_outside_flowdeck(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    wf = push(server, token, "soutside", one_step("[sh, -c, 'echo started; sleep 300']"))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    assert cluster.command("scancel", job).returncode == 0
    done = wait_state(server, token, run_id)
    assert done["state"] == "failed" and "cancelled in Slurm" in done["error"]["message"], done


def job_state(cluster: SlurmCluster, job: str) -> str:
    return cluster.command("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()


def test_freeze_suspends_the_job_and_drain_lets_it_end(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """As root the server may suspend jobs: freeze is scontrol suspend, resume resumes."""
    gate = server.tmp / "gates" / "freeze-gate"
    gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    wf = push(server, token, "spause", one_step(gated))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    r = api(server, token, "POST", f"/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 200, r.text
    assert steps(server, token, run_id)["main"]["state"] == "paused"
    deadline = time.monotonic() + WAIT_S
    while job_state(cluster, job) != "SUSPENDED":
        assert time.monotonic() < deadline, job_state(cluster, job)
        time.sleep(0.1)
    assert api(server, token, "POST", f"/runs/{run_id}/resume").status_code == 200
    while job_state(cluster, job) != "RUNNING":
        assert time.monotonic() < deadline, job_state(cluster, job)
        time.sleep(0.1)
    r = api(server, token, "POST", f"/runs/{run_id}/pause", json={"mode": "drain"})
    assert r.status_code == 200, r.text
    gate.touch()  # a drained run's running step ends as it would
    while steps(server, token, run_id)["main"]["state"] != "succeeded":
        assert time.monotonic() < deadline, steps(server, token, run_id)["main"]
        time.sleep(0.1)
    assert status(server, token, run_id)["state"] == "paused"
    r = api(server, token, "POST", f"/runs/{run_id}/resume")
    assert r.status_code == 200, r.text
    assert wait_state(server, token, run_id)["state"] == "succeeded"
    assert steps(server, token, run_id)["main"]["attempts"] == 1


def test_stream_ports_are_refused(server: Server, token: str) -> None:
    wf = push(
        server,
        token,
        "sstream",
        one_step("[cat]", "    stdin: ${{ inputs.lines }}\n"),
        extra="inputs:\n  lines: {type: stream}\n",
    )
    r = api(
        server, token, "POST", "/runs", json={"workflow": wf, "start": True, "resources": SLURM}
    )
    assert r.status_code == 422 and "stream ports" in r.text, r.text


def test_a_server_killed_while_jobs_run(server: Server, token: str, cluster: SlurmCluster) -> None:
    """SIGKILL the server while one job runs and another ends meanwhile: the next server
    adopts both by id, and each step is recorded once, with its real exit; jobs of the
    deployment's name whose attempt is unknown or not under way are cancelled at start."""
    gate = server.tmp / "gates" / "gate"
    gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done; exit 4']"
    wf_live = push(server, token, "slive", one_step(gated))
    wf_quick = push(server, token, "squick", one_step("[sh, -c, 'echo started; sleep 1; exit 0']"))
    live = submit(server, token, wf_live)
    quick = submit(server, token, wf_quick)
    live_job = wait_started(server, live)
    quick_job = wait_started(server, quick)
    # Jobs with the deployment's name whose attempt nobody runs: cancelled at start.
    strays = [
        cluster.command(
            "sbatch",
            "--parsable",
            "--job-name=fd-accept",
            f"--comment={key}",
            "--output=/dev/null",
            "--wrap=sleep 300",
        ).stdout.strip()
        for key in ("run_nobody/main/-1/1", f"{live}/main/-1/7")  # unknown; not its attempt
    ]
    server.crash()
    time.sleep(2)  # the quick step ends while no server follows it
    server.start()
    deadline = time.monotonic() + WAIT_S
    while any(job_state(cluster, job) in ("PENDING", "RUNNING") for job in strays):
        assert time.monotonic() < deadline, server.excerpt()
        time.sleep(0.1)
    assert wait_state(server, token, quick)["state"] == "succeeded"
    assert status(server, token, live)["state"] == "running"
    gate.touch()
    done = wait_state(server, token, live)
    assert done["state"] == "failed" and "exit code 4" in done["error"]["message"], done
    for run_id, job in ((live, live_job), (quick, quick_job)):
        main = steps(server, token, run_id)["main"]
        assert main["attempts"] == 1, main
        assert files_of(server, run_id, "main").job_id() == job


def test_a_slurmctld_restart_loses_nothing(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """slurmctld goes down while one job runs, and a step is submitted while it is down
    (sbatch is asked again until the controller is back); both end as they should."""
    gate = server.tmp / "gates" / "ctld-gate"
    gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    wf = push(server, token, "sctld", one_step(gated))
    before = submit(server, token, wf)
    wait_started(server, before)
    cluster.stop_daemon("slurmctld")
    try:
        during = submit(server, token, wf)
        deadline = time.monotonic() + WAIT_S
        while f"sbatch for {during}/main/-1/1 failed" not in server.log.read_text():
            assert time.monotonic() < deadline, server.excerpt()
            time.sleep(0.1)
        assert status(server, token, before)["state"] == "running"  # a failed squeue ends nothing
    finally:
        cluster.start_ctld(clear=False)
    gate.touch()
    for run_id in (before, during):
        assert wait_state(server, token, run_id)["state"] == "succeeded"
        assert steps(server, token, run_id)["main"]["attempts"] == 1


def test_the_docs_example_runs_as_written(server: Server, token: str) -> None:
    """docs/slurm.md's example, its shell lines as a user types them (the server is this
    module's, started with FLOWDECK_SLURM=true): the chain runs on Slurm to its end."""
    docs = (Path(__file__).parents[2] / "docs" / "slurm.md").read_text()
    block = docs.split("An example:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith("FLOWDECK_SLURM=")]
    assert len(lines) == 4 and lines[-1].endswith('flowdeck run watch "$RUN"'), block
    cli(server, "whoami")  # logged in, as the reader is
    env = {
        **os.environ,
        "FLOWDECK_URL": server.url,
        "XDG_CONFIG_HOME": str(server.tmp / "cli-config"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout, done.stdout


def test_sbatch_options_the_admin_allows(server: Server, token: str, cluster: SlurmCluster) -> None:
    """The admin allows nice and constraint: a run's nice reaches its job; an option
    outside the allowlist is refused with 422 naming it (API and CLI)."""
    wf = push(server, token, "sopts", one_step("[sh, -c, 'echo started; sleep 1']"))
    refused = {"executor": "slurm", "slurm_options": {"nice": 5, "gres": "gpu:1"}}
    r = api(server, token, "POST", "/runs", json={"workflow": wf, "resources": refused})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "sbatch option 'gres' is not allowed on this server" in message, r.text
    assert "allowed: constraint, nice" in message, r.text
    r = api(server, token, "POST", "/runs", json={"workflow": wf})
    staged = r.json()["id"]
    said = cli(
        server, "run", "resources", staged, "--executor", "slurm", "--sbatch", "mem=1G", ok=False
    )
    assert "sbatch option 'mem' is not allowed" in said, said
    run_id = submit(server, token, wf, resources={**SLURM, "slurm_options": {"nice": 7}})
    job = wait_started(server, run_id)
    shown = cluster.command("scontrol", "show", "job", job).stdout
    assert "Nice=7" in shown, shown
    assert wait_state(server, token, run_id)["state"] == "succeeded"


def test_a_pending_job_is_a_pending_step_with_slurms_reason(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """Another job holds every CPU of the node: the step's job waits in Slurm, and the step
    is ``pending`` with Slurm's reason and its job id (API and ``flowdeck run status``).
    The job id is stored with the step: a server killed meanwhile re-adopts the waiting
    job by it (its copy in the run folder removed); once the job may run, the step runs,
    once."""
    blocker = cluster.hold_every_cpu()
    try:
        wf = push(server, token, "swaits", one_step("[sh, -c, 'echo started']"))
        run_id = submit(server, token, wf)
        deadline = time.monotonic() + WAIT_S
        # (the first polls may see it pending before Slurm gave a reason: "pending" then)
        reasons = ("Resources", "Priority")  # as Slurm words it
        while (main := steps(server, token, run_id).get("main", {})).get("slurm_reason") not in (
            reasons
        ):
            assert time.monotonic() < deadline, main
            time.sleep(0.1)
        assert main["state"] == "pending" and main["slurm_state"] == "PENDING", main
        job = main["slurm_job"]
        assert job is not None
        shown = cli(server, "run", "status", run_id)
        # (Slurm's reason may change between two looks: Priority, then Resources)
        assert re.search(r"│ pending \((Resources|Priority)\) .* │ " + job + " ", shown), shown
        # Held in Slurm by someone (so it still waits once the CPUs are free: the next
        # server's start-up probe job needs one), then the server is killed.
        assert cluster.command("scontrol", "hold", job).returncode == 0
    finally:
        cluster.command("scancel", blocker)
    server.crash()
    files_of(server, run_id, "main").path("job").unlink()  # only the database has it now
    server.start()
    deadline = time.monotonic() + WAIT_S
    held = ("JobHeldUser", "JobHeldAdmin")  # (root's hold is an admin's)
    while (main := steps(server, token, run_id)["main"])["slurm_reason"] not in held:
        assert time.monotonic() < deadline, str(main)
        time.sleep(0.1)
    assert main["state"] == "pending" and main["slurm_job"] == job, main
    assert cluster.command("scontrol", "release", job).returncode == 0
    assert wait_state(server, token, run_id)["state"] == "succeeded"
    main = steps(server, token, run_id)["main"]
    assert main["attempts"] == 1 and main["slurm_job"] == job, main
    assert main["slurm_state"] is None and main["slurm_reason"] is None, main


def test_a_requeued_job_is_pending_again(server: Server, token: str, cluster: SlurmCluster) -> None:
    """Slurm requeues a running job (as after a preemption; held here, so that a poll
    surely sees it wait): its step is pending again, in the same attempt, with Slurm's
    reason; a stop then cancels the waiting job at once."""
    gate = server.tmp / "gates" / "requeue-gate"
    gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    wf = push(server, token, "srequeue", one_step(gated))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    deadline = time.monotonic() + WAIT_S
    while (main := steps(server, token, run_id)["main"])["state"] != "running":
        assert time.monotonic() < deadline, main
        time.sleep(0.1)
    assert cluster.command("scontrol", "requeuehold", job).returncode == 0
    while (main := steps(server, token, run_id)["main"])["state"] != "pending":
        assert time.monotonic() < deadline, main
        time.sleep(0.1)
    assert main["slurm_reason"] and main["slurm_job"] == job and main["attempts"] == 1, main
    r = api(server, token, "POST", f"/runs/{run_id}/stop", json={"grace_s": 600})
    assert r.status_code == 200, r.text
    assert wait_state(server, token, run_id)["state"] == "cancelled"
    assert job_state(cluster, job) not in ("PENDING", "RUNNING")


def test_a_requeued_job_runs_again_to_its_end(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """Slurm requeues a running job and later runs it again: the attempt ends as that
    second run ends (succeeded, in the same attempt), not as the first run's end said."""
    gate = server.tmp / "gates" / "rerun-gate"
    runs = server.tmp / "gates" / "rerun-count"
    gated = (
        f"[sh, -c, 'echo run >> {runs}; echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    )
    wf = push(server, token, "srerun", one_step(gated))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    deadline = time.monotonic() + WAIT_S
    while not runs.exists():
        assert time.monotonic() < deadline, steps(server, token, run_id)["main"]
        time.sleep(0.1)
    assert cluster.command("scontrol", "requeuehold", job).returncode == 0
    while (main := steps(server, token, run_id)["main"])["state"] != "pending":
        assert time.monotonic() < deadline, main
        time.sleep(0.1)
    assert main["slurm_reason"], main
    # Slurm runs it again once released and its credential expired (cred_expire=10)
    assert cluster.command("scontrol", "release", job).returncode == 0
    while len(runs.read_text().split()) < 2:
        main = steps(server, token, run_id)["main"]
        assert main["state"] in ("pending", "running") and time.monotonic() < deadline, (
            f"{main} {files_of(server, run_id, 'main').exit_record()}"
        )
        time.sleep(0.1)
    gate.touch()
    assert wait_state(server, token, run_id)["state"] == "succeeded"
    main = steps(server, token, run_id)["main"]
    assert main["attempts"] == 1 and main["slurm_job"] == job, main


def test_a_frozen_run_survives_a_server_kill(
    server: Server, token: str, cluster: SlurmCluster
) -> None:
    """Frozen, then the server is killed: the next one keeps the job suspended, and its
    resume resumes it."""
    gate = server.tmp / "gates" / "frozen-gate"
    gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done']"
    wf = push(server, token, "sfrozen", one_step(gated))
    run_id = submit(server, token, wf)
    job = wait_started(server, run_id)
    r = api(server, token, "POST", f"/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + WAIT_S
    while job_state(cluster, job) != "SUSPENDED":
        assert time.monotonic() < deadline, job_state(cluster, job)
        time.sleep(0.1)
    server.crash()
    server.start()
    assert status(server, token, run_id)["state"] == "paused"
    assert steps(server, token, run_id)["main"]["state"] == "paused"
    assert job_state(cluster, job) == "SUSPENDED"
    assert api(server, token, "POST", f"/runs/{run_id}/resume").status_code == 200
    while job_state(cluster, job) != "RUNNING":
        assert time.monotonic() < deadline, job_state(cluster, job)
        time.sleep(0.1)
    gate.touch()
    assert wait_state(server, token, run_id)["state"] == "succeeded"


def test_start_up_stops_when_no_job_can_run(cluster: SlurmCluster, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **base_env(tmp_path / "data"),
        **cluster.env,
        "FLOWDECK_SLURM": "true",
        "FLOWDECK_SLURM_PARTITION": "nope",
    }
    done = subprocess.run(
        [sys.executable, "-m", "flowdeck", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "invalid setting slurm (FLOWDECK_SLURM): the probe job failed" in done.stderr


def test_slurm_as_the_servers_default(cluster: SlurmCluster, tmp_path: Path) -> None:
    """default_executor = slurm: a run that names no executor runs on Slurm, but one of a
    workflow with stream ports (local only) runs locally."""
    env = {
        **base_env(tmp_path / "data"),
        **cluster.env,
        "FLOWDECK_SLURM": "true",
        "FLOWDECK_DEFAULT_EXECUTOR": "slurm",
        "FLOWDECK_SLURM_POLL_S": "0.3",
        "FLOWDECK_SLURM_JOB_NAME": "fd-default",
    }
    srv = Server(tmp_path, env)
    srv.start()
    try:
        tok = sign_up(srv, "defaulted")
        wf = push(srv, tok, "sdefault", one_step("[sh, -c, 'echo started']"))
        run_id = submit(srv, tok, wf, resources={})
        assert wait_state(srv, tok, run_id)["state"] == "succeeded"
        assert steps(srv, tok, run_id)["main"]["slurm_job"] is not None
        streams = push(
            srv,
            tok,
            "sdefault-streams",
            one_step("[cat]", "    stdin: ${{ inputs.lines }}\n"),
            extra="inputs:\n  lines: {type: stream}\n",
        )
        local = submit(srv, tok, streams, resources={})
        assert api(srv, tok, "POST", f"/runs/{local}/inputs/lines/close").status_code in (200, 204)
        assert wait_state(srv, tok, local)["state"] == "succeeded"
        assert steps(srv, tok, local)["main"]["slurm_job"] is None
    finally:
        srv.stop()


def test_a_survivor_on_another_host_adopts_the_jobs_of_a_dead_server(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Two servers of one PostgreSQL database on two hosts (``host_id``): A dies with a
    job running; once A's lease (3 s) has run out, B takes the run over and follows the
    same job by its stored id (Slurm jobs are not bound to A's host): one attempt, the
    job's real exit."""
    gates = tmp_path / "gates"
    gates.mkdir()
    with fresh_pg_database() as url:
        env = {
            **base_env(tmp_path / "data"),
            **cluster.env,
            "FLOWDECK_DATABASE_URL": url,
            "FLOWDECK_LEASE_TTL_S": "3",
            "FLOWDECK_SLURM": "true",
            "FLOWDECK_SLURM_POLL_S": "0.3",
            "FLOWDECK_SLURM_JOB_NAME": "fd-pair",
            "FLOWDECK_SANDBOX_EXTRA_RW": str(gates),
        }
        with two_servers(tmp_path, env, hosts=("host-a", "host-b")) as (a, b):
            token = sign_up(a, "pair")
            gate = gates / "gate"
            gated = f"[sh, -c, 'echo started; while [ ! -e {gate} ]; do sleep 0.1; done; exit 4']"
            run_id = submit(a, token, push(a, token, "sgated", one_step(gated)))
            job = wait_started(a, run_id)
            a.crash()
            time.sleep(4)  # past A's lease: B has taken the run over
            gate.touch()
            done = wait_state(b, token, run_id)
            assert done["state"] == "failed" and "exit code 4" in done["error"]["message"], done
            main = steps(b, token, run_id)["main"]
            assert main["attempts"] == 1, main  # followed, not submitted again
            assert main["slurm_job"] == job
