"""The Python SDK against the real server: workflows, the run lifecycle, events."""

from __future__ import annotations

import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from flowdeck.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    ConnectionFailed,
    InvalidRequest,
    NotFoundError,
    Reconnect,
)
from flowdeck.client._shared import directory_archive
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

EXAMPLES = Path(__file__).parents[2] / "examples"
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "30"]\n'
TICKS = 'name: ticks\nversion: "1"\nsteps:\n' + "".join(
    f"  s{i}:\n    run: [true]\n" + (f"    needs: [s{i - 1}]\n" if i else "") for i in range(8)
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("sdk"),
        stop_grace_s=1,
        sse_buffer_events=10,
        login_max_failures_per_address=10**6,
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def fd(srv: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with Client(srv.url) as client:
        name = unique("sdk")
        client.register(name, STRONG)
        client.login(name, STRONG)
        client.push_workflow(EXAMPLES / "files" / "flowdeck.yaml")
        client.push_workflow(EXAMPLES / "chain" / "flowdeck.yaml")
        spec = tmp_path_factory.mktemp("specs")
        (spec / "sleepy.yaml").write_text(SLEEPY)
        (spec / "ticks.yaml").write_text(TICKS)
        client.push_workflow(spec / "sleepy.yaml")
        client.push_workflow(spec / "ticks.yaml")
        yield client


def test_login_logout_and_typed_errors(srv: LiveServer) -> None:
    with Client(srv.url) as c:
        name = unique("who")
        c.register(name, STRONG)
        with pytest.raises(AuthenticationError) as wrong:
            c.login(name, "not the right passphrase")
        assert wrong.value.status == 401 and wrong.value.message
        c.login(name, STRONG)
        assert c.me()["username"] == name
        with pytest.raises(ConflictError, match=r"taken|exists"):
            c.register(name, STRONG)
        c.logout()
        assert c.token is None
        with pytest.raises(AuthenticationError):
            c.me()
    with Client("http://127.0.0.1:9") as dead, pytest.raises(ConnectionFailed):
        dead.health()


def test_push_directory_as_archive_list_and_get(fd: Client, tmp_path: Path) -> None:
    pushed = fd.push_workflow(EXAMPLES / "wordcount")
    assert pushed["has_archive"] and pushed["name"] == "wordcount"
    assert fd.push_workflow(EXAMPLES / "wordcount")["id"] == pushed["id"]  # same content
    names = {w["name"] for w in fd.workflows()}
    assert {"wordcount", "sort-lines", "chain"} <= names
    assert fd.workflow("wordcount@1.0")["spec"]["steps"]["count"]["python"]
    with (
        directory_archive(EXAMPLES / "wordcount") as buf,
        tarfile.open(fileobj=buf, mode="r:gz") as tar,
    ):
        assert sorted(tar.getnames()) == ["flowdeck.yaml", "wordcount.py"]
    zipped = tmp_path / "wc.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in (EXAMPLES / "wordcount").iterdir():
            zf.write(f, f.name)
    assert fd.push_workflow(zipped)["name"] == "wordcount"
    bad = tmp_path / "bad.yaml"
    bad.write_text('name: bad\nversion: "1"\nsteps:\n  a:\n    run: [echo, "${{ inputs.nope }}"]\n')
    with pytest.raises(InvalidRequest) as err:
        fd.push_workflow(bad)
    assert "nope" in err.value.message and err.value.details["errors"]
    assert fd.validate_workflow(bad)["valid"] is False
    with pytest.raises(NotFoundError):
        fd.workflow("nothing@1")


def test_run_lifecycle_upload_wait_products_download(fd: Client, tmp_path: Path) -> None:
    text = tmp_path / "lines.txt"
    text.write_text("pear\napple\nfig\n")
    run = fd.create_run("sort-lines@1.0", tags=["sdk"])
    assert run.state == "staged"
    run.upload("text", text)
    assert [f["filename"] for f in run.files()] == ["lines.txt"]
    run.stage_params(reverse=True)
    run.set_resources(cpus=1, priority=5)
    assert run.validate()["ok"] is True
    run.start()
    seen: list[str] = []
    final = run.wait(progress=lambda s: seen.append(s["state"]), timeout=60)
    assert final["state"] == "succeeded" and seen[-1] == "succeeded"
    assert final["outputs"]["lines"] == 3
    names = {p["name"] for p in run.products()}
    assert "sort.sorted" in names
    saved = run.download("sort.sorted", tmp_path)
    assert saved.read_text() == "apple\nfig\npear\n"
    zipped = run.download_all(tmp_path / "all.zip")
    assert "sort.sorted" in zipfile.ZipFile(zipped).namelist()
    out, offset = run.logs("stats", stream="stderr")
    assert offset == len(out)
    assert run.id in {r.id for r in fd.runs(tag="sdk")}
    assert fd.run(run.id).state == "succeeded"
    types = [e.type for e in run.list_events()]
    assert types[0] == "run.staged" and types[-1] == "run.succeeded"
    with pytest.raises(ConflictError) as conflict:
        run.start()
    assert "succeeded" in conflict.value.message


def test_bad_param_names_the_input(fd: Client) -> None:
    run = fd.create_run("chain@1.0")
    with pytest.raises(InvalidRequest) as err:
        run.stage_params(whoo="x")
    assert err.value.details.get("input") == "whoo" and "did you mean 'who'" in err.value.message


def test_pause_resume_stop_kill(fd: Client) -> None:
    run = fd.create_run("sleepy@1", start=True)
    deadline = time.monotonic() + 30
    while run.status()["state"] != "running" or not run.data["current_steps"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert run.pause()["state"] == "paused"
    assert run.resume()["state"] == "running"
    run.stop(grace_s=0.5)
    assert run.wait(timeout=30)["state"] == "cancelled"
    other = fd.create_run("sleepy@1", start=True)
    other.kill()
    assert other.wait(timeout=30)["state"] == "killed"


def test_a_run_can_be_stopped_or_killed_right_after_it_was_created(fd: Client) -> None:
    # The scheduler takes a new run in after the creation answered: an action asked at
    # once must reach it, never a 409 "not known to the scheduler".
    for i in range(10):
        run = fd.create_run("sleepy@1", start=True)
        if i % 2:
            run.kill()
            assert run.wait(timeout=30)["state"] == "killed"
        else:
            run.stop(grace_s=0.5)
            assert run.wait(timeout=30)["state"] == "cancelled"


class NoStreams(httpx.HTTPTransport):
    """A proxy in the way that refuses event streams (502) and passes everything else."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "text/event-stream" in request.headers.get("accept", ""):
            self.refused += 1
            body = {"error": {"code": "bad_gateway", "message": "no streams here", "details": {}}}
            return httpx.Response(502, json=body)
        return super().handle_request(request)


def test_wait_falls_back_to_polling_when_streams_fail(fd: Client, srv: LiveServer) -> None:
    transport = NoStreams()
    with Client(srv.url, fd.token, transport=transport) as proxied:
        run = proxied.create_run("chain@1.0", start=True)
        seen: list[str] = []
        final = run.wait(progress=lambda s: seen.append(s["state"]), timeout=60)
    assert final["state"] == "succeeded" and seen[-1] == "succeeded"
    assert transport.refused >= 1


def test_wait_times_out(fd: Client) -> None:
    run = fd.create_run("sleepy@1", start=True)
    with pytest.raises(TimeoutError):
        run.wait(timeout=1)
    run.kill()


def test_events_resume_after_the_server_cuts_a_slow_reader(fd: Client) -> None:
    """The server ends a stream whose reader falls 10 events behind; the iterator
    reconnects with Last-Event-ID and delivers every event once, in order."""
    run = fd.create_run("ticks@1", start=True)
    seqs: list[int] = []
    for event in run.events(reconnect=Reconnect(max_failures=20), timeout=60):
        seqs.append(event.seq)
        if len(seqs) == 1:
            time.sleep(1.5)  # meanwhile the run emits far more than 10 events
    assert seqs == list(range(1, len(seqs) + 1))
    assert fd.run(run.id).state == "succeeded"


def test_event_stream_of_another_users_run_is_not_found(fd: Client, srv: LiveServer) -> None:
    run = fd.create_run("chain@1.0")
    with Client(srv.url) as other:
        name = unique("other")
        other.register(name, STRONG)
        other.login(name, STRONG)
        with pytest.raises(NotFoundError):
            other.run(run.id)
        with pytest.raises(NotFoundError):
            next(iter(other.stream(f"/api/v1/runs/{run.id}/events", [])))


def test_async_client(srv: LiveServer, fd: Client, tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("b\na\n")

    async def main() -> dict[str, Any]:
        async with AsyncClient(srv.url, fd.token) as ac:
            assert (await ac.me())["username"] == fd.me()["username"]
            run = await ac.create_run("sort-lines@1.0")
            await ac.run(run.id)
            await run.upload("text", text)
            await run.start()
            states: list[str] = []

            async def progress(status: dict[str, Any]) -> None:
                states.append(status["state"])

            with anyio.fail_after(60):
                final = await run.wait(progress)
            assert states[-1] == "succeeded"
            saved = await run.download("sort.sorted", tmp_path / "sorted.txt")
            assert saved.read_text() == "a\nb\n"
            types = [e.type async for e in run.events()]
            assert types[-1] == "run.succeeded"
            assert [e.type for e in await run.list_events()] == types
            assert {e.run_id for e in await ac.list_events(runs=[run.id], after=0)} == {run.id}
            assert (await run.files())[0]["filename"] == "in.txt"
            _, offset = await run.logs("sort")
            assert offset == 0  # sort writes its output to a file, not to stdout
            assert (await ac.validate_workflow(EXAMPLES / "chain"))["valid"] is True
            assert run.id in {r.id for r in await ac.runs()}
            return final

    assert anyio.run(main)["state"] == "succeeded"
