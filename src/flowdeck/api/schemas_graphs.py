"""Request and response bodies of the graphs API (and of reruns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowdeck.api.schemas import Request
from flowdeck.api.schemas_runs import ResourcesIn, Tag
from flowdeck.domain.graphs import Graph
from flowdeck.domain.spec import PORT_PATTERN, STEP_PATTERN, StepName
from flowdeck.domain.text import SAFE_TEXT_PATTERN
from flowdeck.domain.workflows import REF_PATTERN
from flowdeck.services.graphs import GraphView, NodeView

# node.port: a binding's ends (ports are named as in workflow specs).
BINDING_PATTERN = f"{STEP_PATTERN[:-1]}\\.{PORT_PATTERN[1:]}"


class NodeIn(Request):
    workflow: str = Field(
        max_length=200,
        description="name@version or owner/name@version",
        json_schema_extra={"pattern": REF_PATTERN},  # the service checks it
    )
    params: dict[str, Any] | None = None
    resources: ResourcesIn | None = None
    tags: list[Tag] | None = Field(None, max_length=20)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "params": self.params or {},
            "resources": self.resources.model_dump(exclude_none=True) if self.resources else {},
            "tags": self.tags or [],
        }


class EdgeIn(Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(alias="from", pattern=STEP_PATTERN, description="The upstream node.")
    target: str = Field(alias="to", pattern=STEP_PATTERN, description="The downstream node.")
    condition: Literal["succeeded", "completed", "failed"] = Field(
        "succeeded", description="When the downstream node may start."
    )

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "condition": self.condition}


class BindingIn(Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str = Field(alias="from", pattern=BINDING_PATTERN, description="node.output upstream")
    target: str = Field(alias="to", pattern=BINDING_PATTERN, description="node.input downstream")

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target}


class GraphCreate(Request):
    name: str = Field(
        "graph", min_length=1, max_length=100, json_schema_extra={"pattern": SAFE_TEXT_PATTERN}
    )
    nodes: dict[StepName, NodeIn] | None = Field(
        None, max_length=200, json_schema_extra={"propertyNames": {"pattern": STEP_PATTERN}}
    )
    edges: list[EdgeIn] | None = Field(None, max_length=2000)
    bindings: list[BindingIn] | None = Field(None, max_length=2000)
    submit: bool = Field(False, description="Validate and start it at once.")


class GraphStopIn(Request):
    grace_s: float | None = Field(None, ge=0, le=3600)


class RerunIn(Request):
    from_step: str | None = Field(
        None, max_length=64, description="Run this step and its dependents again, whatever."
    )
    params: dict[str, Any] | None = Field(None, description="Changed parameter values.")


class NodeOut(BaseModel):
    name: str
    workflow: str
    state: str
    state_since: datetime
    run_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outputs: dict[str, Any]
    error: str | None

    @classmethod
    def of(cls, v: NodeView) -> NodeOut:
        run = v.run
        error = v.node.error
        if error is None and run is not None and run.error:
            error = str(run.error.get("message") or run.error)
        return cls(
            name=v.node.name,
            workflow=v.workflow,
            state=v.state,
            state_since=run.state_since
            if run and v.node.state == "started"
            else v.node.state_since,
            run_id=v.node.run_id,
            started_at=run.started_at if run else None,
            finished_at=run.finished_at if run else None,
            outputs=run.outputs if run else {},
            error=error,
        )


class GraphSummary(BaseModel):
    id: str
    name: str
    owner_id: str
    state: str
    state_since: datetime
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, g: Graph) -> GraphSummary:
        return cls(
            id=g.id,
            name=g.name,
            owner_id=g.owner_id,
            state=g.state.value,
            state_since=g.state_since,
            created_at=g.created_at,
            submitted_at=g.submitted_at,
            finished_at=g.finished_at,
        )


class GraphOut(GraphSummary):
    counts: dict[str, int] = Field(description="Nodes counted by state.")
    nodes: list[NodeOut]
    edges: list[dict[str, Any]]
    bindings: list[dict[str, Any]]
    error: dict[str, Any] | None

    @classmethod
    def of_view(cls, view: GraphView) -> GraphOut:
        g = view.graph
        return cls(
            **GraphSummary.of(g).model_dump(),
            counts=view.counts,
            nodes=[NodeOut.of(n) for n in view.nodes],
            edges=g.edges,
            bindings=g.bindings,
            error=g.error,
        )


class GraphPage(BaseModel):
    items: list[GraphSummary]
    next_cursor: str | None


class ProblemsOut(BaseModel):
    ok: bool
    problems: list[dict[str, str]]
