"""Run graphs: build a draft, submit it, follow it."""

from __future__ import annotations

from typing import Any, ClassVar

from flowdeck.client._async.resource import AsyncResource
from flowdeck.client._shared import GRAPH_TERMINAL_STATES, present


class AsyncGraph(AsyncResource):
    """One run graph.  ``data`` is the last answer of the server; :meth:`status`
    refreshes it."""

    KIND: ClassVar[str] = "graph"
    TERMINAL: ClassVar[frozenset[str]] = GRAPH_TERMINAL_STATES

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """The nodes by name, with their state and run (after :meth:`status`)."""
        return {n["name"]: n for n in self.data.get("nodes") or []}

    # -- building a draft -----------------------------------------------------------------
    async def set_node(
        self,
        name: str,
        workflow: str,
        params: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Add node ``name`` (a run of ``workflow``), or replace it."""
        body = {"workflow": workflow, **present(params=params, resources=resources, tags=tags)}
        return await self._update("PUT", f"/nodes/{name}", json=body)

    async def remove_node(self, name: str) -> dict[str, Any]:
        return await self._update("DELETE", f"/nodes/{name}")

    async def add_edge(self, from_: str, to: str, condition: str = "succeeded") -> dict[str, Any]:
        """``to`` starts once ``from_`` has ended as ``condition`` says."""
        body = {"from": from_, "to": to, "condition": condition}
        return await self._update("POST", "/edges", json=body)

    async def remove_edge(self, from_: str, to: str) -> dict[str, Any]:
        return await self._update("DELETE", "/edges", params={"from": from_, "to": to})

    async def bind(self, from_: str, to: str) -> dict[str, Any]:
        """``from_`` is ``node.output``, ``to`` is ``node.input``."""
        return await self._update("POST", "/bindings", json={"from": from_, "to": to})

    async def unbind(self, to: str) -> dict[str, Any]:
        return await self._update("DELETE", "/bindings", params={"to": to})

    async def validate(self) -> dict[str, Any]:
        """``{ok, problems}``: the dry run of :meth:`submit`."""
        result: dict[str, Any] = await self._call("POST", "/validate")
        return result

    async def submit(self) -> dict[str, Any]:
        """Start the draft: its nodes' runs are created as their edges allow."""
        return await self._update("POST", "/submit")

    # -- control --------------------------------------------------------------------------
    async def pause(self) -> dict[str, Any]:
        """Freeze every running run of the graph; no node starts until :meth:`resume`."""
        return await self._update("POST", "/pause")
