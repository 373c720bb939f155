"""The workflow, run and events commands against a live server (typer's CliRunner)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from flowdeck.cli.main import app
from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

EXAMPLES = Path(__file__).parents[2] / "examples"
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "30"]\n'
FAILING = (
    'name: failing\nversion: "1"\nsteps:\n  boom:\n    run: [sh, -c, "echo oops >&2; exit 3"]\n'
)
ORDER = """name: order
version: "1"
steps:
  zz:
    run: [sleep, "2"]
  mm:
    needs: [zz]
    run: [sh, -c, "exit 1"]
  aa:
    needs: [mm]
    run: [echo, never]
"""
TYPED = """name: typed
version: "1"
inputs:
  n: {type: int}
  ratio: {type: float, default: 0.5}
  loud: {type: bool, default: false}
  names: {type: array, items: string, default: []}
  mode: {type: enum, symbols: [fast, slow], default: fast}
steps:
  echo:
    run: [echo, "${{ inputs.n }}", "${{ inputs.ratio }}", "${{ inputs.mode }}"]
    outputs:
      text: {stdout: text}
"""

runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("cli"), stop_grace_s=1, login_max_failures_per_address=10**6
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture
def user(srv: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh user, logged in with `flowdeck login`, with the test workflows pushed."""
    monkeypatch.setenv("FLOWDECK_URL", srv.url)
    name = unique("cli")
    with Client(srv.url) as c:
        c.register(name, STRONG)
    result = cli("login", "-u", name, input=STRONG + "\n")
    assert result.exit_code == 0, result.output
    for text, file in (
        (SLEEPY, "sleepy.yaml"),
        (FAILING, "failing.yaml"),
        (TYPED, "typed.yaml"),
        (ORDER, "order.yaml"),
    ):
        (tmp_path / file).write_text(text)
        assert cli("workflow", "push", str(tmp_path / file)).exit_code == 0
    assert cli("workflow", "push", str(EXAMPLES / "files")).exit_code == 0
    return name


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_state(run_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status: dict[str, Any] = as_json(cli("run", "status", run_id, "--json"))
        if status["state"] in states and (status["state"] != "running" or status["current_steps"]):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_workflow_commands(user: str, tmp_path: Path) -> None:
    pushed = cli("workflow", "push", str(EXAMPLES / "wordcount"), "--json")
    assert as_json(pushed)["has_archive"] is True
    listed = as_json(cli("workflow", "list", "--json"))
    assert {"wordcount", "sleepy", "sort-lines"} <= {w["name"] for w in listed}
    assert "sleepy@1" in cli("workflow", "list").stdout
    shown = cli("workflow", "show", "sort-lines@1.0")
    assert shown.exit_code == 0 and "text" in shown.stdout and "reverse" in shown.stdout
    assert as_json(cli("workflow", "show", "typed@1", "--json"))["spec"]["inputs"]["n"]
    assert "steps:" in cli("workflow", "show", "typed@1", "--source").stdout
    missing = cli("workflow", "show", "nothing@9")
    assert missing.exit_code == 1 and "nothing@9" in missing.stderr


def test_validate_works_offline(tmp_path: Path) -> None:
    ok = cli("workflow", "validate", str(EXAMPLES / "chain"))
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'name: bad\nversion: "1"\nsteps:\n  a:\n    run: [echo, "${{ inputs.raeds }}"]\n'
    )
    result = cli("workflow", "validate", str(bad))
    assert result.exit_code == 1 and "5:" in result.stdout and "raeds" in result.stdout
    report = json.loads(cli("workflow", "validate", str(bad), "--json").stdout)
    assert report["valid"] is False and report["errors"][0]["line"] == 5


def test_submit_with_typed_params_and_watch_json(user: str, tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("ratio: 0.25\n")
    result = cli(
        "run", "submit", "typed@1", "-p", "n=7", "-p", "loud=yes", "-p", "names=a,b",
        "--params-file", str(params), "--watch", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout[result.stdout.index("{") :])
    assert final["state"] == "succeeded"
    assert final["params"] == {
        "n": 7,
        "ratio": 0.25,
        "loud": True,
        "names": ["a", "b"],
        "mode": "fast",
    }
    bad = cli("run", "submit", "typed@1", "-p", "n=seven")
    assert bad.exit_code == 1 and "'seven' is not an int" in bad.stderr
    typo = cli("run", "create", "typed@1", "-p", "mdoe=1")
    assert typo.exit_code == 1 and "did you mean 'mode'" in typo.stderr
    enum = cli("run", "create", "typed@1", "-p", "mode=medium")
    assert enum.exit_code == 1 and "fast, slow" in enum.stderr


def test_create_stage_resources_start_watch_products_download(user: str, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("pear\napple\n")
    created = as_json(cli("run", "create", "sort-lines@1.0", "--tag", "cli", "--json"))
    run_id = created["id"]
    assert created["state"] == "staged"
    staged = cli("run", "stage", run_id, "--file", f"text={text}", "-p", "reverse=true")
    assert staged.exit_code == 0, staged.output
    res = as_json(cli("run", "resources", run_id, "--cpus", "1", "--priority", "3", "--json"))
    assert res["resources"]["cpus"] == 1 and res["priority"] == 3
    assert cli("run", "start", run_id).exit_code == 0
    watched = cli("run", "watch", run_id)
    assert watched.exit_code == 0, watched.output
    assert f"run {run_id} succeeded" in watched.stdout and "sort" in watched.stdout
    status = cli("run", "status", run_id)
    assert "succeeded" in status.stdout and "steps: 3/3 done" in status.stdout
    # file params and outputs by name, size and link; never the server's paths
    assert "lines.txt (11 bytes" in status.stdout and "sorted.txt (11 bytes" in status.stdout
    assert f"/api/v1/runs/{run_id}/products/" in status.stdout
    assert "/work/" not in status.stdout and "/inputs/" not in status.stdout
    listed = as_json(cli("run", "list", "--tag", "cli", "--json"))
    assert [r["id"] for r in listed] == [run_id]
    assert run_id in cli("run", "list").stdout
    products = as_json(cli("run", "products", run_id, "--json"))
    assert "sort.sorted" in {p["name"] for p in products}
    assert "sort.sorted" in cli("run", "products", run_id).stdout
    got = cli("run", "download", run_id, "sort.sorted", "-o", str(tmp_path / "s.txt"))
    assert got.exit_code == 0 and (tmp_path / "s.txt").read_text() == "apple\npear\n"
    assert cli("run", "download", run_id, "-o", str(tmp_path)).exit_code == 0
    assert "sorted.txt" in zipfile.ZipFile(tmp_path / f"{run_id}-products.zip").namelist()
    logs = cli("run", "logs", run_id)
    assert logs.exit_code == 0


def test_watch_exit_codes_for_failed_cancelled_killed(user: str) -> None:
    failed = cli("run", "submit", "failing@1", "--watch")
    assert failed.exit_code == 3 and "failed" in failed.stdout
    run_id = as_json(cli("run", "submit", "sleepy@1", "--json"))["id"]
    wait_state(run_id, {"running"})
    assert cli("run", "stop", run_id).exit_code == 0
    assert cli("run", "watch", run_id).exit_code == 4
    run_id = as_json(cli("run", "submit", "sleepy@1", "--json"))["id"]
    assert cli("run", "kill", run_id).exit_code == 0
    killed = cli("run", "watch", run_id, "--json")
    assert killed.exit_code == 5 and json.loads(killed.stdout)["state"] == "killed"


def test_pause_resume_and_logs_follow(user: str) -> None:
    run_id = as_json(cli("run", "submit", "failing@1", "--json"))["id"]
    followed = cli("run", "logs", run_id, "boom", "--stream", "stderr", "-f")
    assert followed.exit_code == 0 and followed.stdout == "oops\n"
    pieces = cli("run", "logs", run_id, "--stream", "stderr", "--json")
    assert [json.loads(line) for line in pieces.stdout.splitlines()] == [
        {"step": "boom", "stream": "stderr", "offset": 0, "text": "oops\n"}
    ]
    run_id = as_json(cli("run", "submit", "sleepy@1", "--json"))["id"]
    wait_state(run_id, {"running"})
    paused = as_json(cli("run", "pause", run_id, "--json"))
    assert paused["state"] == "paused"
    again = cli("run", "pause", run_id)
    assert again.exit_code == 1 and "paused" in again.stderr and "\n" not in again.stderr.strip()
    assert "resumed" in cli("run", "resume", run_id).stdout
    assert cli("run", "kill", run_id).exit_code == 0


def test_pause_drain_and_stop_with_a_grace_period(user: str) -> None:
    run_id = as_json(cli("run", "submit", "sleepy@1", "--json"))["id"]
    wait_state(run_id, {"running"})
    drained = as_json(cli("run", "pause", run_id, "--mode", "drain", "--json"))
    assert (drained["state"], drained["pause_mode"]) == ("paused", "drain")
    assert "resumed" in cli("run", "resume", run_id).stdout
    bad = cli("run", "pause", run_id, "--mode", "thaw")
    assert bad.exit_code == 2 and "thaw" in bad.stderr
    negative = cli("run", "stop", run_id, "--grace", "-1")
    assert negative.exit_code == 2 and "--grace" in negative.stderr
    started = time.monotonic()
    stopping = as_json(cli("run", "stop", run_id, "--grace", "0", "--json"))
    assert stopping["state"] in ("stopping", "cancelled")
    watched = cli("run", "watch", run_id)
    assert watched.exit_code == 4 and time.monotonic() - started < 10  # not sleep's 30 s
    frozen = as_json(cli("run", "submit", "sleepy@1", "--json"))["id"]
    wait_state(frozen, {"running"})
    paused = as_json(cli("run", "pause", frozen, "--json"))
    assert paused["pause_mode"] == "freeze"  # the default
    assert cli("run", "kill", frozen).exit_code == 0


def test_watch_clock_is_the_runs_and_steps_are_in_start_order(user: str) -> None:
    run_id = as_json(cli("run", "submit", "order@1", "--json"))["id"]
    assert cli("run", "watch", run_id, "--json").exit_code == 3
    time.sleep(1.5)  # a clock counting from the watch would now differ from the run's
    watched = cli("run", "watch", run_id)
    assert watched.exit_code == 3
    # the run lasted about 2 s (zz sleeps 2 s): its clock, not the watch's 0:00:00
    assert re.search(r"0:00:0[2-4]", watched.stdout), watched.stdout
    assert f"\nrun {run_id} failed: mm" in watched.stdout  # on a line of its own
    status = cli("run", "status", run_id)
    for text in (watched.stdout, status.stdout):
        rows = [line.split()[1] for line in text.splitlines() if re.match(r"^. (zz|mm|aa) ", line)]
        assert rows == ["zz", "mm", "aa"], text  # started first first; never started last


def test_events_tail(user: str) -> None:
    """A real `flowdeck events tail` process follows the live stream: started after the
    run's first event, it prints what comes next as it happens."""
    run_id = as_json(cli("run", "create", "sleepy@1", "--json"))["id"]
    history = cli("events", "tail", "--run", run_id, "--after", "0", "-n", "1", "--json")
    first = json.loads(as_json_line(history))
    assert first["type"] == "run.staged"
    command = [sys.executable, "-c", "from flowdeck.cli.main import main; main()"]
    tail = subprocess.Popen(
        [
            *command,
            "events",
            "tail",
            "--run",
            run_id,
            "--after",
            str(first["id"]),
            "-n",
            "2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli("run", "start", run_id).exit_code == 0
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
        tail.wait()
        cli("run", "kill", run_id)
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["run.queued", "run.running"]
    plain = cli("events", "tail", "--run", run_id, "--after", "0", "-n", "1")
    assert f"{run_id} run.staged by {user}" in plain.stdout


def as_json_line(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_errors_are_one_line_and_nonzero(user: str, srv: LiveServer) -> None:
    gone = cli("run", "status", "run_doesnotexist")
    assert gone.exit_code == 1 and gone.stderr.count("\n") == 1 and "no run" in gone.stderr
    nofile = cli("run", "create", "sort-lines@1.0", "--file", "text=/nonexistent/x")
    assert nofile.exit_code == 1 and "no such file" in nofile.stderr
    assert cli("logout").exit_code == 0
    out = cli("run", "list")
    assert out.exit_code == 1 and "not logged in" in out.stderr


def test_shell_completion_is_offered() -> None:
    assert "--install-completion" in cli("--help").stdout
