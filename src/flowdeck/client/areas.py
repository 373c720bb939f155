"""Webhooks and run graphs: methods of :class:`flowdeck.client.Client` (mixins, so that
``sync.py`` stays small)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flowdeck.client._shared import API
from flowdeck.client.graphs import Graph, graph_body

if TYPE_CHECKING:
    from flowdeck.client.sync import Client

PAGE = 500


def webhook_body(url: str, events: list[str] | None, run_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, "events": events or ["*"]}
    if run_id:
        body["run_id"] = run_id
    return body


def webhook_changes(
    enabled: bool | None, events: list[str] | None, url: str | None
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in (("enabled", enabled), ("events", events), ("url", url)):
        if value is not None:
            changes[key] = value
    return changes


class WebhookMethods:
    """Your webhook subscriptions and their delivery logs (docs/webhooks.md)."""

    if TYPE_CHECKING:

        def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def add_webhook(
        self, url: str, events: list[str] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Subscribe ``url`` to the events matching ``events`` (type patterns, default
        every event) of all your runs, or of run ``run_id``.  The answer holds the
        subscription's ``secret``, shown only now."""
        result: dict[str, Any] = self.request(
            "POST", f"{API}/webhooks", json=webhook_body(url, events, run_id)
        )
        return result

    def webhooks(self, limit: int = 100) -> list[dict[str, Any]]:
        """Your subscriptions (admins: all), newest first, without their secrets."""
        return self._pages(f"{API}/webhooks", limit)

    def webhook(self, webhook_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{API}/webhooks/{webhook_id}")
        return result

    def update_webhook(
        self,
        webhook_id: str,
        *,
        enabled: bool | None = None,
        events: list[str] | None = None,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Enable or disable it, or change its events or URL."""
        result: dict[str, Any] = self.request(
            "PATCH", f"{API}/webhooks/{webhook_id}", json=webhook_changes(enabled, events, url)
        )
        return result

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"{API}/webhooks/{webhook_id}")

    def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new secret (in the answer); the previous one still signs for a while."""
        result: dict[str, Any] = self.request("POST", f"{API}/webhooks/{webhook_id}/rotate-secret")
        return result

    def deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The subscription's deliveries, newest first, each with its ``attempts``."""
        return self._pages(f"{API}/webhooks/{webhook_id}/deliveries", limit)

    def redeliver(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a delivery again soon (same ``webhook-id``; its retries start over)."""
        result: dict[str, Any] = self.request(
            "POST", f"{API}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        )
        return result or {}

    def _pages(self, path: str, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        before: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(PAGE, limit - len(items))}
            if before:
                params["before"] = before
            page = self.request("GET", path, params=params)
            items += page["items"]
            before = page.get("next_before")
            if not before:
                break
        return items


class GraphMethods:
    """Run graphs: nodes (runs of workflows), edges and bindings (docs/api.md)."""

    if TYPE_CHECKING:

        def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def create_graph(
        self,
        name: str | None = None,
        nodes: dict[str, Any] | None = None,
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        *,
        submit: bool = False,
    ) -> Graph:
        """A new graph: a draft to build further (:meth:`Graph.set_node`, …), or
        submitted at once with ``submit=True``."""
        body = graph_body(name, nodes, edges, bindings, submit)
        return Graph(cast("Client", self), self.request("POST", f"{API}/graphs", json=body))

    def submit_graph(
        self,
        nodes: dict[str, Any],
        edges: list[dict[str, Any]] | None = None,
        bindings: list[dict[str, Any]] | None = None,
        name: str | None = None,
    ) -> Graph:
        """Create and submit a graph in one call (422 and nothing stored if invalid)."""
        return self.create_graph(name, nodes, edges, bindings, submit=True)

    def graph(self, graph_id: str) -> Graph:
        return Graph(cast("Client", self), self.request("GET", f"{API}/graphs/{graph_id}"))

    def graphs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Your graphs (admins: all), newest first."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(PAGE, limit - len(items))}
            for key, value in (("state", state), ("cursor", cursor)):
                if value:
                    params[key] = value
            page = self.request("GET", f"{API}/graphs", params=params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items
