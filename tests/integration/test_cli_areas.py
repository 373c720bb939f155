"""The webhook, graph, stream-port, rerun and CWL commands against a live server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from flowdeck.cli.main import app
from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique
from tests.receiver import eventually, receiver

EXAMPLES = Path(__file__).parents[2] / "examples"
CWL = Path(__file__).parents[1] / "data" / "cwl"
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "30"]\n'
QUICK = """name: quick
version: "1"
steps:
  a:
    run: [sh, -c, "echo a > a.txt"]
    outputs:
      out: {path: a.txt}
  b:
    run: [cat, "${{ steps.a.outputs.out }}"]
"""
FAILING = 'name: failing\nversion: "1"\nsteps:\n  boom:\n    run: [sh, -c, "exit 3"]\n'

runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"})


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("cli-areas"),
        stop_grace_s=1,
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture
def user(srv: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLOWDECK_URL", srv.url)
    name = unique("cli")
    with Client(srv.url) as c:
        c.register(name, STRONG)
    assert cli("login", "-u", name, input=STRONG + "\n").exit_code == 0
    for text, file in ((SLEEPY, "sleepy.yaml"), (QUICK, "quick.yaml"), (FAILING, "f.yaml")):
        (tmp_path / file).write_text(text)
        assert cli("workflow", "push", str(tmp_path / file)).exit_code == 0
    assert cli("workflow", "push", str(EXAMPLES / "streams")).exit_code == 0
    return name


def test_webhook_commands(user: str) -> None:
    with receiver() as rec:
        added = cli("webhook", "add", rec.url, "-e", "run.succeeded")
        assert added.exit_code == 0 and "whsec_" in added.stdout and "only now" in added.stdout
        hook = as_json(cli("webhook", "list", "--json"))[0]
        assert hook["url"] == rec.url and hook["events"] == ["run.succeeded"]
        assert rec.url in cli("webhook", "list").stdout
        assert as_json(cli("webhook", "show", hook["id"], "--json"))["enabled"] is True
        run = as_json(cli("run", "submit", "quick@1", "--json"))
        assert cli("run", "watch", run["id"]).exit_code == 0
        eventually(lambda: rec.received(), what="the delivery")
        found = eventually(
            lambda: [
                d
                for d in as_json(cli("webhook", "deliveries", hook["id"], "--json"))
                if d["state"] == "succeeded"
            ],
            what="a succeeded delivery",
        )
        assert "run.succeeded" in cli("webhook", "deliveries", hook["id"]).stdout
        assert cli("webhook", "redeliver", hook["id"], found[0]["id"]).exit_code == 0
        eventually(lambda: len(rec.received()) == 2, what="the redelivery")
        rotated = as_json(cli("webhook", "rotate", hook["id"], "--json"))
        assert rotated["secret"].startswith("whsec_")
        assert as_json(cli("webhook", "disable", hook["id"], "--json"))["enabled"] is False
        assert as_json(cli("webhook", "enable", hook["id"], "--json"))["enabled"] is True
        assert cli("webhook", "delete", hook["id"]).exit_code == 0
    gone = cli("webhook", "show", hook["id"])
    assert gone.exit_code == 1 and hook["id"] in gone.stderr and gone.stderr.count("\n") == 1
    refused = cli("webhook", "add", "http://10.9.9.9/x")
    assert refused.exit_code == 1 and "10.9.9.9" in refused.stderr


def test_push_input_and_read_output(user: str, tmp_path: Path) -> None:
    run = as_json(cli("run", "submit", "double@1.0", "--json"))
    records = tmp_path / "in.ndjson"
    records.write_text('{"n": 1}\n\n{"n": 2}\n')
    pushed = as_json(
        cli("run", "push-input", run["id"], "records", "--file", str(records), "--json")
    )
    assert pushed["records"] == 2
    result = cli(
        "run", "push-input", run["id"], "records", "--file", "-", "--close", input='{"n": 3}\n'
    )
    assert result.exit_code == 0 and "closed" in result.stdout
    followed = cli("run", "read-output", run["id"], "results", "--follow")
    assert followed.exit_code == 0
    assert [json.loads(line)["double"] for line in followed.stdout.splitlines()] == [2, 4, 6]
    lines = cli("run", "read-output", run["id"], "results", "--from", "2", "--json").stdout
    assert [json.loads(line)["offset"] for line in lines.splitlines()] == [2]
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"n": 1}\nnot json\n')
    refused = cli("run", "push-input", run["id"], "records", "--file", str(bad))
    assert refused.exit_code == 1 and "bad.ndjson:2" in refused.stderr
    closed = cli("run", "push-input", run["id"], "records", "--file", str(records))
    assert closed.exit_code == 1 and "records" in closed.stderr
    assert cli("run", "push-input", run["id"], "records").exit_code == 1


def test_graph_commands(user: str, tmp_path: Path) -> None:
    spec = tmp_path / "g.yaml"
    spec.write_text(
        "name: pair\nnodes:\n  one: {workflow: quick@1}\n  two: {workflow: quick@1}\n"
        "edges:\n  - {from: one, to: two}\n"
    )
    final = cli("graph", "submit", str(spec), "--watch", "--json")
    assert final.exit_code == 0, final.output
    graph = json.loads(final.stdout)
    assert graph["state"] == "succeeded"
    assert as_json(cli("graph", "status", graph["id"], "--json"))["counts"] == {"succeeded": 2}
    assert "two" in cli("graph", "status", graph["id"]).stdout
    assert graph["id"] in [g["id"] for g in as_json(cli("graph", "list", "--json"))]
    assert cli("graph", "watch", graph["id"]).exit_code == 0
    failing = tmp_path / "f.json"
    failing.write_text(json.dumps({"nodes": {"x": {"workflow": "failing@1"}}}))
    assert cli("graph", "submit", str(failing), "--watch").exit_code == 3
    slow = tmp_path / "slow.yaml"
    slow.write_text("nodes:\n  nap: {workflow: sleepy@1}\n")
    started = as_json(cli("graph", "submit", str(slow), "--json"))

    def running() -> bool:
        status = as_json(cli("graph", "status", started["id"], "--json"))
        return bool(status["nodes"][0]["state"] == "running")

    eventually(running, timeout=30, what="the node's run")
    assert as_json(cli("graph", "pause", started["id"], "--json"))["state"] == "paused"
    assert as_json(cli("graph", "resume", started["id"], "--json"))["state"] == "running"
    assert as_json(cli("graph", "stop", started["id"], "--grace", "0", "--json"))["state"] in {
        "stopping",
        "cancelled",
    }
    assert cli("graph", "watch", started["id"]).exit_code == 4
    killed = as_json(cli("graph", "submit", str(slow), "--json"))
    assert "killed" in cli("graph", "kill", killed["id"]).stdout
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("nodes:\n  a: {workflow: quick@1}\nedges:\n  - {from: a, to: zzz}\n")
    refused = cli("graph", "submit", str(wrong))
    assert refused.exit_code == 1 and "zzz" in refused.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("nodez: {}\n")
    assert "nodez" in cli("graph", "submit", str(typo)).stderr


def test_rerun_and_cwl_push(user: str) -> None:
    run = as_json(cli("run", "submit", "quick@1", "--watch", "--json"))
    assert run["state"] == "succeeded"
    again = cli("run", "rerun", run["id"], "--from-step", "b", "--watch", "--json")
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["id"] != run["id"] and rerun["state"] == "succeeded"
    busy = as_json(cli("run", "submit", "sleepy@1", "--json"))
    refused = cli("run", "rerun", busy["id"])
    assert refused.exit_code == 1 and refused.stderr.strip()
    assert cli("run", "kill", busy["id"]).exit_code == 0
    pushed = as_json(cli("workflow", "push", str(CWL / "greet.cwl"), "--json"))
    assert pushed["name"] == "greet" and pushed["version"].startswith("cwl-")
    named = cli(
        "workflow",
        "push",
        str(CWL),
        "--type",
        "cwl",
        "--main",
        "sort-count.cwl",
        "--name",
        "counting",
        "--version",
        "2",
    )
    assert named.exit_code == 0 and "counting@2" in named.stdout
    bad = cli("workflow", "push", str(CWL / "greet.cwl"), "--type", "wdl")
    assert bad.exit_code == 1 and "wdl" in bad.stderr


def test_steps_of_a_rerun_are_cached(user: str) -> None:
    run = as_json(cli("run", "submit", "quick@1", "--watch", "--json"))
    rerun = as_json(cli("run", "rerun", run["id"], "--json"))
    deadline = time.monotonic() + 60
    while as_json(cli("run", "status", rerun["id"], "--json"))["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status = as_json(cli("run", "status", rerun["id"], "--json"))
    assert status["steps"].get("cached") == 2, status
