"""Escapes out of the step sandbox, each tried by a real step through a real server (bwrap,
the step supervisor, pasta) and refused.  CI runs these as root, as the issue asks: the
step user exists (``.ci/run``) and each attempt gets a uid of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_runs import push, steps, submit, wait
from tests.helpers import (
    LiveServer,
    live_server,
    loopback_service,
    make_settings,
    network_probe,
    register_and_login,
)
from tests.receiver import eventually

API = "/api/v1"
CANARY = "FLOWDECK_TEST_CANARY_6c1f"
UIDS = (910000, 910099)


def workflow(name: str, script: str, extra: str = "") -> str:
    return (
        f'name: {name}\nversion: "1"\nsteps:\n  main:\n    run: '
        f"{json.dumps(['/bin/bash', '-c', script])}\n{extra}"
    )


def stdout(c: httpx.Client, run_id: str) -> str:
    r = c.get(f"{API}/runs/{run_id}/steps/main/logs", params={"stream": "stdout"})
    assert r.status_code == 200, r.text
    return r.text


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("sandbox")
    (root / "shared").mkdir()
    (root / "shared" / "ref.txt").write_text("reference\n")
    os.environ[CANARY] = "server-only"
    tools = root / "tools" / "bin"  # a tool on the server's PATH, outside /usr
    tools.mkdir(parents=True)
    (tools / "flowdeck-test-tool").write_text("#!/bin/sh\necho tool ran\n")
    (tools / "flowdeck-test-tool").chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{tools}:{path}"
    settings = make_settings(
        root / "data",
        data_root=root / "shared",
        step_uids=f"{UIDS[0]}-{UIDS[1]}",
        step_max_processes=64,
        stop_grace_s=1,
        sandbox_extra_ro=[root / "tools"],
    )
    try:
        with live_server(settings) as server:
            yield server
    finally:
        del os.environ[CANARY]
        os.environ["PATH"] = path


@pytest.fixture(scope="module")
def user(srv: LiveServer) -> Iterator[httpx.Client]:
    with srv.client(register_and_login(srv, "sandboxed")) as client:
        yield client


def supervisor_pid(data_dir: Path) -> int:
    out = subprocess.run(
        ["pgrep", "-f", f"flowdeck.executors.supervisor --socket {data_dir}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return int(out[0])


def in_run_sandbox(script: str, sibling: str = "sleep 8") -> str:
    """A run whose step ``main`` starts in the run's sandbox (``sandbox_scope = "run"``):
    its first step ``warm`` starts that sandbox; ``main`` and ``sib`` start in it."""
    spec = {
        "warm": {"run": ["sleep", "1"]},
        "sib": {"run": ["/bin/bash", "-c", sibling], "needs": ["warm"]},
        "main": {"run": ["/bin/bash", "-c", script], "needs": ["warm"]},
    }
    return json.dumps({"name": "escape-run", "version": "1", "steps": spec})


@pytest.mark.parametrize("scope", ["step", "run"])
def test_escapes_are_refused(
    srv: LiveServer, user: httpx.Client, tmp_path: Path, scope: str
) -> None:
    """Each escape, from a step in a bwrap of its own (a one-step run) and from a step in
    its run's sandbox (where its run's sibling step runs beside it, as another uid)."""
    data = srv.settings.data_dir
    # another run (another user's) leaves a file in its work folder
    with srv.client(register_and_login(srv, f"victim-{scope}")) as victim:
        push(victim, workflow(f"victim-{scope}", "echo private > secret.txt"))
        other = submit(victim, f"victim-{scope}@1")
        assert wait(victim, other)["state"] == "succeeded"
    other_file = data / "runs" / other / "work" / "main" / "secret.txt"
    assert other_file.read_text() == "private\n"
    outside = tmp_path / "outside"
    port = srv.url.rsplit(":", 1)[1]
    server_pid, sup_pid = os.getpid(), supervisor_pid(data)
    tries = {
        "database": f"cat {data}/flowdeck.db",
        "data_dir": f"ls -A {data} | grep -v '^runs$'",  # the path to its folder, no more
        "other_runs": f"ls {data}/runs | grep -v $run",
        "other_run": f"cat {other_file}",
        "server_environ": f"cat /proc/{server_pid}/environ",
        "supervisor_environ": f"cat /proc/{sup_pid}/environ",
        "write_outside": f"touch {outside}",
        "write_data_dir": f"touch {data}/planted",
        "write_usr": "touch /usr/planted",
        "server_port": f"exec 3<>/dev/tcp/127.0.0.1/{port}",
        "postgres": "exec 3<>/dev/tcp/127.0.0.1/5432",
        "signal_server": f"kill -0 {server_pid}",
        "signal_supervisor": f"kill -0 {sup_pid}",
        "shadow": "cat /etc/shadow",
        "ssh_keys": "ls /etc/ssh | grep -q .",
    }
    if scope == "run":  # the run's own other step: seen, but neither signalled nor written
        tries["signal_sibling"] = "kill -0 $(pgrep -x -f 'sleep 8' | head -1)"
        tries["write_sibling"] = f"touch {data}/runs/$run/work/sib/planted"
        tries["write_work"] = f"touch {data}/runs/$run/work/planted"
    script = "run=$FLOWDECK_RUN_ID\n" + "".join(
        f"if ( {cmd} ) >/dev/null 2>&1; then echo ESCAPED {name}; else echo refused {name}; fi\n"
        for name, cmd in tries.items()
    )
    script += f"cat {srv.settings.data_root}/ref.txt; echo uid=$(id -u); env | sort\n"
    # in a run's sandbox, pid 2 is its launcher (python); in a step's own, the step (bash)
    script += "grep -q '^python' /proc/2/comm && echo IN-RUN-SANDBOX\n"
    script += "pgrep -x -f 'sleep 8' >/dev/null && echo SEES-SIBLING; true\n"
    if scope == "run":
        push(user, in_run_sandbox("sleep 0.5; " + script))
        run_id = submit(user, "escape-run@1")
    else:
        push(user, workflow("escape", script))
        run_id = submit(user, "escape@1")
    status = wait(user, run_id)
    assert status["state"] == "succeeded", status
    out = stdout(user, run_id)
    assert ("IN-RUN-SANDBOX" in out) == (scope == "run")
    assert ("SEES-SIBLING" in out) == (scope == "run")
    assert "ESCAPED" not in out, out
    for name in tries:
        assert f"refused {name}" in out
    assert "reference" in out  # data_root: readable
    uid = int(out.split("uid=")[1].split()[0])
    assert UIDS[0] <= uid <= UIDS[1]
    assert CANARY not in out and "server-only" not in out  # the server's environment
    assert "FLOWDECK_RUN_ID=" in out
    assert not outside.exists() and not (data / "planted").exists()
    # flowdeck owns the work folder again once the attempt is over
    assert (data / "runs" / run_id / "work" / "main").stat().st_uid == os.getuid()


def test_a_fork_bomb_stays_inside_its_step(srv: LiveServer, user: httpx.Client) -> None:
    """RLIMIT_NPROC per attempt uid: the bomb holds its own 64 processes, a step beside it
    runs, the server answers, and nothing of the bomb is left after its walltime."""
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 30"
    push(user, workflow("bomb", bomb, "    resources: {timeout: 6}\n"))
    push(user, workflow("beside", "sleep 2; for i in $(seq 1 20); do sh -c true; done; echo ok"))
    bomb_id = submit(user, "bomb@1")
    time.sleep(1.5)
    beside_id = submit(user, "beside@1")
    t0 = time.monotonic()
    assert user.get("/healthz").status_code == 200
    assert time.monotonic() - t0 < 5
    assert wait(user, beside_id)["state"] == "succeeded"
    assert stdout(user, beside_id) == "ok\n"
    status = wait(user, bomb_id, timeout=60)
    assert status["state"] == "failed" and "timed out" in status["error"]["message"]
    eventually(no_step_uid_left, timeout=10, what="the bomb's processes to be gone")


def no_step_uid_left() -> bool:
    left = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True, check=True)
    return not [u for u in left.stdout.split() if UIDS[0] <= int(u) <= UIDS[1]]


def test_a_fork_bomb_stays_inside_its_step_in_the_runs_sandbox(user: httpx.Client) -> None:
    """In a run's sandbox the bomb shares the run's pid namespace with a sibling step: the
    sibling (another uid, another process limit) still runs to its end."""
    spec = {
        "warm": {"run": ["sleep", "1"]},
        "bomb": {
            "run": ["/bin/bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 30"],
            "needs": ["warm"],
            "resources": {"timeout": 6},
            "allow_failure": True,
        },
        "beside": {
            "run": [
                "/bin/bash",
                "-c",
                "sleep 2; for i in $(seq 1 20); do sh -c true; done; echo ok",
            ],
            "needs": ["warm"],
        },
    }
    push(user, json.dumps({"name": "bomb-run", "version": "1", "steps": spec}))
    run_id = submit(user, "bomb-run@1")
    status = wait(user, run_id, timeout=60)
    assert status["state"] == "succeeded", status
    r = user.get(f"{API}/runs/{run_id}/steps/beside/logs", params={"stream": "stdout"})
    assert r.text == "ok\n"
    bomb = steps(user, run_id)["bomb"]
    assert bomb["state"] == "timed_out", bomb
    eventually(no_step_uid_left, timeout=10, what="the bomb's processes to be gone")


def test_a_step_asking_for_network_needs_the_policy(user: httpx.Client) -> None:
    push(user, workflow("wantsnet", "echo hi", "    resources: {network: true}\n"))
    status = wait(user, submit(user, "wantsnet@1"))
    assert status["state"] == "failed"
    assert "step_network" in status["error"]["message"]


def test_without_network_only_loopback(user: httpx.Client) -> None:
    script = "tail -n +3 /proc/net/dev | cut -d: -f1; getent hosts deb.debian.org || echo no-dns"
    push(user, workflow("nonet", script))
    run_id = submit(user, "nonet@1")
    assert wait(user, run_id)["state"] == "succeeded"
    assert stdout(user, run_id).split() == ["lo", "no-dns"]


@pytest.fixture
def loopback_only() -> Iterator[int]:
    with loopback_service() as port:
        yield port


def test_with_the_policy_outside_but_not_host_loopback(tmp_path: Path, loopback_only: int) -> None:
    probe = network_probe(loopback_only)
    settings = make_settings(tmp_path / "data", step_network="allowed", step_uids="910100-910199")
    with live_server(settings) as srv, srv.client(register_and_login(srv, "net")) as c:
        # the host side works
        with socket.create_connection(("127.0.0.1", loopback_only), timeout=3) as s:
            assert s.recv(100) == b"host loopback\n"
        spec: dict[str, Any] = {
            "name": "net",
            "version": "1",
            "steps": {"main": {"run": ["python3", "-c", probe], "resources": {"network": True}}},
        }
        r = c.post(f"{API}/workflows", json=spec)
        assert r.status_code in (200, 201), r.text
        run_id = submit(c, "net@1")
        status = wait(c, run_id, timeout=60)
        out = stdout(c, run_id)
        assert status["state"] == "succeeded", (status, out)
        assert "outside 200" in out and "ESCAPED" not in out, out
        assert out.count("refused") == 3


def test_a_dead_supervisors_networked_step_leaves_no_pasta(tmp_path: Path) -> None:
    """pasta runs outside the step's process group; the attempt's record names it, so
    that the server kills it with the orphaned step when the supervisor dies."""
    settings = make_settings(tmp_path / "data", step_network="allowed", step_uids="910200-910299")
    with live_server(settings) as srv, srv.client(register_and_login(srv, "netdead")) as c:
        push(c, workflow("netsleep", "sleep 30", "    resources: {network: true}\n"))
        run_id = submit(c, "netsleep@1")
        wait(c, run_id, {"running"})
        journal = srv.settings.data_dir / "runs" / run_id / "logs" / "attempts.jsonl"
        deadline = time.monotonic() + 10
        while '"helpers"' not in (journal.read_text() if journal.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pasta = json.loads(journal.read_text().splitlines()[0])["helpers"][0][0]
        assert Path(f"/proc/{pasta}/comm").read_text().startswith("pass")  # pasta, passt.avx2
        os.kill(supervisor_pid(srv.settings.data_dir), 9)
        assert wait(c, run_id)["state"] == "failed"
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pasta}") and "Z" not in _stat(pasta):
            assert time.monotonic() < deadline, "pasta outlived its step"
            time.sleep(0.05)


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_pause_resume_and_stop_reach_the_sandboxed_step(user: httpx.Client) -> None:
    script = "for i in $(seq 1 400); do echo $i; sleep 0.05; done"
    push(user, workflow("pausing", script))
    run_id = submit(user, "pausing@1")
    wait(user, run_id, {"running"})
    time.sleep(0.5)
    r = user.post(f"{API}/runs/{run_id}/pause", json={"mode": "freeze"})
    assert r.status_code == 200, r.text
    time.sleep(0.3)
    frozen = stdout(user, run_id)
    time.sleep(0.6)
    assert stdout(user, run_id) == frozen  # SIGSTOP reached the group inside the sandbox
    assert user.post(f"{API}/runs/{run_id}/resume").status_code == 200
    time.sleep(0.6)
    assert len(stdout(user, run_id)) > len(frozen)
    assert user.post(f"{API}/runs/{run_id}/stop").status_code in (200, 202)
    assert wait(user, run_id)["state"] in ("cancelled", "killed", "failed")


@pytest.mark.parametrize("mode", ["bwrap", "off"])
def test_without_bwrap_steps_fail_unless_the_sandbox_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """No bwrap on the PATH the supervisor inherits: a step fails saying why, unless the
    admin set sandbox = "off"."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    settings = make_settings(tmp_path / "data", sandbox=mode)
    with live_server(settings) as srv, srv.client(register_and_login(srv, "nobwrap")) as c:
        push(c, workflow("plain", "echo ran"))
        run_id = submit(c, "plain@1")
        status = wait(c, run_id)
        if mode == "off":
            assert status["state"] == "succeeded" and stdout(c, run_id) == "ran\n"
        else:
            assert status["state"] == "failed"
            message = status["error"]["message"]
            assert "bubblewrap (bwrap)" in message and 'sandbox = "off"' in message


def test_a_tool_on_the_servers_path_is_found_in_the_sandbox(user: httpx.Client) -> None:
    """A tool on the server's PATH outside /usr: found when its folder is in sandbox_extra_ro
    (read-only there)."""
    push(
        user,
        workflow(
            "tool",
            "flowdeck-test-tool; touch $(dirname $(command -v flowdeck-test-tool))/x || echo ro",
        ),
    )
    run_id = submit(user, "tool@1")
    assert wait(user, run_id)["state"] == "succeeded"
    assert stdout(user, run_id) == "tool ran\nro\n"
