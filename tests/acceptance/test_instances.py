"""Several `flowdeck serve` processes on one PostgreSQL database (and one data directory),
started as operators start them: any instance answers any request with the same result.

A second server on one SQLite database refuses to start."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from flowdeck.client import AuthenticationError, Client, NotFoundError
from tests.helpers import STRONG, free_port, fresh_pg_database, unique
from tests.receiver import eventually
from tests.serving import FLOWDECK, serve

ROOT = Path(__file__).parents[2]
ENDS = {"run.succeeded", "run.failed", "run.killed", "run.stopped"}


@pytest.fixture(scope="module", params=["thread", "process"])
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """Instances A and B of one deployment: one database, one data directory; A runs its
    scheduler in its HTTP process ("thread") or in a process of its own ("process")."""
    tmp = tmp_path_factory.mktemp("instances")
    with fresh_pg_database() as url, ExitStack() as stack:
        # tokens trusted for a minute unread: only a notification explains a quicker refusal
        env = {
            "FLOWDECK_DATABASE_URL": url,
            "FLOWDECK_REGISTRATION": "open",
            "FLOWDECK_TOKEN_CACHE_S": "60",
        }
        args = ("--data-dir", str(tmp / "data"))
        env_a = {**env, "FLOWDECK_SCHEDULER_PROCESS": str(request.param == "process").lower()}
        a, _ = stack.enter_context(serve(tmp, *args, env=env_a))
        b, _ = stack.enter_context(serve(tmp, *args, env=env))
        yield a, b


def _token(url: str, username: str) -> str:
    with httpx.Client(base_url=url) as c:
        body = {"username": username, "password": STRONG}
        c.post("/api/v1/auth/register", json=body).raise_for_status()
        r = c.post("/api/v1/auth/login", json=body)
        r.raise_for_status()
        token = r.json()["token"]
        assert isinstance(token, str)
        return token


def test_a_run_created_through_one_instance_is_followed_live_through_another(
    two_servers: tuple[str, str],
) -> None:
    a, b = two_servers
    token = _token(a, unique("ann"))
    with Client(a, token) as on_a, Client(b, token) as on_b:
        on_a.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        run = on_a.create_run("chain@1.0")  # staged: nothing happened yet
        seen: list[tuple[int, str]] = []
        # B's stream is open before A starts the run: its events reach B live
        first = on_b.list_events(runs=[run.id], limit=None)
        assert [e.type for e in first] == ["run.staged"]
        stream_from = first[-1].id
        reader = threading.Thread(
            target=lambda: seen.extend(
                (e.id, e.type) for e in _until_end(on_b.events(runs=[run.id], after=stream_from))
            ),
            daemon=True,
        )
        reader.start()
        on_a.run(run.id).start()
        reader.join(60)
        assert not reader.is_alive(), f"B's stream stopped at {seen[-1:]}"
        truth = [(e.id, e.type) for e in on_a.list_events(runs=[run.id], limit=None)]
        assert seen == truth[1:]  # every event once, in order, live through B
        assert seen[-1][1] == "run.succeeded"
        # resumed on A from where B's stream was cut (Last-Event-ID across instances)
        middle = seen[len(seen) // 2][0]
        resumed = [(e.id, e.type) for e in _until_end(on_a.events(runs=[run.id], after=middle))]
        assert resumed == [x for x in truth if x[0] > middle]
        assert on_b.run(run.id).status()["state"] == "succeeded"


def _until_end(events: Iterator[object]) -> Iterator[object]:
    for event in events:
        yield event
        if getattr(event, "type", None) in ENDS:
            return


def test_records_pushed_through_one_instance_come_out_live_through_another(
    two_servers: tuple[str, str],
) -> None:
    """The run runs on A; its input is written through B and its output read through B
    (long polls, then WebSockets): A's feeder and B's readers are woken by the other
    server's notifications."""
    a, b = two_servers
    token = _token(a, unique("dan"))
    with Client(a, token) as on_a, Client(b, token) as on_b:
        on_a.push_workflow(ROOT / "examples" / "streams" / "flowdeck.yaml")
        run = on_a.create_run("double@1.0", start=True)
        on_b.run(run.id).input("records").write([{"n": 1}, {"n": 2}])
        results = on_b.run(run.id).output("results")
        got: list[dict[str, object]] = []
        while len(got) < 2:
            page = results.page(from_=len(got), wait=20)  # answered when A writes
            assert page["records"], f"B was not woken by A's records (got {got})"
            got += [r["data"] for r in page["records"]]
        assert got == [{"n": 1, "double": 2}, {"n": 2, "double": 4}]
        # the WebSockets: a record pushed through A's, read live from B's
        auth = {"Authorization": f"Bearer {token}"}
        ws = "/api/v1/runs/" + run.id
        with connect(
            f"{b.replace('http', 'ws', 1)}{ws}/outputs/results", additional_headers=auth
        ) as out:
            with connect(
                f"{a.replace('http', 'ws', 1)}{ws}/inputs/records", additional_headers=auth
            ) as inp:
                inp.send(json.dumps({"n": 21}))
                assert json.loads(inp.recv(timeout=30))["records"] == 3
            seen = [json.loads(out.recv(timeout=30))["data"] for _ in range(3)]
            assert seen[-1] == {"n": 21, "double": 42}
            on_b.run(run.id).input("records").close()
            assert json.loads(out.recv(timeout=30)) == {"closed": True, "next": 3}
        assert on_b.run(run.id).wait(timeout=60)["state"] == "succeeded"


def test_a_token_revoked_through_one_instance_is_refused_at_once_by_another(
    two_servers: tuple[str, str],
) -> None:
    a, b = two_servers
    token = _token(a, unique("ben"))
    with Client(b, token) as on_b:
        assert on_b.runs() == []  # B has checked (and cached) the token
        with httpx.Client(base_url=a, headers={"authorization": f"Bearer {token}"}) as c:
            c.post("/api/v1/auth/logout").raise_for_status()
        # B forgets it once notified (milliseconds), not after token_cache_s (a minute)
        eventually(lambda: _refused(on_b), timeout=3, what="B to refuse the revoked token")


def _refused(client: Client) -> bool:
    try:
        client.runs()
    except AuthenticationError:
        return True
    return False


def test_a_workflow_deleted_through_one_instance_is_gone_on_another(
    two_servers: tuple[str, str],
) -> None:
    a, b = two_servers
    token = _token(a, unique("cat"))
    with Client(a, token) as on_a, Client(b, token) as on_b:
        on_a.push_workflow(ROOT / "examples" / "chain" / "flowdeck.yaml")
        run = on_b.create_run("chain@1.0", start=True)  # B resolves (and caches) chain@1.0
        run.wait(timeout=60)
        on_a.delete_workflow("chain@1.0")
        # a run created before B is notified (milliseconds) fails with 404 too; after, the
        # 404 names the version (not after B's own 10 s)
        with pytest.raises(NotFoundError):
            on_b.create_run("chain@1.0")
        eventually(lambda: _names_version(on_b), timeout=3, what="B to forget chain@1.0")


def _names_version(client: Client) -> bool:
    try:
        client.create_run("chain@1.0")
    except NotFoundError as exc:
        return "chain@1.0" in str(exc)
    return False


def test_a_second_server_on_one_sqlite_database_refuses_to_start(tmp_path: Path) -> None:
    import subprocess

    data = tmp_path / "data"
    with serve(tmp_path, "--data-dir", str(data)) as (_url, _log):
        second = subprocess.run(
            [*FLOWDECK, "serve", "--data-dir", str(data), "--port", str(free_port())],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode != 0
    assert "another flowdeck server" in second.stderr + second.stdout
    assert "PostgreSQL" in second.stderr + second.stdout
