"""What both faces of the client share and what needs no input/output: request shapes,
events, records of stream ports and the reconnect policy of streams."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowdeck.client.errors import ApiError, ThrottledError

API = "/api/v1"
Query = list[tuple[str, str | int | float | bool | None]]
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "killed", "system_error"})
GRAPH_TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "killed"})
WAIT_STREAM_FAILURES = 2  # attempts in a row that deliver nothing; then wait() polls
DEFAULT_WAIT_S = 30.0  # one long poll of an output port waits this long for a record
FULL_RETRY_S = 1.0  # when a full input buffer answers without Retry-After
USER_ACTIONS = ("approve", "enable", "disable", "promote", "demote")  # of change_user
PAGE = 200  # items asked for in one request of a listing (the server's smallest cap)
EVENT_PAGE = 1000  # events asked for in one request of an event listing (the server's cap)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a run, as the server sends it."""

    id: int
    run_id: str
    seq: int
    type: str
    at: str
    actor: str | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=int(body["id"]),
            run_id=str(body["run_id"]),
            seq=int(body["seq"]),
            type=str(body["type"]),
            at=str(body["at"]),
            actor=body.get("actor"),
            data=dict(body.get("data") or {}),
        )

    @classmethod
    def parse(cls, text: str) -> Event:
        return cls.of(json.loads(text))

    @property
    def ends_run(self) -> bool:
        """A ``run.<terminal state>`` event: nothing follows it."""
        return ends(self, "run", TERMINAL_STATES)


@dataclass
class Reconnect:
    """How an event stream reconnects: after ``max_failures`` attempts in a row that
    deliver nothing, the last error is raised."""

    max_failures: int = 8
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    failures: int = 0

    def delivered(self) -> None:
        self.failures = 0

    def failed(self, exc: Exception) -> float:
        """Count a failure; the delay before the next attempt, or raise ``exc``."""
        self.failures += 1
        if self.failures > self.max_failures:
            raise exc
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (self.failures - 1)))


def retryable(exc: ApiError) -> bool:
    """Connection trouble and 5xx are worth another attempt; 4xx never are."""
    return exc.status == 0 or exc.status >= 500


def stream_headers(last_event_id: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def event_query(
    runs: list[str] | None, types: list[str] | None, after: int | None, limit: int | None = None
) -> Query:
    query: Query = [("run", r) for r in runs or []]
    query += [("type", t) for t in types or []]
    if after is not None:
        query.append(("after", after))
    if limit is not None:
        query.append(("limit", limit))
    return query


def run_query(
    state: list[str] | str | None,
    workflow: str | None,
    tag: str | None,
    owner: str | None,
    search: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Query:
    """The query of a run listing; a state may be ``a,b`` (several states)."""
    states = [state] if isinstance(state, str) else state or []
    query: Query = [("state", s.strip()) for one in states for s in one.split(",") if s.strip()]
    for name, value in (("workflow", workflow), ("tag", tag), ("owner", owner), ("search", search)):
        if value:
            query.append((name, value))
    for name, when in (("created_after", created_after), ("created_before", created_before)):
        if when is not None:
            query.append((name, when.isoformat()))
    return query


def checked_limit(limit: int | None) -> int | None:
    """A listing's ``limit``: ``None`` (everything) or a count of items."""
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise TypeError(f"limit must be an int or None, not {limit!r}")
    if limit < 0:
        raise ValueError(f"limit must be 0 or more (None: everything), not {limit}")
    return limit


def page_size(wanted: int | None, cap: int) -> int:
    """Items asked for per request: ``wanted`` (a client's ``page_size``), at most the
    server's ``cap``, which is also the default."""
    if wanted is None:
        return cap
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
        raise ValueError(f"page_size must be a positive int or None, not {wanted!r}")
    return min(wanted, cap)


def callback_bodies(callbacks: list[str | dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """``create_run``'s callbacks: a URL (every event) or ``{url, events}`` each."""
    if callbacks is None:
        return None
    return [{"url": c, "events": ["*"]} if isinstance(c, str) else dict(c) for c in callbacks]


def ends(event: Event, kind: str, terminal: frozenset[str]) -> bool:
    """``event`` is the final one of a ``kind`` (run, graph): ``kind.<terminal state>``."""
    what, _, state = event.type.partition(".")
    return what == kind and state in terminal


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a stream output: its offset in the port, the attempt of the step
    that wrote it (a retried step writes its records again), and the record itself."""

    offset: int
    attempt: int
    data: Any

    @classmethod
    def of(cls, body: dict[str, Any]) -> Record:
        return cls(offset=int(body["offset"]), attempt=int(body["attempt"]), data=body["data"])


def ndjson(records: Iterable[Any]) -> bytes:
    """Records as NDJSON: one compact JSON document a line."""
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def port_url(run_id: str, direction: str, port: str) -> str:
    return f"{API}/runs/{run_id}/{direction}/{port}"


def buffer_delay(exc: ThrottledError) -> float:
    return float(exc.retry_after_s or FULL_RETRY_S)


def present(**values: Any) -> dict[str, Any]:
    """The values given (not ``None``, not empty): the optional fields of a body."""
    return {
        key: value
        for key, value in values.items()
        if value is not None and not (isinstance(value, str | list | dict) and not value)
    }


def graph_body(
    name: str | None,
    nodes: dict[str, Any] | None,
    edges: list[dict[str, Any]] | None,
    bindings: list[dict[str, Any]] | None,
    submit: bool,
) -> dict[str, Any]:
    return {"submit": submit, **present(name=name, nodes=nodes, edges=edges, bindings=bindings)}


def webhook_body(url: str, events: list[str] | None, run_id: str | None) -> dict[str, Any]:
    return {"url": url, "events": events or ["*"], **present(run_id=run_id)}
