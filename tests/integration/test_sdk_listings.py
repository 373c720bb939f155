"""Listings of the SDK page for the caller, through both faces (tests/faces.py): the
list methods take any ``limit`` (``None``: everything), the ``iter_*`` methods fetch one
page at a time as they are iterated, and the server's cap on a page is never an error."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import httpx
import pytest

from flowdeck.client import Client
from tests.faces import Connect
from tests.helpers import STRONG, LiveServer, live_server, make_settings, unique
from tests.receiver import receiver

EXAMPLES = Path(__file__).parents[2] / "examples"


class Counting(httpx.HTTPTransport):
    """A real transport that counts the GET requests of listings."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets.append(str(request.url))
        return super().handle_request(request)


class AsyncCounting(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets.append(str(request.url))
        return await super().handle_async_request(request)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("sdk-listings"),
        login_max_failures_per_address=10**6,
        webhook_allow_networks=["127.0.0.1/32"],
    )
    with live_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def token(srv: LiveServer) -> str:
    """One user with 7 runs (tag "many"), 5 webhooks and the chain workflow."""
    with Client(srv.url) as c:
        name = unique("lists")
        c.register(name, STRONG)
        c.login(name, STRONG)
        c.push_workflow(EXAMPLES / "chain" / "flowdeck.yaml")
        for _ in range(7):
            c.create_run("chain@1.0", tags=["many"])
        with receiver() as rec:
            for i in range(5):
                c.add_webhook(f"{rec.url}/{i}", ["run.*"])
        assert c.token is not None
        return c.token


@pytest.fixture
def counted(srv: LiveServer, face: Connect, token: str) -> Iterator[tuple[Client, list[str]]]:
    transport = Counting() if face is Client else AsyncCounting()
    with face(srv.url, token, transport=transport) as client:
        client.page_size = 2
        yield client, transport.gets


def test_iterating_fetches_one_page_at_a_time(counted: tuple[Client, list[str]]) -> None:
    fd, gets = counted
    hooks = fd.iter_webhooks()
    first = list(islice(hooks, 3))
    assert len(gets) == 2  # two pages of two: nothing fetched ahead
    rest = list(hooks)
    assert len(first) + len(rest) == 5 and len(gets) == 3
    ids = [h["id"] for h in first + rest]
    assert len(set(ids)) == 5 and ids == [h["id"] for h in fd.webhooks(limit=None)]
    runs = list(fd.iter_runs(tag="many"))
    assert len(runs) == 7 and all(r.state == "staged" for r in runs)
    assert [r.id for r in runs] == [r.id for r in fd.runs(tag="many", limit=None)]
    assert [r.id for r in fd.runs(tag="many", limit=3)] == [r.id for r in runs[:3]]
    assert [w["name"] for w in fd.iter_workflows()] == ["chain"]


def test_limits_above_the_servers_page_are_never_an_error(
    srv: LiveServer, face: Connect, token: str
) -> None:
    with face(srv.url, token) as fd:
        fd.page_size = 5000  # more than any listing's cap: asked for as the cap
        assert len(fd.runs(tag="many", limit=10_000)) == 7
        assert len(fd.webhooks(limit=300)) == 5
        assert len(fd.workflows(limit=1000)) == 1
        assert fd.graphs(limit=600) == []
        hook = fd.webhooks(limit=1)[0]
        assert fd.deliveries(hook["id"], limit=300) == list(fd.iter_deliveries(hook["id"]))
        run = fd.runs(limit=1)[0]
        assert len(run.list_events(limit=5000)) == 1  # run.staged
        assert len(fd.list_events(after=0, limit=5000)) == 7


def test_event_listings_page_by_id(counted: tuple[Client, list[str]]) -> None:
    fd, gets = counted
    every = fd.list_events(after=0, limit=None)
    assert len(every) == 7 and len(gets) == 4  # 2 + 2 + 2 + 1
    assert [e.id for e in every] == sorted(e.id for e in every)
    assert [e.id for e in fd.list_events(after=0, limit=5)] == [e.id for e in every[:5]]
    assert fd.list_events(after=every[-1].id, limit=None) == []


@pytest.mark.parametrize("bad", [-1, 2.5, "10"])
def test_a_bad_limit_or_page_size_is_a_clear_error(
    srv: LiveServer, face: Connect, token: str, bad: object
) -> None:
    with face(srv.url, token) as fd:
        with pytest.raises((ValueError, TypeError), match="limit"):
            fd.runs(limit=bad)  # type: ignore[arg-type]
        fd.page_size = 0
        with pytest.raises(ValueError, match="page_size"):
            fd.webhooks()
