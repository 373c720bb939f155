"""The client: workflows, runs, events, webhooks and graphs of one server (accounts are
in :mod:`.accounts`)."""

from __future__ import annotations

from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flowdeck.client._async.accounts import AsyncAccounts
from flowdeck.client._async.graphs import AsyncGraph
from flowdeck.client._async.run import AsyncRun
from flowdeck.client._backend import AsyncBackend, AsyncStream
from flowdeck.client._shared import (
    API,
    Event,
    Query,
    Reconnect,
    callback_bodies,
    event_query,
    graph_body,
    present,
    run_query,
    webhook_body,
)
from flowdeck.client.files import push_query, workflow_body


class AsyncClient(AsyncAccounts):
    """A flowdeck server, over HTTP.  ``token`` is a session or API token; :meth:`login`
    sets one."""

    # -- workflows ------------------------------------------------------------------------
    async def _post_workflow(self, path: str | Path, url: str, query: dict[str, str]) -> Any:
        body, media = workflow_body(Path(path))
        with body:
            return await self.request(
                "POST",
                url,
                params=query,
                content=AsyncBackend.chunks(body),
                headers={"Content-Type": media},
            )

    async def push_workflow(
        self,
        path: str | Path,
        visibility: str = "private",
        *,
        workflow_type: str = "auto",
        main: str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Store a workflow: a spec or CWL document (.yaml, .yml, .json, .cwl), an archive
        (.zip, .tar.gz, .tgz) or a directory (sent as a .tar.gz built on the fly).
        ``workflow_type`` is ``auto`` (CWL recognised by its content), ``flowdeck`` or
        ``CWL``; for CWL, ``main`` names the file to run in an archive or directory,
        ``name`` and ``version`` default to the file's name and the content hash."""
        query = push_query(Path(path), visibility, workflow_type, main, name, version)
        result: dict[str, Any] = await self._post_workflow(path, f"{API}/workflows", query)
        return result

    async def validate_workflow(self, path: str | Path) -> dict[str, Any]:
        """The server's verdict on a spec, archive or directory; nothing is stored."""
        result: dict[str, Any] = await self._post_workflow(path, f"{API}/workflows/validate", {})
        return result

    async def iter_workflows(
        self, name: str | None = None, owner: str | None = None, limit: int | None = None
    ) -> AsyncStream[dict[str, Any]]:
        """Workflows you can see, newest first, fetched a page at a time as they are
        iterated."""
        query: Query = list(present(name=name, owner=owner).items())
        async with aclosing(self.pages(f"{API}/workflows", query, limit)) as items:
            async for item in items:
                yield item

    async def workflows(
        self, name: str | None = None, owner: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Workflows you can see, newest first (at most ``limit``; ``None``: all)."""
        query: Query = list(present(name=name, owner=owner).items())
        return await self.collect(f"{API}/workflows", query, limit)

    async def workflow(self, ref: str) -> dict[str, Any]:
        """One version: ``name@version``, ``owner/name@version`` or ``…@latest``."""
        result: dict[str, Any] = await self.request("GET", f"{API}/workflows/{ref}")
        return result

    async def set_visibility(
        self, ref: str, visibility: str, users: list[str] | None = None
    ) -> dict[str, Any]:
        """``private``, ``shared`` (read-only, with the usernames ``users``, which replace
        the list) or ``public`` (its owner or an admin)."""
        body = {"visibility": visibility, **present(users=users)}
        result: dict[str, Any] = await self.request(
            "PUT", f"{API}/workflows/{ref}/visibility", json=body
        )
        return result

    async def set_trusted(self, ref: str, trusted: bool = True) -> dict[str, Any]:
        """Mark a version trusted (or not): the in-server executor runs only trusted
        workflows (admins; ``owner/name@version``)."""
        result: dict[str, Any] = await self.request(
            "PUT", f"{API}/workflows/{ref}/trusted", json={"trusted": trusted}
        )
        return result

    async def delete_workflow(self, ref: str) -> None:
        """Delete a version and its files (``ConflictError`` while an active run uses
        it)."""
        await self.request("DELETE", f"{API}/workflows/{ref}")

    # -- runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        start: bool = False,
        callbacks: list[str | dict[str, Any]] | None = None,
        cwl_job: dict[str, Any] | str | Path | None = None,
    ) -> AsyncRun:
        """A new staged run of ``workflow`` (``name@version``), queued at once with
        ``start``.  ``callbacks`` subscribe webhooks to its events in the same step: a URL
        (every event) or ``{"url": …, "events": [patterns]}`` each; their secrets are in
        ``run.data["callbacks"]``, shown only now.  ``cwl_job``: a CWL workflow's job
        document, as a mapping (sent as it is), or the path of a local YAML or JSON job
        whose local files are staged (``cwl_files``) under the relative paths the document
        sent names them by."""
        files: dict[str, Path] = {}
        if isinstance(cwl_job, str | Path):
            from flowdeck.cli.cwl_files import load_job

            cwl_job, files = load_job(Path(cwl_job))
        if cwl_job is not None:
            params = {**(params or {}), "cwl_job": cwl_job}
        body = {
            "workflow": workflow,
            "start": start and not files,
            **present(
                params=params, resources=resources, tags=tags, callbacks=callback_bodies(callbacks)
            ),
        }
        run = AsyncRun(self, await self.request("POST", f"{API}/runs", json=body))
        for name, path in files.items():
            await run.upload("cwl_files", path, name)
        if start and files:
            await run.start()
        return run

    async def run(self, run_id: str) -> AsyncRun:
        """A run you may read (its status is fetched now)."""
        return AsyncRun(self, await self.request("GET", f"{API}/runs/{run_id}"))

    async def iter_runs(
        self,
        state: list[str] | str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> AsyncStream[AsyncRun]:
        """Your runs (admins: all), newest first, fetched a page at a time as they are
        iterated; ``search`` is text in the id, workflow or a tag."""
        query = run_query(state, workflow, tag, owner, search, created_after, created_before)
        async with aclosing(self.pages(f"{API}/runs", query, limit)) as items:
            async for item in items:
                yield AsyncRun(self, item)

    async def runs(
        self,
        state: list[str] | str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        limit: int | None = 50,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[AsyncRun]:
        """Your runs (admins: all), newest first, at most ``limit`` (``None``: all);
        ``search`` is text in the id, workflow or a tag; ``created_after`` (included) and
        ``created_before`` bound the creation time."""
        query = run_query(state, workflow, tag, owner, search, created_after, created_before)
        return [AsyncRun(self, item) for item in await self.collect(f"{API}/runs", query, limit)]

    # -- events ---------------------------------------------------------------------------
    async def list_events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        """Events of your runs so far, oldest first: of ``runs``, matching ``types``,
        after event id ``after``, at most ``limit`` (``None``: all), page after page."""
        pages = self.event_pages(f"{API}/events", event_query(runs, types, None), after, limit)
        async with aclosing(pages) as events:
            return [event async for event in events]

    async def events(
        self,
        runs: list[str] | None = None,
        types: list[str] | None = None,
        after: int | None = None,
        reconnect: Reconnect | None = None,
    ) -> AsyncStream[Event]:
        """The live stream of your runs' events (from now, or after event ``after``).  It
        reconnects by itself and resumes with ``Last-Event-ID``: no event is lost or
        repeated."""
        query = event_query(runs, types, None)
        async with aclosing(self.follow(f"{API}/events", query, after, reconnect)) as sses:
            async for sse in sses:
                if sse.data:
                    yield Event.parse(sse.data)

    # -- webhooks -------------------------------------------------------------------------
    async def add_webhook(
        self, url: str, events: list[str] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Subscribe ``url`` to the events matching ``events`` (type patterns, default
        every event) of all your runs, or of run ``run_id``.  The answer holds the
        subscription's ``secret``, shown only now."""
        body = webhook_body(url, events, run_id)
        result: dict[str, Any] = await self.request("POST", f"{API}/webhooks", json=body)
        return result

    async def iter_webhooks(self, limit: int | None = None) -> AsyncStream[dict[str, Any]]:
        """Your subscriptions (admins: all), newest first, fetched a page at a time as
        they are iterated."""
        async with aclosing(self.pages(f"{API}/webhooks", [], limit)) as items:
            async for item in items:
                yield item

    async def webhooks(self, limit: int | None = 100) -> list[dict[str, Any]]:
        """Your subscriptions (admins: all), newest first, without their secrets (at most
        ``limit``; ``None``: all)."""
        return await self.collect(f"{API}/webhooks", [], limit)

    async def webhook(self, webhook_id: str) -> dict[str, Any]:
        """One subscription, without its secret."""
        result: dict[str, Any] = await self.request("GET", f"{API}/webhooks/{webhook_id}")
        return result

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        enabled: bool | None = None,
        events: list[str] | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Enable or disable it, or change its events or URL."""
        changes = present(enabled=enabled, events=events, url=url)
        result: dict[str, Any] = await self.request(
            "PATCH", f"{API}/webhooks/{webhook_id}", json=changes
        )
        return result

    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove the subscription."""
        await self.request("DELETE", f"{API}/webhooks/{webhook_id}")

    # -- secrets --------------------------------------------------------------------------
    async def set_secret(self, name: str, value: str) -> dict[str, Any]:
        """Create or replace your secret ``name``; the answer has its name and dates (a
        value never comes back)."""
        result: dict[str, Any] = await self.request(
            "PUT", f"{API}/secrets/{quote(name, safe='')}", json={"value": value}
        )
        return result

    async def secrets(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Your secrets' names and dates (admins: ``owner``'s), by name."""
        params = present(owner=owner)
        result: dict[str, Any] = await self.request("GET", f"{API}/secrets", params=params)
        items: list[dict[str, Any]] = result["items"]
        return items

    async def delete_secret(self, name: str, owner: str | None = None) -> None:
        """Delete your secret ``name`` (admins: ``owner``'s)."""
        await self.request(
            "DELETE", f"{API}/secrets/{quote(name, safe='')}", params=present(owner=owner)
        )

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new secret (in the answer); the previous one still signs for a while."""
        result: dict[str, Any] = await self.request(
            "POST", f"{API}/webhooks/{webhook_id}/rotate-secret"
        )
        return result

    async def iter_deliveries(
        self, webhook_id: str, limit: int | None = None
    ) -> AsyncStream[dict[str, Any]]:
        """The subscription's deliveries, newest first, fetched a page at a time as they
        are iterated."""
        url = f"{API}/webhooks/{webhook_id}/deliveries"
        async with aclosing(self.pages(url, [], limit)) as items:
            async for item in items:
                yield item

    async def deliveries(self, webhook_id: str, limit: int | None = 100) -> list[dict[str, Any]]:
        """The subscription's deliveries, newest first, each with its ``attempts`` (at
        most ``limit``; ``None``: all)."""
        return await self.collect(f"{API}/webhooks/{webhook_id}/deliveries", [], limit)

    async def redeliver(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a delivery again soon (same ``webhook-id``; its retries start over)."""
        result: dict[str, Any] | None = await self.request(
            "POST", f"{API}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        )
        return result or {}

    # -- graphs ---------------------------------------------------------------------------
    async def create_graph(
        self,
        name: str | None = None,
        nodes: dict[str, Any] | None = None,
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        *,
        submit: bool = False,
    ) -> AsyncGraph:
        """A new graph: a draft to build further (:meth:`Graph.set_node`, …), or
        submitted at once with ``submit=True``."""
        body = graph_body(name, nodes, edges, bindings, submit)
        return AsyncGraph(self, await self.request("POST", f"{API}/graphs", json=body))

    async def submit_graph(
        self,
        nodes: dict[str, Any],
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> AsyncGraph:
        """Create and submit a graph in one call (422 and nothing stored if invalid)."""
        return await self.create_graph(name, nodes, edges, bindings, submit=True)

    async def graph(self, graph_id: str) -> AsyncGraph:
        """A graph you may read (its status is fetched now)."""
        return AsyncGraph(self, await self.request("GET", f"{API}/graphs/{graph_id}"))

    async def iter_graphs(
        self, state: str | None = None, limit: int | None = None
    ) -> AsyncStream[dict[str, Any]]:
        """Your graphs (admins: all), newest first, fetched a page at a time as they are
        iterated."""
        query: Query = list(present(state=state).items())
        async with aclosing(self.pages(f"{API}/graphs", query, limit)) as items:
            async for item in items:
                yield item

    async def graphs(
        self, state: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Your graphs (admins: all), newest first (at most ``limit``; ``None``: all)."""
        query: Query = list(present(state=state).items())
        return await self.collect(f"{API}/graphs", query, limit)
