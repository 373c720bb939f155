"""The Python SDK against the real server: workflows, the run lifecycle, events.  Every
test runs against both faces, ``Client`` and ``AsyncClient`` (tests/faces.py)."""

from __future__ import annotations

import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
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
from flowdeck.client.files import directory_archive
from tests.faces import Connect
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique

EXAMPLES = Path(__file__).parents[2] / "examples"
SLEEPY = 'name: sleepy\nversion: "1"\nsteps:\n  nap:\n    run: [sleep, "30"]\n'
SCATTER = """name: scatter
version: "1"
inputs:
  letters: {type: array, items: string, default: [a, b]}
steps:
  each:
    foreach: ${{ inputs.letters }}
    run: [sh, -c, 'echo "$1" > out.txt', each, "${{ item }}"]
    outputs:
      out: {path: out.txt}
  report:
    run: [sh, -c, "echo done > report.txt"]
    outputs:
      report: {path: report.txt}
"""
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
def fd(
    srv: LiveServer, face: Connect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    with face(srv.url) as client:
        name = unique("sdk")
        client.register(name, STRONG)
        client.login(name, STRONG)
        client.push_workflow(EXAMPLES / "files" / "flowdeck.yaml")
        client.push_workflow(EXAMPLES / "chain" / "flowdeck.yaml")
        spec = tmp_path_factory.mktemp("specs")
        (spec / "sleepy.yaml").write_text(SLEEPY)
        (spec / "ticks.yaml").write_text(TICKS)
        (spec / "scatter.yaml").write_text(SCATTER)
        client.push_workflow(spec / "scatter.yaml")
        client.push_workflow(spec / "sleepy.yaml")
        client.push_workflow(spec / "ticks.yaml")
        yield client


def test_login_logout_and_typed_errors(srv: LiveServer, face: Connect) -> None:
    with face(srv.url) as c:
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
        assert c.health()
    with face("http://127.0.0.1:9") as dead, pytest.raises(ConnectionFailed):
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
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == ["reversed.txt", "sorted.txt"]
        assert zf.read("sorted.txt") == b"apple\nfig\npear\n"
    out, offset = run.logs("stats", stream="stderr")
    assert offset == len(out)
    assert run.id in {r.id for r in fd.runs(tag="sdk")}
    assert fd.run(run.id).state == "succeeded"
    types = [e.type for e in run.list_events()]
    assert types[0] == "run.staged" and types[-1] == "run.succeeded"
    assert [e.type for e in run.events()] == types  # ends after the run's final event
    assert [e.type for e in run.list_events(types=["run.*"], after=0, limit=2)] == [
        "run.staged",
        "run.queued",
    ]
    assert {e.run_id for e in fd.list_events(runs=[run.id], after=0)} == {run.id}
    assert [s["name"] for s in run.steps()] and run.status()["state"] == "succeeded"
    with pytest.raises(ConflictError) as conflict:
        run.start()
    assert "succeeded" in conflict.value.message


def test_zip_members_are_named_after_their_files_unique_and_stable(
    fd: Client, tmp_path: Path
) -> None:
    run = fd.create_run("scatter@1", start=True)
    assert run.wait(timeout=60)["state"] == "succeeded"
    with zipfile.ZipFile(run.download_all(tmp_path / "one.zip")) as zf:
        names = zf.namelist()
        # out.txt twice (one per foreach instance): each in its product's folder
        assert sorted(names) == ["each[0].out/out.txt", "each[1].out/out.txt", "report.txt"]
        assert zf.read("each[1].out/out.txt") == b"b\n"
        assert zf.read("report.txt") == b"done\n"
    with zipfile.ZipFile(run.download_all(tmp_path / "two.zip")) as zf:
        assert zf.namelist() == names


def test_file_params_and_outputs_are_names_sizes_and_links_never_server_paths(
    fd: Client, srv: LiveServer, tmp_path: Path
) -> None:
    text = tmp_path / "in.txt"
    text.write_text("pear\napple\n")
    run = fd.create_run("sort-lines@1.0")
    run.upload("text", text)
    run.start()
    final = run.wait(timeout=60)
    assert final["state"] == "succeeded"
    data_dir = str(srv.settings.data_dir.absolute())
    for shown in (final, run.steps(), fd.run(run.id).data, run.rerun().data):
        assert data_dir not in str(shown) and str(srv.settings.data_dir.resolve()) not in str(shown)
    param = final["params"]["text"]
    assert (param["name"], param["size"]) == ("in.txt", 11)
    assert run.download(param, tmp_path / "again.txt").read_text() == "pear\napple\n"
    assert [f["url"] for f in run.files()] == [param["url"]]
    assert run.download(run.files()[0], tmp_path).name == "in.txt"
    sorted_ = final["outputs"]["sorted"]
    products = {p["name"]: p for p in run.products()}
    assert sorted_ == {
        "name": "sorted.txt",
        "size": 11,
        "url": products["sort.sorted"]["url"],
    }
    assert run.download(sorted_, tmp_path).read_text() == "apple\npear\n"
    steps = {s["name"]: s for s in run.steps()}
    assert steps["sort"]["outputs"]["sorted"] == sorted_
    assert final["outputs"]["lines"] == 2  # values stay values


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


def refuse_streams(request: httpx.Request) -> httpx.Response | None:
    """A proxy in the way that refuses event streams (502) and passes everything else."""
    if "text/event-stream" in request.headers.get("accept", ""):
        body = {"error": {"code": "bad_gateway", "message": "no streams here", "details": {}}}
        return httpx.Response(502, json=body)
    return None


class NoStreams(httpx.HTTPTransport):
    refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        refused = refuse_streams(request)
        self.refused += refused is not None
        return refused or super().handle_request(request)


class AsyncNoStreams(httpx.AsyncHTTPTransport):
    refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        refused = refuse_streams(request)
        self.refused += refused is not None
        return refused or await super().handle_async_request(request)


def test_wait_falls_back_to_polling_when_streams_fail(
    fd: Client, face: Connect, srv: LiveServer
) -> None:
    transport = NoStreams() if face is Client else AsyncNoStreams()
    with face(srv.url, fd.token, transport=transport) as proxied:
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


def test_event_stream_of_another_users_run_is_not_found(
    fd: Client, face: Connect, srv: LiveServer
) -> None:
    run = fd.create_run("chain@1.0")
    with face(srv.url) as other:
        name = unique("other")
        other.register(name, STRONG)
        other.login(name, STRONG)
        with pytest.raises(NotFoundError):
            other.run(run.id)
        with pytest.raises(NotFoundError):
            next(iter(other.follow(f"/api/v1/runs/{run.id}/events", [])))


def test_async_progress_may_be_a_coroutine_and_waits_are_cancellable(
    srv: LiveServer, fd: Client, tmp_path: Path
) -> None:
    """What only the asynchronous face has: awaited callbacks, cancellation by anyio."""
    text = tmp_path / "in.txt"
    text.write_text("b\na\n")

    async def main() -> list[str]:
        async with AsyncClient(srv.url, fd.token) as ac:
            run = await ac.create_run("sort-lines@1.0")
            await run.upload("text", text)
            await run.start()
            states: list[str] = []

            async def progress(status: dict[str, Any]) -> None:
                await anyio.lowlevel.checkpoint()
                states.append(status["state"])

            with anyio.fail_after(60):
                await run.wait(progress)
            sleepy = await ac.create_run("sleepy@1", start=True)
            with anyio.move_on_after(1) as scope:
                await sleepy.wait()
            assert scope.cancelled_caught
            await sleepy.kill()
            return states

    assert anyio.run(main)[-1] == "succeeded"
