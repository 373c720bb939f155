"""Webhooks and run graphs for :class:`flowdeck.client.AsyncClient` (mixins)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio

from flowdeck.client._shared import API, Event, Query, Reconnect, event_query, retryable
from flowdeck.client.areas import PAGE, webhook_body, webhook_changes
from flowdeck.client.errors import ApiError
from flowdeck.client.graphs import (
    GRAPH_TERMINAL_STATES,
    WAIT_STREAM_FAILURES,
    graph_body,
    graph_ended,
)

if TYPE_CHECKING:
    from flowdeck.client.aio import AsyncClient

AsyncGraphProgress = Callable[[dict[str, Any]], Awaitable[None] | None]


class AsyncWebhookMethods:
    """Your webhook subscriptions and their delivery logs."""

    if TYPE_CHECKING:

        async def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def add_webhook(
        self, url: str, events: list[str] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Subscribe ``url``; the answer's ``secret`` is shown only now."""
        body = webhook_body(url, events, run_id)
        result: dict[str, Any] = await self.request("POST", f"{API}/webhooks", json=body)
        return result

    async def webhooks(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._pages(f"{API}/webhooks", limit)

    async def webhook(self, webhook_id: str) -> dict[str, Any]:
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
        changes = webhook_changes(enabled, events, url)
        result: dict[str, Any] = await self.request(
            "PATCH", f"{API}/webhooks/{webhook_id}", json=changes
        )
        return result

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"{API}/webhooks/{webhook_id}")

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"{API}/webhooks/{webhook_id}/rotate-secret"
        )
        return result

    async def deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._pages(f"{API}/webhooks/{webhook_id}/deliveries", limit)

    async def redeliver(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        result: dict[str, Any] | None = await self.request(
            "POST", f"{API}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        )
        return result or {}

    async def _pages(self, path: str, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        before: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(PAGE, limit - len(items))}
            if before:
                params["before"] = before
            page = await self.request("GET", path, params=params)
            items += page["items"]
            before = page.get("next_before")
            if not before:
                break
        return items


class AsyncGraphMethods:
    """Run graphs."""

    if TYPE_CHECKING:

        async def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def create_graph(
        self,
        name: str | None = None,
        nodes: dict[str, Any] | None = None,
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        *,
        submit: bool = False,
    ) -> AsyncGraph:
        body = graph_body(name, nodes, edges, bindings, submit)
        data = await self.request("POST", f"{API}/graphs", json=body)
        return AsyncGraph(cast("AsyncClient", self), data)

    async def submit_graph(
        self,
        nodes: dict[str, Any],
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> AsyncGraph:
        return await self.create_graph(name, nodes, edges, bindings, submit=True)

    async def graph(self, graph_id: str) -> AsyncGraph:
        data = await self.request("GET", f"{API}/graphs/{graph_id}")
        return AsyncGraph(cast("AsyncClient", self), data)

    async def graphs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(PAGE, limit - len(items))}
            for key, value in (("state", state), ("cursor", cursor)):
                if value:
                    params[key] = value
            page = await self.request("GET", f"{API}/graphs", params=params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items


class AsyncGraph:
    """One run graph, for :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<AsyncGraph {self.id} {self.state}>"

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def done(self) -> bool:
        return self.state in GRAPH_TERMINAL_STATES

    @property
    def url(self) -> str:
        return f"{API}/graphs/{self.id}"

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.data.get("nodes") or []}

    async def _update(self, method: str, path: str = "", **kwargs: Any) -> dict[str, Any]:
        self.data = await self.client.request(method, self.url + path, **kwargs)
        return self.data

    async def set_node(
        self,
        name: str,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow": workflow}
        for key, value in (("params", params), ("resources", resources), ("tags", tags)):
            if value:
                body[key] = value
        return await self._update("PUT", f"/nodes/{name}", json=body)

    async def remove_node(self, name: str) -> dict[str, Any]:
        return await self._update("DELETE", f"/nodes/{name}")

    async def add_edge(self, from_: str, to: str, condition: str = "succeeded") -> dict[str, Any]:
        body = {"from": from_, "to": to, "condition": condition}
        return await self._update("POST", "/edges", json=body)

    async def bind(self, from_: str, to: str) -> dict[str, Any]:
        return await self._update("POST", "/bindings", json={"from": from_, "to": to})

    async def validate(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.request("POST", self.url + "/validate")
        return result

    async def submit(self) -> dict[str, Any]:
        return await self._update("POST", "/submit")

    async def status(self) -> dict[str, Any]:
        return await self._update("GET")

    async def list_events(
        self, types: list[str] | None = None, after: int | None = None, limit: int = 100
    ) -> list[Event]:
        query: Query = event_query(None, types, after, limit)
        found = await self.client.request("GET", self.url + "/events", params=query)
        return [Event.of(e) for e in found]

    async def events(
        self,
        types: list[str] | None = None,
        after: int | None = None,
        *,
        until_done: bool = True,
        reconnect: Reconnect | None = None,
    ) -> AsyncIterator[Event]:
        query = event_query(None, types, None)
        async for event in self.client.stream(self.url + "/events", query, after, reconnect):
            yield event
            if until_done and graph_ended(event):
                return

    async def wait(self, progress: AsyncGraphProgress | None = None) -> dict[str, Any]:
        """Until the graph ends (bound it with ``anyio.fail_after``)."""

        async def report(status: dict[str, Any]) -> None:
            if progress is not None:
                result = progress(status)
                if result is not None:
                    await result

        await report(await self.status())
        if self.done:
            return self.data
        try:
            reconnect = Reconnect(max_failures=WAIT_STREAM_FAILURES)
            async for event in self.events(reconnect=reconnect):
                await report(await self.status())
                if graph_ended(event) or self.done:
                    return self.data
        except ApiError as exc:
            if not retryable(exc):
                raise
        delay = 0.2
        while not self.done:
            await anyio.sleep(delay)
            delay = min(2.0, delay * 1.5)
            await report(await self.status())
        return self.data

    async def pause(self) -> dict[str, Any]:
        return await self._update("POST", "/pause")

    async def resume(self) -> dict[str, Any]:
        return await self._update("POST", "/resume")

    async def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        return await self._update("POST", "/stop", json={"grace_s": grace_s} if grace_s else {})

    async def kill(self) -> dict[str, Any]:
        return await self._update("POST", "/kill")

    async def delete(self) -> None:
        await self.client.request("DELETE", self.url)
