"""Run graphs for the synchronous client: build a draft, submit it, follow it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flowdeck.client._shared import API, Event, Reconnect, event_query, retryable
from flowdeck.client.errors import ApiError, InvalidRequest

if TYPE_CHECKING:
    from flowdeck.client.sync import Client

GRAPH_TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "killed"})
GRAPH_KEYS = ("name", "nodes", "edges", "bindings")
WAIT_STREAM_FAILURES = 2
GraphProgress = Callable[[dict[str, Any]], None]


def graph_body(
    name: str | None,
    nodes: dict[str, Any] | None,
    edges: list[dict[str, Any]] | None,
    bindings: list[dict[str, Any]] | None,
    submit: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"submit": submit}
    for key, value in (("name", name), ("nodes", nodes), ("edges", edges), ("bindings", bindings)):
        if value:
            body[key] = value
    return body


def load_graph_file(path: str | Path) -> dict[str, Any]:
    """A graph description from a YAML or JSON file: ``{name, nodes, edges, bindings}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(0, "not_found", f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(0, "invalid_input", f"{path}: not valid YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(0, "invalid_input", f"{path}: expected a mapping with nodes")
    unknown = sorted(set(data) - set(GRAPH_KEYS))
    if unknown:
        raise InvalidRequest(
            0,
            "invalid_input",
            f"{path}: unknown key {unknown[0]!r} (expected {', '.join(GRAPH_KEYS)})",
        )
    return {k: data[k] for k in GRAPH_KEYS if k in data}


class Graph:
    """One run graph.  ``data`` is the last answer of the server; :meth:`status`
    refreshes it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<Graph {self.id} {self.state}>"

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
        """The nodes by name, with their state and run (after :meth:`status`)."""
        return {n["name"]: n for n in self.data.get("nodes") or []}

    def _update(self, method: str, path: str = "", **kwargs: Any) -> dict[str, Any]:
        self.data = self.client.request(method, self.url + path, **kwargs)
        return self.data

    # -- building a draft -----------------------------------------------------------------
    def set_node(
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
        return self._update("PUT", f"/nodes/{name}", json=body)

    def remove_node(self, name: str) -> dict[str, Any]:
        return self._update("DELETE", f"/nodes/{name}")

    def add_edge(self, from_: str, to: str, condition: str = "succeeded") -> dict[str, Any]:
        return self._update(
            "POST", "/edges", json={"from": from_, "to": to, "condition": condition}
        )

    def remove_edge(self, from_: str, to: str) -> dict[str, Any]:
        return self._update("DELETE", "/edges", params={"from": from_, "to": to})

    def bind(self, from_: str, to: str) -> dict[str, Any]:
        """``from_`` is ``node.output``, ``to`` is ``node.input``."""
        return self._update("POST", "/bindings", json={"from": from_, "to": to})

    def unbind(self, to: str) -> dict[str, Any]:
        return self._update("DELETE", "/bindings", params={"to": to})

    def validate(self) -> dict[str, Any]:
        """``{ok, problems}``: the dry run of :meth:`submit`."""
        result: dict[str, Any] = self.client.request("POST", self.url + "/validate")
        return result

    def submit(self) -> dict[str, Any]:
        return self._update("POST", "/submit")

    # -- following ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._update("GET")

    def list_events(
        self, types: list[str] | None = None, after: int | None = None, limit: int = 100
    ) -> list[Event]:
        query = event_query(None, types, after, limit)
        return [Event.of(e) for e in self.client.request("GET", self.url + "/events", params=query)]

    def events(
        self,
        types: list[str] | None = None,
        after: int | None = None,
        *,
        until_done: bool = True,
        reconnect: Reconnect | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """The graph's events from its first (or after ``after``), live; with
        ``until_done`` it ends after the graph's final state."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        query = event_query(None, types, None)
        for event in self.client.stream(self.url + "/events", query, after, reconnect, deadline):
            yield event
            if until_done and graph_ended(event):
                return

    def wait(
        self, progress: GraphProgress | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Block until the graph ends; its final status.  Follows its events (calling
        ``progress`` with the fresh status after each), polls if streaming fails."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        status = self.status()
        if progress is not None:
            progress(status)
        if self.done:
            return status
        try:
            remaining = None if deadline is None else deadline - time.monotonic()
            events = self.events(
                timeout=remaining, reconnect=Reconnect(max_failures=WAIT_STREAM_FAILURES)
            )
            for event in events:
                status = self.status()
                if progress is not None:
                    progress(status)
                if graph_ended(event) or self.done:
                    return status
        except ApiError as exc:
            if not retryable(exc):
                raise
        delay = 0.2
        while not self.done:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"graph {self.id} is still {self.state}")
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)
            status = self.status()
            if progress is not None:
                progress(status)
        return self.data

    # -- control --------------------------------------------------------------------------
    def pause(self) -> dict[str, Any]:
        return self._update("POST", "/pause")

    def resume(self) -> dict[str, Any]:
        return self._update("POST", "/resume")

    def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        return self._update("POST", "/stop", json={"grace_s": grace_s} if grace_s else {})

    def kill(self) -> dict[str, Any]:
        return self._update("POST", "/kill")

    def delete(self) -> None:
        self.client.request("DELETE", self.url)


def graph_ended(event: Event) -> bool:
    kind, _, state = event.type.partition(".")
    return kind == "graph" and state in GRAPH_TERMINAL_STATES
